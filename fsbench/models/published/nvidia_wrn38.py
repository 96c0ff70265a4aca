"""NVIDIA's Cityscapes DeepLabV3+ on WideResNet38 (``cityscapes_best.pth``), rebuilt.

Rebuilds ``network/deepv3.py::DeepWV3Plus`` of NVIDIA/semantic-segmentation, branch ``sdcnet``
(commit 2f548ab30ab0d56e91de66a4dea4757a0c64e7e4), on its trunk
``network/wider_resnet.py::WiderResNetA2(structure=[3, 3, 6, 3, 1, 1], dilation=True)``
(``wider_resnet38_a2``): the network of the published ``cityscapes_best.pth`` (README, "Pre-trained
models"). This module is written from the structure of that code, not copied from it.

The network, output stride 8 (sizes for an H x W image; ``ceil`` everywhere, as the 3x3 stride-2
max-pools and convolutions with padding 1 round up):

* ``mod1``: one 3x3 convolution 3 -> 64 at full resolution;
* ``pool2`` (3x3 max-pool, stride 2), ``mod2``: 3 pre-activation blocks -> 128 channels at H/2
  (the decoder's skip input);
* ``pool3``, ``mod3``: 3 blocks -> 256 at H/4; ``mod4``: 6 blocks -> 512, the first with stride 2,
  at H/8; ``mod5``: 3 blocks -> 1024, dilation 2; ``mod6``: one bottleneck block -> 2048 and
  ``mod7``: one -> 4096, dilation 4 (both with channel dropout before their last 1x1 convolution,
  p = 0.3 and 0.5, inactive in eval mode). A pre-activation block is ``BN-ReLU`` (``bn1``), then
  its convolutions (``convs``) with ``BN-ReLU`` between them, plus a shortcut: the input itself,
  or a 1x1 projection (``proj_conv``) of the ``bn1`` output where the stride or width changes.
  The trunk's own ``bn_out`` and ImageNet classifier are not part of DeepWV3Plus;
* ``aspp``: image pooling (1x1 conv, BN, ReLU) and four branches (1x1, 3x3 at dilations 12, 24,
  36: the code's (6, 12, 18) doubled at output stride 8), each conv 4096 -> 256 + BN + ReLU,
  concatenated in that order (image pooling first) to 1280 channels;
* ``bot_aspp`` (1x1, 1280 -> 256, no BN) upsampled to ``mod2``'s H/2 grid, after ``bot_fine``
  (1x1, 128 -> 48, no BN) of ``mod2``: 304 channels;
* ``final``: 3x3 304 -> 256, BN, ReLU, 3x3 256 -> 256, BN, ReLU, then ``final.6``, the 1x1
  classifier 256 -> classes without bias.

``features`` is the output of ``final.5`` (the last ReLU), float [N, 256, ceil(H/2), ceil(W/2)]:
the decoder of this network works at stride 2, not 4. There is no dropout before ``final.6``,
so ``dropout`` is ``None``.

Input: RGB in [0, 1] normalised with the ImageNet mean and std (``demo.py`` and ``eval.py``:
``transforms.ToTensor()`` then ``transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224,
0.225])`` on a PIL RGB image). Every upsampling (image pooling, the decoder and the logits) is
``network/mynn.py::Upsample``: bilinear with ``align_corners=True``. All normalisation layers
are ``mynn.Norm2d`` = ``torch.nn.BatchNorm2d`` at evaluation (``config.py``; apex's
SyncBatchNorm in training has the same tensors).

The file is ``{"state_dict": {"module." + key: tensor}}`` (``utils/misc.py`` saves
``net.state_dict()`` of the data-parallel network) and also holds
``module.criterion.nll_loss.weight`` [19], the class weights of the training loss
``loss.py::ImageBasedCrossEntropyLoss2d`` that DeepWV3Plus keeps as ``self.criterion``; it is
skipped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsbench.models.published.base import Family, PublishedSegmenter

COMMIT = "2f548ab30ab0d56e91de66a4dea4757a0c64e7e4"

family = Family(
    name="nvidia_wrn38",
    title="NVIDIA DeepWV3Plus (DeepLabV3+ on WideResNet38-A2, output stride 8)",
    file_name="cityscapes_best.pth",
    published=(
        "https://github.com/NVIDIA/semantic-segmentation/tree/sdcnet (README, 'Pre-trained "
        "models': https://drive.google.com/file/d/1P4kPaMY-SmQ3yPJQTJ7xMGAB_Su-1zTl/view)"
    ),
    licence="CC BY-NC-SA 4.0 (non-commercial use only)",
    container="state_dict",
    prefix="module.",
    skipped=(
        (
            "criterion.",
            "the training loss (loss.py ImageBasedCrossEntropyLoss2d) kept as "
            "DeepWV3Plus.criterion: its per-image class weights nll_loss.weight, not a layer",
        ),
    ),
    notice=(
        "nvidia_wrn38 (NVIDIA cityscapes_best.pth): the weights are licensed CC BY-NC-SA 4.0, "
        "non-commercial use only. The network was trained on Cityscapes cross-validation split 2, "
        "whose training cities include the official Cityscapes val cities "
        "(NVIDIA/semantic-segmentation#6): its Cityscapes-val mIoU, and Fishyscapes Static "
        "numbers (built on val frames), are optimistic."
    ),
)


def _bn_relu(channels: int) -> nn.Sequential:
    """BatchNorm + ReLU as one module (keys ``.0.*``), the trunk's ``norm_act``."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class _PreActBlock(nn.Module):
    """A pre-activation ("identity mapping") residual block of WideResNet38-A2.

    ``widths`` of two: 3x3 (stride, dilation) -> BN-ReLU -> 3x3 (dilation); of three (a
    bottleneck): 1x1 (stride) -> BN-ReLU -> 3x3 (dilation) -> BN-ReLU -> [dropout] -> 1x1.
    Input [N, in_channels, h, w] -> [N, widths[-1], h / stride, w / stride].
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        stride: int = 1,
        dilation: int = 1,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        self.bn1 = _bn_relu(in_channels)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if len(widths) == 2:
            layers["conv1"] = nn.Conv2d(
                in_channels, widths[0], 3, stride, dilation, dilation, bias=False
            )
            layers["bn2"] = _bn_relu(widths[0])
            if dropout is not None:
                layers["dropout"] = nn.Dropout2d(dropout)
            layers["conv2"] = nn.Conv2d(widths[0], widths[1], 3, 1, dilation, dilation, bias=False)
        else:
            layers["conv1"] = nn.Conv2d(in_channels, widths[0], 1, stride, bias=False)
            layers["bn2"] = _bn_relu(widths[0])
            layers["conv2"] = nn.Conv2d(widths[0], widths[1], 3, 1, dilation, dilation, bias=False)
            layers["bn3"] = _bn_relu(widths[1])
            if dropout is not None:  # the original builds nn.Dropout2d here (channel dropout)
                layers["dropout"] = nn.Dropout2d(dropout)
            layers["conv3"] = nn.Conv2d(widths[1], widths[2], 1, bias=False)
        self.convs = nn.Sequential(layers)
        # The shortcut is projected (from the pre-activated input) only where the shape changes.
        self.proj_conv: nn.Conv2d | None = None
        if stride != 1 or in_channels != widths[-1]:
            self.proj_conv = nn.Conv2d(in_channels, widths[-1], 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.bn1(x)
        shortcut = x if self.proj_conv is None else self.proj_conv(activated)
        return self.convs(activated) + shortcut


# WideResNet38-A2: (blocks, widths, first block's stride, dilation, dropout) of mod2 ... mod7, with
# dilation=True (the strides of mod5 and later are replaced by dilation: output stride 8).
_STAGES: tuple[tuple[int, tuple[int, ...], int, int, float | None], ...] = (
    (3, (128, 128), 1, 1, None),
    (3, (256, 256), 1, 1, None),
    (6, (512, 512), 2, 1, None),
    (3, (512, 1024), 1, 2, None),
    (1, (512, 1024, 2048), 1, 4, 0.3),
    (1, (1024, 2048, 4096), 1, 4, 0.5),
)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, dilation: int = 1):
    padding = dilation if kernel == 3 else 0
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _upsample(x: Tensor, size: Sequence[int]) -> Tensor:
    """The original's only resampling: bilinear with ``align_corners=True``."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class _ASPP(nn.Module):
    """ASPP of DeepWV3Plus: [N, 4096, h, w] -> [N, 1280, h, w] (image pooling, 1x1, 3 rates)."""

    def __init__(self, in_channels: int = 4096, channels: int = 256, rates=(12, 24, 36)) -> None:
        super().__init__()
        self.features = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels, 1)]
            + [_conv_bn_relu(in_channels, channels, 3, rate) for rate in rates]
        )
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = _conv_bn_relu(in_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = _upsample(self.img_conv(self.img_pooling(x)), x.shape[-2:])
        return torch.cat([pooled] + [branch(x) for branch in self.features], dim=1)


class NvidiaWRN38(PublishedSegmenter):
    """DeepWV3Plus of NVIDIA/semantic-segmentation (sdcnet), keys as in ``cityscapes_best.pth``.

    Images float [N, 3, H, W], RGB in [0, 1] -> logits [N, classes, H, W]; features [N, 256,
    ceil(H/2), ceil(W/2)] (the input of ``final.6``).
    """

    family = family
    align_corners = True

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__(num_classes)
        self.mod1 = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 64, 3, 1, 1, bias=False)))
        # pool2 and pool3 sit before mod2 and mod3; mod4's first block has stride 2 instead.
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (blocks, widths, stride, dilation, dropout) in enumerate(_STAGES):
            stage: OrderedDict[str, nn.Module] = OrderedDict()
            for block in range(blocks):
                stage[f"block{block + 1}"] = _PreActBlock(
                    in_channels, widths, stride if block == 0 else 1, dilation, dropout
                )
                in_channels = widths[-1]
            self.add_module(f"mod{index + 2}", nn.Sequential(stage))
        self.aspp = _ASPP(in_channels, 256, rates=(12, 24, 36))
        self.bot_fine = nn.Conv2d(128, 48, 1, bias=False)
        self.bot_aspp = nn.Conv2d(1280, 256, 1, bias=False)
        self.final = nn.Sequential(
            nn.Conv2d(256 + 48, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, self.num_classes, 1, bias=False),
        )
        self.feature_channels = 256

    def decode(self, x: Tensor) -> Tensor:
        """Normalised images [N, 3, H, W] -> features [N, 256, ceil(H/2), ceil(W/2)]."""
        skip = self.mod2(self.pool2(self.mod1(x)))  # [N, 128, H/2, W/2]
        deep = self.mod3(self.pool3(skip))
        for stage in (self.mod4, self.mod5, self.mod6, self.mod7):
            deep = stage(deep)  # [N, 4096, H/8, W/8] after mod7
        context = _upsample(self.bot_aspp(self.aspp(deep)), skip.shape[-2:])
        out = torch.cat([self.bot_fine(skip), context], dim=1)  # fine details first
        for layer in list(self.final)[:-1]:
            out = layer(out)
        return out

    def classifier_logits(self, features: Tensor) -> Tensor:
        """Features [N, 256, h, w] -> logits [N, classes, h, w] (``final.6``, 1x1, no bias)."""
        return self.final[-1](features)
