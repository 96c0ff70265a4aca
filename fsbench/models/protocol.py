"""The segmenter protocol: what every anomaly head may rely on, and nothing more.

fsbench's own :class:`~fsbench.models.Segmenter` implements it, and so does
:class:`~fsbench.models.WrappedSegmenter` around any network that returns logits. A head that
uses only these members runs on every segmenter family (``tests/test_segmenter_protocol.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from fsbench.models.segmenter import SegOutput

# The members of the protocol, in the order the error messages list them.
PROTOCOL_MEMBERS = ("num_classes", "feature_channels", "forward", "extract_features", "classify")
_METHODS = ("forward", "extract_features", "classify")


@runtime_checkable
class SegmenterProtocol(Protocol):
    """A segmentation network as the anomaly heads see it.

    * ``num_classes``: C, the number of inlier classes of the logits.
    * ``feature_channels``: D, the channels of ``SegOutput.features`` (the classifier's input).
    * ``forward(images)``: images float [N, 3, H, W] RGB in [0, 1] (the segmenter normalises
      them itself) -> :class:`SegOutput` with logits [N, C, H, W] at the images' resolution and
      features [N, D, h, w].
    * ``extract_features(images)``: the features [N, D, h, w] alone, the input of ``classify``.
    * ``classify(features, size)``: logits [N, C, *size] from features: the classifier and the
      upsampling, so ``classify(extract_features(x), x.shape[-2:])`` equals ``forward(x).logits``
      (in eval mode). This is where MC dropout samples: it perturbs the features and classifies
      each sample; ``size = features.shape[-2:]`` gives the logits at feature resolution.

    Optional: ``dropout``, an ``nn.Dropout`` whose rate MC dropout uses when the head's own rate
    is not given. ``isinstance(x, SegmenterProtocol)`` checks the members by name only (and on
    Python 3.11 evaluates properties); :func:`check_segmenter` names what is missing.
    """

    num_classes: int
    feature_channels: int

    def forward(self, images: Tensor) -> SegOutput: ...

    def extract_features(self, images: Tensor) -> Tensor: ...

    def classify(self, features: Tensor, size: tuple[int, int] | torch.Size) -> Tensor: ...


ADAPT_HINT = (
    "To adapt a network that returns logits (a tensor, a dict or a tuple), wrap it: "
    "fsbench.models.WrappedSegmenter(module, features='<submodule whose output is the feature "
    "map>', classifier='<submodule mapping features to logits>', num_classes=C), or from a "
    "config: model=wrapped model.module._target_=... model.features=... (docs/segmenters.md)"
)


def missing_members(segmenter: object, needs: Iterable[str] = PROTOCOL_MEMBERS) -> list[str]:
    """The members of ``needs`` (default: the whole protocol) that ``segmenter`` lacks.

    Methods that are not callable count as missing.

    Looked up statically, so a lazily computed property (e.g. a ``feature_channels`` that runs a
    probing forward pass) is not evaluated.
    """
    missing = []
    for name in needs:
        try:
            value = inspect.getattr_static(segmenter, name)
        except AttributeError:
            missing.append(name)
            continue
        if name in _METHODS and not callable(value):
            missing.append(name)
    return missing


def check_segmenter(segmenter: object, who: str, needs: Iterable[str] = PROTOCOL_MEMBERS) -> None:
    """Raise a ValueError naming what ``segmenter`` lacks of :class:`SegmenterProtocol`.

    ``who`` names the caller (a head's class name) in the message; ``needs`` narrows the check to
    the members the caller uses (default: all of them).
    """
    missing = missing_members(segmenter, needs)
    if missing:
        raise ValueError(
            f"{who} needs a segmenter with the fsbench segmenter protocol "
            f"(fsbench.models.SegmenterProtocol: {', '.join(PROTOCOL_MEMBERS)}); "
            f"{type(segmenter).__name__} lacks {', '.join(missing)}. {ADAPT_HINT}"
        )
