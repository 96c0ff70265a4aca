"""Pixel-level anomaly metrics of the Fishyscapes benchmark: AP, AUROC and FPR at 95 % TPR.

Definition (Blum et al., "The Fishyscapes Benchmark: Measuring Blind Spots in Semantic
Segmentation", IJCV 2021; the benchmark's official ``eval.py::calculate_metrics_perpixAP``):

* label 1 = anomaly (the positive class), 0 = inlier (negative), any other value (255) is void
  and dropped; a higher score means "more anomalous";
* all valid pixels of all images are pooled into one ranking (no per-image averaging);
* scores are cast to float32, then ranked exactly: no binning, no subsampling, and tied scores
  form one threshold (never broken by pixel order);
* AP is scikit-learn's ``average_precision_score``: the step sum sum_k (R_k - R_{k-1}) P_k over
  the distinct thresholds, *not* the trapezoid area under the precision-recall curve;
* AUROC is ``roc_auc_score``: the trapezoid area under the ROC curve whose points are the
  distinct thresholds, starting at (0, 0);
* FPR95 is the false positive rate at the *first* threshold, scanning from the highest score
  down, whose TPR is >= 0.95 (no interpolation, not "closest to 0.95", not "TPR > 0.95").

Never feed raw scores (energies, distances, logits) to torchmetrics' ``Binary*`` curve metrics:
they apply a sigmoid to values outside [0, 1], which saturates in float32 and turns distinct
scores into ties.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchmetrics
from torch import Tensor
from torchmetrics.utilities import rank_zero_warn

from fsbench.metrics import native
from fsbench.metrics.per_image import per_image_metrics
from fsbench.metrics.states import cat_state, check_same_shape

__all__ = [
    "AnomalyMetrics",
    "BinningWarning",
    "add_to_histogram",
    "anomaly_metrics",
    "bin_lower_edges",
    "binning_bounds",
    "downsample_curves",
    "histogram_slots",
    "ranking_metrics",
    "score_bins",
]

_LABEL_HINT = "check the labels use 1 = anomaly, 0 = inlier, 255 = void"


def _check_fpr_at_tpr(fpr_at_tpr: float) -> None:
    if not 0.0 < fpr_at_tpr <= 1.0:
        raise ValueError(f"fpr_at_tpr must lie in (0, 1], got {fpr_at_tpr}")


def _describe_non_finite(finite: Tensor, where: str) -> str:
    """Count the False entries of ``finite`` and name the first (row-major) index."""
    bad = torch.nonzero(~finite)
    first = tuple(bad[0].tolist())
    return (
        f"{bad.shape[0]} {where} have non-finite scores (NaN or +-inf, including values beyond "
        f"the float32 range), the first at index {first}; scores are never silently dropped, "
        "fix the score map"
    )


def anomaly_metrics(scores: Tensor, targets: Tensor, fpr_at_tpr: float = 0.95) -> dict[str, float]:
    """Exact, pooled Fishyscapes AP, AUROC and FPR95 of the valid pixels.

    Follows the official Fishyscapes definition (Blum et al., IJCV 2021, ``eval.py``): scores are
    cast to float32 and sorted in descending order; each distinct score is one threshold (ties are
    never split); true and false positive counts are accumulated as int64 and turned into rates in
    float64.

    * ``ap``: sum_k (R_k - R_{k-1}) * P_k over the thresholds, scikit-learn's
      ``average_precision_score`` (step sum, not trapezoid).
    * ``auroc``: trapezoid area under the ROC points (FPR_k, TPR_k), starting at (0, 0), as
      ``roc_auc_score``.
    * ``fpr95``: the official Fishyscapes rule, the FPR at the first (highest) threshold whose
      TPR >= ``fpr_at_tpr``.

    Args:
        scores: float [P] (any shape is flattened), one score per valid pixel; higher = more
            anomalous. Must be finite after the cast to float32.
        targets: bool or integer/float holding only 0 and 1, same number of elements as
            ``scores``; 1 = anomaly (positive), 0 = inlier. Void pixels must already be removed.
        fpr_at_tpr: the TPR level of the FPR metric, in (0, 1].

    Returns:
        ``{"ap", "auroc", "fpr95"}`` as python floats in [0, 1], and ``{"n_anomaly",
        "n_inlier"}`` as python ints.

    Raises:
        ValueError: on mismatched sizes, targets other than 0/1, non-finite scores, or when there
            is no anomaly pixel or no inlier pixel (the metrics are then undefined).
    """
    _check_fpr_at_tpr(fpr_at_tpr)
    if scores.numel() != targets.numel():
        raise ValueError(
            f"scores hold {scores.numel()} elements (shape {tuple(scores.shape)}) but targets "
            f"hold {targets.numel()} (shape {tuple(targets.shape)})"
        )
    scores = scores.detach().reshape(-1).to(torch.float32)
    targets = targets.detach().reshape(-1)
    if targets.dtype != torch.bool:
        binary = (targets == 0) | (targets == 1)
        if not bool(binary.all()):
            found = torch.unique(targets[~binary]).tolist()
            raise ValueError(
                f"targets hold values {found}; anomaly_metrics expects valid pixels only, "
                f"0 = inlier and 1 = anomaly (drop void pixels first; {_LABEL_HINT})"
            )
        targets = targets == 1
    finite = torch.isfinite(scores)
    if not bool(finite.all()):
        raise ValueError(_describe_non_finite(finite, "pixels"))

    sorted_scores, order = torch.sort(scores, descending=True)
    sorted_targets = targets[order]
    del order
    # The last position of each run of equal scores closes one threshold.
    closes_run = torch.ones_like(sorted_targets)
    closes_run[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    positions = torch.nonzero(closes_run).squeeze(1)  # int64, ascending
    tps = torch.cumsum(sorted_targets, 0, dtype=torch.int64)[positions]
    fps = positions + 1 - tps
    return ranking_metrics(tps, fps, fpr_at_tpr)


def ranking_metrics(tps: Tensor, fps: Tensor, fpr_at_tpr: float = 0.95) -> dict[str, float]:
    """AP, AUROC and FPR95 from cumulative counts at each threshold, highest threshold first.

    Args:
        tps, fps: int64 [T], the numbers of anomaly / inlier pixels scoring at or above each of
            T distinct thresholds, in descending threshold order (non-decreasing, ending at the
            totals). Both :func:`anomaly_metrics` (exact sort) and :class:`AnomalyMetrics`
            (histogram) reduce their data to these counts, so one code path makes every number.
    """
    n_anomaly, n_inlier = int(tps[-1]) if tps.numel() else 0, int(fps[-1]) if fps.numel() else 0
    if n_anomaly == 0 or n_inlier == 0:
        raise ValueError(
            "AP/AUROC/FPR95 are undefined without both classes: the evaluated pixels hold "
            f"{n_anomaly} anomaly and {n_inlier} inlier pixels; {_LABEL_HINT}, and that the "
            "evaluated set contains both"
        )
    tpr, fpr, precision = _rates(tps, fps)
    zero = tpr.new_zeros(1)
    ap = torch.sum(torch.diff(tpr, prepend=zero) * precision)
    auroc = torch.trapezoid(torch.cat([zero, tpr]), torch.cat([zero, fpr]))
    # tpr is non-decreasing and ends at exactly 1.0, so the first index with tpr >= level exists.
    level = torch.tensor([fpr_at_tpr], dtype=torch.float64, device=tpr.device)
    first = torch.searchsorted(tpr, level, side="left")
    return {
        "ap": float(ap),
        "auroc": float(auroc),
        "fpr95": float(fpr[first]),
        "n_anomaly": n_anomaly,
        "n_inlier": n_inlier,
    }


def _rates(tps: Tensor, fps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """TPR (= recall), FPR and precision in float64 from cumulative int64 counts."""
    tps, fps = tps.to(torch.float64), fps.to(torch.float64)
    return tps / tps[-1], fps / fps[-1], tps / (tps + fps)


def downsample_curves(
    tps: Tensor, fps: Tensor, thresholds: Tensor, max_points: int = 1000
) -> dict[str, list[float]]:
    """ROC and PR curves for plotting, at most ``max_points`` points, end points kept exactly.

    Points are taken evenly along the threshold index, then the first and last thresholds are
    always included. Returns lists ``threshold, tpr, fpr, precision`` (recall = tpr).
    """
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    tpr, fpr, precision = _rates(tps, fps)
    count = tps.numel()
    index = torch.linspace(0, count - 1, min(max_points, count)).round().long().unique()
    return {
        "threshold": thresholds[index].tolist(),
        "tpr": tpr[index].tolist(),
        "fpr": fpr[index].tolist(),
        "precision": precision[index].tolist(),
    }


DEFAULT_BIN_BITS = 22

# AnomalyMetrics warns when the histogram may have moved AP, AUROC or FPR95 by more than this:
# the resolution at which they are reported (two decimals in %).
BINNING_WARN_ABOVE = 1e-4


class BinningWarning(UserWarning):
    """The histogram of :class:`AnomalyMetrics` may have moved a metric by more than 1e-4."""


def _harmonic_gap(m: Tensor, a: Tensor) -> Tensor:
    """sum_{k=1..a} 1 / (m + k) = digamma(m + a + 1) - digamma(m + 1), float64, to ~1e-16 relative.

    For m + 1 >= 1000 the difference of the asymptotic series of digamma is taken term by term
    (log1p and exact differences): a difference of two digammas near ln(m) ~ 20 would lose the
    ~1e-15 absolute that the AP bound, multiplied by m ~ 1e9 pixels, cannot afford.
    """
    x, y = m + 1.0, m + a + 1.0
    large = x >= 1000.0
    xs, ys = torch.where(large, x, 1000.0), torch.where(large, y, 1000.0)
    series = (
        torch.log1p(a / xs)
        + a / (2.0 * xs * ys)
        + a * (xs + ys) / (12.0 * xs * xs * ys * ys)
        + (1.0 / ys**4 - 1.0 / xs**4) / 120.0
    )  # truncation error below 1e-20 relative for x >= 1000
    small = torch.special.digamma(torch.where(large, 1.0, y)) - torch.special.digamma(
        torch.where(large, 1.0, x)
    )
    return torch.where(large, series, small)


def binning_bounds(
    tps: Tensor, fps: Tensor, values: dict[str, Any], fpr_at_tpr: float = 0.95
) -> dict[str, Any]:
    """How far the histogram's AP, AUROC and FPR95 can be from the exact (sorted) ones.

    The histogram ranks every pixel of a bin as one tied threshold. The exact metrics
    (:func:`anomaly_metrics`) see the bin's float32 scores, which may be distinct, in an order
    the histogram does not know. Every metric is bounded by the best and the worst order inside
    the bins, computed in closed form from the counts alone (no extra state; under DDP from the
    summed histogram, so every process gets the same numbers):

    * **AP** is a sum over bins: bin b with ``a`` anomaly and ``n`` inlier pixels, below ``T``
      anomaly and ``F`` inlier pixels, contributes ``a (T + a) / (T + F + a + n)`` (tied, the
      histogram's value); at best its anomalies come first, tied, each with precision
      ``(T + a) / (T + F + a)``; at worst its inliers come first and its anomalies are distinct,
      the k-th with precision ``(T + k) / (T + F + n + k)``. So AP also moves in bins holding
      only anomaly pixels (``n = 0``) that rank below inliers (``F > 0``): ties give their
      anomalies the bin's last precision, distinct scores lower ones.
    * **AUROC** counts each (anomaly, inlier) pair sharing a bin as half won; their order gives
      0 or 1: +- sum(a n) / (2 P N) with P, N the totals.
    * **FPR95** is read in the first bin whose cumulative TPR reaches the level; the crossing
      lies inside it: at best its anomalies come first (FPR without its inliers), at worst (the
      histogram's value) all its inliers are counted.

    The exact metrics lie inside these intervals whatever the scores inside the bins are (checked
    against scikit-learn in ``tests/test_metrics.py``). Scores that are exactly equal are ranked
    exactly by both, so on quantized scores (ties across the classes) the bound is pessimistic.

    Args:
        tps, fps: int64 [T] cumulative counts per occupied bin, highest scores first (as
            :meth:`AnomalyMetrics.cumulative_counts` returns them).
        values: the histogram's metrics, :func:`ranking_metrics` of the same counts.
        fpr_at_tpr: the TPR level of the FPR metric, as given to :func:`ranking_metrics`.

    Returns:
        ``{"mixed_bins", "pixels_in_mixed_bins"}`` (ints: bins holding both classes, and all
        their pixels), ``{"ap", "auroc", "fpr95"}_interval`` ([low, high], containing the exact
        value) and ``{"ap", "auroc", "fpr95"}_error_bound`` (the largest distance from the
        reported value to its interval's ends; 0.0 when the histogram is provably exact).
    """
    zero = tps.new_zeros(1)
    a = torch.diff(tps, prepend=zero).to(torch.float64)  # anomaly pixels per bin
    n = torch.diff(fps, prepend=zero).to(torch.float64)  # inlier pixels per bin
    total_a, total_n = float(tps[-1]), float(fps[-1])
    above_a, above_n = tps.to(torch.float64) - a, fps.to(torch.float64) - n  # T, F
    mixed = (a > 0) & (n > 0)
    # AP, best order minus tied: a (T + a) [1 / (T + F + a) - 1 / (T + F + a + n)].
    m = above_a + above_n + n  # M = T + F + n, pixels at or above the bin but its anomalies
    gain = a * (above_a + a) * n / ((above_a + above_n + a).clamp(min=1.0) * (m + a))
    # AP, tied minus worst order: (F + n) / (M + a) * sum_{k=1..a} (a - k) / (M + k), where the
    # sum is (a + M) H - a with H = sum_k 1 / (M + k); it is 0 for a <= 1.
    spread = ((a + m) * _harmonic_gap(m, a) - a).clamp(min=0.0)
    loss = torch.where(a > 1, (above_n + n) / (m + a) * spread, 0.0)
    ap_up, ap_down = float(gain.sum()) / total_a, float(loss.sum()) / total_a
    auroc = float((a * n).sum()) / (2.0 * total_a * total_n)
    # FPR95: the bin where the TPR first reaches the level, found as ranking_metrics finds it.
    tpr = tps.to(torch.float64) / total_a
    level = torch.tensor([fpr_at_tpr], dtype=torch.float64, device=tps.device)
    first = torch.searchsorted(tpr, level, side="left")
    fpr_down = float(n[first]) / total_n
    ap, auc, fpr = values["ap"], values["auroc"], values["fpr95"]
    return {
        "mixed_bins": int(mixed.sum()),
        "pixels_in_mixed_bins": int((a + n)[mixed].sum()),
        "ap_interval": [max(ap - ap_down, 0.0), min(ap + ap_up, 1.0)],
        "ap_error_bound": max(ap_up, ap_down),
        "auroc_interval": [max(auc - auroc, 0.0), min(auc + auroc, 1.0)],
        "auroc_error_bound": auroc,
        "fpr95_interval": [max(fpr - fpr_down, 0.0), fpr],
        "fpr95_error_bound": fpr_down,
    }


def score_bins(scores: Tensor, bits: int = DEFAULT_BIN_BITS) -> Tensor:
    """Order-preserving histogram bin of each score: int64 in [0, 2**bits).

    Scores are cast to float32 (as the official evaluation does) and -0.0 is made +0.0; the
    float32 bit pattern is mapped to a signed integer of the same order (negative floats have
    their magnitude bits flipped) and its top ``bits`` bits are the bin. Every bin holds floats
    of one sign and one exponent whose mantissas share their top ``bits - 9`` bits: a relative
    width of 2**-(bits - 9) (1.2e-4 for 22 bits), whatever the magnitude. Scores that differ by
    less than that may share a bin and then count as tied. Non-finite scores (exponent 255) fill
    the lowest and the highest ``2**(bits - 9)`` bins, and no finite score does.

    :class:`AnomalyMetrics` counts pixels in these bins, computed by the same function
    (:func:`histogram_slots`, :func:`add_to_histogram`).
    """
    if not 10 <= bits <= 31:
        raise ValueError(f"bin bits must lie in 10..31, got {bits}")
    score32 = scores.to(torch.float32).reshape(-1)
    bins = torch.empty(score32.shape, dtype=torch.int32, device=score32.device)
    pattern = torch.empty_like(score32)
    _bins_into(score32, bits, bins, pattern, pattern.view(torch.int32))
    return bins.long().view(scores.shape)


def _bins_into(score32: Any, bits: int, bins: Any, pattern: Any, pattern_bits: Any) -> None:
    """:func:`score_bins` of float32 ``score32`` into ``bins`` (int32), numpy or torch alike.

    ``pattern`` is a float32 work array of the same length, ``pattern_bits`` its int32 view.
    Operations that numpy and torch share (the CPU update runs them on numpy views of its work
    tensors, a GPU on tensors; see :func:`add_to_histogram`), all into existing arrays.
    """
    xp = np if isinstance(bins, np.ndarray) else torch
    xp.add(score32, 0.0, out=pattern)  # -0.0 + 0.0 = +0.0: one tie, one bin
    _right_shift(xp)(pattern_bits, 31, out=bins)  # -1 for negative floats, else 0
    # x ^ (bins | sign bit): negative floats get every bit flipped, the others their sign bit;
    # read as unsigned, the same order as the floats
    bins |= -(1 << 31)
    bins ^= pattern_bits
    if xp is np:  # the top bits of the unsigned pattern: a logical shift
        np.right_shift(bins.view(np.uint32), 32 - bits, out=bins.view(np.uint32))
    else:  # torch shifts int32 arithmetically: clear the copies of the sign bit
        bins >>= 32 - bits
        bins &= (1 << bits) - 1


def _right_shift(xp: Any) -> Any:
    return np.right_shift if xp is np else torch.bitwise_right_shift


def _slots_into(
    score32: Any,
    target: Any,
    bits: int,
    work: dict[str, Any],
    void: Any,
    bin_range: Any = None,
) -> Any:
    """Each pixel's histogram slot into ``work["slots"]`` and weight into ``work["weight"]``.

    The binning of both :class:`AnomalyMetrics` update paths, for numpy arrays and torch tensors
    alike (``work``: int32 ``slots`` and ``row``, float32 ``pattern`` and its int32 view
    ``pattern_bits``, int64 ``weight``, all as long as ``target``). The slot indexes
    ``counts.view(-1)`` of the [2, 2**bits] histogram: the :func:`score_bins` bin, plus 2**bits
    for label 1 (row 1, anomaly); the weight is 1 for the labels 0 and 1, 0 for any other (void,
    its slot in either row). With ``void`` (the void label, wrapped to the labels' integer type
    as torch's ``==`` wraps it), returns a value that is true iff a label other than 0, 1 and
    ``void`` occurs. With ``bin_range`` (int64 [2], numpy or torch like the work arrays), widens
    it in place to hold the lowest and highest bin of the pixels.
    """
    xp = np if isinstance(target, np.ndarray) else torch
    slots, row, weight = work["slots"], work["row"], work["weight"]
    _bins_into(score32, bits, slots, work["pattern"], work["pattern_bits"])
    if bin_range is not None and xp is np:
        bin_range[0] = min(bin_range[0], slots.min())
        bin_range[1] = max(bin_range[1], slots.max())
    elif bin_range is not None:  # on the device, without a synchronisation
        torch.minimum(bin_range[:1], slots.min().to(torch.int64), out=bin_range[:1])
        torch.maximum(bin_range[1:], slots.max().to(torch.int64), out=bin_range[1:])
    if target.dtype.is_floating_point if xp is torch else target.dtype.kind == "f":
        row[...] = target
        row &= 1
    else:
        xp.bitwise_and(target, 1, out=row)  # 1 for label 1; either for the pixels of weight 0
    row <<= bits
    slots += row
    if target.dtype in (torch.bool, np.bool_):
        weight[...] = 1
        return None if void is None else False
    if target.dtype in (torch.uint8, np.uint8):  # the labels of PNG files: uint8 passes
        xp.less_equal(target, 1, out=weight)
        # min(label >> 1, label ^ void) is 0 exactly for 0 and 1 (the first) and void (the second)
        return None if void is None else xp.minimum(target >> 1, target ^ void).max()
    counted = target == 0
    counted |= target == 1
    weight[...] = counted
    return None if void is None else (~counted & (target != void)).any()


def histogram_slots(score32: Tensor, target: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Where :class:`AnomalyMetrics` counts each pixel: ``(slot, weight)``, flat like the input.

    ``slot`` (int32) indexes ``counts.view(-1)`` of the [2, 2**bits] histogram: the pixel's
    :func:`score_bins` bin, in row 1 (plus 2**bits) for label 1 (anomaly), row 0 for label 0;
    ``weight`` (int64) is 1 for the labels 0 and 1, 0 for any other value (void), whose slot is
    in either row. The function the update runs (:func:`add_to_histogram`), on new tensors.
    """
    score32, target = score32.to(torch.float32).reshape(-1), target.reshape(-1)
    work = _work_tensors(target.numel(), target.device)
    _slots_into(score32, target, bits, work, None)
    return work["slots"], work["weight"]


def _work_tensors(size: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    work = {
        "slots": torch.empty(size, dtype=torch.int32, device=device),
        "row": torch.empty(size, dtype=torch.int32, device=device),
        "pattern": torch.empty(size, dtype=torch.float32, device=device),
        "weight": torch.empty(size, dtype=torch.int64, device=device),
    }
    work["pattern_bits"] = work["pattern"].view(torch.int32)
    return work


class _WorkArrays:
    """The CPU update's work tensors, one chunk long, with their numpy views; reused.

    Reused because fresh memory costs its page faults, and chunk-sized so that each pass reads
    what the previous one left in the L2 cache (``benchmarks/binning.py``).
    """

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self.arrays: dict[str, np.ndarray] = {}

    # A copied metric gets its own, empty work arrays: a deep copy would part the numpy views
    # from their tensors (the passes would then write where index_add_ does not read).
    def __deepcopy__(self, memo: dict) -> _WorkArrays:
        return _WorkArrays()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def get(self, size: int) -> tuple[dict[str, Tensor], dict[str, np.ndarray]]:
        if not self.tensors or self.tensors["slots"].numel() < size:
            self.tensors = _work_tensors(size)
            self.arrays = {name: tensor.numpy() for name, tensor in self.tensors.items()}
        if size == self.tensors["slots"].numel():
            return self.tensors, self.arrays
        return (
            {name: tensor[:size] for name, tensor in self.tensors.items()},
            {name: array[:size] for name, array in self.arrays.items()},
        )


# Pixels per pass of the CPU update: one chunk's work arrays (int32 slots and rows, float32
# patterns, int64 weights: 1.25 MiB at 2**16 pixels) are reread from cache by the next pass
# (benchmarks/binning.py: 2**14..2**18 within 15 % of each other, whole frames 20 % slower).
CPU_CHUNK_PIXELS = 1 << 16

# Label dtypes the CPU update reads through numpy (others go through torch, as on a GPU).
_NUMPY_LABELS = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def add_to_histogram(
    counts: Tensor,
    score32: Tensor,
    target: Tensor,
    sign: int = 1,
    void: int | None = None,
    work: _WorkArrays | None = None,
    bin_range: Tensor | None = None,
) -> bool | None:
    """Add (``sign`` = -1: remove) every pixel labelled 0 or 1 to ``counts`` [2, 2**bits].

    The one fold of both :class:`AnomalyMetrics` update paths: the slots and weights of
    :func:`_slots_into` (:func:`histogram_slots`), then one ``index_add_`` of the 0/1 weights
    straight into the int64 state: no scratch histogram to zero and fold, void pixels add 0.

    On the CPU, float32 scores with uint8 labels (those of label PNGs) go through the compiled
    fold of :mod:`fsbench.metrics.native` where it is available: one pass, the same counts.
    Otherwise the elementwise passes run on numpy views of reused work tensors
    (``work``), :data:`CPU_CHUNK_PIXELS` pixels at a time: numpy runs them on one thread, where
    torch's intra-op threads made each pass a parallel region, and on a machine whose cores are
    busy every region waits for a descheduled thread (benchmarks/README.md measures both). On a
    GPU, torch tensors in one pass, no synchronisation.

    With ``void`` (the void label), also checks the labels on the way: returns whether a label
    other than 0, 1 and ``void`` was found (None without ``void``). With ``bin_range`` (int64
    [2] on the histogram's device), widens it to hold the lowest and highest bin written.
    """
    bits = counts.shape[1].bit_length() - 1
    flat = counts.view(-1)
    score32, target = score32.detach().reshape(-1), target.detach().reshape(-1)
    if counts.device.type != "cpu" or target.dtype not in _NUMPY_LABELS:
        work_t = _work_tensors(target.numel(), counts.device)
        found = _slots_into(score32, target, bits, work_t, void, bin_range)
        weight = work_t["weight"] if sign == 1 else work_t["weight"].neg_()
        flat.index_add_(0, work_t["slots"], weight)
        return None if void is None else bool(found)
    if void is not None and target.dtype != torch.bool:
        void = int(np.array(void).astype(np.dtype(str(target.dtype).split(".")[1])))  # wrapped
    scores, labels = score32.numpy(), target.numpy()
    seen = None if bin_range is None else bin_range.numpy()
    if labels.dtype == np.uint8 and scores.dtype == np.float32 and native.library() is not None:
        seen = np.array([counts.shape[1], -1], dtype=np.int64) if seen is None else seen
        found = native.fold_u8(
            np.ascontiguousarray(scores), np.ascontiguousarray(labels), counts.numpy(),
            -1 if void is None else void, sign, seen,
        )  # fmt: skip
        return bool(found) if void is not None else None
    work = work or _WorkArrays()
    found = False
    for start in range(0, labels.size, CPU_CHUNK_PIXELS):
        end = min(start + CPU_CHUNK_PIXELS, labels.size)
        tensors, arrays = work.get(end - start)
        found |= bool(_slots_into(scores[start:end], labels[start:end], bits, arrays, void, seen))
        if sign != 1:
            tensors["weight"].neg_()
        flat.index_add_(0, tensors["slots"], tensors["weight"])
    return found if void is not None else None


def _non_finite_counted(counts: Tensor) -> int:
    """Pixels counted in the bins of non-finite scores: the lowest and highest 2**(bits-9)."""
    width = counts.shape[1] >> 9
    return int(counts[:, :width].sum() + counts[:, -width:].sum())


def _occupied_bins(counts: Tensor, low: int = 0, high: int | None = None) -> Tensor:
    """The bins of ``counts`` [2, B] holding any pixel, ascending (int64), read in low..high.

    On the CPU numpy's ``any``, several times faster than torch's reductions over its first
    dimension and ``torch.nonzero`` (benchmarks/README.md), over the bins the updates reached
    only: the rest of a fresh histogram is never touched (:func:`_zero_counts`).
    """
    high = counts.shape[1] - 1 if high is None else high
    if high < low:
        return torch.zeros(0, dtype=torch.int64, device=counts.device)
    if counts.device.type == "cpu":
        reached = counts.numpy()[:, low : high + 1].any(0)
        return torch.from_numpy(np.flatnonzero(reached).astype(np.int64) + low)
    return torch.nonzero(counts[:, low : high + 1].sum(0)).squeeze(1) + low


def _zero_counts(default: Tensor) -> Tensor:
    """A zero histogram shaped and placed like ``default`` (a stride-0 view of one zero).

    On the CPU from ``numpy.zeros``, whose memory the operating system hands out as zero pages
    on first touch: a fresh metric pays only for the bins its scores reach, not for writing
    2**(bits+4) bytes (benchmarks/README.md, "The referee": fresh memory).
    """
    if default.device.type == "cpu":
        return torch.from_numpy(np.zeros(tuple(default.shape), dtype=np.int64))
    return torch.zeros(default.shape, dtype=torch.int64, device=default.device)


def _widest_range(ranges: Tensor) -> Tensor:
    """The ``bin_range`` states [..., 2] of several processes as one: lowest low, highest high."""
    ranges = ranges.reshape(-1, 2)
    return torch.stack([ranges[:, 0].min(), ranges[:, 1].max()])


def bin_lower_edges(bins: Tensor, bits: int = DEFAULT_BIN_BITS) -> Tensor:
    """The smallest float32 score that falls in each bin: the inverse of :func:`score_bins`."""
    ordered = ((bins - (1 << (bits - 1))) << (32 - bits)).to(torch.int32)
    return torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).view(torch.float32)


class AnomalyMetrics(torchmetrics.Metric):
    """Fishyscapes AP, AUROC and FPR95, pooled over every non-void pixel of every update.

    ``update(score, target)``:

    * ``score``: float tensor of any shape (typically [N, H, W]), higher = more anomalous, at the
      label resolution;
    * ``target``: integer tensor of the same shape: 0 = inlier, 1 = anomaly (the positive class),
      ``ignore_index`` (default 255) = void, excluded from every count.

    ``compute()`` returns ``{"ap", "auroc", "fpr95"}`` (python floats in [0, 1]) and
    ``{"n_anomaly", "n_inlier"}`` (python ints), with the definitions of the official Fishyscapes
    ``eval.py`` (Blum et al., IJCV 2021; see :func:`ranking_metrics`), FPR95 being the FPR at the
    first threshold whose TPR >= ``fpr_at_tpr``; and ``"binning"``, what the histogram may have
    cost (:func:`binning_bounds`: bins shared by both classes, and for each metric an interval
    holding the exact value and the error bound), with ``"bin_bits"``.

    **State, memory, exactness.** The state is a histogram ``counts`` int64 [2, 2**bin_bits]
    (row 0 inlier, row 1 anomaly) over the order-preserving bins of :func:`score_bins`: its size,
    2**(bin_bits + 4) bytes (64 MiB for the default 22 bits), does not depend on the number of
    pixels, and processes sync it by summation, so a distributed result equals the
    single-process one exactly. Each bin is one threshold: scores that are equal (ties, quantized
    scores) are counted exactly; distinct scores closer than a relative 2**-(bin_bits - 9)
    (1.2e-4) may share a bin and count as tied, which moves AP and AUROC by far less than 1e-4 on
    continuous scores (see ``tests/test_metrics.py`` and ``benchmarks/metrics.py``). The
    resolution is relative, so scores crowded near a nonzero value lose it: a raw probability
    p = 1 - 1e-6 shares its bin with 1 - 1e-5. Score ``1 - p`` computed stably (as
    ``baselines.softmax.MaxSoftmax`` does), a log-probability, or raise ``bin_bits``; or check
    with :func:`anomaly_metrics`, which sorts every pixel exactly. ``compute()`` says when that is
    needed: it bounds the error from the counts (``"binning"`` in its result, the same under DDP
    as in one process) and, when a bound exceeds 1e-4, issues one :class:`BinningWarning` (on
    rank 0) naming the fixes.

    Args:
        ignore_index: label of void pixels.
        fpr_at_tpr: the TPR level of the FPR metric.
        bin_bits: histogram resolution, 10..26; memory 2**(bin_bits + 4) bytes.
        per_image: also keep, per updated image, its exact AP (NaN without both classes) and its
            anomaly pixel fraction among valid pixels; ``compute()`` then adds ``"per_image"``.
            Computed by :func:`~fsbench.metrics.per_image.per_image_metrics`.
        per_image_stride: compute the per-image values on every s-th pixel of each row and
            column only ([N, H, W] inputs; s*s-th pixel of other shapes): s*s times cheaper, an
            estimate good enough to rank images (``evaluate.py`` picks the frames of its
            worst/best figure so, then re-scores them exactly). 1 = every pixel, exact.
        deferred_checks: keep ``update`` free of host-device synchronisation: the label and
            non-finite checks are counted on the device and raised at ``compute()`` (naming the
            values and counts, not the first position), and the histogram is filled with one
            ``index_add_`` into ``counts``. ``None`` (default) defers on CUDA, where a
            synchronisation per update would stall the next batch's forward, and checks at once
            on the CPU, where it costs nothing. Both give identical counts.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    counts: Tensor

    def __init__(
        self,
        ignore_index: int = 255,
        fpr_at_tpr: float = 0.95,
        bin_bits: int = DEFAULT_BIN_BITS,
        per_image: bool = False,
        per_image_stride: int = 1,
        deferred_checks: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if ignore_index in (0, 1):
            raise ValueError(
                f"ignore_index must differ from the labels 0 and 1, got {ignore_index}"
            )
        if not 10 <= bin_bits <= 26:
            raise ValueError(f"bin_bits must lie in 10..26 (memory 2**(bits+4) B), got {bin_bits}")
        _check_fpr_at_tpr(fpr_at_tpr)
        self.ignore_index = ignore_index
        self.fpr_at_tpr = fpr_at_tpr
        self.bin_bits = bin_bits
        self.per_image = per_image
        if int(per_image_stride) != per_image_stride or per_image_stride < 1:
            raise ValueError(f"per_image_stride must be a positive integer, got {per_image_stride}")
        self.per_image_stride = int(per_image_stride)
        # Registered with a stand-in default: torchmetrics would copy a real one (64 MiB) into
        # its defaults and copy it again on every reset; the histogram is made by _zero_counts.
        self.add_state("counts", default=torch.zeros(0, dtype=torch.int64), dist_reduce_fx="sum")
        self._defaults["counts"] = torch.zeros((), dtype=torch.int64).expand(2, 2**bin_bits)
        self.counts = _zero_counts(self._defaults["counts"])
        # The lowest and highest bin any update wrote: compute reads only the bins between.
        self.add_state(
            "bin_range", default=torch.tensor([2**bin_bits, -1]), dist_reduce_fx=_widest_range
        )
        self.deferred_checks = deferred_checks
        self._work = _WorkArrays()  # the update's reused work tensors (CPU only)
        # Deferred checks: label values seen (0..255; 256 = any other value) and the number of
        # non-finite scores on non-void pixels, counted on the device.
        self.add_state(
            "label_values", default=torch.zeros(257, dtype=torch.int64), dist_reduce_fx="sum"
        )
        self.add_state(
            "non_finite", default=torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum"
        )
        if per_image:
            self.add_state("image_ap", default=[], dist_reduce_fx="cat")
            self.add_state("image_anomaly_fraction", default=[], dist_reduce_fx="cat")

    def update(self, score: Tensor, target: Tensor) -> None:
        """Add one batch: ``score`` float [...], ``target`` int [...] of the same shape."""
        check_same_shape(score, target)
        if score.is_complex() or score.dtype == torch.bool:
            raise ValueError(f"scores must be real numbers, got dtype {score.dtype}")
        score, target = score.detach(), target.detach()
        deferred = self.deferred_checks
        if deferred is None:
            deferred = score.device.type == "cuda"
        if deferred:
            self._update_deferred(score.to(torch.float32), target)
        else:
            self._update_checked(score.to(torch.float32), target)
        if self.per_image:
            self._add_per_image(score, target)

    def _update_checked(self, score32: Tensor, target: Tensor) -> None:
        """``update`` that raises at once, naming the first bad pixel; the batch is then undone.

        The checks ride on the fold (:func:`add_to_histogram`): a label other than 0, 1 and
        void is a pixel neither counted nor void, and a non-finite score on a counted pixel
        lands in the bins of non-finite scores (exponent 255), which stay empty otherwise.
        """
        if score32.numel() == 0:
            return
        before = _non_finite_counted(self.counts)
        unexpected = add_to_histogram(
            self.counts,
            score32,
            target,
            void=self.ignore_index,
            work=self._work,
            bin_range=self.bin_range,
        )
        if not unexpected and _non_finite_counted(self.counts) == before:
            return
        add_to_histogram(self.counts, score32, target, sign=-1)  # the batch leaves no trace
        self._check_labels(target)
        # Non-finite scores on void pixels are harmless; anywhere else they are an error.
        valid_or_finite = torch.isfinite(score32) | (target == self.ignore_index)
        raise ValueError(_describe_non_finite(valid_or_finite, "non-void pixels"))

    def _check_labels(self, target: Tensor) -> None:
        allowed = (target == 0) | (target == 1) | (target == self.ignore_index)
        if not bool(allowed.all()):
            raise self._unexpected_labels(torch.unique(target[~allowed]).tolist())

    def _unexpected_labels(self, found: list) -> ValueError:
        return ValueError(
            f"anomaly labels hold unexpected values {found}; expected {{0, 1, "
            f"{self.ignore_index}}} (0 = inlier, 1 = anomaly, {self.ignore_index} = void). "
            f"Is void stored as 2? Remap it to {self.ignore_index} explicitly"
        )

    def _update_deferred(self, score32: Tensor, target: Tensor) -> None:
        """``update`` without a host-device synchronisation (see ``deferred_checks``)."""
        if score32.numel() == 0:
            return
        target = target.reshape(-1)
        wide = target.to(torch.int64)
        code = torch.where((wide < 0) | (wide > 255), 256, wide)
        self.label_values += torch.bincount(code, minlength=257)
        non_void = wide != self.ignore_index
        self.non_finite += (non_void & ~torch.isfinite(score32.reshape(-1))).sum()
        add_to_histogram(self.counts, score32, target, work=self._work, bin_range=self.bin_range)

    def _raise_deferred(self) -> None:
        """Raise what the deferred checks counted (one synchronisation, at compute time)."""
        seen = torch.nonzero(self.label_values).squeeze(1).tolist()
        unexpected = [v for v in seen if v not in (0, 1, self.ignore_index)]
        if unexpected:
            raise self._unexpected_labels(
                ["other (<0 or >255)" if v == 256 else v for v in unexpected]
            )
        if int(self.non_finite):
            raise ValueError(
                f"{int(self.non_finite)} non-void pixels had non-finite scores (NaN or +-inf, "
                "including values beyond the float32 range); scores are never silently dropped. "
                "Fix the score map (AnomalyMetrics(deferred_checks=False) names the first one)"
            )

    def _add_per_image(self, score: Tensor, target: Tensor) -> None:
        step = self.per_image_stride
        if step > 1 and score.dim() == 3:
            score, target = score[:, ::step, ::step], target[:, ::step, ::step]
        elif step > 1:
            score = score.reshape(score.shape[0], -1)[:, :: step * step]
            target = target.reshape(target.shape[0], -1)[:, :: step * step]
        values = per_image_metrics(score, target, self.ignore_index, self.fpr_at_tpr)
        ap, fraction = values["ap"], values["anomaly_fraction"]
        self.image_ap.append(ap)
        self.image_anomaly_fraction.append(fraction)

    def reset(self) -> None:
        """torchmetrics' reset, the histogram made afresh by :func:`_zero_counts`."""
        default = self._defaults.pop("counts")
        try:
            super().reset()
        finally:
            self._defaults["counts"] = default
        self.counts = _zero_counts(default)

    def _cumulative_counts(self) -> tuple[Tensor, Tensor, Tensor]:
        """tps, fps (int64) and the bins, at each non-empty bin, highest scores first."""
        self._raise_deferred()
        low, high = self.bin_range.tolist()
        occupied = _occupied_bins(self.counts, low, high).flip(0)
        tps = torch.cumsum(self.counts[1, occupied], 0)
        fps = torch.cumsum(self.counts[0, occupied], 0)
        return tps, fps, occupied

    def cumulative_counts(self) -> tuple[Tensor, Tensor]:
        """``tps, fps``: int64 [T] counts at or above each occupied bin, highest scores first.

        The counts :func:`ranking_metrics` turns into AP / AUROC / FPR95; other rules (the
        FPR95 variants of :mod:`fsbench.metrics.protocols`) read the same curve.
        """
        tps, fps, _ = self._cumulative_counts()
        return tps, fps

    def compute(self) -> dict[str, Any]:
        """Pool every update (and every process) and return the metrics dict."""
        tps, fps, _ = self._cumulative_counts()
        result: dict[str, Any] = ranking_metrics(tps, fps, self.fpr_at_tpr)
        binning = {"bin_bits": self.bin_bits, **binning_bounds(tps, fps, result, self.fpr_at_tpr)}
        result["binning"] = binning
        _warn_if_approximate(binning)
        if self.per_image:
            result["per_image"] = {
                "ap": cat_state(self.image_ap).tolist(),
                "anomaly_fraction": cat_state(self.image_anomaly_fraction).tolist(),
            }
        return result

    def sync(self, *args: Any, **kwargs: Any) -> None:
        """torchmetrics' state synchronisation, safe for a process that saw no frame.

        Such a process holds empty per-image lists, which torchmetrics would gather as float32
        beside the other processes' float64 (and gloo aborts on the size mismatch): they get an
        empty float64 entry first.
        """
        if self.per_image:
            for state in ("image_ap", "image_anomaly_fraction"):
                values = getattr(self, state)
                if isinstance(values, list) and not values:
                    values.append(torch.empty(0, dtype=torch.float64, device=self.counts.device))
        super().sync(*args, **kwargs)

    def compute_with_curves(self, max_points: int = 1000) -> tuple[dict[str, Any], dict]:
        """``(compute(), curves(max_points))`` from one synchronisation of the states.

        Under DDP :meth:`compute` gathers the 64 MiB histogram from every process and
        :meth:`curves` alone reads only this process's; here both read one gathered copy (in a
        single process the sync is a no-op).
        """
        with self.sync_context():
            # the unwrapped compute: torchmetrics' wrapper would synchronise a second time
            return type(self).compute(self), self.curves(max_points)

    def curves(self, max_points: int = 1000) -> dict[str, list[float]]:
        """ROC and PR curves (see :func:`downsample_curves`); thresholds are bin lower edges.

        Of this process's states unless they are synchronised (:meth:`compute_with_curves`).
        """
        tps, fps, bins = self._cumulative_counts()
        if tps.numel() == 0 or tps[-1] == 0 or fps[-1] == 0:
            raise ValueError("curves need both anomaly and inlier pixels; update with more data")
        return downsample_curves(tps, fps, bin_lower_edges(bins, self.bin_bits), max_points)


def _warn_if_approximate(binning: dict[str, Any]) -> None:
    """One :class:`BinningWarning` (on rank 0) when a bound of ``binning`` exceeds 1e-4."""
    bounds = {key: binning[f"{key}_error_bound"] for key in ("ap", "fpr95", "auroc")}
    if max(bounds.values()) <= BINNING_WARN_ABOVE:
        return
    ap, fpr = binning["ap_interval"], binning["fpr95_interval"]
    bits = binning["bin_bits"]
    rank_zero_warn(
        f"AnomalyMetrics' histogram (bin_bits={bits}) ranks scores closer than "
        f"{2.0 ** -(bits - 9):.1e} (relative) as ties, and these scores are crowded: "
        f"{binning['pixels_in_mixed_bins']:,} pixels lie in the {binning['mixed_bins']:,} bins "
        f"holding both classes. AP may be off by up to {bounds['ap']:.2g} (exact value in "
        f"[{ap[0]:.4f}, {ap[1]:.4f}]), FPR95 by up to {bounds['fpr95']:.2g} (in "
        f"[{fpr[0]:.4f}, {fpr[1]:.4f}]), AUROC by up to {bounds['auroc']:.2g}. Fix: compute "
        "the scores so that they are not crowded near a nonzero value: shift or rescale them "
        "where they are made (x - c rather than x near c), or use log-space scores (log p or "
        "1 - p from the other classes' terms rather than p near 1); or raise "
        "AnomalyMetrics(bin_bits=...) (up to 26, 2**(bits+4) bytes); or compute the exact "
        "fsbench.metrics.anomaly_metrics on the pixels. If the pixels sharing bins hold exactly "
        "equal scores (quantized scores), the histogram is exact and this bound pessimistic. "
        "results.json records it under 'binning'",
        BinningWarning,
        stacklevel=6,  # the caller of metric.compute(), past torchmetrics' two wrappers
    )
