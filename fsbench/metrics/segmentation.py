"""Semantic segmentation metrics from a streaming confusion matrix."""

from __future__ import annotations

import torch
import torchmetrics
from torch import Tensor


def iou_from_confmat(confmat: Tensor) -> Tensor:
    """Per-class IoU = TP / (TP + FP + FN) of a [C, C] confusion matrix (rows = ground truth).

    Classes absent from both ground truth and prediction have an empty union and get NaN, so the
    mean IoU (a nanmean) averages over the classes that occur, as in the Cityscapes evaluation.
    """
    confmat = confmat.double()
    tp = confmat.diag()
    union = confmat.sum(0) + confmat.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


class SegmentationMetrics(torchmetrics.Metric):
    """Confusion matrix over train ids, per-class IoU, mIoU and pixel accuracy.

    ``update(preds, target)``: preds are logits or probabilities [N, C, H, W] (argmax over C) or
    integer predictions [N, H, W]; target int [N, H, W] with ids 0..C-1 and ``ignore_index``.
    The state is a [C, C] int64 matrix summed across processes.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_classes: int = 19, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(preds.shape)} differs from label shape "
                f"{tuple(target.shape)}"
            )
        valid = target != self.ignore_index
        gt, pred = target[valid].long(), preds[valid].long()
        bad = (gt < 0) | (gt >= self.num_classes)
        if bool(bad.any()):
            raise ValueError(
                f"labels hold values {torch.unique(gt[bad]).tolist()} outside the train ids "
                f"0..{self.num_classes - 1} and ignore {self.ignore_index}; are they Cityscapes "
                "label ids rather than train ids?"
            )
        counts = torch.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2)
        self.confmat += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict:
        iou = iou_from_confmat(self.confmat)
        total = self.confmat.sum()
        return {
            "miou": float(torch.nanmean(iou)),
            "iou": iou.tolist(),
            "pixel_accuracy": float(self.confmat.diag().sum() / total) if total else float("nan"),
        }
