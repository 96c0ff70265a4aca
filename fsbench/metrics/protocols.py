"""Scoring protocols of ``fsbench score``, and the conventions that make published numbers differ.

Three protocols turn the same score maps into numbers (``docs/scoring.md`` compares them):

* ``fishyscapes``: :class:`~fsbench.metrics.anomaly.AnomalyMetrics`, the code path of
  ``evaluate.py`` (pooled, float32, void dropped, FPR95 at the first TPR >= 0.95).
* ``smiyc``: :class:`SmiycPixelCurve` (the SegmentMeIfYouCan toolkit's binned pixel curve) and
  :class:`~fsbench.metrics.components.ComponentMetrics` at the toolkit's threshold.
* ``per_image``: :class:`~fsbench.metrics.per_image.PerImageMetrics`, the exact metrics of each
  frame and their spread.

:func:`fpr_at_tpr_rules` and :func:`trapezoid_aupr` compute the conventions found in papers and
peer code from one pooled curve, so ``fsbench score --explain`` can show which one a published
number matches (BENCHMARKS.md §1-2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsbench.metrics import native
from fsbench.metrics.anomaly import ranking_metrics
from fsbench.report import PROTOCOLS

__all__ = [
    "DEFAULT_SMIYC_COMMIT",
    "FPR_RULES",
    "PROTOCOLS",
    "SMIYC_COMMITS",
    "SmiycPixelCurve",
    "fpr_at_tpr_rules",
    "smiyc_frame_counts",
    "trapezoid_aupr",
]

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


def check_smiyc_options(num_bins: int, commit: str) -> None:
    if num_bins < 4:
        raise ValueError(f"num_bins must be >= 4, got {num_bins}")
    if commit not in SMIYC_COMMITS:
        raise ValueError(
            f"unknown SegmentMeIfYouCan toolkit commit {commit!r}; choose one of "
            f"{sorted(SMIYC_COMMITS)} (default {DEFAULT_SMIYC_COMMIT}, the reference)"
        )


# -- the toolkit's per-frame counts, from one count per float16 bit pattern -------------------
#
# A float16 score takes one of 65536 bit patterns, so a frame's valid pixels are summarised
# exactly by one count per pattern and class (two counting passes). The toolkit's quantiles
# (``numpy.quantile``, method "linear") and histograms (``numpy.histogram`` on the quantile
# edges) are then read from the cumulative counts with numpy's own arithmetic, instead of
# partitioning and sorting the pixels: the results are those of the installed numpy on the
# pixels, bit for bit (``tests/test_smiyc_fast.py``), except the sign of a zero (numpy's
# ``partition`` returns -0.0 or +0.0 for a run of zeros holding both, depending on where they
# lie in the frame; here it is always +0.0; -0.0 and +0.0 compare equal, so no count and no
# metric changes).

#: Bit patterns of the finite float16 values in increasing order of value, -0.0 left out
#: (counted as +0.0): -65504 (0xFBFF) ... -2**-24 (0x8001), +0.0 (0x0000) ... 65504 (0x7BFF).
_F16_ORDER = np.concatenate([np.arange(0xFBFF, 0x8000, -1), np.arange(0x0000, 0x7C00)])
#: The float16 values of ``_F16_ORDER`` (sorted, distinct).
_F16_VALUES = _F16_ORDER.astype(np.uint16).view(np.float16)
_F16_ZERO = int(np.flatnonzero(_F16_ORDER == 0)[0])  # where -0.0 is counted
_F16_NEGATIVE_ZERO = 0x8000


#: Elements per torch conversion call: below torch's parallel grain (32768), so each call runs on
#: the calling thread (on a busy machine torch's thread pool made one whole-frame call slower
#: than numpy).
_TORCH_CHUNK = 16384


def float16_scores(score: np.ndarray) -> np.ndarray:
    """``score.astype(numpy.float16)`` (float16 scores as they are); float32 through torch's
    vectorised conversion.

    Both round to nearest even: torch's conversion gives numpy's bits on every non-NaN float32
    pattern (checked on all 2**32; a NaN stays a NaN, which the caller rejects on valid pixels).
    numpy's own cast of float32 to float16 is not vectorised.
    """
    if score.dtype == np.float16:
        return score
    if not (
        score.dtype == np.float32  # native byte order
        and score.size > _TORCH_CHUNK
        and score.flags.c_contiguous
        and score.flags.writeable
    ):
        return score.astype(np.float16)
    out = np.empty(score.shape, dtype=np.float16)
    source, target = torch.from_numpy(score.reshape(-1)), torch.from_numpy(out.reshape(-1))
    for part, into in zip(source.split(_TORCH_CHUNK), target.split(_TORCH_CHUNK), strict=True):
        into.copy_(part)
    return out


def _float16_counts(bits: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts (int64 [63487], order of ``_F16_VALUES``) of the uint16 patterns ``bits``, and
    how many of them are not finite (inf, NaN)."""
    counts = np.zeros(0x10000, dtype=np.int64)
    np.add.at(counts, bits, 1)  # numpy >= 1.25: about twice as fast as bincount on uint16
    return _ordered_counts(counts)


def _ordered_counts(counts: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`_float16_counts` of the count of each uint16 pattern (int64 [65536])."""
    nonfinite = int(counts[0x7C00:0x8000].sum() + counts[0xFC00:].sum())
    ordered = counts[_F16_ORDER]
    ordered[_F16_ZERO] += counts[_F16_NEGATIVE_ZERO]
    return ordered, nonfinite


def _quantile_from_counts(cumulative: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """``numpy.quantile(x, quantiles)`` (method "linear") of the float16 values ``x`` whose
    cumulative counts in the order of ``_F16_VALUES`` are ``cumulative`` (int64, x not empty).

    The steps and dtypes of numpy's ``_quantile`` / ``_get_indexes`` / ``_lerp``: virtual
    index (n - 1) q, its floor and floor + 1 (both the last element where the index is >= n -
    1), the order statistics there (float16), gamma = index - floor in float64 (with the floor
    set to -1 there), then ``a + (b - a) * gamma``, or ``b - (b - a) * (1 - gamma)`` where gamma
    >= 0.5, with ``b - a`` in float16.
    """
    n = int(cumulative[-1])
    virtual = (n - 1) * quantiles
    previous = np.floor(virtual)
    following = previous + 1
    last = virtual >= n - 1
    previous[last] = -1
    following[last] = -1
    previous = previous.astype(np.intp)
    following = following.astype(np.intp)

    def order_statistics(indexes: np.ndarray) -> np.ndarray:
        ranks = np.where(indexes < 0, n + indexes, indexes)
        return _F16_VALUES[np.searchsorted(cumulative, ranks, side="right")]

    a, b = order_statistics(previous), order_statistics(following)
    gamma = np.asarray(virtual - previous, dtype=virtual.dtype)
    diff_b_a = b - a
    result = np.add(a, diff_b_a * gamma)
    np.subtract(
        b,
        diff_b_a * (1 - gamma),
        out=result,
        where=gamma >= 0.5,
        casting="unsafe",
        dtype=type(result.dtype),
    )
    return result


def _histogram_from_counts(cumulative0: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``numpy.histogram(x, bins=edges)[0]`` (intp) of the float16 values ``x`` whose
    cumulative counts, 0 prepended, in the order of ``_F16_VALUES`` are ``cumulative0``.

    numpy sorts ``x`` and counts ``x.searchsorted(edges[:-1], "left")`` and
    ``x.searchsorted(edges[-1:], "right")`` (bins [e_i, e_i+1), the last one closed): the same
    search on the distinct float16 values, weighted by their counts, gives the same numbers.
    """
    below = np.concatenate(
        [
            _F16_VALUES.searchsorted(edges[:-1], "left"),
            _F16_VALUES.searchsorted(edges[-1:], "right"),
        ]
    )
    return np.diff(cumulative0[below]).astype(np.intp, copy=False)


def _class_masks(label: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly, inlier) bool masks: valid = ``label < 255`` and ``label != ignore_index``;
    anomaly = valid and ``label != 0`` (``bool(label)``), inlier = valid and ``label == 0``."""
    if ignore_index == 0:
        inlier = np.zeros(label.shape, dtype=bool)
    else:
        inlier = label == 0
    if label.dtype == np.uint8 and ignore_index == 255:
        anomaly = label - np.uint8(1) < np.uint8(254)  # 1..254 (0 and 255 wrap to 255, 254)
    else:
        anomaly = (label != 0) & (label < 255)
        if ignore_index < 255:
            anomaly &= label != ignore_index
    return anomaly, inlier


def smiyc_frame_counts(
    score: np.ndarray,
    label: np.ndarray,
    num_bins: int = 768,
    commit: str = DEFAULT_SMIYC_COMMIT,
    ignore_index: int = 255,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int] | None:
    """One frame's binned counts, as the SegmentMeIfYouCan toolkit computes them.

    ``score`` real [H, W] is cast to float16 (as the toolkit stores it); the valid pixels are
    those with ``label < 255`` and ``label != ignore_index`` (with the default 255 simply
    ``label < 255``: the same pixels on 0 / 1 / 255 labels), anomalies those with ``label !=
    0``. With ``vmin, vmax`` the float16 extremes of the valid scores and ``eps = max(0.01 *
    float(vmax - vmin), 0.01)`` (the difference in float16), the edges are::

        unique(concatenate([[vmin - eps, vmax + eps]                # [0.0, 1.0] at 05552386
                            quantile(anomaly, linspace(0, 1, min(num_bins // 2, n_anomaly))),
                            quantile(inlier, linspace(0, 1, min(num_bins // 2, n_inlier)))]))

    (a class without pixels adds no quantile) and each class is counted with
    ``numpy.histogram(scores, bins=edges)``. The result equals those numpy calls on the pixels
    bit for bit (zeros aside: see ``_F16_ORDER``), computed from one count per float16 value.

    Returns:
        ``(thresholds, tp, fp, n_anomaly, n_inlier)``: ``thresholds`` float64 [B], the edges
        from the highest down without the lowest; ``tp``, ``fp`` int64 [B], the anomaly and
        inlier scores in the bin whose upper edge is ``thresholds[i]`` (the top bin closed);
        the numbers of valid anomaly and inlier pixels (python ints). The arrays are
        C-contiguous. ``None`` for a frame without valid pixels.

    Raises:
        ValueError: if a valid pixel is not finite in float16 (NaN, inf, beyond +-65504).
    """
    check_smiyc_options(num_bins, commit)
    label = np.asarray(label)
    bits = float16_scores(np.asarray(score)).view(np.uint16)
    if label.dtype == np.uint8 and ignore_index == 255 and native.library() is not None:
        # the compiled count (fsbench.metrics.native): both classes in one pass, no masks
        both = native.count_f16_u8(np.ascontiguousarray(bits), np.ascontiguousarray(label))
        (false_counts, false_nonfinite), (true_counts, true_nonfinite) = map(_ordered_counts, both)
    else:
        anomaly, inlier = _class_masks(label, ignore_index)
        true_counts, true_nonfinite = _float16_counts(bits[anomaly])
        false_counts, false_nonfinite = _float16_counts(bits[inlier])
    if true_nonfinite + false_nonfinite:
        raise ValueError(
            f"{true_nonfinite + false_nonfinite} valid pixels are not finite in float16 "
            "(NaN, inf, or beyond +-65504); the smiyc protocol stores float16 as the "
            "toolkit does: rescale the scores, e.g. to probabilities in [0, 1]"
        )
    true_cum, false_cum = np.cumsum(true_counts), np.cumsum(false_counts)
    n_anomaly, n_inlier = int(true_cum[-1]), int(false_cum[-1])
    if n_anomaly + n_inlier == 0:  # the toolkit fails on such a frame
        return None
    if commit == "05552386":
        outer = [0.0, 1.0]
    else:
        present = np.flatnonzero(true_counts + false_counts)
        vmin, vmax = _F16_VALUES[present[0]], _F16_VALUES[present[-1]]  # float16
        eps = max(float(vmax - vmin) * 1e-2, 1e-2)  # float16 difference, then float64
        outer = [float(vmin) - eps, float(vmax) + eps]
    half = num_bins // 2
    edges: list[np.ndarray] = [np.array(outer)]
    for cumulative, n in ((true_cum, n_anomaly), (false_cum, n_inlier)):
        if n:
            edges.append(_quantile_from_counts(cumulative, np.linspace(0, 1, min(half, n))))
    bins = np.unique(np.concatenate(edges))
    zero = np.zeros(1, dtype=np.int64)
    tp = _histogram_from_counts(np.concatenate([zero, true_cum]), bins)
    fp = _histogram_from_counts(np.concatenate([zero, false_cum]), bins)
    return (
        np.ascontiguousarray(bins[::-1][1:]),
        np.ascontiguousarray(tp[::-1], dtype=np.int64),
        np.ascontiguousarray(fp[::-1], dtype=np.int64),
        n_anomaly,
        n_inlier,
    )


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
        check_smiyc_options(num_bins, commit)
        self.num_bins = num_bins
        self.commit = commit
        self._thresholds: list[np.ndarray] = []
        self._tp: list[np.ndarray] = []
        self._fp: list[np.ndarray] = []
        self.n_anomaly = 0
        self.n_inlier = 0
        self.frames_without_valid_pixels = 0

    def update(self, score: np.ndarray, label: np.ndarray) -> None:
        """Add one frame: ``score`` real [H, W] (cast to float16), ``label`` uint8 [H, W].

        The frame's counts are :func:`smiyc_frame_counts`' (valid pixels: ``label < 255``).
        """
        counts = smiyc_frame_counts(score, label, self.num_bins, self.commit)
        if counts is None:  # the toolkit fails on such a frame; it adds nothing to the curve
            self.frames_without_valid_pixels += 1
            return
        self.add_counts(*counts)

    def add_counts(
        self,
        thresholds: np.ndarray,
        tp: np.ndarray,
        fp: np.ndarray,
        n_anomaly: int,
        n_inlier: int,
    ) -> None:
        """Add counts made by :func:`smiyc_frame_counts` (one frame's, or several frames'
        concatenated in frame order), with the frames' valid anomaly and inlier pixels."""
        thresholds = np.asarray(thresholds, dtype=np.float64)
        tp, fp = np.asarray(tp, dtype=np.int64), np.asarray(fp, dtype=np.int64)
        if not thresholds.ndim == tp.ndim == fp.ndim == 1 or not (
            thresholds.size == tp.size == fp.size
        ):
            raise ValueError(
                "thresholds, tp and fp must be 1-D of one length, got shapes "
                f"{thresholds.shape}, {tp.shape}, {fp.shape}"
            )
        self._thresholds.append(thresholds)
        self._tp.append(tp)
        self._fp.append(fp)
        self.n_anomaly += int(n_anomaly)
        self.n_inlier += int(n_inlier)

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
