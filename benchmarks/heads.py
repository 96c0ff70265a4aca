"""Extra inference cost of each anomaly head over the bare segmenter forward, side by side.

    python benchmarks/heads.py                       # 128x256, batch 8, DeepLabv3+ ResNet-18
    python benchmarks/heads.py --height 512 --width 1024 --batch 1
    python benchmarks/heads.py --heads mc_dropout mc_dropout@resolution=features

A head is a config name in conf/head/, optionally with overrides of its values after an ``@``:
``NAME@KEY=VALUE[,KEY=VALUE...]`` builds ``head=NAME head.NAME.KEY=VALUE ...``.

Each head config in conf/head/ is built with its defaults (ensembles from two random members
saved to a temporary folder), fitted on a few synthetic training batches where it needs fitting,
and timed under `torch.inference_mode()` on the same images as a bare `segmenter(images)` call.
Timings interleave the bare forward and the head (median of several rounds), so machine noise
hits both alike. The ratio is head time / bare forward time (1.00 = free).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from fsbench.data import SyntheticScenes
from fsbench.lit import predict_heads
from fsbench.models import Segmenter, save_segmenter

CONF = Path(__file__).resolve().parents[1] / "conf"


def _head_configs(labels: list[str] | None, members: list[str]) -> dict:
    options = sorted(path.stem for path in (CONF / "head").glob("*.yaml"))
    heads = {}
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for label in labels or options:
            name, _, variant = label.partition("@")
            overrides = [f"head={name}"]
            overrides += [f"head.{name}.{value}" for value in variant.split(",") if value]
            if name == "ensemble":
                overrides.append(f"head.ensemble.checkpoints=[{','.join(members)}]")
            heads[label] = instantiate(compose("evaluate", overrides=overrides).head[name])
    return heads


def _time(function, rounds: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(rounds):
        function()
    return (time.perf_counter() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--heads", nargs="*", help="head config names, NAME@KEY=VALUE,... (default: all)"
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    segmenter = Segmenter("resnet18", num_classes=19, dropout=0.1).eval()
    dataset = SyntheticScenes("train", 4 * args.batch, args.height, args.width)
    images = torch.stack([dataset[i]["image"] for i in range(args.batch)])
    with tempfile.TemporaryDirectory() as folder:
        members = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            path = Path(folder) / f"member{seed}.ckpt"
            save_segmenter(Segmenter("resnet18", num_classes=19), path)
            members.append(str(path))
        heads = _head_configs(args.heads, members)
        fit_loader = DataLoader(dataset, batch_size=args.batch)
        for head in heads.values():
            head.attach(segmenter)  # training-time heads build their layers (untrained here)
            if head.requires_fit:
                head.fit(segmenter, fit_loader)

        print(f"{args.height}x{args.width}, batch {args.batch}, {torch.get_num_threads()} threads")
        print("| head | ms / batch | bare forward ms | ratio |")
        print("|---|---|---|---|")
        with torch.inference_mode():
            for name, head in heads.items():
                bare, timed = [], []
                for _ in range(args.repeats):
                    bare.append(_time(lambda: segmenter(images), args.rounds))
                    timed.append(
                        _time(
                            lambda h=head: predict_heads(segmenter, {"h": h}, images), args.rounds
                        )
                    )
                bare_ms, head_ms = 1000 * statistics.median(bare), 1000 * statistics.median(timed)
                print(f"| {name} | {head_ms:.1f} | {bare_ms:.1f} | {head_ms / bare_ms:.2f} |")


if __name__ == "__main__":
    main()
