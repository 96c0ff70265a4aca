"""Semantic segmentation metrics from a streaming confusion matrix: per-class IoU, mIoU, accuracy.

Conventions (those of the Cityscapes benchmark): pixels labelled ``ignore_index`` are excluded;
IoU of class c = TP / (TP + FP + FN) with rows of the confusion matrix = ground truth and columns
= prediction; a class absent from both ground truth and prediction has an empty union, gets IoU
NaN and is left out of the mean (mIoU = nanmean of the per-class IoU). A class present in the
prediction only gets IoU 0 and does count.
"""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import Tensor

__all__ = ["SegmentationMetrics", "iou_from_confmat"]


def iou_from_confmat(confmat: Tensor) -> Tensor:
    """Per-class IoU = TP / (TP + FP + FN) of a [C, C] confusion matrix.

    Args:
        confmat: integer [C, C], ``confmat[g, p]`` = number of pixels of ground-truth class ``g``
            predicted as ``p`` (rows = ground truth, columns = prediction).

    Returns:
        float64 [C]; NaN for a class with an empty union (absent from both ground truth and
        prediction), so that ``torch.nanmean`` gives the mIoU over the classes that occur.
    """
    if confmat.ndim != 2 or confmat.shape[0] != confmat.shape[1]:
        raise ValueError(f"confmat must be square [C, C], got shape {tuple(confmat.shape)}")
    confmat = confmat.to(torch.float64)
    tp = confmat.diagonal()
    union = confmat.sum(0) + confmat.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


class SegmentationMetrics(torchmetrics.Metric):
    """Confusion matrix over train ids, with per-class IoU, mIoU and pixel accuracy.

    ``update(preds, target)``:

    * ``preds``: logits or probabilities float [N, C, H, W] (the class is the argmax over dim 1),
      or integer class predictions [N, H, W] with values in 0..C-1;
    * ``target``: integer [N, H, W], train ids 0..C-1 or ``ignore_index`` (excluded).

    State: ``confmat`` int64 [C, C] (rows = ground truth, columns = prediction), summed across
    processes. ``compute()`` returns ``{"miou": float, "iou": list[float], "pixel_accuracy":
    float}``: IoU = TP / (TP + FP + FN) per class, NaN where the class is absent from both ground
    truth and prediction; mIoU = nanmean of the IoU; pixel accuracy = correct / valid pixels (NaN
    when no valid pixel was seen).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    confmat: Tensor

    def __init__(self, num_classes: int = 19, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} collides with the train ids 0..{num_classes - 1}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add one batch: ``preds`` [N, C, H, W] scores or [N, H, W] ids, ``target`` [N, H, W]."""
        preds, target = preds.detach(), target.detach()
        if target.is_floating_point():
            raise ValueError(f"target must hold integer train ids, got dtype {target.dtype}")
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"prediction scores of shape {tuple(preds.shape)} have {preds.shape[1]} "
                    f"channels in dim 1, expected num_classes = {self.num_classes}"
                )
            preds = preds.argmax(dim=1)
        elif preds.is_floating_point():
            raise ValueError(
                f"float predictions of shape {tuple(preds.shape)} for labels of shape "
                f"{tuple(target.shape)}: pass scores [N, C, H, W] or integer class ids [N, H, W]"
            )
        if preds.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(preds.shape)} (after argmax over classes) differs "
                f"from label shape {tuple(target.shape)}"
            )
        valid = target != self.ignore_index
        gt, pred = target[valid].long(), preds[valid].long()
        c = self.num_classes
        bad_gt = (gt < 0) | (gt >= c)
        if bool(bad_gt.any()):
            raise ValueError(
                f"labels hold unexpected values {torch.unique(gt[bad_gt]).tolist()}; expected "
                f"train ids 0..{c - 1} and ignore {self.ignore_index}. Are they Cityscapes label "
                "ids rather than train ids?"
            )
        bad_pred = (pred < 0) | (pred >= c)
        if bool(bad_pred.any()):
            raise ValueError(
                f"predictions hold values {torch.unique(pred[bad_pred]).tolist()} outside the "
                f"train ids 0..{c - 1}"
            )
        counts = torch.bincount(gt * c + pred, minlength=c * c)
        self.confmat += counts.reshape(c, c)

    def compute(self) -> dict[str, Any]:
        """``{"miou": float, "iou": list[float] (NaN = absent class), "pixel_accuracy": float}``."""
        iou = iou_from_confmat(self.confmat)
        total = int(self.confmat.sum())
        correct = int(self.confmat.diagonal().sum())
        return {
            "miou": float(torch.nanmean(iou)),
            "iou": iou.tolist(),
            "pixel_accuracy": correct / total if total else float("nan"),
        }
