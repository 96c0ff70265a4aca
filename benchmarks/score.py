"""Frames/s of ``fsbench score`` on 1024x2048 score maps, beside the time to only read the files.

    python benchmarks/score.py [--frames 8] [--repeats 3] [--height 1024 --width 2048]
                               [--protocols ...]    # FSBENCH_NATIVE=0: without the kernels

Writes ``--frames`` float32 ``.npy`` score maps and a RoadAnomaly21-layout tree of label PNGs
(0 / 1 / 255, blobby anomalies, a void band) into a temporary folder, then times:

* the floor: ``numpy.load`` of every score map plus the label PNG that the scorer decodes, one
  after the other on one thread;
* ``fsbench score`` under each protocol, and ``fishyscapes`` with ``--explain``: one read of
  every file, on a thread of its own ahead of the scoring (``SavedScores``' read-ahead; ``smiyc``
  keeps each frame as float16 for the component pass at the toolkit's threshold), building the
  metric and ``compute()`` included.

Files are read right after being written, so both columns read from the page cache: the
comparison is of decoding and scoring cost, not of disk speed. Each round times the floor and then
every protocol, and each protocol's share of the floor is taken within its round, so a machine
whose speed drifts between rounds moves both; the medians over ``--repeats`` rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fsbench.cli.score import _parser, score_maps
from fsbench.data.anomaly_sets import SegmentMeIfYouCan
from fsbench.data.check import read_label
from fsbench.metrics import native


def write_tree(folder: Path, frames: int, height: int, width: int) -> list[str]:
    """Label PNGs in the RoadAnomaly21 layout and one float32 score map per frame."""
    rng = np.random.default_rng(0)
    track = folder / "data" / "dataset_AnomalyTrack"
    (track / "images").mkdir(parents=True)
    (track / "labels_masks").mkdir()
    (folder / "pred").mkdir()
    names = [f"frame_{i:03d}" for i in range(frames)]
    for name in names:
        coarse = (rng.random((16, 32)) < 0.1).astype(np.uint8)
        label = np.asarray(Image.fromarray(coarse).resize((width, height), Image.NEAREST))
        label = label.copy()
        label[: height // 8] = 255
        Image.fromarray(label).save(track / "labels_masks" / f"{name}_labels_semantic.png")
        # The scorer reads labels only; a small image keeps the tree quick to write.
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(track / "images" / f"{name}.png")
        score = rng.random((height, width), dtype=np.float32) * 0.7 + np.float32(0.3) * (label == 1)
        np.save(folder / "pred" / f"{name}.npy", score)
    return names


def floor(folder: Path) -> float:
    """Seconds to read every score map and label once, nothing else."""
    dataset = SegmentMeIfYouCan(folder / "data", track="anomaly")
    started = time.perf_counter()
    for sample in dataset.samples:
        np.load(folder / "pred" / f"{sample.name}.npy")
        read_label(sample.label)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median reported)")
    parser.add_argument(
        "--protocols", nargs="+", default=["fishyscapes", "per_image", "smiyc", "explain"]
    )
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"read only (floor)": []}
    shares: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tree(folder, args.frames, args.height, args.width)
        for _ in range(args.repeats):  # each round: the floor, then every protocol
            floor_rate = args.frames / floor(folder)
            rates["read only (floor)"].append(floor_rate)
            for protocol in args.protocols:
                rate = args.frames / score_seconds(folder, protocol)
                label = "fishyscapes --explain" if protocol == "explain" else protocol
                rates.setdefault(label, []).append(rate)
                shares.setdefault(label, []).append(rate / floor_rate)
    size = f"{args.height}x{args.width}"
    print(
        f"frames/s on {args.frames} score maps of {size} (float32 .npy, labels PNG), median of "
        f"{args.repeats} rounds; share = frames/s / the same round's floor (median, range); "
        f"compiled kernels: {native.status()}"
    )
    for name, values in rates.items():
        share = ""
        if name in shares:
            low, high = min(shares[name]), max(shares[name])
            share = f"   share {statistics.median(shares[name]):.2f} ({low:.2f}-{high:.2f})"
        print(f"  {name:<24} {statistics.median(values):8.2f}{share}")
    summary = {
        "size": size,
        "frames": args.frames,
        "repeats": args.repeats,
        "frames_per_second": {name: statistics.median(values) for name, values in rates.items()},
        "share_of_floor": {name: statistics.median(values) for name, values in shares.items()},
    }
    print(json.dumps(summary))


def score_seconds(folder: Path, protocol: str) -> float:
    """Seconds of one ``fsbench score`` run over the tree (``explain``: fishyscapes --explain)."""
    explain = protocol == "explain"
    argv = [str(folder / "pred"), str(folder / "data"), "--data", "smiyc_anomaly"]
    argv += ["--quiet", "--protocol", "fishyscapes" if explain else protocol]
    options = _parser().parse_args(argv + (["--explain"] if explain else []))
    dataset = SegmentMeIfYouCan(folder / "data", track="anomaly")
    started = time.perf_counter()
    score_maps(folder / "pred", dataset, options)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
