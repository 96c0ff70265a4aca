"""The anomaly head: the one class a new method subclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from fsbench.models.segmenter import SegOutput


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
    the cross-entropy.
    """

    def fit(self, segmenter: nn.Module, loader: Any) -> None:  # noqa: B027 - optional hook
        """Gather statistics of the inlier training data. Post-hoc heads need nothing."""

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
    def scores_single_pass(self) -> bool:
        """True if the head scores one plain segmenter output, so heads can share a forward pass."""
        return type(self).forward is AnomalyHead.forward
