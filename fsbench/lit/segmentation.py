"""Training a segmenter: cross-entropy (plus a head's training loss), poly LR, checkpoints."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import numpy as np
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
        size = batch["image"].shape[0]  # told, not inferred from the batch dict (a warning)
        self.log("train/ce", loss, prog_bar=False, batch_size=size)
        if self.head is not None:
            extra = self.head.training_loss(out, batch)
            if extra is not None:
                self.log("train/head_loss", extra, batch_size=size)
                loss = loss + extra
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.segmenter(batch["image"])
        loss = F.cross_entropy(out.logits, batch["label"], ignore_index=self.ignore_index)
        self.val_metrics.update(out.logits, batch["label"])
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])

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
        checkpoint[RNG_STATES_KEY] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Dropout and the shuffling sampler draw from these generators: restoring them makes a
        # resumed run take the same steps as an uninterrupted one.
        if RNG_STATES_KEY in checkpoint:
            restore_rng_states(checkpoint[RNG_STATES_KEY])


RNG_STATES_KEY = "fsbench_rng_states"


def rng_states() -> dict[str, Any]:
    """The global random generators (python, numpy, torch CPU and CUDA) as plain values.

    Tensors, ints, strings and tuples only, so a checkpoint holding them still loads with
    ``torch.load(weights_only=True)``.
    """
    name, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global one
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the global random generators to what :func:`rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = states["numpy"]
    keys = keys.numpy().astype(np.uint32)
    np.random.set_state((name, keys, position, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
