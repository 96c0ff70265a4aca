"""SML's Cityscapes DeepLabv3+ (ResNet-101, OS8), rebuilt to load ``r101_os8_base_cty.pth``.

Rebuilds ``network/deepv3.py::DeepR101V3PlusD_OS8`` (``DeepV3Plus`` with ``trunk="resnet-101"``,
``variant="D"``) of shjung13/Standardized-max-logits at commit
c52a513f3385538ec4c0f8d0972506211de10299, the network of the file the SML paper (Jung et al.,
ICCV 2021) publishes, as ``scripts/train_r101_os8.sh`` trains it through ``train.py``:

* ``layer0``: the deep stem of ``network/Resnet.py::ResNet3X3`` (3x3 convolutions 3->64 stride 2,
  64->64, 64->128, each with BatchNorm and ReLU, then a 3x3 stride-2 max pool); ``layer1`` ..
  ``layer4``: ResNet-101 bottlenecks [3, 4, 23, 3] (the stride on the 3x3 conv), ``layer1``
  starting from 128 channels; ``layer3`` and ``layer4`` run at stride 1 with every ``conv2``
  dilated 2 and 4 (output stride 8).
* ``aspp``: image pooling (1x1 conv 2048->256) then a 1x1 and three 3x3 branches at rates 12, 24,
  36 (the 6/12/18 of OS16 doubled), concatenated in that order: 1280 channels.
* ``bot_aspp`` 1280->256 and ``bot_fine`` (``layer1``'s output, stride 4) 256->48, 1x1 with
  BatchNorm and ReLU; ``final1``: two 3x3 convs 304->256->256 with BatchNorm and ReLU on
  ``[bot_fine, upsampled bot_aspp]``; ``final2``: the 1x1 classifier 256->19 with bias.

Input: RGB in [0, 1] normalised with the ImageNet mean and std (``eval.py``: ``ToTensor`` then
``Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])``). Every upsampling, inside the network
and of the logits to the image, is bilinear with ``align_corners=True`` (``network/mynn.py::
Upsample``). ``features`` is ``final1``'s output (256 channels, stride 4), the tensor ``final2``
reads; there is no dropout before it. The logits are ``main_out``, the first output of the
original eval-mode forward: plain logits, before SML's standardisation and its boundary
suppression / dilated smoothing, which are fsbench's SML head (``baselines.softmax``).

The file (``utils/misc.py::evaluate_eval``) is ``{"state_dict": ..., "epoch", "mean_iu", ...}``
(train.py also writes "optimizer", "scheduler" and "command"; the published copy may hold fewer),
saved from the DistributedDataParallel wrapper, so every key starts with ``module.``. It holds the
``dsn`` auxiliary head, which the eval forward never runs (it is applied only under
``self.training``, for the 0.4-weighted auxiliary loss): it is skipped. The SML class statistics
(``class_mean``/``class_var``) are plain attributes set after loading, not tensors of the file,
and the post-processing module ``multi_scale`` exists only in networks built with
``--enable_boundary_suppression`` / ``--enable_dilated_smoothing`` (eval.py), not in the
training run that saved the file; its two fixed kernels are skipped should a re-saved copy hold
them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fsbench.models.published.base import Family, PublishedSegmenter
from fsbench.models.published.blocks import bottleneck

SOURCE = "shjung13/Standardized-max-logits@c52a513f3385538ec4c0f8d0972506211de10299"


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, **conv: int) -> nn.Sequential:
    """Keys ``0.weight`` (conv, no bias), ``1.*`` (BatchNorm); index 2 is the ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, bias=False, **conv),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _stage(cin: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """``blocks`` bottlenecks; the first one strides (and projects), all share ``dilation``.

    The original builds layer3/4 with stride 2 and then sets every ``conv2`` to stride 1 with
    dilation 2 / 4 (and the projection's stride to 1): here they are built so directly.
    """
    layers = [bottleneck(cin, planes, stride, dilation)]
    layers += [bottleneck(4 * planes, planes, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: [N, cin, h, w] -> [N, 5 * 256, h, w].

    Output channels: image pooling first, then the 1x1 branch and the dilated 3x3 branches.
    """

    def __init__(self, cin: int, rates: tuple[int, ...], width: int = 256) -> None:
        super().__init__()
        # Registered before img_conv, as the published keys are ordered.
        self.features = nn.ModuleList(
            [_conv_bn_relu(cin, width, 1)]
            + [_conv_bn_relu(cin, width, 3, padding=r, dilation=r) for r in rates]
        )
        self.img_conv = _conv_bn_relu(cin, width, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.img_conv(F.adaptive_avg_pool2d(x, 1))
        # Upsampling a 1x1 map: a constant map whatever align_corners says.
        branches = [pooled.expand(-1, -1, *x.shape[-2:])]
        branches += [branch(x) for branch in self.features]
        return torch.cat(branches, dim=1)


class SmlR101OS8(PublishedSegmenter):
    """SML's DeepLabv3+ ResNet-101 OS8 (``DeepR101V3PlusD_OS8``); keys as ``r101_os8_base_cty.pth``.

    ``decode``: normalised images [N, 3, H, W] -> ``final1`` features [N, 256, h, w] with
    h = ceil(ceil(H / 2) / 2) (the stride-4 ``layer1`` grid, about H / 4);
    ``classifier_logits``: -> [N, num_classes, h, w].
    """

    align_corners = True  # network/mynn.py::Upsample

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__(num_classes)
        # Deep stem, keys layer0.{0,1,3,4,6,7}.* (ReLUs at 2, 5, 8, max pool at 9).
        self.layer0 = nn.Sequential(
            *_conv_bn_relu(3, 64, 3, stride=2, padding=1),
            *_conv_bn_relu(64, 64, 3, padding=1),
            *_conv_bn_relu(64, 128, 3, padding=1),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.layer1 = _stage(128, 64, 3, stride=1, dilation=1)
        self.layer2 = _stage(256, 128, 4, stride=2, dilation=1)
        self.layer3 = _stage(512, 256, 23, stride=1, dilation=2)
        self.layer4 = _stage(1024, 512, 3, stride=1, dilation=4)
        self.aspp = ASPP(2048, rates=(12, 24, 36))
        self.bot_fine = _conv_bn_relu(256, 48, 1)
        self.bot_aspp = _conv_bn_relu(1280, 256, 1)
        self.final1 = nn.Sequential(
            *_conv_bn_relu(304, 256, 3, padding=1), *_conv_bn_relu(256, 256, 3, padding=1)
        )
        self.final2 = nn.Sequential(nn.Conv2d(256, num_classes, 1, bias=True))
        self.feature_channels = 256

    def decode(self, x: Tensor) -> Tensor:
        """Normalised images [N, 3, H, W] -> ``final1`` features [N, 256, ~H/4, ~W/4]."""
        fine = self.layer1(self.layer0(x))  # stride 4: the decoder's skip input
        deep = self.layer4(self.layer3(self.layer2(fine)))  # stride 8
        coarse = self.bot_aspp(self.aspp(deep))
        coarse = F.interpolate(
            coarse, size=fine.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )
        return self.final1(torch.cat([self.bot_fine(fine), coarse], dim=1))

    def classifier_logits(self, features: Tensor) -> Tensor:
        """``final2``: features [N, 256, h, w] -> logits [N, num_classes, h, w]."""
        return self.final2(features)


family = Family(
    name="sml_r101_os8",
    title="SML DeepLabv3+ ResNet-101 OS8 (DeepR101V3PlusD_OS8)",
    file_name="r101_os8_base_cty.pth",
    published=(
        "https://github.com/shjung13/Standardized-max-logits (README, 'Download the pretrained "
        "model': https://drive.google.com/file/d/1Rqty9pRhGdfhkfqlWbFUFgdFp0DvfORN)"
    ),
    licence="Apache-2.0",
    container="state_dict",
    prefix="module.",
    skipped=(
        ("dsn.", "auxiliary training head (deep supervision), unused at test time"),
        (
            "multi_scale.",
            "SML's fixed boundary-suppression / smoothing kernels (fsbench's SML head), not part "
            "of the segmenter; absent from the training save, skipped if a re-saved copy has them",
        ),
    ),
    notice=(
        "sml_r101_os8: weights of Jung et al. (ICCV 2021), Apache-2.0, trained on the Cityscapes "
        "train split (2975 images); logits are the plain network output, SML's standardisation "
        "is fsbench's sml head"
    ),
)
SmlR101OS8.family = family
