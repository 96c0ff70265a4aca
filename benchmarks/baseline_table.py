"""Every baseline on the synthetic benchmark with one command: the table of baselines/README.md.

    python benchmarks/baseline_table.py [--jobs 2] [--out outputs/baselines] [--args KEY=VALUE ...]

Trains five segmenters with ``train.py`` (each DeepLabv3+ ResNet-18, 600 steps of
4 of 1000 synthetic 128x256 scenes):

* seeds 0, 1, 2 without a training-time method: seed 0 is the segmenter every post-hoc head is
  evaluated on; seeds 1 and 2 are the other members of the deep ensemble;
* seed 0 with the void classifier, and seed 0 with outlier exposure (polygon outliers pasted into
  half of the training images; ``conf/experiment/synthetic/``).

Then evaluates with ``evaluate.py``: all post-hoc heads on the seed-0 segmenter (the fitted heads
fit on the first ``--fit-scenes`` training scenes), the void classifier and outlier exposure each
on its own segmenter. Every step writes into ``--out`` (its output in ``log.txt``); a step whose
results exist is skipped, so an interrupted run continues where it stopped. ``--args`` are extra
overrides given to every step (e.g. ``trainer.max_steps=50 data.shared.height=64`` for a quick
look), ``--post-hoc-args`` overrides for the post-hoc evaluation only (e.g.
``head.flow.steps=100``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Published numbers (test sets) from ../shared facts: Fishyscapes AP / FPR95 in % on Lost & Found
# and Static (Blum et al., IJCV 2021, re-reported in Table 1 of Jung et al., ICCV 2021; SML from
# Jung et al.), and SegmentMeIfYouCan RoadAnomaly21 AUPRC / FPR95 (Chan et al., NeurIPS 2021
# Datasets track, final leaderboard). None = the method has no published row there.
PUBLISHED = {
    "max_softmax": ("softmax max-prob", (1.77, 44.85), (12.88, 39.83), (27.97, 72.05)),
    "entropy": ("softmax entropy", (2.93, 44.83), (15.41, 39.75), None),
    "max_logit": ("max logit", None, None, None),
    "energy": ("energy", None, None, None),
    "sml": ("standardized max logit", (31.05, 21.52), (53.11, 19.64), None),
    "mc_dropout": ("Bayesian DeepLab (MC dropout)", (9.81, 38.46), (48.70, 15.50), (28.87, 69.47)),
    "mc_dropout_mi": ("MC dropout, mutual information", None, None, None),
    "ensemble": ("deep ensemble", None, None, (17.66, 91.06)),
    "gaussian": ("Mahalanobis (class Gaussians)", None, None, (20.04, 86.99)),
    "knn": ("kNN embedding density", (3.55, 30.02), (44.03, 20.25), None),
    "flow": ("embedding density (flow NLL)", (3.01, 32.90), (40.86, 21.29), (37.52, 70.76)),
    "void_classifier": ("void classifier", (10.29, 22.11), (45.00, 19.40), (36.61, 63.49)),
    "outlier_exposure": ("outlier exposure (max. entropy)", None, None, (85.47, 15.00)),
}
POST_HOC = [
    "max_softmax",
    "entropy",
    "max_logit",
    "energy",
    "sml",
    "mc_dropout",
    "ensemble",
    "gaussian",
    "knn",
    "flow",
]


def run_step(
    script: str, run_dir: Path, overrides: list[str], marker: str, threads: int | None = None
) -> float:
    """Run ``script`` unless ``run_dir/marker`` exists; return its seconds (0 when skipped)."""
    if (run_dir / marker).is_file():
        print(f"[skip] {run_dir} (done)")
        return 0.0
    command = [sys.executable, str(ROOT / script), f"hydra.run.dir={run_dir}", *overrides]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    print("[run]", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "log.txt", "w") as log:
        subprocess.run(command, cwd=ROOT, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"[done] {run_dir} in {time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


def _cell(pair: tuple[float, float] | None) -> str:
    return "–" if pair is None else f"{pair[0]:.2f} / {pair[1]:.2f}"


def table(results: dict[str, dict], dataset: str = "synthetic_anomaly") -> str:
    """Markdown: published AP / FPR95 beside ours (AP / FPR95 / AUROC in %, mIoU in %)."""
    lines = [
        "| head | method | FS L&F AP / FPR95 | FS Static AP / FPR95 | SMIYC RA21 AP / FPR95 "
        "| **synthetic AP / FPR95** | synthetic AUROC | inlier mIoU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for head, entry in results.items():
        name, lost_found, static, smiyc = PUBLISHED.get(head, (head, None, None, None))
        values = entry["datasets"][dataset]
        ours = f"**{100 * values['ap']:.2f} / {100 * values['fpr95']:.2f}**"
        miou = f"{100 * entry['miou']:.2f}" if "miou" in entry else "–"
        lines.append(
            f"| {head} | {name} | {_cell(lost_found)} | {_cell(static)} | {_cell(smiyc)} "
            f"| {ours} | {100 * values['auroc']:.2f} | {miou} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "baselines")
    parser.add_argument("--fit-scenes", type=int, default=1000)
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trainings run side by side, each on cores/jobs threads (2 on 2 cores: ~1.2x faster)",
    )
    parser.add_argument("--args", nargs="*", default=[], help="overrides for every step")
    parser.add_argument(
        "--post-hoc-args", nargs="*", default=[], help="overrides for the post-hoc evaluation"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    extra = list(args.args)
    seconds: dict[str, float] = {}

    def ckpt(name: str) -> Path:
        return out / name / "checkpoints" / "last.ckpt"

    budget = ["trainer.max_steps=600", "data.train.length=1000"]  # the table's training budget
    trainings = {
        "train_seed0": ["seed=0"],
        "train_seed1": ["seed=1"],
        "train_seed2": ["seed=2"],
        "train_void_classifier": ["seed=0", "+experiment=synthetic/void_classifier"],
        "train_outlier_exposure": ["seed=0", "+experiment=synthetic/outlier_exposure"],
    }
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            name: pool.submit(
                run_step,
                "train.py",
                out / name,
                [*overrides, *budget, *extra],
                "checkpoints/last.ckpt",
                threads,
            )
            for name, overrides in trainings.items()
        }
        seconds.update({name: future.result() for name, future in futures.items()})

    evaluations = {
        "eval_post_hoc": [
            f"checkpoint={ckpt('train_seed0')}",
            f"head=[{','.join(POST_HOC)}]",
            "+head@head.mc_dropout_mi=mc_dropout",
            "head.mc_dropout_mi.score=mutual_information",
            f"head.ensemble.checkpoints=[{ckpt('train_seed1')},{ckpt('train_seed2')}]",
            f"data.train.length={args.fit_scenes}",
        ],
        "eval_void_classifier": [
            f"checkpoint={ckpt('train_void_classifier')}",
            "head=[void_classifier]",
        ],
        "eval_outlier_exposure": [
            f"checkpoint={ckpt('train_outlier_exposure')}",
            "head=[outlier_exposure]",
        ],
    }
    results: dict[str, dict] = {}
    for name, overrides in evaluations.items():
        overrides = [*overrides, *extra, *(args.post_hoc_args if name == "eval_post_hoc" else [])]
        seconds[name] = run_step("evaluate.py", out / name, overrides, "results.json")
        payload = json.loads((out / name / "results.json").read_text())
        results.update(payload["results"])

    order = [*POST_HOC[:6], "mc_dropout_mi", *POST_HOC[6:], "void_classifier", "outlier_exposure"]
    results = {head: results[head] for head in order if head in results}
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    (out / "seconds.json").write_text(json.dumps(seconds, indent=2))
    print(text)
    print("seconds per step (0 = skipped, done before):", json.dumps(seconds))
    print(f"table: {out / 'table.md'}")


if __name__ == "__main__":
    main()
