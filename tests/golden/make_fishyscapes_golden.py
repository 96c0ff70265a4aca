"""Golden values of the Fishyscapes pixel metrics, from the benchmark's own code (run by hand).

The reference is ``calculate_metrics_perpixAP`` of ``hermannsblum/fishyscapes`` ``eval.py``
@d78502b (BENCHMARKS.md §1), the function the benchmark's grader runs. Nothing of it is copied
into fsbench: this script reads ``eval.py`` from a fetched snapshot of the repository, executes
it as its own module and calls the function on seeded frames, once pooled over each case's
frames (the benchmark's numbers) and once per frame (the ``per_image`` protocol's definition:
the same function on one frame's pixels).

The cases: continuous scores with 10 % anomaly and a void band, an anomaly-free frame among
them; scores quantized to a few levels (ties across the classes); negative energies over sixty
orders of magnitude with both zeros; scores that are exactly equal on whole regions. The inputs
are written beside the outputs, so the tests never depend on a random generator.

``eval.py`` uses ``np.trapz`` (gone in numpy 2.4), so it runs in an environment of its time::

    M=/work/.mirror/hermannsblum+fishyscapes/repo     # `fetch` of the repository
    python3.11 -m venv /tmp/fs-venv && /tmp/fs-venv/bin/pip install numpy==1.26.4 pillow
    /tmp/fs-venv/bin/python tests/golden/make_fishyscapes_golden.py --repo $M

Outputs (in this folder): ``fishyscapes_inputs.npz`` (the frames) and
``fishyscapes_d78502b.json`` (pooled and per-frame AP, AUROC, FPR@95%TPR of every case).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mirrors import git, git_dir  # noqa: E402

COMMIT = "d78502b"
SHAPE = (40, 64)


def build_cases(rng: np.random.Generator) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """name -> [(score float32 [H, W], label uint8 [H, W] of 0 / 1 / 255)] (seeded)."""
    cases: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def labels(count: int, free: int | None = None) -> list[np.ndarray]:
        out = []
        for index in range(count):
            label = (rng.random(SHAPE) < 0.1).astype(np.uint8)
            label[:4] = 255  # a void band
            label[rng.random(SHAPE) < 0.03] = 255
            if index == free:
                label[label == 1] = 0  # anomaly-free frame, kept by the benchmark
            out.append(label)
        return out

    frames = []
    for label in labels(4, free=2):
        score = rng.normal(size=SHAPE) + 1.3 * (label == 1)
        frames.append((score.astype(np.float32), label))
    cases["continuous"] = frames

    frames = []
    for label in labels(3):
        score = np.round(rng.normal(size=SHAPE) + 0.8 * (label == 1)) / 4  # 8-10 levels
        frames.append((score.astype(np.float32), label))
    cases["quantized_ties"] = frames

    frames = []
    for label in labels(3):
        exponent = rng.uniform(-30, 30, SHAPE) + 3 * (label == 1)
        score = -(10.0**-exponent)  # negative energies, 1e-30 .. 1e30
        score[rng.random(SHAPE) < 0.05] = rng.choice([0.0, -0.0], size=1)[0]
        score.flat[:7] = [0.0, -0.0, -0.0, 0.0, -1e-38, -3e38, -1.0]
        frames.append((score.astype(np.float32), label))
    cases["energies_and_zeros"] = frames

    frames = []
    for label in labels(3):
        score = np.full(SHAPE, 0.25, np.float32)
        score[10:25, 5:40] = 0.75  # whole regions with one value, holding both classes
        score[label == 1] += np.float32(0.5) * (rng.random(int((label == 1).sum())) < 0.5)
        frames.append((score.astype(np.float32), label))
    cases["equal_regions"] = frames
    return cases


def _metrics(function, labels: list[np.ndarray], scores: list[np.ndarray]) -> dict[str, float]:
    result = function(labels, scores)
    return {key: float(result[key]) for key in ("AP", "auroc", "FPR@95%TPR")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="snapshot of hermannsblum/fishyscapes")
    args = parser.parse_args()
    source = git(git_dir(args.repo), "show", f"{COMMIT}:eval.py").decode()
    module: dict = {"__name__": "fishyscapes_eval"}
    exec(compile(source, f"fishyscapes@{COMMIT}/eval.py", "exec"), module)
    official = module["calculate_metrics_perpixAP"]

    cases = build_cases(np.random.default_rng(20261202))
    arrays, golden = {}, {"commit": COMMIT, "numpy": np.__version__, "cases": {}}
    for name, frames in cases.items():
        labels, scores = [f[1] for f in frames], [f[0] for f in frames]
        per_frame = []
        for index, (score, label) in enumerate(frames):
            arrays[f"{name}/{index}/score"], arrays[f"{name}/{index}/label"] = score, label
            both = bool((label == 1).any() and (label == 0).any())
            per_frame.append(_metrics(official, [label], [score]) if both else None)
        golden["cases"][name] = {
            "frames": len(frames),
            "pooled": _metrics(official, labels, scores),
            "per_frame": per_frame,
        }
    np.savez_compressed(HERE / "fishyscapes_inputs.npz", **arrays)
    (HERE / f"fishyscapes_{COMMIT}.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps({name: case["pooled"] for name, case in golden["cases"].items()}, indent=1))


if __name__ == "__main__":
    main()
