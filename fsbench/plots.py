"""Figures of an evaluation: PR and ROC curves per dataset (one curve per head)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(
    curves: dict[str, dict[str, dict[str, list[float]]]],
    results: dict[str, dict[str, Any]],
    directory: str | Path,
) -> list[Path]:
    """Write ``curves_<dataset>.png`` per anomaly dataset; return the paths.

    Each figure has the precision-recall curve (AP in the legend) and the ROC curve (AUROC and
    FPR95 in the legend), one line per head. ``curves`` is ``{head: {dataset: {tpr, fpr,
    precision, threshold}}}`` as in curves.json, ``results`` the ``results`` of results.json.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    datasets: list[str] = []
    for per_dataset in curves.values():
        datasets += [name for name in per_dataset if name not in datasets]
    written = []
    for dataset in datasets:
        figure, (pr, roc) = plt.subplots(1, 2, figsize=(11, 4.5))
        fraction = None
        for head, per_dataset in curves.items():
            curve = per_dataset.get(dataset)
            if curve is None:
                continue
            values = results.get(head, {}).get("datasets", {}).get(dataset, {})
            fraction = values.get("anomaly_fraction", fraction)
            ap, auroc, fpr95 = (100 * values.get(k, float("nan")) for k in ("ap", "auroc", "fpr95"))
            pr.step(curve["tpr"], curve["precision"], where="post", label=f"{head} (AP {ap:.1f})")
            roc.plot(
                curve["fpr"], curve["tpr"], label=f"{head} (AUROC {auroc:.1f}, FPR95 {fpr95:.1f})"
            )
        if fraction is not None:
            pr.axhline(
                fraction, color="grey", linestyle=":", label=f"random ({100 * fraction:.2f})"
            )
        roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
        roc.axhline(0.95, color="grey", linewidth=0.5)
        pr.set(xlabel="recall (TPR)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        roc.set(
            xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02)
        )
        pr.set_title(f"{dataset}: precision-recall")
        roc.set_title(f"{dataset}: ROC")
        for axes in (pr, roc):
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8, loc="best")
        figure.tight_layout()
        path = directory / f"curves_{_safe(dataset)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plot_leaderboard(rows: list[dict[str, Any]], path: str | Path, top: int = 30) -> Path:
    """Horizontal bars of AP (and FPR95) for the best ``top`` rows of a leaderboard."""
    rows = rows[:top]
    labels = [row["label"] for row in rows][::-1]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 0.35 * len(rows) + 1.5), sharey=True)
    left.barh(labels, [100 * row["ap"] for row in rows][::-1], color="tab:blue")
    right.barh(labels, [100 * row["fpr95"] for row in rows][::-1], color="tab:red")
    left.set(xlabel="AP (%) ↑", xlim=(0, 100))
    right.set(xlabel="FPR95 (%) ↓", xlim=(0, 100))
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
