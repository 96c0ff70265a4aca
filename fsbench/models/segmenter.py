"""DeepLabv3+ segmenter that exposes its decoder features.

The segmenter takes RGB images in [0, 1] (normalisation is part of the model, so exported models and
submissions need no separate preprocessing) and returns both the class logits at input resolution
and the decoder feature map the classifier reads. Anomaly heads consume either or both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsbench.models.checkpoint import class_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_logits(
    logits: Tensor, size: tuple[int, int] | torch.Size, align_corners: bool = False
) -> Tensor:
    """Logits [N, C, *size]: resized bilinearly, or returned as they are if they already fit."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits  # e.g. MC dropout at feature resolution
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


@dataclass
class SegOutput:
    """What a segmenter returns.

    logits:   float [N, C, H, W], at the resolution of the input images.
    features: float [N, D, h, w], the decoder output the classifier reads (stride 4 for
              fsbench's DeepLabv3+, so h = ceil(H / 4), w = ceil(W / 4); each network's own
              stride otherwise, e.g. 2 for NVIDIA's WideResNet38 DeepLabv3+).
    """

    logits: Tensor
    features: Tensor


class Segmenter(nn.Module):
    """DeepLabv3+ (Chen et al., ECCV 2018) from segmentation-models-pytorch, any smp encoder.

    Args:
        encoder_name: an smp encoder, e.g. ``resnet18`` or ``resnet101``.
        encoder_weights: pretrained weights for the encoder (``imagenet``) or ``None``.
        num_classes: number of inlier classes (19 Cityscapes train ids).
        output_stride: encoder output stride, 8 or 16.
        decoder_channels: width D of the decoder features.
        dropout: dropout rate on the decoder features right before the classifier (also the
            place MC dropout samples at test time).
        mean, std: per-channel normalisation applied to the [0, 1] input.
    """

    def __init__(
        self,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        num_classes: int = 19,
        output_stride: int = 16,
        decoder_channels: int = 256,
        dropout: float = 0.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "_target_": class_path(self),
            "encoder_name": encoder_name,
            "encoder_weights": encoder_weights,
            "num_classes": num_classes,
            "output_stride": output_stride,
            "decoder_channels": decoder_channels,
            "dropout": dropout,
            "mean": list(mean),
            "std": list(std),
        }
        self.num_classes = num_classes
        self.feature_channels = decoder_channels
        if encoder_name not in smp.encoders.get_encoder_names():
            raise ValueError(
                f"unknown encoder {encoder_name!r}; segmentation_models_pytorch has "
                f"{', '.join(smp.encoders.get_encoder_names())}. Set model.encoder_name=NAME "
                "(e.g. resnet18, resnet101)"
            )
        net = smp.DeepLabV3Plus(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            encoder_output_stride=output_stride,
            decoder_channels=decoder_channels,
            classes=num_classes,
        )
        self.encoder = net.encoder
        self.decoder = net.decoder
        self.classifier = nn.Conv2d(decoder_channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout(dropout)
        # Input sides must be multiples of the deepest encoder stride; we pad, then crop back.
        self.size_multiple = 2 ** len(self.encoder.out_channels[1:])
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # Fast paths (set with fsbench.fast.apply_fast_paths; run-time settings, not saved):
        # encoder and decoder under autocast to this dtype, features returned in float32;
        # inputs converted to channels_last memory format.
        self.autocast_dtype: torch.dtype | None = None
        self.channels_last = False

    def extract_features(self, images: Tensor) -> Tensor:
        """Decoder features [N, D, ceil(H/4), ceil(W/4)] of images float [N, 3, H, W] in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"Segmenter expects RGB images of shape [N, 3, H, W], got {tuple(images.shape)}"
            )
        height, width = images.shape[-2:]
        x = (images - self.mean) / self.std
        pad_h = -height % self.size_multiple
        pad_w = -width % self.size_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            features = self.decoder(self.encoder(x))
        else:
            # Reduced precision for the heavy part only: the classifier, the logits and every
            # head's score stay float32, so scores are not quantised to a 16-bit mantissa.
            with torch.autocast(x.device.type, dtype=self.autocast_dtype):
                features = self.decoder(self.encoder(x))
            features = features.float()
        return features[..., : -(-height // 4), : -(-width // 4)]

    def classify(self, features: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """Class logits [N, C, *size] from decoder features: dropout, 1x1 conv, bilinear resize."""
        return resize_logits(self.classifier(self.dropout(features)), size)

    def forward(self, images: Tensor) -> SegOutput:
        features = self.extract_features(images)
        return SegOutput(logits=self.classify(features, images.shape[-2:]), features=features)
