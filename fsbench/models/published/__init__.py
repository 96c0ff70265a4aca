"""The field's published Cityscapes networks, rebuilt so that their files load as they are.

Each family is a clean-room rebuild whose ``state_dict()`` keys are the published file's own
(BENCHMARKS.md §2c); :func:`load_published` reads the file the user has (nothing is
downloaded), strictly, and returns a segmenter of the protocol (``fsbench.models.protocol``)
that takes RGB in [0, 1] and normalises and upsamples as the original code does.

=================  ===================================================================
family             network (original code)
=================  ===================================================================
nvidia_wrn38       NVIDIA/semantic-segmentation (branch sdcnet) DeepWV3Plus, WideResNet38, OS8
sml_r101_os8       shjung13/Standardized-max-logits @c52a513 DeepR101V3PlusD_OS8
vainf_r101_os16    VainF/DeepLabV3Plus-Pytorch deeplabv3plus_resnet101, OS16
vainf_r101_os8     the same file run at output stride 8
vainf_mbv2_os16    VainF/DeepLabV3Plus-Pytorch deeplabv3plus_mobilenet, OS16
mmseg_r101_d8      open-mmlab/mmsegmentation DeepLabV3+ R101-D8 (ResNetV1c), 512x1024, 80k
=================  ===================================================================
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fsbench.models.published.base import (
    Family,
    PublishedCheckpointError,
    PublishedSegmenter,
    check_and_load,
    weights_of,
)


@dataclass(frozen=True)
class FamilySpec:
    """Where a family's class lives and the constructor options its name fixes."""

    module: str
    cls: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def load_class(self) -> type[PublishedSegmenter]:
        return getattr(importlib.import_module(f"fsbench.models.published.{self.module}"), self.cls)

    @property
    def family(self) -> Family:
        """The family's facts (an instance's: one class may serve several families)."""
        with torch.device("meta"):
            return self.load_class()(**self.options).family


FAMILIES: dict[str, FamilySpec] = {
    "nvidia_wrn38": FamilySpec("nvidia_wrn38", "NvidiaWRN38"),
    "sml_r101_os8": FamilySpec("sml_r101_os8", "SmlR101OS8"),
    "vainf_r101_os16": FamilySpec("vainf", "VainFResNet101", {"output_stride": 16}),
    "vainf_r101_os8": FamilySpec("vainf", "VainFResNet101", {"output_stride": 8}),
    "vainf_mbv2_os16": FamilySpec("vainf", "VainFMobileNetV2", {"output_stride": 16}),
    "mmseg_r101_d8": FamilySpec("mmseg_r101_d8", "MmsegR101D8"),
}

_NOTICES_SHOWN: set[str] = set()


def family_spec(name: str) -> FamilySpec:
    """The spec of family ``name``; a ValueError lists the families otherwise."""
    if name not in FAMILIES:
        raise ValueError(
            f"unknown published network family {name!r}; fsbench rebuilds "
            f"{', '.join(FAMILIES)} (model=<family> model.checkpoint=FILE)"
        )
    return FAMILIES[name]


def build_published(family: str, num_classes: int = 19, device: Any = None) -> PublishedSegmenter:
    """An untrained network of ``family`` (deterministic PyTorch default initialisation)."""
    spec = family_spec(family)
    with torch.device(device or "cpu"):
        return spec.load_class()(num_classes=num_classes, **spec.options)


def read_published_file(path: Path) -> Any:
    """The object in a published ``.pth`` file, memory-mapped where the format allows.

    Read with ``weights_only=True`` (numpy scalars, which some files store as their score, are
    allowed), so the file cannot run code. Zip-format files are memory-mapped: the weights are
    read from the page cache when the network is built, not copied into a second buffer.
    """
    import numpy as np

    allowed = [np.dtype, type(np.dtype("float64"))]
    scalar = getattr(getattr(np, "_core", np).multiarray, "scalar", None)
    if scalar is not None:
        allowed += [(scalar, "numpy.core.multiarray.scalar"), scalar]
    try:
        with torch.serialization.safe_globals(allowed):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error) and "zip" not in str(error):
                    raise
                # A legacy (pre-zip) file cannot be memory-mapped: read it once.
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0]
        raise PublishedCheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True) ({first[:160]}); a "
            "published checkpoint holds tensors and plain values only. Is it the published file?"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise PublishedCheckpointError(
            f"{path} is not a readable PyTorch file ({str(error)[:120]}); was the download "
            "truncated? Download it again"
        ) from None


def load_published(
    family: str, checkpoint: str | Path | None, num_classes: int = 19
) -> PublishedSegmenter:
    """The network of ``family`` with the published file ``checkpoint``'s weights, in eval mode.

    ``checkpoint=None`` builds it untrained (what ``load_segmenter`` does before it restores an
    fsbench checkpoint of such a network). The file's tensors are checked against the family's
    keys and shapes, strictly: tensors the family skips are named in its ``Family.skipped``,
    everything else must fit, and a misfit names the missing, unexpected and mismatched tensors
    and the likely cause. The network is built on the meta device and takes the file's tensors
    as they are (``load_state_dict(assign=True)``), so a 1 GB file is not held twice.
    """
    spec = family_spec(family)
    if checkpoint is None:
        return build_published(family, num_classes).eval()
    with torch.device("meta"):  # no memory: the file's tensors become the network's
        network = spec.load_class()(num_classes=num_classes, **spec.options)
    facts = network.family
    path = Path(str(checkpoint)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model.checkpoint={path} does not exist. The {family} weights are the file "
            f"{facts.file_name}, published at {facts.published}; fsbench downloads "
            f"nothing: pass the path of your copy, model.checkpoint=/path/to/{facts.file_name}"
        )
    state = weights_of(read_published_file(path), facts, path)
    check_and_load(network, state, path, assign=True, others=_OtherKeyLists(family))
    if facts.notice and family not in _NOTICES_SHOWN:
        _NOTICES_SHOWN.add(family)
        print(f"note: {facts.notice}")
    return network.eval()


class _OtherKeyLists(Mapping):
    """The key lists of the families other than one, built on the meta device when first read."""

    def __init__(self, family: str) -> None:
        self.names = [name for name in FAMILIES if name != family]
        self._cache: dict[str, list[str]] = {}

    def __getitem__(self, name: str) -> list[str]:
        if name not in self._cache:
            self._cache[name] = list(build_published(name, device="meta").state_dict())
        return self._cache[name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


__all__ = [
    "FAMILIES",
    "Family",
    "PublishedCheckpointError",
    "PublishedSegmenter",
    "build_published",
    "load_published",
    "read_published_file",
]
