"""Building blocks the rebuilt networks share."""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import Bottleneck


def bottleneck(
    in_channels: int,
    planes: int,
    stride: int = 1,
    dilation: int = 1,
    project: bool | None = None,
) -> Bottleneck:
    """torchvision's ResNet bottleneck [N, in, H, W] -> [N, 4 planes, H / stride, W / stride].

    Stride and dilation sit on the 3x3 convolution (padding = dilation); tensors ``conv1``,
    ``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3`` and, with a projection shortcut,
    ``downsample.0`` (1x1 convolution with the stride) and ``downsample.1`` (BatchNorm). The
    projection is there where the shape changes, unless ``project`` says otherwise.
    """
    out_channels = planes * Bottleneck.expansion
    if project is None:
        project = stride != 1 or in_channels != out_channels
    shortcut = None
    if project:
        shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    return Bottleneck(in_channels, planes, stride, shortcut, dilation=dilation)
