"""VainF's DeepLabV3+ Cityscapes networks (ResNet-101 and MobileNetV2), rebuilt for their files.

Rebuilds VainF/DeepLabV3Plus-Pytorch at commit 4e1087de98bc49d55b9239ae92810ef7368660db (its
network code is unchanged since December 2019): ``network/modeling.py``'s
``deeplabv3plus_resnet101`` and ``deeplabv3plus_mobilenet``, i.e. ``_SimpleSegmentationModel``
(``network/utils.py``) around the backbone (``network/backbone/resnet.py``, ``mobilenetv2.py``)
and ``network/_deeplab.py::DeepLabHeadV3Plus``, without separable convolutions (the README: "All
pre-trained models in this repo were trained without atrous separable convolution"; the
files' keys have none). The code is MIT-licensed; nothing of it is copied here.

The published files (``main.py::save_ckpt``) are ``{"cur_itrs", "model_state", "optimizer_state",
"scheduler_state", "best_score"}``; the weights are ``model_state``, saved from
``model.module.state_dict()``, so without DataParallel's ``module.`` prefix, and they are the
network's tensors only (nothing is skipped).

Input: RGB in [0, 1] (``ExtToTensor``) normalised with the ImageNet mean and std (main.py's
Cityscapes ``val_transform``), at full resolution. Upsampling: every ``F.interpolate`` of the
original (the image-pooling branch, the ASPP output to the low-level features, the logits to the
image) is bilinear with ``align_corners=False``.

``features`` (what :meth:`decode` returns): the 256-channel output of the decoder's 3x3 conv,
BatchNorm and ReLU (``classifier.classifier.0-2``) at stride 4, the input of the last 1x1
classifier conv ``classifier.classifier.3``. The only dropout is the ``Dropout(0.1)`` that ends
the ASPP projection, not one right before the classifier: ``self.dropout`` stays ``None``.

Families (``fsbench.models.published.FAMILIES``):

* ``vainf_r101_os16``: ``best_deeplabv3plus_resnet101_cityscapes_os16.pth`` as it was trained and
  evaluated, output stride 16 (layer4 dilated 2, ASPP rates 6/12/18);
* ``vainf_r101_os8``: the same file run at output stride 8 (layer3 dilated 2, layer4 dilated 4,
  ASPP rates 12/24/36), as ``modeling._segm_resnet`` builds it for ``output_stride=8``;
* ``vainf_mbv2_os16``: ``best_deeplabv3plus_mobilenet_cityscapes_os16.pth``, output stride 16.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from fsbench.models.published.base import Family, PublishedSegmenter

SOURCE = "VainF/DeepLabV3Plus-Pytorch@4e1087de98bc49d55b9239ae92810ef7368660db"
README = "https://github.com/VainF/DeepLabV3Plus-Pytorch#2-performance-on-cityscapes-19-classes-1024-x-2048"
LICENCE = "MIT (the repository's LICENSE; the README names no other licence for the weights)"
_SELECTED_ON_VAL = (
    "main.py saves the 'best_' file at the iteration of the highest Cityscapes-val mIoU, so "
    "val numbers of it are selected on val"
)

R101_FILE = "best_deeplabv3plus_resnet101_cityscapes_os16.pth"
R101_PUBLISHED = (
    "https://drive.google.com/file/d/1t7TC8mxQaFECt4jutdq_NMnWxdm6B-Nb/view (the Google Drive "
    f"link of DeepLabV3Plus-ResNet101 in the Cityscapes table of {README})"
)
VAINF_R101_OS16 = Family(
    name="vainf_r101_os16",
    title="DeepLabV3+ ResNet-101, output stride 16 (VainF deeplabv3plus_resnet101)",
    file_name=R101_FILE,
    published=R101_PUBLISHED,
    licence=LICENCE,
    container="model_state",
    prefix="",
    notice=(
        "vainf_r101_os16: VainF's DeepLabV3+ ResNet-101 (MIT), trained on Cityscapes train at "
        f"output stride 16, val mIoU 0.762 (README); {_SELECTED_ON_VAL}."
    ),
)
VAINF_R101_OS8 = Family(
    name="vainf_r101_os8",
    title="DeepLabV3+ ResNet-101, the output-stride-16 file run at output stride 8 (VainF)",
    file_name=R101_FILE,
    published=R101_PUBLISHED,
    licence=LICENCE,
    container="model_state",
    prefix="",
    notice=(
        "vainf_r101_os8 runs VainF's output-stride-16 ResNet-101 file (MIT) at output stride 8 "
        "(layer3 dilated too, ASPP rates 12/24/36). It was trained and evaluated at stride 16 "
        "only (README: train/val OS 16/16, mIoU 0.762); its accuracy at stride 8 is not "
        f"published. {_SELECTED_ON_VAL}."
    ),
)
VAINF_MBV2_OS16 = Family(
    name="vainf_mbv2_os16",
    title="DeepLabV3+ MobileNetV2, output stride 16 (VainF deeplabv3plus_mobilenet)",
    file_name="best_deeplabv3plus_mobilenet_cityscapes_os16.pth",
    published=(
        "https://www.dropbox.com/s/753ojyvsh3vdjol/best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
        f"?dl=0 (or https://share.weiyun.com/aSKjdpbL), linked from {README}"
    ),
    licence=LICENCE,
    container="model_state",
    prefix="",
    notice=(
        "vainf_mbv2_os16: VainF's DeepLabV3+ MobileNetV2 (MIT), trained on Cityscapes train at "
        f"output stride 16, val mIoU 0.721 (README); {_SELECTED_ON_VAL}."
    ),
)
R101_FAMILIES = {16: VAINF_R101_OS16, 8: VAINF_R101_OS8}
# output stride -> ASPP rates (both backbones) and ResNet replace_stride_with_dilation of
# layer2..4 (modeling._segm_resnet); MobileNetV2's dilations follow from the output stride itself
# (_mobilenet_v2_blocks).
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
RESNET_DILATION = {16: (False, False, True), 8: (False, True, True)}


def _check_output_stride(output_stride: int) -> int:
    if output_stride not in ASPP_RATES:
        raise ValueError(f"VainF's DeepLabV3+ has output stride 8 or 16, got {output_stride}")
    return int(output_stride)


def _conv_bn_relu(
    conv: nn.Conv2d, channels: int, relu: type[nn.Module] = nn.ReLU
) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), relu(inplace=True)]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, three dilated 3x3, image pooling; 256 out.

    Keys: ``convs.0`` (1x1), ``convs.1-3`` (3x3, dilation = padding = rate), ``convs.4`` (pool,
    1x1), each with BatchNorm and ReLU, then ``project`` (1x1 from 5 x 256, BatchNorm, ReLU,
    Dropout(0.1)). [N, C, h, w] -> [N, 256, h, w].
    """

    def __init__(self, in_channels: int, rates: Sequence[int], channels: int = 256) -> None:
        super().__init__()
        branches = [
            nn.Sequential(*_conv_bn_relu(nn.Conv2d(in_channels, channels, 1, bias=False), channels))
        ]
        for rate in rates:
            conv = nn.Conv2d(in_channels, channels, 3, padding=rate, dilation=rate, bias=False)
            branches.append(nn.Sequential(*_conv_bn_relu(conv, channels)))
        pooling_conv = nn.Conv2d(in_channels, channels, 1, bias=False)
        branches.append(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(pooling_conv, channels))
        )
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(len(branches) * channels, channels, 1, bias=False), channels),
            nn.Dropout(0.1),  # identity in eval mode; part of the ASPP, not of the classifier
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        outputs = [branch(x) for branch in self.convs[:-1]]
        # The pooled 1x1 map is spread over the map by bilinear interpolation, as the original.
        pooled = self.convs[-1](x)
        outputs.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=False))
        return self.project(torch.cat(outputs, dim=1))


class DeepLabV3PlusHead(nn.Module):
    """The DeepLabV3+ decoder (keys ``project``, ``aspp``, ``classifier``).

    ``project``: 1x1 conv of the stride-4 features to 48 channels, BatchNorm, ReLU.
    ``classifier``: 3x3 conv of [48 low-level, 256 ASPP] (304 channels) to 256, BatchNorm, ReLU,
    then the 1x1 classifier conv (with bias) at index 3.
    """

    def __init__(
        self, in_channels: int, low_level_channels: int, num_classes: int, rates: Sequence[int]
    ) -> None:
        super().__init__()
        self.project = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(low_level_channels, 48, 1, bias=False), 48)
        )
        self.aspp = ASPP(in_channels, rates)
        self.classifier = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(48 + 256, 256, 3, padding=1, bias=False), 256),
            nn.Conv2d(256, num_classes, 1),
        )

    def features(self, low_level: Tensor, high_level: Tensor) -> Tensor:
        """[N, 256, h4, w4] decoder features of the stride-4 and the stride-8/16 backbone maps."""
        low = self.project(low_level)
        high = F.interpolate(
            self.aspp(high_level), size=low.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.classifier[:3](torch.cat([low, high], dim=1))  # low-level channels first

    def logits(self, features: Tensor) -> Tensor:
        return self.classifier[3](features)


class _VainFDeepLabV3Plus(PublishedSegmenter):
    """Shared protocol part: ``backbone`` -> (stride-4, high-level) maps -> ``classifier`` head."""

    backbone: nn.Module
    classifier: DeepLabV3PlusHead
    align_corners: ClassVar[bool] = False

    def backbone_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def decode(self, x: Tensor) -> Tensor:
        """[N, 256, h4, w4] decoder features of normalised images [N, 3, H, W]."""
        return self.classifier.features(*self.backbone_maps(x))

    def classifier_logits(self, features: Tensor) -> Tensor:
        """[N, num_classes, h4, w4]: the 1x1 classifier conv ``classifier.classifier.3``."""
        return self.classifier.logits(features)


class VainFResNet101(_VainFDeepLabV3Plus):
    """``deeplabv3plus_resnet101``: torchvision-layout ResNet-101 (keys ``backbone.conv1`` ...
    ``backbone.layer4``; ``avgpool``/``fc`` are cut off by the original's
    IntermediateLayerGetter) and the DeepLabV3+ head, 674 tensors.

    ``output_stride`` 16 (the file as published, family ``vainf_r101_os16``) or 8
    (``vainf_r101_os8``); the family is the instance's, picked by the output stride.
    Features for an H x W image: [N, 256, ceil(H / 4), ceil(W / 4)] (stem conv 7x7/2 pad 3, max
    pool 3x3/2 pad 1).
    """

    family: ClassVar[Family] = VAINF_R101_OS16

    def __init__(self, num_classes: int = 19, output_stride: int = 16) -> None:
        self.output_stride = _check_output_stride(output_stride)
        # The family (its name goes into self.config) must be set before PublishedSegmenter's
        # __init__ reads it; a plain attribute may be set before nn.Module.__init__.
        self.family = R101_FAMILIES[self.output_stride]
        super().__init__(num_classes)
        # VainF's network/backbone/resnet.py is torchvision's ResNet of 2019 (stride on the 3x3
        # conv, the same dilation rule); torchvision builds the same modules with the same keys.
        backbone = torchvision.models.resnet101(
            weights=None, replace_stride_with_dilation=list(RESNET_DILATION[self.output_stride])
        )
        del backbone.avgpool, backbone.fc  # not in the file
        self.backbone = backbone
        self.classifier = DeepLabV3PlusHead(
            2048, 256, self.num_classes, ASPP_RATES[self.output_stride]
        )
        self.feature_channels = 256

    def backbone_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """layer1's [N, 256, H/4, W/4] and layer4's [N, 2048, H/os, W/os] maps."""
        b = self.backbone
        low = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x)))))
        return low, b.layer4(b.layer3(b.layer2(low)))


class InvertedResidual(nn.Module):
    """VainF's MobileNetV2 block: the input is zero-padded first, then all convs run unpadded.

    Keys ``conv.0`` (1x1 expansion, BatchNorm, ReLU6; absent for expansion 1), then the 3x3
    depthwise conv (stride, dilation; BatchNorm, ReLU6), the 1x1 projection and its BatchNorm.
    Padding the block's input (by the dilation on each side) rather than the depthwise conv's
    input differs from torchvision: the ring of padding passes through the expansion's BatchNorm
    and ReLU6, so the depthwise conv sees ReLU6(BN(0)) there, not 0. The residual is added when
    the stride is 1 and the channels stay.
    """

    def __init__(self, inp: int, oup: int, stride: int, dilation: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        self.padding = dilation  # (3 + 2 (dilation - 1) - 1) / 2 on each side
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(
                nn.Sequential(
                    *_conv_bn_relu(nn.Conv2d(inp, hidden, 1, bias=False), hidden, nn.ReLU6)
                )
            )
        depthwise = nn.Conv2d(
            hidden, hidden, 3, stride, 0, dilation=dilation, groups=hidden, bias=False
        )
        layers += [
            nn.Sequential(*_conv_bn_relu(depthwise, hidden, nn.ReLU6)),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        p = self.padding
        out = self.conv(F.pad(x, (p, p, p, p)))
        return x + out if self.use_res_connect else out


# MobileNetV2's stages (expansion t, channels c, blocks n, stride s), width multiplier 1.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _mobilenet_v2_blocks(output_stride: int) -> list[nn.Module]:
    """The 18 modules of VainF's ``features[0:18]`` (the final 1x1 conv to 1280 is not used).

    Once the stride reaches ``output_stride``, a stage's stride becomes a dilation factor; as in
    the original, a stage's first block keeps the previous stage's dilation, its other blocks
    take the new one. At output stride 16 only the 160-channel stage changes: stride 1 and
    dilation 1, 2, 2, then 2 for the 320-channel block.
    """
    stem = nn.Conv2d(3, 32, 3, 2, 0, bias=False)  # unpadded, as VainF's ConvBNReLU
    blocks: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(stem, 32, nn.ReLU6))]
    channels, current_stride, dilation = 32, 2, 1
    for expand, out, count, stride in MOBILENET_V2_STAGES:
        previous_dilation = dilation
        if current_stride == output_stride:
            dilation *= stride
            stride = 1
        else:
            current_stride *= stride
        for index in range(count):
            if index == 0:
                blocks.append(InvertedResidual(channels, out, stride, previous_dilation, expand))
            else:
                blocks.append(InvertedResidual(channels, out, 1, dilation, expand))
            channels = out
    return blocks


class MobileNetV2Backbone(nn.Module):
    """``low_level_features`` (blocks 0-3, 24 channels, stride 4) and ``high_level_features``
    (blocks 4-17, 320 channels, stride ``output_stride``), keyed by their index in VainF's
    ``features`` (slicing an ``nn.Sequential`` keeps the names)."""

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        named = [
            (str(index), block) for index, block in enumerate(_mobilenet_v2_blocks(output_stride))
        ]
        self.low_level_features = nn.Sequential(OrderedDict(named[:4]))
        self.high_level_features = nn.Sequential(OrderedDict(named[4:]))


class VainFMobileNetV2(_VainFDeepLabV3Plus):
    """``deeplabv3plus_mobilenet``: VainF's dilated MobileNetV2 and the DeepLabV3+ head, 356
    tensors (family ``vainf_mbv2_os16``).

    Features for an H x W image: [N, 256, h, w] with h = ceil((floor((H - 3) / 2) + 1) / 2)
    (the stem conv is unpadded), e.g. 24 x 33 for 97 x 131.
    """

    family: ClassVar[Family] = VAINF_MBV2_OS16

    def __init__(self, num_classes: int = 19, output_stride: int = 16) -> None:
        if output_stride != 16:  # the only MobileNetV2 family: its file was trained at 16
            raise ValueError(f"vainf_mbv2_os16 has output stride 16, got {output_stride}")
        super().__init__(num_classes)
        self.output_stride = 16
        self.backbone = MobileNetV2Backbone(self.output_stride)
        self.classifier = DeepLabV3PlusHead(
            320, 24, self.num_classes, ASPP_RATES[self.output_stride]
        )
        self.feature_channels = 256

    def backbone_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The [N, 24, h/4, w/4] and [N, 320, h/os, w/os] maps of normalised images."""
        low = self.backbone.low_level_features(x)
        return low, self.backbone.high_level_features(low)
