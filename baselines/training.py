"""Training-time methods: the segmenter learns from pixels that play the unknown.

Both read ``batch["outlier"]`` (uint8 [N, H, W], 1 on pasted outlier pixels), which
:class:`fsbench.data.OutlierPasting` adds to the training items; train them with
``python train.py +experiment=synthetic/void_classifier`` (or ``outlier_exposure``) and evaluate
that run's checkpoint with the same head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsbench.heads import AnomalyHead, device_of, entropy_from_logits
from fsbench.models import SegOutput

IGNORE = 255


def _outlier_mask(batch: dict[str, Tensor], method: str) -> Tensor:
    if "outlier" not in batch:
        raise ValueError(
            f"{method} needs pasted outliers in the training batches (batch['outlier']), but the "
            "training set yields none. Wrap it with outlier pasting: data.paste_outliers="
            "{_target_: fsbench.data.OutlierPasting, _partial_: true}, as "
            "conf/experiment/synthetic/*.yaml do."
        )
    return batch["outlier"].bool()


class VoidClassifier(AnomalyHead):
    """An extra "void" class next to the C inlier classes; score = its softmax probability.

    The Fishyscapes baseline (Blum et al., IJCV 2021, §4) trains the void class on Cityscapes'
    void pixels. Here the void logit is a 1x1 convolution on the decoder features (built in
    :meth:`attach`), upsampled like the class logits and appended to them: p = softmax([z_1 ..
    z_C, z_void]). Training adds ``weight`` x the (C+1)-way cross-entropy in which pasted outlier
    pixels (and, with ``void_pixels``, every label-255 pixel) have the target "void", to the
    segmenter's usual C-way cross-entropy; the segmentation itself still uses the C class logits.

    Args:
        weight: factor of the (C+1)-way cross-entropy.
        void_pixels: also train the void class on label-255 pixels (Cityscapes' void), not only
            on pasted outliers.
    """

    def __init__(self, weight: float = 1.0, void_pixels: bool = False) -> None:
        super().__init__()
        if weight <= 0:
            raise ValueError(f"VoidClassifier weight must be > 0, got {weight}")
        self.weight = weight
        self.void_pixels = void_pixels
        self.void_logit: nn.Conv2d | None = None

    def attach(self, segmenter: nn.Module) -> None:
        if self.void_logit is None:
            channels = getattr(segmenter, "feature_channels", None)
            if channels is None:
                raise ValueError(
                    "VoidClassifier needs the segmenter's feature_channels (decoder width)"
                )
            self.void_logit = nn.Conv2d(channels, 1, kernel_size=1).to(device_of(segmenter))

    def joint_logits(self, out: SegOutput) -> Tensor:
        """[N, C + 1, H, W]: the class logits with the void logit appended last."""
        if self.void_logit is None:
            raise RuntimeError("VoidClassifier is not attached: call head.attach(segmenter)")
        void = self.void_logit(out.features)
        void = F.interpolate(void, size=out.logits.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([out.logits, void.to(out.logits.dtype)], dim=1)

    def training_loss(self, out: SegOutput, batch: dict[str, Tensor]) -> Tensor:
        label = batch["label"]
        void_class = out.logits.shape[1]
        if self.void_pixels:
            void = label == IGNORE
            if "outlier" in batch:
                void |= batch["outlier"].bool()
        else:
            void = _outlier_mask(batch, "VoidClassifier")
        target = torch.where(void, torch.full_like(label, void_class), label)
        joint = self.joint_logits(out)
        if not (target != IGNORE).any():
            return joint.sum() * 0.0
        return self.weight * F.cross_entropy(joint, target, ignore_index=IGNORE)

    def score(self, out: SegOutput) -> Tensor:
        return torch.softmax(self.joint_logits(out).float(), dim=1)[:, -1]


class OutlierExposure(AnomalyHead):
    """Outlier exposure (Hendrycks et al., ICLR 2019); for segmentation, Chan et al. (ICCV 2021).

    Training adds ``weight`` x the mean, over pasted outlier pixels, of the cross-entropy between
    the uniform distribution and the softmax, -(1/C) sum_c log p_c, which is smallest when the
    prediction is uniform (maximal entropy). Chan et al. weight the inlier and outlier terms
    (1 - λ) and λ with λ = 0.75, i.e. ratio 3; fsbench keeps the inlier cross-entropy at weight 1,
    so ``weight`` = 3 reproduces their ratio (default 0.5 as in Hendrycks et al.). The score, on
    the segmenter trained this way (higher = more anomalous), is one of:

    * ``entropy`` (Chan et al.): the softmax entropy -sum_c p_c log p_c in nats, in [0, log C]
      (:func:`fsbench.heads.entropy_from_logits`, as the ``entropy`` head computes it);
    * ``max_softmax``: the log-odds of the top class being wrong, log((1 - p_max) / p_max) =
      logsumexp_{c != top} l_c - l_top, in (-inf, log(C - 1)]: a strictly increasing function of
      1 - max softmax, so AP, FPR95 and AUROC are those of 1 - max softmax. It is computed in log
      space so that confident pixels stay ordered at any logit gap (gap 40: about -40; two
      maximal classes: >= 0). ``1 - exp(max log p)`` in float32 was 0 for every pixel whose gap
      exceeds ~17, and 1 - p itself underflows beyond a gap of ~100 (in the float16 of
      SegmentMeIfYouCan files beyond ~17); these scores stay finite and distinct, well inside
      float16's range.

    Args:
        weight: factor of the outlier term.
        score: ``entropy`` or ``max_softmax``.
    """

    SCORES = ("entropy", "max_softmax")

    def __init__(self, weight: float = 0.5, score: str = "entropy") -> None:
        super().__init__()
        if weight <= 0:
            raise ValueError(f"OutlierExposure weight must be > 0, got {weight}")
        if score not in self.SCORES:
            raise ValueError(f"OutlierExposure score must be one of {self.SCORES}, got {score!r}")
        self.weight = weight
        self.score_kind = score

    def training_loss(self, out: SegOutput, batch: dict[str, Tensor]) -> Tensor:
        outlier = _outlier_mask(batch, "OutlierExposure")
        if not outlier.any():
            return out.logits.sum() * 0.0  # keeps every process's graph alike under DDP
        log_probs = F.log_softmax(out.logits, dim=1)  # [N, C, H, W]
        uniform_ce = -log_probs.mean(dim=1)  # [N, H, W]
        return self.weight * uniform_ce[outlier].mean()

    def score(self, out: SegOutput) -> Tensor:
        if self.score_kind == "entropy":
            return entropy_from_logits(out.logits)
        return self.max_softmax_log_odds(out.logits.float())

    @staticmethod
    def max_softmax_log_odds(logits: Tensor) -> Tensor:
        """log((1 - p_max) / p_max) = logsumexp_{c != top} l_c - l_top, float [N, H, W].

        The top class (the first maximal one) is left out by setting its logit to -inf; another
        maximal class stays among the others, so a tie for the top scores >= 0 (p_max <= 1/2).
        """
        top = logits.max(dim=1, keepdim=True)
        others = logits.scatter(1, top.indices, float("-inf"))
        return torch.logsumexp(others, dim=1) - top.values.squeeze(1)
