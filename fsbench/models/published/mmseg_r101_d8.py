"""mmsegmentation's DeepLabV3+ R101-D8 for Cityscapes, rebuilt so that its published file loads.

Rebuilds ``EncoderDecoder`` of open-mmlab/mmsegmentation as configured by
``configs/deeplabv3plus/deeplabv3plus_r101-d8_512x1024_80k_cityscapes.py`` (on
``_base_/models/deeplabv3plus_r50-d8.py`` with ``depth=101``), whose weights are the published
``deeplabv3plus_r101-d8_512x1024_80k_cityscapes_20200606_114143-068fcfe9.pth`` (80.97 mIoU on
Cityscapes val). The golden test compares it with mmsegmentation 0.30.0 (PyPI, with mmcv 1.7.2)
run on the same seeded weights (tests/golden/make_published_mmseg_r101_d8_golden.py); the module
names are mmseg's and mmcv's, nothing of their code is used:

* ``backbone``: ``ResNetV1c`` depth 101 (``mmseg/models/backbones/resnet.py``): a deep stem of
  three 3x3 convs (32, 32, 64 channels, the first with stride 2) each with BN and ReLU, a 3x3
  max pool with stride 2, then bottleneck stages of 3, 4, 23, 3 blocks ("pytorch" style: the
  stride is on the 3x3 conv) with strides (1, 2, 1, 1) and dilations (1, 1, 2, 4), so the
  output stride is 8. ``contract_dilation=True``: the first block of a dilated stage uses half
  its stage's dilation (1 in layer3, 2 in layer4). Outputs c1 (256 ch, stride 4) ... c4 (2048 ch,
  stride 8).
* ``decode_head``: ``DepthwiseSeparableASPPHead`` (``mmseg/models/decode_heads/sep_aspp_head.py``)
  on c4: image pooling (global average, 1x1 conv) and an ASPP of a 1x1 conv and three depthwise
  separable 3x3 convs at dilations 12, 24, 36 (each conv of a separable pair with BN and ReLU),
  concatenated (5 x 512 ch) and fused by a 3x3 conv to 512; upsampled bilinearly
  (``align_corners=False``) to c1's size and concatenated with c1 reduced to 48 channels by a
  1x1 conv; two depthwise separable 3x3 convs to 512; Dropout2d(0.1) and the 1x1 classifier
  ``conv_seg`` (with bias). Every other conv is an mmcv ``ConvModule`` (conv without bias, BN,
  ReLU), hence the ``.conv`` / ``.bn`` names.
* ``auxiliary_head`` (an ``FCNHead`` on c3) is in the file but only trains the backbone; its
  tensors are skipped.

Input: RGB in [0, 1], scaled to 0-255 and normalised with mean (123.675, 116.28, 103.53) and
std (58.395, 57.12, 57.375) (``img_norm_cfg`` of ``_base_/datasets/cityscapes.py``, with
``to_rgb=True``: mmseg reads BGR and converts). The logits at stride 4 are resized bilinearly
with ``align_corners=False`` to the input (``EncoderDecoder.encode_decode``). mmseg's test
pipeline first resizes an image to fit (2048, 1024) keeping its aspect ratio, which is the
identity on Cityscapes frames; fsbench feeds the images at the resolution the data config gives.

``features``: the 512-channel, stride-4 output of ``sep_bottleneck``, the input of Dropout2d and
``conv_seg`` (``self.dropout`` is that Dropout2d, identity in eval mode).

The file is ``{"meta": {...}, "state_dict": {...}}``: mmcv's ``save_checkpoint`` stores
``{"meta", "state_dict", "optimizer"}`` with the (Distributed)DataParallel wrapper removed (no
``module.`` prefix), and mmseg's ``tools/publish_model.py`` deletes ``optimizer``. The network
was trained with SyncBN, whose tensors are BatchNorm's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsbench.models.published.base import Family, PublishedSegmenter
from fsbench.models.published.blocks import bottleneck

family = Family(
    name="mmseg_r101_d8",
    title="DeepLabV3+ R101-D8 (mmsegmentation, ResNetV1c-101, OS8, 512x1024, 80k)",
    file_name="deeplabv3plus_r101-d8_512x1024_80k_cityscapes_20200606_114143-068fcfe9.pth",
    published=(
        "https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3plus/"
        "deeplabv3plus_r101-d8_512x1024_80k_cityscapes/"
        "deeplabv3plus_r101-d8_512x1024_80k_cityscapes_20200606_114143-068fcfe9.pth "
        "(open-mmlab/mmsegmentation, configs/deeplabv3plus)"
    ),
    licence="Apache-2.0",
    container="state_dict",
    prefix="",
    skipped=(("auxiliary_head.", "auxiliary FCN head, used only as a training loss"),),
    notice=None,
)

# Bottleneck blocks per stage of ResNet-101, and the stages' output strides and dilations.
BLOCKS = (3, 4, 23, 3)
STRIDES = (1, 2, 1, 1)
DILATIONS = (1, 1, 2, 4)
ASPP_DILATIONS = (1, 12, 24, 36)
EXPANSION = 4


class ConvModule(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU, as mmcv's ``ConvModule`` with a norm names them."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2  # "same" size at stride 1
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,  # mmcv's bias="auto": no bias before a norm
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class SeparableConvModule(nn.Module):
    """A depthwise 3x3 ConvModule then a pointwise 1x1 one (mmcv's DepthwiseSeparableConvModule).

    Both halves carry their own BatchNorm and ReLU (mmcv's ``dw_norm_cfg``/``pw_norm_cfg``
    default to the module's ``norm_cfg``).
    """

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, 3, dilation=dilation, groups=in_channels
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ResNetV1c(nn.Module):
    """ResNet-101 with the 3x3 deep stem, dilated to output stride 8 (mmseg's ResNetV1c-D8)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for index, (blocks, stride, dilation) in enumerate(
            zip(BLOCKS, STRIDES, DILATIONS, strict=True)
        ):
            planes = 64 * 2**index
            # contract_dilation: a dilated stage starts at half its dilation.
            first_dilation = dilation // 2 if dilation > 1 else dilation
            # ("pytorch" style: the stride on the 3x3; a projection in every first block)
            layer = [bottleneck(in_channels, planes, stride, first_dilation, project=True)]
            in_channels = planes * EXPANSION
            layer += [
                bottleneck(in_channels, planes, 1, dilation, project=False)
                for _ in range(blocks - 1)
            ]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Images [N, 3, H, W] -> (c1 [N, 256, H/4, W/4], c2 [N, 512, H/8, W/8], c3 [N, 1024,
        H/8, W/8], c4 [N, 2048, H/8, W/8]) (sizes rounded up)."""
        x = self.maxpool(self.stem(x))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4


class SeparableASPPHead(nn.Module):
    """DeepLabV3+'s decoder with depthwise separable ASPP (mmseg's DepthwiseSeparableASPPHead)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 2048,
        channels: int = 512,
        c1_in_channels: int = 256,
        c1_channels: int = 48,
        dilations: Sequence[int] = ASPP_DILATIONS,
    ) -> None:
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), ConvModule(in_channels, channels, 1)
        )
        self.aspp_modules = nn.ModuleList(
            ConvModule(in_channels, channels, 1)
            if rate == 1
            else SeparableConvModule(in_channels, channels, dilation=rate)
            for rate in dilations
        )
        self.bottleneck = ConvModule((len(dilations) + 1) * channels, channels, 3)
        self.c1_bottleneck = ConvModule(c1_in_channels, c1_channels, 1)
        self.sep_bottleneck = nn.Sequential(
            SeparableConvModule(channels + c1_channels, channels),
            SeparableConvModule(channels, channels),
        )

    def features(self, c1: Tensor, c4: Tensor) -> Tensor:
        """c1 [N, 256, h, w], c4 [N, 2048, h', w'] -> features [N, 512, h, w]."""
        size = c4.shape[-2:]
        # Bilinear upsampling of a 1x1 map is its value everywhere, whatever align_corners says.
        pooled = self.image_pool(c4).expand(-1, -1, *size)
        aspp = torch.cat([pooled, *(branch(c4) for branch in self.aspp_modules)], dim=1)
        x = self.bottleneck(aspp)
        low = self.c1_bottleneck(c1)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.sep_bottleneck(torch.cat([x, low], dim=1))


class MmsegR101D8(PublishedSegmenter):
    """mmseg DeepLabV3+ R101-D8 (Cityscapes, 512x1024, 80k): features [N, 512, H/4, W/4]."""

    family = family
    mean = (123.675, 116.28, 103.53)
    std = (58.395, 57.12, 57.375)
    input_scale = 255.0
    align_corners = False

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__(num_classes)
        self.backbone = ResNetV1c()
        self.decode_head = SeparableASPPHead(self.num_classes)
        self.feature_channels = 512
        # mmseg's BaseDecodeHead.cls_seg: Dropout2d(dropout_ratio=0.1), then conv_seg.
        self.dropout = nn.Dropout2d(0.1)

    def decode(self, x: Tensor) -> Tensor:
        """Normalised images [N, 3, H, W] -> features [N, 512, ceil(H/4), ceil(W/4)]."""
        c1, _, _, c4 = self.backbone(x)  # c3 feeds only the skipped auxiliary head
        return self.decode_head.features(c1, c4)

    def classifier_logits(self, features: Tensor) -> Tensor:
        """Features [N, 512, h, w] -> logits [N, num_classes, h, w] (``conv_seg``)."""
        return self.decode_head.conv_seg(features)
