"""Anomaly metrics at benchmark scale: fsbench vs scikit-learn vs torchmetrics, side by side.

    python benchmarks/metrics.py                 # 1e6, 1e7, 1e8 pixels (about 4 minutes, 2 cores)
    python benchmarks/metrics.py --sizes 1e6 1e7

Every measurement runs in a fresh child process, so its peak memory belongs to it alone: the
growth of the peak resident set size (reset once the data are in memory, on Linux) above the
memory that holds the data. The data are synthetic score
maps of 1024x2048 pixels ("images"), 1% anomaly pixels, 5% void, scores drawn from two
overlapping normal distributions. The reference values are fsbench's exact sort
(`anomaly_metrics`, tested against scikit-learn) and every row prints its distance to them.
A peer is skipped, with the reason, where its estimated time (from the previous size) exceeds
`--budget` seconds or its memory would not fit.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

IMAGE = 1024 * 2048
METHODS = ("reference", "fsbench", "sklearn", "torchmetrics_exact", "torchmetrics_binned")
BINNED_THRESHOLDS = 200


def _data(pixels: int, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(pixels, generator=generator) < 0.01).to(torch.uint8)
    target[torch.rand(pixels, generator=generator) < 0.05] = 255
    score = torch.randn(pixels, generator=generator) + 1.5 * (target == 1)
    return score, target


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak() -> float:
    """Reset the peak resident set size to the current one (Linux) and return it in MiB."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return _status_mib("VmRSS")
    except OSError:  # not Linux: fall back to the lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mib() -> float:
    try:
        return _status_mib("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method: str, pixels: int) -> dict:
    """Run one method on one size in this process; return time, peak memory growth, values."""
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score
    from torchmetrics.classification import BinaryAveragePrecision

    from fsbench.metrics import AnomalyMetrics, anomaly_metrics

    torch.set_num_threads(2)
    score, target = _data(pixels)
    valid = target != 255
    before = _reset_peak()
    started = time.perf_counter()
    values: dict = {}
    if method == "floor":
        for _ in range(3):
            score.sum()
        started = time.perf_counter()
        score.sum()
    elif method == "reference":
        values = anomaly_metrics(score[valid], target[valid] == 1)
    elif method == "fsbench":
        metric = AnomalyMetrics()
        update_started = time.perf_counter()
        for start in range(0, pixels, IMAGE):
            metric.update(score[start : start + IMAGE], target[start : start + IMAGE])
        values["update_s"] = time.perf_counter() - update_started
        values.update(metric.compute())
    elif method == "sklearn":
        s, y = score[valid].numpy(), (target[valid] == 1).numpy()
        values = {"ap": average_precision_score(y, s), "auroc": roc_auc_score(y, s)}
    elif method.startswith("torchmetrics"):
        thresholds = BINNED_THRESHOLDS if method.endswith("binned") else None
        metric = BinaryAveragePrecision(thresholds=thresholds, ignore_index=255)
        # Probabilities in [0, 1], so that torchmetrics does not apply its own sigmoid.
        probabilities = torch.sigmoid(score)
        for start in range(0, pixels, IMAGE):
            metric.update(probabilities[start : start + IMAGE], target[start : start + IMAGE])
        values = {"ap": float(metric.compute())}
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mib": _peak_mib() - before, **values}


def _child(method: str, pixels: int, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", method, str(pixels)]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"skipped": f"over {timeout:.0f} s"}
    except subprocess.CalledProcessError as error:
        return {"skipped": f"failed: {error.stderr.strip().splitlines()[-1]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _estimated_seconds(previous: dict | None, scale: float) -> float:
    if not previous or "seconds" not in previous:
        return 0.0
    return previous["seconds"] * scale


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per measurement")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    rows = []
    previous: dict[str, dict] = {}
    previous_size = None
    for size in args.sizes:
        pixels = int(size)
        scale = pixels / previous_size if previous_size else 1.0
        floor = _child("floor", pixels, args.budget)
        results = {}
        for method in METHODS:
            estimate = _estimated_seconds(previous.get(method), scale)
            if estimate > args.budget:
                results[method] = {"skipped": f"estimated {estimate:.0f} s > budget"}
                continue
            results[method] = _child(method, pixels, args.budget * 3)
        reference = results["reference"]
        for method in METHODS[1:]:
            result = results[method]
            row = {"pixels": pixels, "method": method, **result}
            if "ap" in result and "ap" in reference:
                row["ap_error"] = abs(result["ap"] - reference["ap"])
                if "auroc" in result:
                    row["auroc_error"] = abs(result["auroc"] - reference["auroc"])
                if "fpr95" in result:
                    row["fpr95_error"] = abs(result["fpr95"] - reference["fpr95"])
            rows.append(row)
        rows.append({"pixels": pixels, "method": "tensor.sum() (floor)", **floor})
        fsbench, sklearn = results["fsbench"], results["sklearn"]
        if "seconds" in fsbench and "seconds" in sklearn:
            speedup = sklearn["seconds"] / fsbench["seconds"]
            read_ratio = fsbench["update_s"] / floor["seconds"]
            print(
                f"{pixels:.0e} px: fsbench {speedup:.1f}x faster than scikit-learn; its updates "
                f"take {read_ratio:.0f}x the time of one tensor.sum() of the scores",
                flush=True,
            )
        previous, previous_size = results, pixels

    print()
    print("| pixels | method | time s | peak MiB | AP error | AUROC error | FPR95 error | note |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['pixels']:.0e} | {row['method']} | {_fmt(row.get('seconds'), '.3f')} | "
            f"{_fmt(row.get('peak_mib'), '.0f')} | {_fmt(row.get('ap_error'), '.1e')} | "
            f"{_fmt(row.get('auroc_error'), '.1e')} | {_fmt(row.get('fpr95_error'), '.1e')} | "
            f"{row.get('skipped', '')} |"
        )
    print(
        "\nfsbench state: 2 x 2**22 int64 bins = 64 MiB, independent of the number of pixels. "
        f"torchmetrics binned uses {BINNED_THRESHOLDS} thresholds on sigmoid(score)."
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
