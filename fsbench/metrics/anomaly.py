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

import torch
import torchmetrics
from torch import Tensor

__all__ = ["AnomalyMetrics", "anomaly_metrics"]

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

    n_anomaly = int(targets.sum())
    n_inlier = int(targets.numel()) - n_anomaly
    if n_anomaly == 0 or n_inlier == 0:
        raise ValueError(
            "AP/AUROC/FPR95 are undefined without both classes: the evaluated pixels hold "
            f"{n_anomaly} anomaly and {n_inlier} inlier pixels; {_LABEL_HINT}, and that the "
            "evaluated set contains both"
        )

    sorted_scores, order = torch.sort(scores, descending=True)
    sorted_targets = targets[order]
    del order
    # The last position of each run of equal scores closes one threshold.
    closes_run = torch.ones_like(sorted_targets)
    closes_run[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    del sorted_scores
    positions = torch.nonzero(closes_run).squeeze(1)  # int64, ascending
    tps_int = torch.cumsum(sorted_targets, 0, dtype=torch.int64)[positions]
    fps_int = positions + 1 - tps_int
    del sorted_targets, closes_run, positions
    tps, fps = tps_int.to(torch.float64), fps_int.to(torch.float64)

    tpr = tps / n_anomaly  # = recall
    fpr = fps / n_inlier
    precision = tps / (tps + fps)
    zero = tpr.new_zeros(1)

    ap = torch.sum(torch.diff(tpr, prepend=zero) * precision)
    auroc = torch.trapezoid(torch.cat([zero, tpr]), torch.cat([zero, fpr]))
    # tpr is non-decreasing and ends at exactly 1.0, so the first index with tpr >= level exists.
    level = torch.tensor([fpr_at_tpr], dtype=torch.float64, device=tpr.device)
    first = torch.searchsorted(tpr, level, side="left")
    fpr95 = fpr[first]
    return {
        "ap": float(ap),
        "auroc": float(auroc),
        "fpr95": float(fpr95),
        "n_anomaly": n_anomaly,
        "n_inlier": n_inlier,
    }


def _cat_state(state: list[Tensor] | Tensor, dtype: torch.dtype) -> Tensor:
    """One 1-D tensor from a list state, before or after a distributed sync (then a tensor)."""
    if isinstance(state, Tensor):
        return state.reshape(-1)
    if not state:
        return torch.empty(0, dtype=dtype)
    return torch.cat([s.reshape(-1) for s in state])


class AnomalyMetrics(torchmetrics.Metric):
    """Fishyscapes AP, AUROC and FPR95, pooled over every non-void pixel of every update.

    ``update(score, target)``:

    * ``score``: float tensor of any shape (typically [N, H, W]), higher = more anomalous, at the
      label resolution;
    * ``target``: integer tensor of the same shape: 0 = inlier, 1 = anomaly (the positive class),
      ``ignore_index`` (default 255) = void, excluded from every count.

    ``compute()`` returns ``{"ap", "auroc", "fpr95"}`` (python floats in [0, 1]) and
    ``{"n_anomaly", "n_inlier"}`` (python ints), exactly as the official Fishyscapes ``eval.py``
    (Blum et al., IJCV 2021); see :func:`anomaly_metrics` for the definitions, FPR95 being the FPR
    at the first threshold whose TPR >= ``fpr_at_tpr``.

    This version keeps every valid pixel (float32 score + bool label, 5 bytes a pixel) in list
    states that are concatenated across processes, and sorts them in ``compute``. Pass
    ``compute_on_cpu=True`` to keep those states in host memory. Per-batch values of ``forward``
    are rarely meaningful (a batch may hold no anomaly pixel); use ``update`` and ``compute``.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    scores: list[Tensor] | Tensor
    targets: list[Tensor] | Tensor

    def __init__(self, ignore_index: int = 255, fpr_at_tpr: float = 0.95, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if ignore_index in (0, 1):
            raise ValueError(
                f"ignore_index must differ from the labels 0 and 1, got {ignore_index}"
            )
        _check_fpr_at_tpr(fpr_at_tpr)
        self.ignore_index = ignore_index
        self.fpr_at_tpr = fpr_at_tpr
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, score: Tensor, target: Tensor) -> None:
        """Add one batch: ``score`` float [...], ``target`` int [...] of the same shape."""
        if score.shape != target.shape:
            raise ValueError(
                f"score shape {tuple(score.shape)} differs from target shape "
                f"{tuple(target.shape)}; resize the scores to the label resolution"
            )
        if score.is_complex() or score.dtype == torch.bool:
            raise ValueError(f"scores must be real numbers, got dtype {score.dtype}")
        score, target = score.detach(), target.detach()
        valid = target != self.ignore_index
        labels = target[valid]
        binary = (labels == 0) | (labels == 1)
        if not bool(binary.all()):
            found = torch.unique(labels[~binary]).tolist()
            raise ValueError(
                f"anomaly labels hold unexpected values {found}; expected {{0, 1, "
                f"{self.ignore_index}}} (0 = inlier, 1 = anomaly, {self.ignore_index} = void). "
                f"Is void stored as 2? Remap it to {self.ignore_index} explicitly"
            )
        valid_scores = score[valid].to(torch.float32)
        finite = torch.isfinite(valid_scores)
        if not bool(finite.all()):
            # Locate the first offender in the caller's coordinates, not the valid-pixel list.
            full_finite = torch.isfinite(score.to(torch.float32)) | ~valid
            raise ValueError(_describe_non_finite(full_finite, "non-void pixels"))
        self.scores.append(valid_scores)
        self.targets.append(labels == 1)

    def compute(self) -> dict[str, float]:
        """Pool every update (and every process) and return the metrics dict."""
        scores = _cat_state(self.scores, torch.float32)
        targets = _cat_state(self.targets, torch.bool)
        return anomaly_metrics(scores, targets, self.fpr_at_tpr)
