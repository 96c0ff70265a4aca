"""The anomaly head: the one class a new method subclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsbench.models.segmenter import SegOutput


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's parameters (the CPU for a module without any)."""
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def resize_score(score: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """float32 [N, *size]: a score map [N, h, w] resized bilinearly; returned as is if it fits.

    Heads that score at feature resolution use it to reach the image; the evaluation uses it to
    bring scores of resized images to the label's resolution (never the label to the score's).
    """
    if tuple(score.shape[-2:]) == tuple(size):
        return score
    resized = F.interpolate(
        score[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False
    )
    return resized[:, 0]


@dataclass
class AnomalyPrediction:
    """What a head returns for a batch.

    score:  float32 [N, H, W], higher = more anomalous, at the resolution of the images.
    logits: float [N, C, H, W], the class logits the head's segmentation uses (for mIoU).
    """

    score: Tensor
    logits: Tensor


class AnomalyHead(nn.Module):
    """Per-pixel anomaly score from a segmenter; higher means more anomalous.

    A post-hoc method overrides :meth:`score` only. Methods that need several forward passes
    (MC dropout, ensembles) override :meth:`forward`; methods with statistics of the training data
    override :meth:`fit` and keep what they fit in buffers, so ``state_dict()`` saves and restores
    it; training-time methods override :meth:`training_loss`, which ``SegmentationTask`` adds to
    the cross-entropy, and build any layers of their own in :meth:`attach`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._fitted_names: list[str] = []

    def attach(self, segmenter: nn.Module) -> None:  # noqa: B027 - optional hook
        """Called once with the segmenter before training, fitting or scoring.

        Heads with layers whose shape depends on the segmenter (e.g. the number of decoder
        channels, ``segmenter.config["decoder_channels"]``) build them here. Must be idempotent.
        """

    def fit(self, segmenter: nn.Module, loader: Any) -> None:  # noqa: B027 - optional hook
        """Gather statistics of the inlier training data. Post-hoc heads need nothing.

        ``loader`` yields batches ``{"image": float [N, 3, H, W] in [0, 1], "label": int64
        [N, H, W] train ids (255 = ignore), "name": [...]}``. Stream over it (bounded memory)
        and store what you fit in buffers declared with :meth:`register_fitted`.
        """

    @property
    def requires_fit(self) -> bool:
        """True if the head overrides :meth:`fit`."""
        return type(self).fit is not AnomalyHead.fit

    def register_fitted(self, name: str) -> None:
        """Declare a buffer that :meth:`fit` fills: empty until then, any shape afterwards.

        It is saved by ``state_dict()`` and restored by ``load_state_dict()`` whatever its
        fitted shape, so a head fitted once can be reloaded without fitting again.
        """
        self.register_buffer(name, torch.empty(0))
        self._fitted_names.append(name)

    @property
    def is_fitted(self) -> bool:
        """True once every buffer declared with :meth:`register_fitted` holds a value."""
        return all(getattr(self, name).numel() > 0 for name in self._fitted_names)

    def check_fitted(self) -> None:
        """Raise a clear error if the head is scored before :meth:`fit` (or a reload)."""
        if not self.is_fitted:
            raise RuntimeError(
                f"{type(self).__name__} has not been fitted: call head.fit(segmenter, "
                "train_loader) or load a fitted state_dict before scoring"
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in self._fitted_names:
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, segmenter: nn.Module, images: Tensor) -> AnomalyPrediction:
        """Score images float [N, 3, H, W] in [0, 1]."""
        out = segmenter(images)
        return AnomalyPrediction(score=self.score(out), logits=out.logits)

    def score(self, out: SegOutput) -> Tensor:
        """Anomaly score float32 [N, H, W] from one segmenter output; higher = more anomalous."""
        raise NotImplementedError(
            f"{type(self).__name__} must override score(out) or forward(segmenter, images)"
        )

    def training_loss(self, out: SegOutput, batch: dict[str, Tensor]) -> Tensor | None:
        """Extra loss for training-time methods, added to the segmentation loss; None otherwise."""
        return None

    @property
    def trained_with_segmenter(self) -> bool:
        """True if the head overrides :meth:`training_loss`: it needs a checkpoint trained with it.

        ``evaluate.py`` then restores the head's own tensors from that checkpoint and refuses a
        checkpoint that was trained without the head.
        """
        return type(self).training_loss is not AnomalyHead.training_loss

    @property
    def scores_single_pass(self) -> bool:
        """True if the head scores one plain segmenter output, so heads can share a forward pass."""
        return type(self).forward is AnomalyHead.forward
