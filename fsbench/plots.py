"""Evaluation figures: PR and ROC curves per dataset (a curve per head), worst and best images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Colours of the 19 Cityscapes train ids, as in cityscapesScripts helpers/labels.py
# (github.com/mcordts/cityscapesScripts); index 19 is the colour of ignore (255).
CITYSCAPES_COLOURS = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 0),
    ],
    dtype=np.uint8,
)  # fmt: skip


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


def colour_segmentation(segmentation: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB of train ids int [H, W] in the Cityscapes colours (others black)."""
    ids = np.where((segmentation >= 0) & (segmentation < 19), segmentation, 19)
    return CITYSCAPES_COLOURS[ids]


def colour_anomaly_mask(anomaly: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: anomaly (1) white, inlier (0) black, void (255) grey."""
    rgb = np.zeros((*anomaly.shape, 3), dtype=np.uint8)
    rgb[anomaly == 1] = 255
    rgb[anomaly == 255] = 128
    return rgb


def plot_worst_best(
    worst: list[dict[str, Any]], best: list[dict[str, Any]], path: str | Path, title: str
) -> Path:
    """One row per image, worst rows first: image | ground-truth anomaly | score | segmentation.

    Each frame is ``{name, ap, image: float [H, W, 3] in [0, 1], anomaly: uint8 [H', W'],
    score: float [H', W'], segmentation: int [H', W']}`` (see ``fsbench.examples.score_frames``).
    Each score map is drawn on its own colour scale (its min to max over non-void pixels), since
    only the order of scores matters to AP.
    """
    frames = [("worst", frame) for frame in worst] + [("best", frame) for frame in best]
    if not frames:
        raise ValueError("no image to draw: pass at least one worst or best frame")
    height, width = frames[0][1]["anomaly"].shape
    row_height = 2.6 * height / width + 0.45
    figure, axes = plt.subplots(
        len(frames), 4, figsize=(13, row_height * len(frames) + 0.6), squeeze=False
    )
    columns = ("image", "ground truth (white: anomaly)", "anomaly score", "segmentation")
    for row, (side, frame) in enumerate(frames):
        valid = frame["anomaly"] != 255
        score = np.asarray(frame["score"], dtype=np.float64)
        low, high = (score[valid].min(), score[valid].max()) if valid.any() else (0.0, 1.0)
        panels = (
            frame["image"],
            colour_anomaly_mask(frame["anomaly"]),
            np.ma.masked_where(~valid, score),
            colour_segmentation(frame["segmentation"]),
        )
        for column, panel in enumerate(panels):
            axes_ = axes[row, column]
            if column == 2:
                shown = axes_.imshow(panel, cmap="inferno", vmin=low, vmax=high)
                figure.colorbar(shown, ax=axes_, fraction=0.035, pad=0.02)
            else:
                axes_.imshow(panel, interpolation="nearest")
            axes_.set_xticks([])
            axes_.set_yticks([])
            if row == 0:
                axes_.set_title(columns[column], fontsize=9)
        axes[row, 0].set_ylabel(f"{side}: AP {100 * frame['ap']:.1f}", fontsize=9)
        axes[row, 0].set_xlabel(str(frame["name"]), fontsize=7)
    figure.suptitle(f"{title}: the {len(worst)} worst and {len(best)} best images by AP")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path.with_name(_safe(path.name)), dpi=90)
    plt.close(figure)
    return path.with_name(_safe(path.name))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
