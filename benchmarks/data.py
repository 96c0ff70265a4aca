"""Is data loading the bottleneck? Images/s of each real-data reader next to the model's forward.

    python benchmarks/data.py [--images 8] [--height 1024 --width 2048] [--workers 0 2]

Writes a small tree of each published layout at native resolution into a temporary folder (street-
like smooth images, so PNG and JPEG sizes are realistic rather than those of noise), then reads
each through its fsbench reader with a DataLoader (batch 1, ``--workers`` processes), and times a
DeepLabv3+ ResNet-18 forward on an image of the same size. A ratio loader / forward above 1 means
the loader keeps up with the model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fsbench.data.anomaly_sets import (
    FishyscapesLostAndFound,
    FishyscapesStatic,
    RoadAnomaly,
    SegmentMeIfYouCan,
)
from fsbench.data.cityscapes import Cityscapes
from fsbench.models import Segmenter


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour fields plus mild noise: compresses like a photograph, not like noise."""
    coarse = rng.random((8, 16, 3)).astype(np.float32)
    image = np.asarray(
        Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC),
        np.float32,
    )
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _labels(rng: np.random.Generator, height: int, width: int, values: list[int]) -> np.ndarray:
    coarse = rng.choice(values, size=(8, 16)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.NEAREST))


def _save(path: Path, array: np.ndarray, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)


def build_trees(root: Path, count: int, height: int, width: int) -> dict[str, object]:
    """Write every layout; return a reader for each."""
    rng = np.random.default_rng(0)
    cityscapes, laf = root / "cityscapes", root / "lostandfound"
    fs_laf, fs_static = root / "fishyscapes" / "fishyscapes_lostandfound", root / "fishyscapes"
    road, smiyc = root / "RoadAnomaly_jpg", root / "smiyc" / "dataset_AnomalyTrack"
    frames = []
    for i in range(count):
        stem = f"frankfurt_{i:06d}_000019"
        base = _scene(rng, height, width)
        _save(cityscapes / f"leftImg8bit/val/frankfurt/{stem}_leftImg8bit.png", base)
        label_ids = _labels(rng, height, width, [7, 8, 11, 21, 23, 26, 0])
        _save(cityscapes / f"gtFine/val/frankfurt/{stem}_gtFine_labelIds.png", label_ids)
        anomaly = _labels(rng, height, width, [0, 0, 0, 1, 255])
        laf_id = f"01_Hanns_Klemm_Str_45_{i:06d}_000100"
        _save(laf / f"leftImg8bit/train/01_Hanns_Klemm_Str_45/{laf_id}_leftImg8bit.png", base)
        _save(fs_laf / f"{i:04d}_{laf_id}_labels.png", anomaly)
        overlay = np.zeros((height, width, 3), np.int16)
        overlay[anomaly == 1] = 60
        (fs_static / "fs_val_v3").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(fs_static / f"fs_val_v3/{i:04d}_{stem}_rgb.npz", rgb=overlay)
        _save(fs_static / f"fs_val_v3/{i:04d}_{stem}_labels.png", anomaly)
        frames.append(f"frame{i}.jpg")
        _save(road / f"frames/frame{i}.jpg", base, quality=90)
        _save(
            road / f"frames/frame{i}.labels/labels_semantic.png",
            (anomaly == 1).astype(np.uint8) * 2,
        )
        _save(smiyc / f"images/validation{i:04d}.jpg", base, quality=90)
        _save(smiyc / f"labels_masks/validation{i:04d}_labels_semantic.png", anomaly)
    (road / "frame_list.json").write_text(json.dumps(frames))
    return {
        "cityscapes (val)": Cityscapes(cityscapes, split="val"),
        "fishyscapes lost & found": FishyscapesLostAndFound(fs_laf, laf),
        "fishyscapes static": FishyscapesStatic(fs_static, cityscapes),
        "road anomaly": RoadAnomaly(road),
        "smiyc roadanomaly21": SegmentMeIfYouCan(smiyc.parent, track="anomaly"),
    }


def images_per_second(dataset, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=1, num_workers=workers)
    started = time.perf_counter()
    count = sum(batch["image"].shape[0] for batch in loader)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    segmenter = Segmenter("resnet18", num_classes=19).eval()
    image = torch.rand(1, 3, args.height, args.width)
    with torch.inference_mode():
        segmenter(image)  # warm-up
        started = time.perf_counter()
        for _ in range(2):
            segmenter(image)
        forward = 2 / (time.perf_counter() - started)
    print(
        f"{args.height}x{args.width}, {args.images} images per reader, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"model forward (DeepLabv3+ ResNet-18): {forward:.2f} images/s")
    print("| reader | workers | images/s | loader / forward |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        readers = build_trees(Path(folder), args.images, args.height, args.width)
        for name, dataset in readers.items():
            for workers in args.workers:
                rate = images_per_second(dataset, workers)
                print(f"| {name} | {workers} | {rate:.2f} | {rate / forward:.1f} |")


if __name__ == "__main__":
    main()
