"""Per-image anomaly metrics: each frame's exact AP, FPR95 and AUROC, and their spread.

One batched function, :func:`per_image_metrics`, computes every frame's values; both
:class:`~fsbench.metrics.anomaly.AnomalyMetrics` (``per_image=True``, the per-frame AP of the
``fishyscapes`` protocol's worst/best figure) and :class:`PerImageMetrics` (the ``per_image``
protocol) call it. The definitions are those of :func:`~fsbench.metrics.anomaly.anomaly_metrics`
applied to one frame's valid pixels (float32 scores, each distinct score one threshold, ties never
split, AP as scikit-learn's step sum, AUROC the trapezoid under the ROC points, FPR at the first
threshold whose TPR >= the level); ``tests/test_per_image.py`` checks them against scikit-learn.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torchmetrics
from torch import Tensor

from fsbench.metrics import native
from fsbench.metrics.states import cat_state, frame_batch, gather_objects

__all__ = ["PerImageMetrics", "per_image_metrics"]


def per_image_metrics(
    score: Tensor,
    target: Tensor,
    ignore_index: int = 255,
    fpr_at_tpr: float = 0.95,
    kernel: str | None = None,
) -> dict[str, Tensor]:
    """Each image's exact AP, FPR95 and AUROC, for a whole batch.

    Two kernels compute the same definition, chosen by the scores' device
    (``benchmarks/score.py`` and ``benchmarks/README.md`` measure both):

    * on a GPU, without a synchronisation: void pixels get the score -inf and weight 0, each row
      is sorted once, and the counts are read at the last pixel of each group of tied scores (one
      threshold); every scan runs over the flattened batch and everything stays on the device, so
      the evaluation loop is never stalled by it;
    * on the CPU, frame by frame: the anomaly and the inlier scores are sorted apart (numpy's
      vectorised sort), and each distinct anomaly score u, of multiplicity m, is looked up in the
      sorted inlier scores: AP = sum m P(>= u) / P, AUROC = sum m (2 N(< u) + N(= u)) / (2 P N)
      (the Mann-Whitney count, which equals the trapezoid under the ROC points), FPR95 read at the
      anomaly score whose rank first gives TPR >= the level.

    Args:
        score: float [N, ...], higher = more anomalous (finite on non-void pixels).
        target: int [N, ...] of the same shape, 0 / 1 / ``ignore_index``.
        fpr_at_tpr: the TPR level of the FPR metric.
        kernel: ``"batched"`` (the GPU kernel), ``"split"`` (the CPU kernel) or ``None``: by
            the scores' device. Both give the same values (up to float64 rounding).

    Returns:
        ``{"ap", "fpr95", "auroc", "anomaly_fraction"}``, float64 [N] each: NaN metrics for an
        image without both classes, NaN fraction for an image without a valid pixel.
    """
    flat_score = score.detach().reshape(score.shape[0], -1).to(torch.float32)
    flat_target = target.detach().reshape(target.shape[0], -1)
    if kernel is None:
        kernel = "split" if flat_score.device.type == "cpu" else "batched"
    if kernel == "split":
        values = _per_image_cpu(flat_score.cpu(), flat_target.cpu(), fpr_at_tpr)
        return {key: value.to(flat_score.device) for key, value in values.items()}
    if kernel != "batched":
        raise ValueError(f"kernel must be 'batched', 'split' or None, got {kernel!r}")
    images, pixels = flat_score.shape
    valid = flat_target != ignore_index
    positive = (flat_target == 1) & valid
    negative = (flat_target == 0) & valid
    n_pos, n_neg = positive.sum(1), negative.sum(1)
    fraction = n_pos.to(torch.float64) / valid.sum(1).to(torch.float64)  # 0/0 = NaN
    nan = torch.full_like(fraction, float("nan"))
    if pixels == 0:
        return {"ap": nan, "fpr95": nan.clone(), "auroc": nan.clone(), "anomaly_fraction": fraction}
    ordered, order = torch.sort(
        torch.where(valid, flat_score, float("-inf")), dim=1, descending=True
    )
    sorted_positive = positive.gather(1, order)
    sorted_negative = negative.gather(1, order)
    del order
    tps, fps = _row_cumsum(sorted_positive), _row_cumsum(sorted_negative)
    # Groups of equal scores, each one threshold: a group opens where the score changes (and at
    # each row's start) and closes before the next opens. Group arrays are sized for the worst
    # case (every pixel its own group), so nothing waits for a count from the device.
    opens = torch.ones_like(valid)
    opens[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    del ordered
    closes = torch.ones_like(valid)
    closes[:, :-1] = opens[:, 1:]
    group = torch.cumsum(opens.reshape(-1), 0) - 1
    flat_closes = closes.reshape(-1)

    def per_group(values: Tensor) -> Tensor:  # the value at each group's close
        at_close = torch.where(flat_closes, values.reshape(-1), 0)
        return torch.zeros_like(at_close).index_add_(0, group, at_close)

    precision = tps.to(torch.float64) / (tps + fps).clamp(min=1).to(torch.float64)
    # AP: each anomaly pixel takes the precision of its threshold (scikit-learn's step sum)
    ap = (per_group(precision)[group].view(images, pixels) * sorted_positive).sum(1)
    # AUROC (Mann-Whitney, int64, exact): per anomaly pixel, 2 x (inliers below) + (inliers tied)
    group_fps = per_group(fps)[group].view(images, pixels)
    group_negatives = (
        torch.zeros_like(group)
        .index_add_(0, group, sorted_negative.reshape(-1).to(torch.int64))[group]
        .view(images, pixels)
    )
    pairs = (2 * (n_neg[:, None] - group_fps) + group_negatives) * sorted_positive
    # FPR95: at the first threshold (highest first) whose TPR >= the level
    pos, neg = n_pos.to(torch.float64), n_neg.to(torch.float64)
    reached = closes & (tps.to(torch.float64) / pos[:, None] >= fpr_at_tpr)
    first = reached.to(torch.uint8).argmax(1, keepdim=True)  # the first True of each row
    fpr_counts = fps.gather(1, first).squeeze(1).to(torch.float64)
    undefined = (n_pos == 0) | (n_neg == 0)
    return {
        "ap": torch.where(undefined, nan, ap / pos),
        "fpr95": torch.where(undefined, nan, fpr_counts / neg),
        "auroc": torch.where(undefined, nan, pairs.sum(1).to(torch.float64) / (2.0 * pos * neg)),
        "anomaly_fraction": fraction,
    }


def _per_image_cpu(scores: Tensor, targets: Tensor, fpr_at_tpr: float) -> dict[str, Tensor]:
    """:func:`per_image_metrics` of [N, P] CPU rows, one frame at a time (see there).

    Only the labels 0 and 1 are read; every other value is void.
    """
    out = np.full((4, scores.shape[0]), np.nan)
    for index, (score, target) in enumerate(zip(scores.numpy(), targets.numpy(), strict=True)):
        positive, negative = _sorted_classes(score, target)
        n_pos, n_neg = positive.size, negative.size
        if n_pos + n_neg:
            out[3, index] = n_pos / (n_pos + n_neg)
        if n_pos == 0 or n_neg == 0:
            continue
        # distinct anomaly scores (ascending), their first rank and multiplicity
        starts = np.flatnonzero(np.r_[True, positive[1:] != positive[:-1]])
        values = positive[starts]
        counts = np.diff(np.r_[starts, n_pos])
        tp = n_pos - starts  # anomaly pixels scoring >= each value
        below, equal = _ranks(negative, values)  # inlier scores below / equal to each value
        fp = n_neg - below  # inlier pixels scoring >= each value
        out[0, index] = float(np.sum(counts * (tp / (tp + fp)))) / n_pos
        pairs = int(np.sum(counts * (2 * below + equal)))  # int64, exact
        out[2, index] = pairs / (2.0 * n_pos * n_neg)
        # the k-th highest anomaly score gives TPR k / P; the first k reaching the level
        rank = int(np.searchsorted(np.arange(1, n_pos + 1) / n_pos, fpr_at_tpr, "left"))
        crossing = positive[n_pos - 1 - rank]
        out[1, index] = (n_neg - int(np.searchsorted(negative, crossing, "left"))) / n_neg
    values = torch.from_numpy(out)
    return {"ap": values[0], "fpr95": values[1], "auroc": values[2], "anomaly_fraction": values[3]}


def _sorted_classes(score: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The anomaly (label 1) and the inlier (label 0) scores of one frame, each ascending.

    With uint8 labels and the compiled kernels (:mod:`fsbench.metrics.native`), as the
    order-preserving uint32 keys of the float32 scores, radix-sorted: equal exactly where the
    scores are equal and in their order, so every count below is the same; else numpy's sort of
    the scores.
    """
    if target.dtype == np.uint8 and native.library() is not None:
        score, target = np.ascontiguousarray(score), np.ascontiguousarray(target)
        negative, positive = native.sorted_classes_u8(score, target, _key_buffers(score.size))
        return positive, negative
    return np.sort(score[target == 1]), np.sort(score[target == 0])


def _ranks(negative: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many of the sorted ``negative`` lie below, and how many equal, each of the distinct
    ascending ``values``: one merge for the compiled kernels' keys, else searches."""
    if negative.dtype == np.uint32 and native.library() is not None:
        return native.ranks_u32(negative, values)
    below = np.searchsorted(negative, values, "left")
    # inlier scores equal to an anomaly score (ties across the classes): searched only there
    tied = negative[np.minimum(below, negative.size - 1)] == values
    equal = np.zeros_like(below)
    equal[tied] = np.searchsorted(negative, values[tied], "right") - below[tied]
    return below, equal


_BUFFERS = threading.local()


def _key_buffers(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three uint32 arrays of at least ``size``, reused by this thread frame after frame (fresh
    memory costs its page faults); each frame's keys are read before the next frame's sort."""
    buffers = getattr(_BUFFERS, "keys", None)
    if buffers is None or buffers[0].size < size:
        buffers = tuple(np.empty(size, dtype=np.uint32) for _ in range(3))
        _BUFFERS.keys = buffers
    return buffers


def _row_cumsum(values: Tensor) -> Tensor:
    """int64 cumulative sums along each row of [N, P], computed as one flat scan."""
    flat = torch.cumsum(values.reshape(-1), 0, dtype=torch.int64).view(values.shape)
    before = torch.zeros_like(flat[:, -1])
    before[1:] = flat[:-1, -1]
    return flat - before[:, None]


QUANTILE_LEVELS = (0, 10, 25, 50, 75, 90, 100)
_VALUES = ("ap", "fpr95", "auroc", "anomaly_fraction")


class PerImageMetrics(torchmetrics.Metric):
    """The ``per_image`` protocol: every frame's exact AP, FPR95 and AUROC, and their spread.

    ``update(score, target, names=None)`` takes a batch ([N, H, W]; a single [H, W] frame too)
    and the frames' names. Frames without an anomaly pixel or without an inlier pixel have no
    per-image metrics; they are counted and named (``"skipped"``), never averaged in as 0 or 1.
    State: four float64 values per frame, concatenated across processes in rank order, and the
    names (gathered as objects), so a distributed run reports what one process would.

    ``compute()`` returns ``{"n_frames", "skipped", "ap", "fpr95", "auroc", "<key>_quantiles",
    "worst"}``: the means over the frames that hold both classes, the quantiles
    (0, 10, 25, 50, 75, 90, 100 %) and the ``worst`` frames by AP (ties by name).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self, ignore_index: int = 255, fpr_at_tpr: float = 0.95, worst: int = 10, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.fpr_at_tpr = fpr_at_tpr
        self.worst = int(worst)
        for key in _VALUES:
            self.add_state(key, default=[], dist_reduce_fx="cat")
        self._names: list[str] = []
        self._local_names: list[str] | None = None

    def update(self, score: Tensor, target: Tensor, names: Sequence[str] | None = None) -> None:
        score, target = frame_batch(score, target)
        values = per_image_metrics(score, target, self.ignore_index, self.fpr_at_tpr)
        for key in _VALUES:
            getattr(self, key).append(values[key])
        start = len(self._names)
        if names is None or len(names) != score.shape[0]:
            names = [f"#{start + index}" for index in range(score.shape[0])]
        self._names.extend(str(name) for name in names)

    def sync(self, *args: Any, **kwargs: Any) -> None:
        """torchmetrics' sync, safe for a process without frames, and the names gathered too."""
        for key in _VALUES:
            values = getattr(self, key)
            if isinstance(values, list) and not values:
                values.append(torch.empty(0, dtype=torch.float64, device=self.device))
        was_synced = self._is_synced
        super().sync(*args, **kwargs)
        if self._is_synced and not was_synced:
            self._local_names = self._names
            self._names = gather_objects(self._names)

    def unsync(self, *args: Any, **kwargs: Any) -> None:
        super().unsync(*args, **kwargs)
        if self._local_names is not None:
            self._names, self._local_names = self._local_names, None

    def reset(self) -> None:
        super().reset()
        self._names, self._local_names = [], None

    def frame_values(self) -> list[dict[str, Any]]:
        """``{"name", "ap", "fpr95", "auroc", "anomaly_fraction"}`` of every frame, in order."""
        columns = {key: cat_state(getattr(self, key)).cpu().numpy() for key in _VALUES}
        return [
            {"name": name, **{key: float(columns[key][index]) for key in _VALUES}}
            for index, name in enumerate(self._names)
        ]

    def compute(self) -> dict[str, Any]:
        frames = self.frame_values()
        scored = [frame for frame in frames if frame["ap"] == frame["ap"]]  # not NaN
        skipped = [frame["name"] for frame in frames if frame["ap"] != frame["ap"]]
        if not scored:
            raise ValueError(
                f"no frame holds both anomaly and inlier pixels ({len(frames)} frames "
                "seen), so no per-image metric is defined"
            )
        result: dict[str, Any] = {"n_frames": len(scored), "skipped": skipped}
        for key in ("ap", "fpr95", "auroc"):
            values = np.array([frame[key] for frame in scored])
            result[key] = float(values.mean())
            quantiles = np.percentile(values, QUANTILE_LEVELS)
            result[f"{key}_quantiles"] = {
                str(q): float(v) for q, v in zip(QUANTILE_LEVELS, quantiles, strict=True)
            }
        ranked = sorted(scored, key=lambda frame: (frame["ap"], frame["name"]))
        result["worst"] = ranked[: self.worst]
        return result
