"""Component-level anomaly metrics of SegmentMeIfYouCan: sIoU_gt, PPV and mean F1.

Definition: Chan et al., "SegmentMeIfYouCan: A Benchmark for Anomaly Segmentation", NeurIPS
Datasets and Benchmarks 2021 (its component-level metrics), as implemented by the
benchmark's toolkit, ``SegmentMeIfYouCan/road-anomaly-benchmark``, file
``road_anomaly_benchmark/metrics/instance_segmentation.py`` (``default_instancer``,
``segment_metrics`` and ``MetricSegment.aggregate``). This module is an independent
re-implementation of that definition (components labelled from their horizontal runs and
counted per run, instead of one whole-image pass per component); no code is taken from the
toolkit.

Labels: 0 = inlier, 1 = anomaly, ``ignore_index`` (255) = void. The procedure, in order:

1. A score threshold t is chosen. The toolkit uses the best-F1 point of its *binned* pixel
   precision-recall curve; fsbench leaves the choice to the caller (``ComponentMetrics`` takes t).
2. Predicted pixels are ``score > t`` (strict: a score equal to t is not predicted). Void pixels
   are then set to "not predicted", *before* any connected-component labelling.
3. Connected components are labelled with 8-connectivity (``scipy.ndimage.label`` with a 3x3
   structure of ones), separately for the ground truth (``label == 1``) and for the prediction.
   Touching or diagonally adjacent objects therefore form one ground-truth component.
4. Predicted components with fewer than ``min_predicted_size`` pixels (500; 50 on the
   RoadObstacle21 track) are dropped, their size counted over the whole image before step 5.
5. *Then* ground-truth components with fewer than ``min_gt_size`` pixels (100; 10 on
   RoadObstacle21) become void. The **evaluation region** is what is left: every pixel that is
   neither originally void (``label == ignore_index``) nor part of a ground-truth component made
   void in this step. Steps 6 and 7 only see pixels of the evaluation region.
6. For every kept ground-truth component k, let P be the union of the kept predicted components
   that intersect k. Then

       sIoU(k) = |k ∩ P| / (|k| + |P \\ G|),

   where G is the union of *all* kept ground-truth components and every set is restricted to the
   evaluation region (k lies in it entirely). Prediction on *other* ground-truth components is
   not penalised; prediction on void or on voided components is not counted. sIoU(k) = 0 when
   no predicted component touches k.
7. For every kept predicted component c with at least one pixel in the evaluation region,

       precision(c) = |c ∩ G| / |c ∩ region|.

   A predicted component lying entirely on voided ground truth has no pixel in the region and is
   not counted at all: it is neither a true nor a false positive.
8. Over the whole data set (pooled, never averaged per image), for each
   τ in ``numpy.linspace(0.25, 0.75, 11)``: TP(τ) = #{sIoU ≥ τ}, FN(τ) = #{sIoU < τ},
   FP(τ) = #{precision < τ}, and F1(τ) = 2 TP / (2 TP + FN + FP). mean F1 is the mean of the
   eleven F1(τ); sIoU_gt is the mean of all sIoU values and PPV the mean of all precisions.
   Note that ``linspace`` gives τ[7] = 0.6000000000000001, so an sIoU of exactly 3/5 is a false
   negative at that τ, in the toolkit as here.

Where this module departs from the toolkit (on purpose):

* With no ground-truth component in the data set, or no predicted component, the toolkit yields
  NaN for the mean it cannot take (and a ``ZeroDivisionError`` in the F1 when both are
  missing). fsbench gives ``None`` for that value with a message saying which is missing and
  what to check (``"undefined"``), and raises a ``ValueError`` when both are missing.
* The toolkit's size loops also visit label 0 (the background): on a (tiny) image whose
  non-anomaly pixels number fewer than ``min_gt_size`` it would void the whole background.
  fsbench never voids the background.
* The toolkit also computes an sIoU of each predicted component ("sIoU_pred"); it is not part of
  the published leaderboard and is not computed here.

Behaviour read in the toolkit's code and reproduced here (``instance_segmentation.py``, the same at
1c7804e and 05552386): connectivity is computed before the
restriction to the evaluation region, so a predicted component bridged only through a voided
ground-truth component stays *one* component, and a predicted component that passes the size
filter thanks to pixels on voided ground truth is kept even if few of its pixels remain in the
region. Pixels with ``label == ignore_index`` never bridge predicted components (step 2).

Checked against the toolkit's own output at 1c7804e (``tests/golden/make_smiyc_golden.py``): the
toolkit reads its threshold back from HDF5 as a numpy float64 and compares float16 scores with
it, which its pinned numpy 1.23 evaluates in float16, i.e. with t rounded to float16. fsbench
compares the stored score values with t exactly (in float64); to reproduce the toolkit, pass
``SmiycPixelCurve.component_threshold(t)`` (t rounded to float16) and float16 scores, as
``fsbench score --protocol smiyc`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "DEFAULT_F1_THRESHOLDS",
    "ROAD_ANOMALY_21_SIZES",
    "ROAD_OBSTACLE_21_SIZES",
    "ComponentMetrics",
    "FrameComponents",
    "binarize",
    "component_metrics",
    "frame_components",
]

#: The sIoU / precision levels τ of the F1: ``numpy.linspace(0.25, 0.75, 11)`` (float64).
DEFAULT_F1_THRESHOLDS: np.ndarray = np.linspace(0.25, 0.75, 11)
#: (min_predicted_size, min_gt_size) of the RoadAnomaly21 (anomaly) track.
ROAD_ANOMALY_21_SIZES: tuple[int, int] = (500, 100)
#: (min_predicted_size, min_gt_size) of the RoadObstacle21 (obstacle) track.
ROAD_OBSTACLE_21_SIZES: tuple[int, int] = (50, 10)

_LABEL_HINT = "labels must use 0 = inlier, 1 = anomaly, {ignore} = void"


@dataclass(frozen=True, eq=False)
class FrameComponents:
    """The per-component values of one frame (a few floats; cheap to keep for a whole data set).

    Attributes:
        sious: float64 [K], the sIoU of each kept ground-truth component, in the order of
            ``scipy.ndimage.label`` (raster order of each component's first pixel).
        precisions: float64 [C], the precision of each kept predicted component that has a pixel
            in the evaluation region, in the same raster order.
    """

    sious: np.ndarray
    precisions: np.ndarray


def binarize(score: np.ndarray, threshold: float) -> np.ndarray:
    """The predicted anomaly mask ``score > threshold`` (strict, as in the toolkit).

    A score exactly equal to ``threshold`` is *not* predicted; NaN scores compare False and are
    therefore not predicted (``ComponentMetrics.update`` rejects them beforehand). The comparison
    is exact: scores are widened to float64 (lossless for float16/32/64) and compared with
    ``float(threshold)``, so no rounding of the threshold to the score dtype takes place.

    Args:
        score: real [..., H, W] (any shape), higher = more anomalous.
        threshold: the score threshold.

    Returns:
        bool array of the same shape.
    """
    return np.asarray(score, dtype=np.float64) > float(threshold)


def _nan_mask(score: np.ndarray) -> np.ndarray | None:
    """``numpy.isnan(score)`` for floating scores, None for other dtypes or when no score is NaN
    (float16 from two reductions of its bits: the NaN patterns are 0x7C01..0x7FFF, the largest
    as int16, and 0xFC01..0xFFFF, the largest as uint16)."""
    if score.dtype == np.float16:
        if score.size == 0 or (
            score.view(np.int16).max() <= 0x7C00 and score.view(np.uint16).max() <= 0xFC00
        ):
            return None
        return (score.view(np.uint16) & 0x7FFF) > 0x7C00
    return np.isnan(score) if np.issubdtype(score.dtype, np.floating) else None


def _greater(score: np.ndarray, threshold: float, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`binarize` (``float64(score) > threshold``) for scores without NaN, into ``out``.

    float16 and float32 scores are compared in their own type with the largest value of that
    type at or below the threshold, ``t``: ``s > threshold`` exactly when ``s > t`` for every
    non-NaN ``s``. float16 is compared on its bits: for ``t >= 0`` (``-0`` taken as ``+0``) as
    int16 (the negative values come out negative), for ``t < 0`` as uint16 (where the values
    above ``t`` are exactly the patterns below its pattern).
    """
    threshold = float(threshold)
    if score.dtype not in (np.float16, np.float32) or np.isnan(threshold):
        return np.greater(np.asarray(score, dtype=np.float64), threshold, out=out)
    kind = score.dtype.type
    with np.errstate(over="ignore"):  # beyond the type's range: inf, then its largest value
        t = kind(threshold)
        if float(t) > threshold:
            t = np.nextafter(t, kind(-np.inf))
    if kind is np.float32:
        return np.greater(score, t, out=out)
    if t == 0:
        t = np.float16(0.0)
    pattern = int(np.array(t).view(np.uint16))
    if pattern < 0x8000:
        return np.greater(score.view(np.int16), np.int16(pattern), out=out)
    return np.less(score.view(np.uint16), np.uint16(pattern), out=out)


def _check_ignore_index(ignore_index: int) -> None:
    if ignore_index in (0, 1):
        raise ValueError(f"ignore_index must differ from 0 and 1 (the classes), got {ignore_index}")


def _check_label_values(label: np.ndarray, ignore_index: int) -> None:
    """Raise a ValueError naming the values of ``label`` other than 0, 1 and ``ignore_index``."""
    if label.dtype == np.uint8 and ignore_index == 255:
        if not (label - np.uint8(2) < np.uint8(253)).any():  # 2..254 (0, 1, 255 wrap above)
            return
    bad = (label != 0) & (label != 1) & (label != ignore_index)
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(str(v) for v in values[:10].tolist())
        more = f" and {values.size - 10} more" if values.size > 10 else ""
        raise ValueError(
            f"label holds unexpected values [{shown}]{more} in {int(bad.sum())} pixels; "
            + _LABEL_HINT.format(ignore=ignore_index)
            + " (some packs store void as 2 or anomalies as 2: remap them explicitly)"
        )


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


# -- labelling by runs ------------------------------------------------------------------------
#
# ``scipy.ndimage.label`` visits every pixel of the frame; the masks here are mostly empty, so
# the components are found from their horizontal runs instead: a few vectorised passes find
# the runs, runs of neighbouring rows that touch (8-connectivity: their columns overlap after
# widening by one) are joined with ``scipy.sparse.csgraph.connected_components``, and the
# components are numbered in raster order of their first pixel, as ``ndimage.label`` numbers
# them. Every count below is a sum over runs, so the result equals the per-pixel definition
# exactly (``tests/test_smiyc_fast.py`` compares both with ``ndimage.label``).


@dataclass(frozen=True, eq=False)
class _Runs:
    """Horizontal runs of a bool [H, W] mask: run i covers the flat positions
    ``[starts[i], ends[i])`` of the [H, W + 1] grid (row r, column c at ``r * (W + 1) + c``; the
    extra column keeps runs of different rows apart), in raster order; ``component[i]`` is its
    component (1..count, numbered as ``ndimage.label`` numbers them)."""

    starts: np.ndarray
    ends: np.ndarray
    component: np.ndarray
    count: int

    def sizes(self) -> np.ndarray:
        """int64 [count + 1]: pixels of each component (index 0: 0)."""
        return _sum_by(self.component, self.ends - self.starts, self.count + 1)


def _sum_by(index: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    """int64 [length]: the sum of the integer ``values`` at each ``index`` (exact below 2**53)."""
    return np.bincount(index, weights=values, minlength=length).astype(np.int64)


def _padded(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A zeroed bool [H, W + 2] buffer and its [H, W] interior (columns 1..W), to write a mask
    into: the zero columns make every run start and end inside its own row."""
    height, width = shape
    padded = np.zeros((height, width + 2), dtype=bool)
    return padded, padded[:, 1:-1]


def _mask_runs(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) int64 of the runs of the mask in ``padded`` (:func:`_padded`), in the
    [H, W + 1] grid of :class:`_Runs`."""
    width = padded.shape[1] - 2
    rows = np.flatnonzero(padded.any(axis=1))
    if rows.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    first, last = int(rows[0]), int(rows[-1]) + 1
    cells = padded[first:last].view(np.uint8)
    # a change between column c - 1 and c of the padded row: a run starts or ends at column c
    changes = np.flatnonzero(cells[:, 1:] != cells[:, :-1]) + first * (width + 1)
    return np.ascontiguousarray(changes[0::2]), np.ascontiguousarray(changes[1::2])


def _label_runs(padded: np.ndarray) -> _Runs:
    """The 8-connected components of the mask in ``padded`` (:func:`_padded`), by runs."""
    starts, ends = _mask_runs(padded)
    n = starts.size
    if n == 0:
        return _Runs(starts, ends, np.zeros(0, dtype=np.int64), 0)
    step = padded.shape[1] - 1  # one row down in the grid
    # runs A of the row above that touch run B: A.start <= B.end - step, A.end >= B.start - step
    lo = np.searchsorted(ends, starts - step, side="left")
    hi = np.searchsorted(starts, ends - step, side="right")
    touching = np.maximum(hi - lo, 0)
    below = np.repeat(np.arange(n), touching)
    offsets = np.cumsum(touching) - touching
    above = np.repeat(lo - offsets, touching) + np.arange(below.size)
    indptr = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(touching)])
    graph = csr_matrix((np.ones(below.size, dtype=np.int8), above, indptr), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    labels = labels.astype(np.int64, copy=False)
    # number the components by their first run (= first pixel in raster order)
    seen = np.maximum.accumulate(labels)
    if labels[0] != 0 or np.any(labels[1:] > seen[:-1] + 1):
        _, first = np.unique(labels, return_index=True)
        rank = np.empty(count, dtype=np.int64)
        rank[np.argsort(first)] = np.arange(count)
        labels = rank[labels]
    return _Runs(starts, ends, labels + 1, int(count))


def _overlaps(a: _Runs, b: _Runs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of overlapping runs of ``a`` and ``b``: (component in a, component in b,
    pixels in common), int64 [M]."""
    lo = np.searchsorted(b.ends, a.starts, side="right")
    hi = np.searchsorted(b.starts, a.ends, side="left")
    touching = np.maximum(hi - lo, 0)
    i = np.repeat(np.arange(a.starts.size), touching)
    offsets = np.cumsum(touching) - touching
    j = np.repeat(lo - offsets, touching) + np.arange(i.size)
    common = np.minimum(a.ends[i], b.ends[j]) - np.maximum(a.starts[i], b.starts[j])
    return a.component[i], b.component[j], common


def _frame_components(
    predicted: np.ndarray, label: np.ndarray, min_predicted_size: int, min_gt_size: int
) -> FrameComponents:
    """Steps 3 to 7: ``predicted`` the predicted mask without void in a :func:`_padded`
    buffer, ``label`` the frame's label."""
    gt, inner = _padded(label.shape)
    np.equal(label, 1, out=inner)
    pred, objects = _label_runs(predicted), _label_runs(gt)
    n_pred, n_gt = pred.count, objects.count
    # Step 4: drop small predicted components (sizes over the whole image, before step 5).
    pred_sizes = pred.sizes()
    keep_pred = pred_sizes >= min_predicted_size
    keep_pred[0] = False
    # Step 5: small ground-truth components become void (never the background).
    gt_sizes = objects.sizes()
    keep_gt = gt_sizes >= min_gt_size
    keep_gt[0] = False

    # Predicted pixels are never void, so a predicted pixel is outside the evaluation region
    # exactly when it lies on a voided ground-truth component.
    c, k, common = _overlaps(pred, objects)
    on_kept = keep_gt[k]
    on_voided = _sum_by(c[~on_kept], common[~on_kept], n_pred + 1)
    pred_in_region = np.where(keep_pred, pred_sizes - on_voided, 0)
    pred_on_gt = np.where(keep_pred, _sum_by(c[on_kept], common[on_kept], n_pred + 1), 0)
    pred_off_gt = pred_in_region - pred_on_gt

    # Step 7: precision of the predicted components present in the region.
    present = pred_in_region > 0
    precisions = pred_on_gt[present] / pred_in_region[present]

    # Step 6: sIoU. Every predicted pixel inside k belongs to a component touching k, so
    # |k ∩ P| = |k ∩ any kept prediction|; the components are disjoint, so |P \ G| is the sum
    # of their off-ground-truth pixel counts over the distinct (k, c) touching pairs.
    both = on_kept & keep_pred[c]
    intersection = _sum_by(k[both], common[both], n_gt + 1)
    pairs = np.unique(k[both] * (n_pred + 1) + c[both])
    pair_gt, pair_pred = np.divmod(pairs, n_pred + 1)
    outside = np.bincount(pair_gt, weights=pred_off_gt[pair_pred], minlength=n_gt + 1)
    kept = np.flatnonzero(keep_gt)
    sious = intersection[kept] / (gt_sizes[kept] + outside[kept])

    return FrameComponents(
        sious=np.asarray(sious, dtype=np.float64),
        precisions=np.asarray(precisions, dtype=np.float64),
    )


def frame_components(
    prediction: np.ndarray,
    label: np.ndarray,
    *,
    min_predicted_size: int = 500,
    min_gt_size: int = 100,
    ignore_index: int = 255,
) -> FrameComponents:
    """sIoU of each ground-truth component and precision of each predicted component of a frame.

    Steps 2 (void removal) to 7 of the module docstring. The evaluation region is every pixel
    that is neither void (``label == ignore_index``) nor inside a ground-truth component smaller
    than ``min_gt_size``.

    Args:
        prediction: bool [H, W], the thresholded score (see :func:`binarize`). Pixels on void are
            ignored whatever their value.
        label: integer [H, W] (uint8 in the benchmarks) with values 0 (inlier), 1 (anomaly) and
            ``ignore_index`` (void) only.
        min_predicted_size: predicted components with fewer pixels are dropped (toolkit: 500;
            RoadObstacle21: 50). 0 or 1 keeps every component.
        min_gt_size: ground-truth components with fewer pixels become void (toolkit: 100;
            RoadObstacle21: 10). 0 or 1 keeps every component.
        ignore_index: the void label.

    Returns:
        FrameComponents with float64 ``sious`` [K] and ``precisions`` [C].

    Raises:
        TypeError: if ``prediction`` is not boolean.
        ValueError: on shapes that are not the same [H, W], on label values other than 0, 1 and
            ``ignore_index``, on negative sizes, or on ``ignore_index`` in {0, 1}.
    """
    prediction = np.asarray(prediction)
    label = np.asarray(label)
    if prediction.dtype != np.bool_:
        raise TypeError(
            f"prediction must be a boolean mask, got dtype {prediction.dtype}; "
            "threshold scores with binarize(score, threshold)"
        )
    if prediction.ndim != 2 or prediction.shape != label.shape:
        raise ValueError(
            "prediction and label must both be [H, W] of the same shape, got "
            f"{tuple(prediction.shape)} and {tuple(label.shape)}"
        )
    min_predicted_size = _check_size("min_predicted_size", min_predicted_size)
    min_gt_size = _check_size("min_gt_size", min_gt_size)
    _check_ignore_index(ignore_index)
    _check_label_values(label, ignore_index)

    # Step 2: void is "not predicted" before labelling, so it never bridges predicted components.
    predicted, inner = _padded(label.shape)
    np.logical_and(prediction, label != ignore_index, out=inner)
    return _frame_components(predicted, label, min_predicted_size, min_gt_size)


_NO_GT = (
    "no ground-truth component in any frame, so sIoU_gt is undefined; check that "
    "the labels mark anomalies with 1 (not 2 or 255), that the data set has anomalous frames, "
    "and that min_gt_size does not void every object"
)
_NO_PRED = (
    "no predicted component in any frame (after void removal and the size filter), so PPV is "
    "undefined; check the threshold (predicted = score > threshold) and that higher scores mean "
    "'more anomalous', and that min_predicted_size is not larger than the predicted blobs"
)


def component_metrics(
    frames: Iterable[FrameComponents],
    thresholds: np.ndarray | Iterable[float] = DEFAULT_F1_THRESHOLDS,
) -> dict[str, Any]:
    """Pool per-frame components over the data set into sIoU_gt, PPV and mean F1 (step 8).

    Args:
        frames: the :class:`FrameComponents` of every frame.
        thresholds: the levels τ (default ``numpy.linspace(0.25, 0.75, 11)``, the toolkit's).

    Returns:
        ``{"siou_gt", "ppv", "mean_f1"}`` as python floats in [0, 1], ``"f1_per_threshold"`` as
        a list of floats (one per τ, in order), ``{"n_gt_components",
        "n_predicted_components"}`` as python ints, and ``"undefined"``: a list of messages,
        one per value that is undefined and given as ``None``. Without a predicted component
        PPV is undefined, while sIoU_gt (every component scores 0) and the F1 (0) are defined;
        without a ground-truth component sIoU_gt is undefined and the F1 is 0 (every predicted
        component is a false positive). The toolkit reports NaN for an undefined mean; fsbench
        says which value and why.

    Raises:
        ValueError: when there is no component at all (nothing is defined; the toolkit divides
            by zero), or when ``thresholds`` is empty.
    """
    frames = list(frames)
    taus = np.asarray(list(thresholds) if not isinstance(thresholds, np.ndarray) else thresholds)
    taus = taus.astype(np.float64).ravel()
    if taus.size == 0:
        raise ValueError("thresholds must hold at least one level τ")
    sious = np.concatenate([np.empty(0)] + [np.asarray(f.sious, np.float64) for f in frames])
    precisions = np.concatenate(
        [np.empty(0)] + [np.asarray(f.precisions, np.float64) for f in frames]
    )
    missing = [msg for msg, n in ((_NO_GT, sious.size), (_NO_PRED, precisions.size)) if n == 0]
    if len(missing) == 2:
        raise ValueError(f"{len(frames)} frame(s): " + "; also ".join(missing))

    tp = (sious[None, :] >= taus[:, None]).sum(axis=1)
    fn = sious.size - tp
    fp = (precisions[None, :] < taus[:, None]).sum(axis=1)
    f1 = 2 * tp / (2 * tp + fn + fp)  # denominator >= number of components > 0
    return {
        "siou_gt": float(sious.mean()) if sious.size else None,
        "ppv": float(precisions.mean()) if precisions.size else None,
        "mean_f1": float(f1.mean()),
        "f1_per_threshold": [float(v) for v in f1],
        "n_gt_components": int(sious.size),
        "n_predicted_components": int(precisions.size),
        "undefined": [f"{len(frames)} frame(s): {msg}" for msg in missing],
    }


def _to_numpy(x: torch.Tensor | np.ndarray, *, score: bool) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if score and x.is_floating_point():
            x = x.to(torch.float64)  # lossless; also makes bfloat16 convertible
        return x.cpu().numpy()
    return np.asarray(x)


class ComponentMetrics:
    """Streaming SegmentMeIfYouCan component metrics at one fixed score threshold.

    ``update`` binarises each frame with ``score > threshold``, computes its
    :class:`FrameComponents` at once and keeps only those (a few floats per frame, no pixels);
    ``compute`` pools them with :func:`component_metrics`. Not synchronised across processes.

    Presets: the defaults (500, 100) are the RoadAnomaly21 track's sizes;
    :meth:`road_obstacle_21` gives the RoadObstacle21 track's (50, 10).

    Args:
        threshold: the score threshold t (predicted = ``score > t``). The toolkit uses the
            best-F1 threshold of its binned pixel curve; choosing t is the caller's job.
        min_predicted_size: predicted components with fewer pixels are dropped.
        min_gt_size: ground-truth components with fewer pixels become void.
        ignore_index: the void label.
    """

    def __init__(
        self,
        threshold: float,
        min_predicted_size: int = 500,
        min_gt_size: int = 100,
        ignore_index: int = 255,
    ) -> None:
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        _check_ignore_index(ignore_index)
        self.threshold = threshold
        self.min_predicted_size = _check_size("min_predicted_size", min_predicted_size)
        self.min_gt_size = _check_size("min_gt_size", min_gt_size)
        self.ignore_index = ignore_index
        self._frames: list[FrameComponents] = []

    @classmethod
    def road_obstacle_21(cls, threshold: float, ignore_index: int = 255) -> ComponentMetrics:
        """The RoadObstacle21 track: predicted components < 50 px dropped, gt < 10 px voided."""
        min_predicted_size, min_gt_size = ROAD_OBSTACLE_21_SIZES
        return cls(threshold, min_predicted_size, min_gt_size, ignore_index)

    @classmethod
    def road_anomaly_21(cls, threshold: float, ignore_index: int = 255) -> ComponentMetrics:
        """The RoadAnomaly21 track (the defaults): predicted < 500 px dropped, gt < 100 voided."""
        min_predicted_size, min_gt_size = ROAD_ANOMALY_21_SIZES
        return cls(threshold, min_predicted_size, min_gt_size, ignore_index)

    @property
    def frames(self) -> tuple[FrameComponents, ...]:
        """The per-frame components collected so far, in update order."""
        return tuple(self._frames)

    def reset(self) -> None:
        """Forget every frame."""
        self._frames = []

    def extend(self, frames: Iterable[FrameComponents]) -> None:
        """Add frames computed elsewhere (e.g. gathered from other processes), in order."""
        frames = list(frames)
        for frame in frames:
            if not isinstance(frame, FrameComponents):
                raise TypeError(f"expected FrameComponents, got {type(frame).__name__}")
        self._frames.extend(frames)

    def update(self, score: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        """Add frames.

        Args:
            score: real [N, H, W] or [H, W] (torch or numpy), higher = more anomalous; NaN is
                rejected.
            label: integer, same shape, values 0 (inlier), 1 (anomaly), ``ignore_index`` (void).

        Raises:
            ValueError: on mismatched or non-2/3-D shapes, NaN scores, or unexpected label
                values (listed). Nothing is stored when an error is raised.
        """
        score = _to_numpy(score, score=True)
        label = _to_numpy(label, score=False)
        if score.shape != label.shape or score.ndim not in (2, 3):
            raise ValueError(
                "score and label must have the same shape, [N, H, W] or [H, W]; got "
                f"{tuple(score.shape)} and {tuple(label.shape)}"
            )
        if score.ndim == 2:
            score, label = score[None], label[None]
        nan = _nan_mask(score)
        if nan is not None and nan.any():
            first = tuple(int(i) for i in np.argwhere(nan)[0])
            raise ValueError(
                f"{int(nan.sum())} scores are NaN, the first at index {first}; NaN is never "
                "silently treated as 'not anomalous', fix the score map"
            )
        _check_label_values(label, self.ignore_index)
        new = []
        for frame, frame_label in zip(score, label, strict=True):
            predicted, inner = _padded(frame_label.shape)
            _greater(frame, self.threshold, out=inner)
            np.logical_and(inner, frame_label != self.ignore_index, out=inner)
            new.append(
                _frame_components(predicted, frame_label, self.min_predicted_size, self.min_gt_size)
            )
        self._frames.extend(new)

    def compute(self, thresholds: np.ndarray | Iterable[float] = DEFAULT_F1_THRESHOLDS) -> dict:
        """Pool the frames seen so far with :func:`component_metrics`.

        The messages of undefined values (and of the error) name this accumulator's threshold
        and sizes.

        Raises:
            ValueError: when there is no ground-truth and no predicted component.
        """
        where = (
            f" [threshold={self.threshold}, min_predicted_size={self.min_predicted_size}, "
            f"min_gt_size={self.min_gt_size}]"
        )
        try:
            result = component_metrics(self._frames, thresholds)
        except ValueError as err:
            raise ValueError(f"{err}{where}") from err
        result["undefined"] = [message + where for message in result["undefined"]]
        return result
