"""Training a segmenter: cross-entropy (plus a head's training loss), poly LR, checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsbench.heads import AnomalyHead
from fsbench.metrics import SegmentationMetrics
from fsbench.models.checkpoint import HEAD_CLASS_KEY, SEGMENTER_CONFIG_KEY, class_path

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def poly_lr_factor(step: int, total_steps: int, power: float = 0.9) -> float:
    """The "poly" schedule of DeepLab (Chen et al., TPAMI 2018): (1 - step / total) ** power."""
    return max(0.0, 1.0 - step / max(1, total_steps)) ** power


class SegmentationTask(L.LightningModule):
    """Train a segmenter with pixel-wise cross-entropy over train ids, 255 ignored.

    Args:
        segmenter: a module returning ``SegOutput`` (``fsbench.models.Segmenter``).
        optimizer: a factory ``params -> Optimizer`` (a Hydra ``_partial_`` optimizer config).
        poly_power: exponent of the poly learning-rate decay over ``trainer.max_steps``.
        ignore_index: label value excluded from the loss and the metrics.
        head: optional training-time anomaly head whose ``training_loss`` is added.
        run_config: the resolved run configuration, stored in every checkpoint.
    """

    def __init__(
        self,
        segmenter: nn.Module,
        optimizer: OptimizerFactory,
        poly_power: float = 0.9,
        ignore_index: int = 255,
        head: AnomalyHead | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.segmenter = segmenter
        if head is not None:
            head.attach(segmenter)
        self.head = head
        self.optimizer_factory = optimizer
        self.poly_power = poly_power
        self.ignore_index = ignore_index
        self.run_config = run_config or {}
        self.val_metrics = SegmentationMetrics(
            num_classes=segmenter.num_classes, ignore_index=ignore_index
        )

    def forward(self, images: Tensor):
        return self.segmenter(images)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.segmenter(batch["image"])
        loss = F.cross_entropy(out.logits, batch["label"], ignore_index=self.ignore_index)
        self.log("train/ce", loss, prog_bar=False)
        if self.head is not None:
            extra = self.head.training_loss(out, batch)
            if extra is not None:
                self.log("train/head_loss", extra)
                loss = loss + extra
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.segmenter(batch["image"])
        loss = F.cross_entropy(out.logits, batch["label"], ignore_index=self.ignore_index)
        self.val_metrics.update(out.logits, batch["label"])
        self.log("val/loss", loss, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.log("val/miou", self.val_metrics.compute()["miou"], prog_bar=True)
        self.val_metrics.reset()

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: poly_lr_factor(step, total, self.poly_power)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SEGMENTER_CONFIG_KEY] = dict(self.segmenter.config)
        checkpoint["fsbench_run_config"] = self.run_config
        checkpoint[HEAD_CLASS_KEY] = None if self.head is None else class_path(self.head)
