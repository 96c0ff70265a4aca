"""Scoring protocols of ``fsbench score``, and the conventions that make published numbers differ.

Three protocols turn the same score maps into numbers (``docs/scoring.md`` compares them):

* ``fishyscapes``: :class:`~fsbench.metrics.anomaly.AnomalyMetrics`, the code path of
  ``evaluate.py`` (pooled, float32, void dropped, FPR95 at the first TPR >= 0.95).
* ``smiyc``: :class:`SmiycPixelCurve` (the SegmentMeIfYouCan toolkit's binned pixel curve) and
  :class:`~fsbench.metrics.components.ComponentMetrics` at the toolkit's threshold.
* ``per_image``: :class:`PerImageMetrics`, the exact metrics of each frame and their spread.

:func:`fpr_at_tpr_rules` and :func:`trapezoid_aupr` compute the conventions found in papers and
peer code from one pooled curve, so ``fsbench score --explain`` can show which one a published
number matches (BENCHMARKS.md §1-2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsbench.metrics.anomaly import anomaly_metrics, ranking_metrics

__all__ = [
    "DEFAULT_SMIYC_COMMIT",
    "FPR_RULES",
    "PROTOCOLS",
    "PerImageMetrics",
    "SMIYC_COMMITS",
    "SmiycPixelCurve",
    "fpr_at_tpr_rules",
    "trapezoid_aupr",
]

#: Protocol name -> one line saying what it computes (printed in every result file).
PROTOCOLS: dict[str, str] = {
    "fishyscapes": (
        "Fishyscapes pixel metrics: pooled over all valid pixels of all frames, void (255) "
        "dropped, anomaly-free frames kept, scores cast to float32, ties exact, AP as in "
        "scikit-learn (step sum), FPR at the first threshold with TPR >= 0.95"
    ),
    "smiyc": (
        "SegmentMeIfYouCan toolkit: float16 scores, per-frame histograms on quantile edges "
        "(384 of the anomaly + 384 of the inlier scores), merged, as at toolkit commit {commit}; "
        "component metrics (sIoU_gt, PPV, mean F1) at the toolkit's best-F1 threshold"
    ),
    "per_image": (
        "per-frame exact AP / FPR95 / AUROC (float32, void dropped), then their mean and "
        "distribution over the frames that hold both classes"
    ),
}

#: FPR95 rule -> (what it does, where it is used). Rules are evaluated on one pooled curve.
FPR_RULES: dict[str, tuple[str, str]] = {
    "first_tpr_geq": (
        "FPR at the first threshold (highest score down) whose TPR >= 0.95",
        "Fishyscapes eval.py (official), fsbench; np.where(tpr >= 0.95)[0][0] on roc_curve",
    ),
    "first_tpr_gt": (
        "FPR at the first threshold whose TPR > 0.95 (strict)",
        "peer code (BENCHMARKS.md §1); differs when a threshold hits TPR = 0.95 exactly",
    ),
    "interpolated": (
        "numpy.interp(0.95, TPR, FPR) along the ROC points",
        "the ood-metrics package (tayden/ood-metrics, fpr_at_95_tpr)",
    ),
    "closest": (
        "FPR at the threshold whose TPR is closest to 0.95 (may lie below 0.95)",
        "np.argmin(np.abs(tpr - 0.95)) in many peer repositories",
    ),
    "binned": (
        "first TPR >= 0.95 on the SegmentMeIfYouCan binned curve of float16 scores",
        "the SegmentMeIfYouCan toolkit (pixel_classification_curves.py, curves_from_cmats)",
    ),
}


def _rates_numpy(tps: Tensor | np.ndarray, fps: Tensor | np.ndarray) -> tuple[np.ndarray, ...]:
    """TPR, FPR, precision (float64 [T]) from cumulative counts, highest threshold first."""
    tps = np.asarray(tps.cpu() if isinstance(tps, Tensor) else tps, dtype=np.float64)
    fps = np.asarray(fps.cpu() if isinstance(fps, Tensor) else fps, dtype=np.float64)
    if tps.size == 0 or tps[-1] == 0 or fps[-1] == 0:
        raise ValueError("the curve needs both anomaly and inlier pixels")
    return tps / tps[-1], fps / fps[-1], tps / (tps + fps)


def fpr_at_tpr_rules(
    tps: Tensor | np.ndarray, fps: Tensor | np.ndarray, level: float = 0.95
) -> dict[str, float]:
    """FPR at TPR ``level`` under the four rules that read an exact curve (see ``FPR_RULES``).

    Args:
        tps, fps: int [T], the anomaly / inlier pixels scoring at or above each of T distinct
            thresholds, highest threshold first (as :func:`ranking_metrics` takes them).
        level: the TPR level, 0.95 for FPR95.

    Returns:
        ``{"first_tpr_geq", "first_tpr_gt", "interpolated", "closest"}`` as floats in [0, 1].
        ``first_tpr_geq`` is :func:`ranking_metrics`' ``fpr95``: the same code path.
        ``interpolated`` uses the ROC points with (0, 0) prepended, as ``roc_curve`` returns
        them, and ``numpy.interp``: where TPR equals ``level`` on several points it takes the
        last of them, as ood-metrics does. ``closest`` takes the first of equally close points.
    """
    tpr, fpr, _ = _rates_numpy(tps, fps)
    counts = (torch.as_tensor(np.asarray(tps)), torch.as_tensor(np.asarray(fps)))
    strict = int(np.searchsorted(tpr, level, side="right"))
    zero = np.zeros(1)
    return {
        "first_tpr_geq": ranking_metrics(*counts, fpr_at_tpr=level)["fpr95"],
        "first_tpr_gt": float(fpr[strict]) if strict < tpr.size else 1.0,
        "interpolated": float(np.interp(level, np.concatenate([zero, tpr]), np.r_[zero, fpr])),
        "closest": float(fpr[int(np.argmin(np.abs(tpr - level)))]),
    }


def trapezoid_aupr(tps: Tensor | np.ndarray, fps: Tensor | np.ndarray) -> float:
    """Trapezoid area under the PR points: ``sklearn.metrics.auc(recall, precision)``.

    The points are those of ``precision_recall_curve``: (recall 0, precision 1), then one point
    per threshold. A constant scorer gets (1 + prevalence) / 2 instead of the prevalence; AP
    (:func:`ranking_metrics`) is the step sum on the same points.
    """
    tpr, _, precision = _rates_numpy(tps, fps)
    return float(np.trapezoid(np.r_[1.0, precision], np.r_[0.0, tpr]))


#: Toolkit commit -> what ``SmiycPixelCurve`` reproduces of it (``fsbench score --smiyc-commit``).
SMIYC_COMMITS: dict[str, str] = {
    "1c7804e": (
        "SegmentMeIfYouCan/road-anomaly-benchmark @1c7804e (Aug 2023, the reference): edges "
        "[vmin - eps, vmax + eps] + quantiles, runs of equal thresholds collapsed, step AP, "
        "best-F1 threshold on the collapsed curve"
    ),
    "05552386": (
        "SegmentMeIfYouCan/road-anomaly-benchmark @05552386 (Oct 2022, the 2021 leaderboard's "
        "formula): edges [0, 1] + quantiles (scores outside [0, 1] uncounted), no-prediction "
        "prefix removed, trapezoid AP"
    ),
}
DEFAULT_SMIYC_COMMIT = "1c7804e"


class SmiycPixelCurve:
    """The SegmentMeIfYouCan toolkit's binned pixel curve, one frame at a time.

    An independent re-implementation (no code taken) of ``SegmentMeIfYouCan/road-anomaly-
    benchmark`` @1c7804e, ``road_anomaly_benchmark/metrics/``, checked against the toolkit's
    own output (``tests/golden/make_smiyc_golden.py``; the toolkit's pinned numpy 1.23.3):

    * ``pixel_classification.py``, ``binary_confusion_matrix`` (config ``PixBinaryClass``:
      768 bins, ``percentiles``): on the valid pixels (label < 255) of a frame, with
      ``vmin, vmax`` their float16 extremes and ``eps = max(0.01 (vmax - vmin), 0.01)``
      (``vmax - vmin`` rounded to float16, the rest in float64 as numpy 1.23 promotes it), the
      edges are ``unique([vmin - eps, vmax + eps] + quantile(anomaly scores, linspace(0, 1,
      min(384, n_anomaly))) + quantile(inlier scores, linspace(0, 1, min(384, n_inlier))))``;
      each class is counted with ``numpy.histogram`` on these edges, reversed to run from high
      to low. ``aggregate_dynamic_bins``: every frame's thresholds (its reversed edges without
      the first) and counts are concatenated, ordered by ``numpy.argsort(thresholds)[::-1]``
      and summed.
    * ``pixel_classification_curves.py``, ``curves_from_cmats``: the points at index 0 and at
      the last index of every run of equal thresholds are kept, *thresholds included*; a point
      (0, 0) with threshold ``max + 1`` is prepended when missing, the totals with threshold
      ``max - 1`` appended when missing; precision is 1 where nothing is predicted;
      AP = sum(diff(recall) * precision[1:]) (step), AUROC = trapz(TPR, FPR), FPR95 = FPR at
      ``searchsorted(TPR, 0.95)`` (1.0 if never reached), and the best-F1 threshold is
      ``thresholds[nanargmax(F1)]`` on that same collapsed, padded list.
    * ``instance_segmentation.py``, ``MetricSegment``: the component threshold is that
      best-F1 threshold, read back from the curve's HDF5 file as a numpy float64 and compared
      with float16 scores, ``anomaly_p > thresh_p``, which numpy 1.23 evaluates in float16
      (:meth:`component_threshold` rounds accordingly).

    ``commit="05552386"`` reproduces the toolkit of Oct 2022 instead (the formula of the 2021
    leaderboard), also checked against its own output: edges ``[0, 1]`` + the same quantiles
    (scores outside [0, 1] fall outside every bin and are never counted as predicted), no
    collapsing or padding, the prefix without predictions removed, precision tp / (tp + fp),
    AP = trapz(precision, recall). Commit 6bc8f37 (Aug 5, 2023), whose best-F1 threshold
    indexes the uncollapsed list with the collapsed curve's argmax, is not offered: 1c7804e
    fixed exactly that.

    Tie order. Frames often share a threshold (quantized scores, common extremes). The toolkit
    orders equal thresholds by ``numpy.argsort``, which is not stable, over frames its worker
    pool returns in any order (``imap_unordered``), so where such an order matters its result
    is not defined: at 1c7804e only the kept point at index 0 (the first of the highest run of
    equal thresholds) depends on it; at 05552386 every point does. fsbench keeps equal
    thresholds in the order the frames were added; the golden test checks that the result is
    one of the toolkit's own results over the frame orders, and equals its only result where
    the order does not matter.

    The official pipeline stores scores as float16 (``Evaluation.save_output``), so
    :meth:`update` casts to float16 first. Memory: at most 3 x 769 numbers per frame.
    """

    def __init__(self, num_bins: int = 768, commit: str = DEFAULT_SMIYC_COMMIT) -> None:
        if num_bins < 4:
            raise ValueError(f"num_bins must be >= 4, got {num_bins}")
        if commit not in SMIYC_COMMITS:
            raise ValueError(
                f"unknown SegmentMeIfYouCan toolkit commit {commit!r}; choose one of "
                f"{sorted(SMIYC_COMMITS)} (default {DEFAULT_SMIYC_COMMIT}, the reference)"
            )
        self.num_bins = num_bins
        self.commit = commit
        self._thresholds: list[np.ndarray] = []
        self._tp: list[np.ndarray] = []
        self._fp: list[np.ndarray] = []
        self.n_anomaly = 0
        self.n_inlier = 0
        self.frames_without_valid_pixels = 0

    def _outer_edges(self, values: np.ndarray) -> list[float]:
        if self.commit == "05552386":
            return [0.0, 1.0]
        vmin, vmax = values.min(), values.max()  # float16
        eps = max(float(vmax - vmin) * 1e-2, 1e-2)  # float16 difference, then float64
        return [float(vmin) - eps, float(vmax) + eps]

    def update(self, score: np.ndarray, label: np.ndarray) -> None:
        """Add one frame: ``score`` real [H, W] (cast to float16), ``label`` uint8 [H, W]."""
        score16 = np.asarray(score).astype(np.float16)
        valid = np.asarray(label) < 255
        positive = np.asarray(label)[valid].astype(bool)
        values = score16[valid]
        if not np.isfinite(values).all():
            raise ValueError(
                f"{int((~np.isfinite(values)).sum())} valid pixels are not finite in float16 "
                "(NaN, inf, or beyond +-65504); the smiyc protocol stores float16 as the "
                "toolkit does: rescale the scores, e.g. to probabilities in [0, 1]"
            )
        if values.size == 0:  # the toolkit fails on such a frame; it adds nothing to the curve
            self.frames_without_valid_pixels += 1
            return
        at_true, at_false = values[positive], values[~positive]
        half = self.num_bins // 2
        edges: list[Any] = [np.array(self._outer_edges(values))]
        for part in (at_true, at_false):
            if part.size:
                edges.append(np.quantile(part, np.linspace(0, 1, min(half, part.size))))
        bins = np.unique(np.concatenate(edges))
        tp_rel = np.histogram(at_true, bins=bins)[0][::-1]
        fp_rel = np.histogram(at_false, bins=bins)[0][::-1]
        self._thresholds.append(bins[::-1][1:])
        self._tp.append(tp_rel)
        self._fp.append(fp_rel)
        self.n_anomaly += int(at_true.size)
        self.n_inlier += int(at_false.size)

    def _sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.n_anomaly == 0 or self.n_inlier == 0:
            raise ValueError(
                f"the smiyc pixel metrics need both classes; the valid pixels hold "
                f"{self.n_anomaly} anomaly and {self.n_inlier} inlier pixels"
            )
        thresholds = np.concatenate(self._thresholds)
        # Highest first; equal thresholds of different frames in the order the frames came
        # (the toolkit's ``argsort(...)[::-1]`` is not stable, and its worker pool returns frames
        # in any order, so its tie order is not defined: see the class docstring).
        order = np.argsort(-thresholds, kind="stable")
        tp = np.cumsum(np.concatenate(self._tp)[order].astype(np.float64))
        fp = np.cumsum(np.concatenate(self._fp)[order].astype(np.float64))
        return thresholds[order], tp, fp

    def _points(self) -> tuple[np.ndarray, ...]:
        """tp, fp, precision, thresholds (float64 [P]) of ``curves_from_cmats`` at the commit."""
        thresholds, tp, fp = self._sorted()
        pos, neg = float(self.n_anomaly), float(self.n_inlier)
        if self.commit == "1c7804e":
            keep = np.concatenate(
                [[0], np.nonzero(thresholds[:-1] != thresholds[1:])[0], [tp.size - 1]]
            )
            tp, fp, thresholds = tp[keep], fp[keep], thresholds[keep].astype(np.float64)
            if tp[0] != 0 or fp[0] != 0:
                tp, fp = np.r_[0.0, tp], np.r_[0.0, fp]
                thresholds = np.r_[float(thresholds.max()) + 1, thresholds]
            if tp[-1] != pos or fp[-1] != neg:
                tp, fp = np.r_[tp, pos], np.r_[fp, neg]
                thresholds = np.r_[thresholds, float(thresholds.max()) - 1]
            predicted = tp + fp
            precision = np.ones(tp.size)
            precision[predicted > 0] = tp[predicted > 0] / predicted[predicted > 0]
        else:
            predicting = np.nonzero(tp + fp > 0.01)[0]
            start = int(predicting[0]) if predicting.size else 0
            tp, fp, thresholds = tp[start:], fp[start:], thresholds[start:].astype(np.float64)
            precision = tp / (tp + fp)
        return tp, fp, precision, thresholds

    def curve(self) -> dict[str, np.ndarray]:
        """The toolkit's curve: ``{"tpr", "fpr", "precision", "thresholds"}``, float64 [P].

        The points are those of ``curves_from_cmats`` at :attr:`commit` (recall = TPR).
        """
        tp, fp, precision, thresholds = self._points()
        return {
            "tpr": tp / float(self.n_anomaly),
            "fpr": fp / float(self.n_inlier),
            "precision": precision,
            "thresholds": thresholds,
        }

    def compute(self) -> dict[str, Any]:
        """``{"ap", "auroc", "fpr95", "best_f1", "best_f1_threshold", "n_anomaly", "n_inlier",
        "commit"}``, as the toolkit at :attr:`commit` computes them."""
        tp, fp, precision, thresholds = self._points()
        pos, neg = float(self.n_anomaly), float(self.n_inlier)
        tpr, fpr = tp / pos, fp / neg
        f1 = 2 * tp / (2 * tp + fp + (pos - tp))
        at95 = int(np.searchsorted(tpr, 0.95))
        best = int(np.nanargmax(f1))
        if self.commit == "1c7804e":
            ap = float(np.sum(np.diff(tpr) * precision[1:]))
        else:
            ap = float(np.trapezoid(precision, tpr))
        return {
            "ap": ap,
            "auroc": float(np.trapezoid(tpr, fpr)),
            "fpr95": float(fpr[at95]) if at95 < tpr.size else 1.0,
            "best_f1": float(f1[best]),
            "best_f1_threshold": float(thresholds[best]),
            "n_anomaly": self.n_anomaly,
            "n_inlier": self.n_inlier,
            "commit": self.commit,
        }

    @staticmethod
    def component_threshold(threshold: float) -> float:
        """The threshold as ``float16_scores > threshold`` applies it: rounded to float16."""
        return float(np.float16(threshold))


class PerImageMetrics:
    """Exact AP, FPR95 and AUROC of every frame (:func:`anomaly_metrics`), and their spread.

    Frames without an anomaly pixel or without an inlier pixel have no per-image metrics; they
    are counted and named, never averaged in as 0 or 1. Memory: a few numbers per frame.
    """

    def __init__(self, ignore_index: int = 255, fpr_at_tpr: float = 0.95) -> None:
        self.ignore_index = ignore_index
        self.fpr_at_tpr = fpr_at_tpr
        self.frames: list[dict[str, Any]] = []
        self.skipped: list[str] = []

    def update(self, name: str, score: Tensor | np.ndarray, label: Tensor | np.ndarray) -> None:
        """Add one frame: ``score`` real [H, W], ``label`` integer [H, W] (0 / 1 / void)."""
        score, label = torch.as_tensor(score), torch.as_tensor(label)
        valid = label != self.ignore_index
        targets = label[valid] == 1
        n_anomaly = int(targets.sum())
        if n_anomaly == 0 or n_anomaly == targets.numel():
            self.skipped.append(name)
            return
        values = anomaly_metrics(score[valid], targets, self.fpr_at_tpr)
        values["anomaly_fraction"] = n_anomaly / targets.numel()
        self.frames.append({"name": name, **values})

    def compute(self, worst: int = 10) -> dict[str, Any]:
        """Means, quantiles (0, 10, 25, 50, 75, 90, 100 %) and the ``worst`` frames by AP."""
        if not self.frames:
            raise ValueError(
                f"no frame holds both anomaly and inlier pixels ({len(self.skipped)} frames "
                "seen), so no per-image metric is defined"
            )
        result: dict[str, Any] = {"n_frames": len(self.frames), "skipped": list(self.skipped)}
        levels = [0, 10, 25, 50, 75, 90, 100]
        for key in ("ap", "fpr95", "auroc"):
            values = np.array([frame[key] for frame in self.frames])
            result[key] = float(values.mean())
            result[f"{key}_quantiles"] = {
                str(q): float(v) for q, v in zip(levels, np.percentile(values, levels), strict=True)
            }
        ranked = sorted(self.frames, key=lambda frame: (frame["ap"], frame["name"]))
        result["worst"] = [
            {k: v for k, v in frame.items() if k not in ("n_anomaly", "n_inlier")}
            for frame in ranked[:worst]
        ]
        return result
