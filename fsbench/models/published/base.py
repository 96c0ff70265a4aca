"""What every rebuilt published network shares: the protocol, the family facts, strict loading.

A family module (``nvidia_wrn38.py``, ``sml_r101_os8.py``, ...) defines one ``nn.Module`` subclass
of :class:`PublishedSegmenter` whose ``state_dict()`` keys are the published file's own (after
the file's container key and prefix are removed), plus a :class:`Family` that says where the file
is published, how it is stored and which of its tensors are skipped, and why.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fsbench.models.segmenter import IMAGENET_MEAN, IMAGENET_STD, SegOutput, resize_logits

# BatchNorm's step counter: unused in eval mode, and absent from files saved by PyTorch < 0.4.1.
STEP_COUNTER = "num_batches_tracked"


@dataclass(frozen=True)
class Family:
    """Facts about one published checkpoint family.

    name: the family's name (``model=<name>``).
    title: the network, as its paper or repository names it.
    file_name: the published file's name.
    published: where the file is published (the error for a missing file prints it).
    licence: the weights' licence.
    container: the key of the dict in the file that holds the weights (``None``: the file is the
        state dict itself).
    prefix: the prefix every weight key carries in the file (``module.`` for DataParallel saves).
    skipped: ``(key prefix, reason)`` of tensors in the file that are not part of the network
        (loss buffers, auxiliary training heads); they are dropped, and only they.
    notice: printed once when a file of this family is loaded (licence and training-split facts
        a user must know).
    """

    name: str
    title: str
    file_name: str
    published: str
    licence: str
    container: str | None
    prefix: str = ""
    skipped: tuple[tuple[str, str], ...] = ()
    notice: str | None = None


class PublishedSegmenter(nn.Module):
    """Base of the rebuilt published networks: the segmenter protocol around one network.

    A subclass builds its submodules with the published keys and implements
    :meth:`decode` (normalised images -> the features the last classifier conv reads) and
    :meth:`classifier_logits` (features -> logits at the features' resolution). This class adds
    the family's input normalisation (the input is RGB in [0, 1], multiplied by
    ``input_scale`` before ``mean`` and ``std`` apply) and its bilinear upsampling of the logits
    to the image (``align_corners``).

    ``dropout``: the ``nn.Dropout`` MC dropout takes its default rate from, ``None`` where the
    published network has no dropout right before its classifier (MC dropout then needs an
    explicit ``head.mc_dropout.dropout=P``).
    """

    family: ClassVar[Family]
    mean: ClassVar[Sequence[float]] = IMAGENET_MEAN
    std: ClassVar[Sequence[float]] = IMAGENET_STD
    input_scale: ClassVar[float] = 1.0
    align_corners: ClassVar[bool] = False

    num_classes: int
    feature_channels: int
    dropout: nn.Module | None

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.dropout = None
        # fast.autocast (fsbench.fast.apply_fast_paths; a run-time setting, not saved): decode()
        # runs under autocast to this dtype, the features are handed over in float32.
        self.autocast_dtype: torch.dtype | None = None
        self.config: dict[str, Any] = {
            "_target_": "fsbench.models.published.load_published",
            "family": self.family.name,
            "checkpoint": None,
            "num_classes": self.num_classes,
        }

    # -- what a family implements --------------------------------------------------------------
    def decode(self, x: Tensor) -> Tensor:
        """Features [N, D, h, w] (the last classifier conv's input) of normalised images."""
        raise NotImplementedError

    def classifier_logits(self, features: Tensor) -> Tensor:
        """Logits [N, C, h, w] of the features: the network's last classifier conv."""
        raise NotImplementedError

    # -- the protocol ---------------------------------------------------------------------------
    def normalise(self, images: Tensor) -> Tensor:
        """RGB [0, 1] images -> the network's input: ``(images * input_scale - mean) / std``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__} expects RGB images of shape [N, 3, H, W] in [0, 1], got "
                f"{tuple(images.shape)}"
            )
        mean = images.new_tensor(self.mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.std).view(1, 3, 1, 1)
        if self.input_scale != 1.0:
            images = images * self.input_scale
        return (images - mean) / std

    def extract_features(self, images: Tensor) -> Tensor:
        """Features [N, D, h, w] of images float [N, 3, H, W], RGB in [0, 1]."""
        x = self.normalise(images)
        if self.autocast_dtype is None:
            return self.decode(x)
        # Reduced precision for the network only: classifier, logits and scores stay float32.
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            features = self.decode(x)
        return features.float()

    def classify(self, features: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """Logits [N, C, *size]: (dropout,) the classifier conv, bilinear upsampling."""
        if self.dropout is not None:
            features = self.dropout(features)
        return resize_logits(self.classifier_logits(features), size, self.align_corners)

    def forward(self, images: Tensor) -> SegOutput:
        features = self.extract_features(images)
        return SegOutput(logits=self.classify(features, images.shape[-2:]), features=features)


class PublishedCheckpointError(ValueError):
    """A published checkpoint file that does not fit its family (or cannot be read)."""


def _key_shapes(module: nn.Module) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in module.state_dict().items()}


def weights_of(raw: Any, family: Family, path: Path) -> dict[str, Tensor]:
    """The network's tensors in the loaded file ``raw``: container opened, prefix removed.

    Tensors under a ``family.skipped`` prefix are dropped. Raises PublishedCheckpointError when
    the container key is absent, naming the keys the file has.
    """
    if not isinstance(raw, Mapping):
        raise PublishedCheckpointError(
            f"{path} holds a {type(raw).__name__}, not a checkpoint dict; a {family.name} file "
            f"({family.file_name}) is a dict with the weights under "
            f"{family.container!r}"
        )
    if family.container is not None:
        if family.container not in raw:
            held = ", ".join(repr(key) for key in list(raw)[:8])
            raise PublishedCheckpointError(
                f"{path} is not a {family.name} checkpoint ({family.file_name}): it has no "
                f"{family.container!r} entry (it has {held}). " + _family_hint(raw, family)
            )
        raw = raw[family.container]
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, Tensor):
            continue
        if family.prefix and key.startswith(family.prefix):
            key = key[len(family.prefix) :]
        if any(key.startswith(prefix) for prefix, _ in family.skipped):
            continue
        state[key] = value
    return state


def _family_hint(raw: Mapping, family: Family) -> str:
    """Which other family's file ``raw`` looks like, if any (by its container key)."""
    from fsbench.models.published import FAMILIES

    facts = {name: spec.family for name, spec in FAMILIES.items() if name != family.name}
    others = [name for name, other in facts.items() if other.container in raw]
    if others:
        return f"Its layout is that of {' or '.join(others)}: use model=<that family>."
    return f"Pass the published {family.file_name} ({family.published})."


def check_and_load(
    module: PublishedSegmenter,
    state: dict[str, Tensor],
    path: Path,
    assign: bool,
    others: Mapping[str, Sequence[str]] = {},
) -> None:
    """Load ``state`` into ``module`` strictly; raise PublishedCheckpointError naming any misfit.

    Every tensor of the module must be in ``state`` with its shape (BatchNorm step counters,
    which old files lack, excepted: they are filled with 0), and every tensor of ``state`` must
    be one of the module's. ``others`` maps other families' names to their key lists, to name
    the family a misfit file belongs to.
    """
    family = module.family
    expected = _key_shapes(module)
    missing = [key for key in expected if key not in state]
    for key in [key for key in missing if key.endswith(STEP_COUNTER)]:
        state[key] = torch.zeros((), dtype=torch.long)
        missing.remove(key)
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs {family.name} {tuple(expected[key])}"
        for key in expected
        if key in state and state[key].shape != expected[key]
    ]
    if missing or unexpected or mismatched:
        lines = [f"{path} does not fit {family.name} ({family.title}, {family.file_name}):"]
        if missing:
            lines.append(
                f"  {len(missing)} of its {len(expected)} tensors are missing, e.g. {missing[:3]}"
            )
        if unexpected:
            lines.append(
                f"  {len(unexpected)} tensors of the file are unexpected, e.g. {unexpected[:3]}"
            )
        if mismatched:
            lines.append(f"  {len(mismatched)} shapes differ, e.g. {mismatched[:3]}")
        lines.append("  " + _likely_cause(state, expected, missing, unexpected, mismatched, others))
        raise PublishedCheckpointError("\n".join(lines))
    for key, value in state.items():
        if value.is_floating_point() and value.dtype != torch.float32:
            state[key] = value.float()  # a half-precision copy of the file: compute in float32
    module.load_state_dict(state, strict=True, assign=assign)


def _likely_cause(
    state: Mapping[str, Tensor],
    expected: Mapping[str, torch.Size],
    missing: Sequence[str],
    unexpected: Sequence[str],
    mismatched: Sequence[str],
    others: Mapping[str, Sequence[str]],
) -> str:
    """One sentence: the likely cause of a misfit (another family, another class count, a part)."""
    file_keys = set(state)
    best, best_share = None, 0.0
    for name, keys in others.items():
        share = len(file_keys & set(keys)) / max(len(file_keys), 1)
        if share > best_share:
            best, best_share = name, share
    own_share = len(file_keys & set(expected)) / max(len(file_keys), 1)
    if best is not None and best_share > max(own_share, 0.5):
        return f"Likely cause: it is a {best} file; use model={best}."
    if not unexpected and not mismatched and missing:
        return (
            f"Likely cause: the file holds only {len(expected) - len(missing)} of the "
            f"{len(expected)} tensors (a partial save or a truncated copy); download it again."
        )
    if mismatched and all("classifier" in m or "final" in m or "conv_seg" in m for m in mismatched):
        return (
            "Likely cause: the file was trained for another number of classes; set "
            "model.num_classes to its class count."
        )
    close = difflib.get_close_matches(unexpected[0], list(expected), n=1) if unexpected else []
    hint = f" (e.g. file key {unexpected[0]!r} vs {close[0]!r})" if close else ""
    return (
        "Likely cause: the file is of another network or another version of it" + hint + "; "
        "pass the published file named above."
    )
