"""Rebuild a segmenter from a checkpoint written by ``train.py``.

A training checkpoint carries the constructor arguments of its segmenter under the key
``segmenter_config`` (with the ``_target_`` class path), so evaluation needs nothing but the file.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from torch import nn

SEGMENTER_CONFIG_KEY = "segmenter_config"
SEGMENTER_PREFIX = "segmenter."
HEAD_CLASS_KEY = "fsbench_head_class"
HEAD_PREFIX = "head."


def class_path(obj: object) -> str:
    """``module.QualName`` of an object's class, as checkpoints record it."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def load_segmenter(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Return the segmenter stored in a ``train.py`` checkpoint, in eval mode."""
    path = Path(path)
    checkpoint = read_checkpoint(path, map_location)
    if SEGMENTER_CONFIG_KEY not in checkpoint:
        raise ValueError(
            f"{path} has no '{SEGMENTER_CONFIG_KEY}' entry: it was not written by fsbench's "
            "train.py (SegmentationTask). Wrap your weights with fsbench.models.save_segmenter."
        )
    config = dict(checkpoint[SEGMENTER_CONFIG_KEY])
    pretrained = config.get("encoder_weights")
    if pretrained is not None:
        # The checkpoint holds every weight: building the encoder without its pretrained
        # weights skips a download, so checkpoints load offline (submission containers).
        config["encoder_weights"] = None
    segmenter = hydra.utils.instantiate(config)
    if pretrained is not None:
        segmenter.config["encoder_weights"] = pretrained
    state = {
        key[len(SEGMENTER_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(SEGMENTER_PREFIX)
    }
    config = checkpoint[SEGMENTER_CONFIG_KEY]
    described = (
        f"segmenter its config describes (encoder {config.get('encoder_name')}, "
        f"{config.get('num_classes')} classes)"
    )
    _load_state_strict(segmenter, state, path, described)
    return segmenter.eval()


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict stored in a checkpoint file, loaded with ``torch.load(weights_only=True)``.

    Only tensors and plain containers are unpickled, so a checkpoint cannot run code when it is
    read; ``train.py`` checkpoints hold nothing else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train one with `python train.py` or pass "
            "checkpoint=PATH to evaluate.py"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"checkpoint {path} cannot be read with torch.load(weights_only=True): it is not a "
            "PyTorch file, or it pickles objects other than tensors and plain containers "
            f"({_unsupported(error)}). Pass a checkpoint written by train.py"
        ) from None
    except (RuntimeError, EOFError, KeyError) as error:  # truncated or non-torch files
        raise ValueError(
            f"checkpoint {path} is not a readable PyTorch file ({str(error)[:80]}); "
            "was it truncated by a killed job? Pass another checkpoint, e.g. one of "
            "<run>/checkpoints/step*.ckpt"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, not a train.py checkpoint "
            "dict; wrap bare weights with fsbench.models.save_segmenter"
        )
    return checkpoint


def load_head_state(path: str | Path, head: nn.Module, map_location="cpu") -> None:
    """Restore a training-time head's tensors from the ``train.py`` checkpoint trained with it.

    The head must already be attached to the segmenter (``head.attach(segmenter)``). Raises a
    clear error if the checkpoint was trained without this kind of head.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, map_location)
    wanted = class_path(head)
    trained = checkpoint.get(HEAD_CLASS_KEY)
    if trained != wanted:
        got = "no training-time head" if trained is None else f"head {trained}"
        raise ValueError(
            f"{type(head).__name__} is a training-time method, but checkpoint {path} was trained "
            f"with {got}. Train with it first, e.g. `python train.py "
            "+experiment=synthetic/<method>`, and evaluate that run's checkpoint."
        )
    state = {
        key[len(HEAD_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(HEAD_PREFIX)
    }
    _load_state_strict(head, state, path, "head")


def restore_fitted_state(head: nn.Module, path: str | Path) -> None:
    """Load a fitted head state saved by ``evaluate.py`` (``<run>/heads/NAME.pt``), read with
    ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"head state {path} does not exist; evaluate.py writes it to <run>/heads/NAME.pt "
            "when it fits the head"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        head.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(
            f"{path} is not a fitted state of {type(head).__name__} ({first}); pass the "
            f"heads/NAME.pt that evaluate.py wrote for this head"
        ) from error
    if not getattr(head, "is_fitted", True):
        raise ValueError(f"{path} holds an unfitted {type(head).__name__}")


def ready_head(
    head: Any,
    segmenter: nn.Module,
    checkpoint: str | Path | None = None,
    *,
    fitted_state: str | Path | None = None,
    fit: Callable[[Any], None] | None = None,
    without_checkpoint: str = "",
    without_fitted_state: str = "",
) -> Any:
    """A head ready to score: the one path of ``evaluate.py``, ``fsbench-submit`` and ``-export``.

    The head is attached to ``segmenter``; a training-time head (``trained_with_segmenter``)
    gets its tensors from the ``train.py`` ``checkpoint`` trained with it; a fitted head
    (``requires_fit``) gets its state from ``fitted_state`` (``<run>/heads/NAME.pt``) or, without
    one, from ``fit(head)``. ``without_checkpoint`` / ``without_fitted_state`` are the messages
    (naming the command to run) when what a head needs is missing.
    """
    head.attach(segmenter)
    if head.trained_with_segmenter:
        if checkpoint is None:
            raise ValueError(
                without_checkpoint
                or f"{type(head).__name__} needs the train.py checkpoint trained with it"
            )
        load_head_state(checkpoint, head)
    if head.requires_fit:
        if fitted_state is not None:
            restore_fitted_state(head, fitted_state)
        elif fit is not None:
            fit(head)
        else:
            raise ValueError(without_fitted_state or f"{type(head).__name__} must be fitted first")
    return head


def _unsupported(error: Exception) -> str:
    """The line of torch's weights-only error that names the offending class."""
    lines = [line for line in str(error).splitlines() if "Unsupported global" in line]
    return lines[0].strip() if lines else type(error).__name__


ARCHITECTURE_KEYS = ("_target_", "encoder_name", "num_classes", "output_stride", "decoder_channels")


def initialise_from(segmenter: nn.Module, path: str | Path) -> None:
    """Copy the weights of the segmenter in checkpoint ``path`` into ``segmenter`` (fine-tuning).

    The architectures must match; training settings (dropout, pretrained-weight source) may
    differ.
    """
    start = load_segmenter(path)
    differ = [
        f"{key}: checkpoint {start.config.get(key)!r} vs model {segmenter.config.get(key)!r}"
        for key in ARCHITECTURE_KEYS
        if start.config.get(key) != segmenter.config.get(key)
    ]
    if differ:
        raise ValueError(
            f"init_from={path} holds a different architecture than the model config ("
            + "; ".join(differ)
            + "); choose the model config it was trained with, e.g. model=<its model>"
        )
    segmenter.load_state_dict(start.state_dict())


def save_segmenter(segmenter: nn.Module, path: str | Path) -> None:
    """Write a segmenter in the checkpoint format ``load_segmenter`` reads."""
    torch.save(
        {
            SEGMENTER_CONFIG_KEY: dict(segmenter.config),
            "state_dict": {SEGMENTER_PREFIX + k: v for k, v in segmenter.state_dict().items()},
        },
        path,
    )


def _load_state_strict(
    module: nn.Module, state: dict, path: Path, what: str = "segmenter its config describes"
) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"checkpoint {path} does not fit the {what}:"]
        if missing:
            lines.append(f"  missing {len(missing)} tensors, e.g. {missing[:3]}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected tensors, e.g. {unexpected[:3]}")
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatches, e.g. {mismatched[:3]}")
        lines.append("  Was the file written by a different fsbench version or edited by hand?")
        raise ValueError("\n".join(lines))
    module.load_state_dict(state)
