"""Pixel-level anomaly metrics of the Fishyscapes benchmark: AP, AUROC, FPR at 95% TPR.

Definition (Blum et al., "The Fishyscapes Benchmark", IJCV 2021; the benchmark's ``eval.py``):
label 1 = anomaly (positive), 0 = inlier (negative), void (255) dropped; all pixels of all images
pooled (no per-image averaging); scores cast to float32; exact (no binning), tied scores form one
threshold. AP is scikit-learn's ``average_precision_score`` (the step sum
sum_k (R_k - R_k-1) P_k, not a trapezoid); AUROC is ``roc_auc_score``; FPR95 is the false positive
rate at the first threshold, scanning from the highest score down, whose TPR reaches 0.95.
"""

from __future__ import annotations

import torch
import torchmetrics
from torch import Tensor


def anomaly_metrics(scores: Tensor, targets: Tensor, fpr_at_tpr: float = 0.95) -> dict:
    """Exact AP, AUROC and FPR95 of 1-D valid pixels.

    Args:
        scores: float [P], higher = more anomalous.
        targets: bool or {0, 1} [P], 1 = anomaly.
        fpr_at_tpr: the TPR level of the FPR metric.

    Returns:
        ``{"ap", "auroc", "fpr95", "n_anomaly", "n_inlier"}``, the first three in [0, 1].
    """
    scores = scores.reshape(-1).to(torch.float32)
    targets = targets.reshape(-1).to(torch.bool)
    n_anomaly = int(targets.sum())
    n_inlier = targets.numel() - n_anomaly
    if n_anomaly == 0 or n_inlier == 0:
        raise ValueError(
            "AP / AUROC / FPR95 are undefined: the evaluated pixels hold "
            f"{n_anomaly} anomaly and {n_inlier} inlier pixels. Labels must use 1 = anomaly, "
            "0 = inlier, 255 = void, and the dataset must contain both."
        )
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_scores, sorted_targets = scores[order], targets[order]
    # The last position of each run of tied scores closes one threshold.
    last_of_run = torch.ones_like(sorted_targets)
    last_of_run[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    tps = torch.cumsum(sorted_targets, 0, dtype=torch.int64)[last_of_run].double()
    fps = (torch.arange(1, scores.numel() + 1, dtype=torch.float64))[last_of_run] - tps
    recall = tps / n_anomaly
    precision = tps / (tps + fps)
    fpr = fps / n_inlier
    recall_steps = torch.diff(recall, prepend=recall.new_zeros(1))
    ap = float((recall_steps * precision).sum())
    tpr_curve = torch.cat([recall.new_zeros(1), recall])
    fpr_curve = torch.cat([fpr.new_zeros(1), fpr])
    auroc = float(torch.trapezoid(tpr_curve, fpr_curve))
    reached = torch.nonzero(recall >= fpr_at_tpr)
    fpr95 = float(fpr[reached[0, 0]])
    return {"ap": ap, "auroc": auroc, "fpr95": fpr95, "n_anomaly": n_anomaly, "n_inlier": n_inlier}


class AnomalyMetrics(torchmetrics.Metric):
    """Fishyscapes AP, AUROC and FPR95 over every non-void pixel of every update.

    ``update(score, target)``: score float [N, H, W] (any shape), higher = more anomalous; target
    integer of the same shape, 0 inlier, 1 anomaly, ``ignore_index`` void. This first version keeps
    the valid pixels (5 bytes each) and sorts them in ``compute``; the state syncs across processes
    by concatenation.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, ignore_index: int = 255, fpr_at_tpr: float = 0.95, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.fpr_at_tpr = fpr_at_tpr
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, score: Tensor, target: Tensor) -> None:
        if score.shape != target.shape:
            raise ValueError(
                f"score shape {tuple(score.shape)} differs from target shape "
                f"{tuple(target.shape)}; "
                "upsample scores to the label resolution"
            )
        valid = target != self.ignore_index
        values = torch.unique(target[valid])
        unexpected = [v for v in values.tolist() if v not in (0, 1)]
        if unexpected:
            raise ValueError(
                f"anomaly labels hold values {unexpected}; expected 0 inlier, 1 anomaly and "
                f"{self.ignore_index} void (is void stored as 2? remap it to {self.ignore_index})"
            )
        valid_scores = score[valid].detach().to(torch.float32)
        finite = torch.isfinite(valid_scores)
        if not bool(finite.all()):
            bad = torch.nonzero(~torch.isfinite(score.detach().float()) & valid)
            raise ValueError(
                f"{int((~finite).sum())} non-void pixels have non-finite scores (NaN or inf), "
                f"the first at index {tuple(bad[0].tolist())}; fix the head, scores are never "
                "silently dropped"
            )
        self.scores.append(valid_scores.reshape(-1))
        self.targets.append((target[valid] == 1).reshape(-1))

    def compute(self) -> dict:
        scores = torchmetrics.utilities.dim_zero_cat(self.scores) if self.scores else torch.empty(0)
        targets = (
            torchmetrics.utilities.dim_zero_cat(self.targets)
            if self.targets
            else torch.empty(0, dtype=torch.bool)
        )
        return anomaly_metrics(scores, targets, self.fpr_at_tpr)
