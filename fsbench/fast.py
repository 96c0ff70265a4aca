"""Speed switches for training and evaluation, each a config key under ``fast``.

* ``autocast``: ``bf16`` or ``fp16`` runs the encoder and decoder of every fsbench
  :class:`~fsbench.models.Segmenter` (the evaluated one and, e.g., ensemble members) under
  ``torch.autocast``; the features are cast back to float32, so the classifier, the logits and
  every head's score stay float32. bf16 works on CPUs and GPUs; fp16 is meant for GPUs.
* ``channels_last``: the segmenters' weights and inputs in NHWC memory format, which cuDNN
  and oneDNN convolutions prefer, above all under autocast.
* ``compile``: ``torch.compile`` of each segmenter's encoder and decoder (``nn.Module.compile``,
  so state-dict keys and checkpoints are unchanged); ``true`` or a backend name. The first
  batches pay the compilation (benchmarks/README.md measures it).

:func:`apply_fast_paths` applies them; ``tests/test_fast.py`` checks that each gives the same
numbers as the plain float32 path within a stated tolerance, and ``benchmarks/overhead.py``
measures what each buys. For training with mixed precision use Lightning's own switch,
``trainer.precision=bf16-mixed`` (or ``16-mixed`` on a GPU, with loss scaling).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fsbench.models import Segmenter

AUTOCAST_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def autocast_dtype(name: str | None) -> torch.dtype | None:
    """The dtype of a ``fast.autocast`` value (``None``/``"none"``/``"fp32"`` = no autocast)."""
    if name is None or str(name).lower() in ("none", "null", "fp32", "float32", "false"):
        return None
    try:
        return AUTOCAST_DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"unknown fast.autocast value {name!r}; choose one of bf16, fp16 or null (float32)"
        ) from None


def segmenters_in(*modules: nn.Module | None) -> list[Segmenter]:
    """Every fsbench Segmenter inside the given modules (each once), e.g. ensemble members."""
    found: dict[int, Segmenter] = {}
    for module in modules:
        if module is None:
            continue
        for child in module.modules():
            if isinstance(child, Segmenter):
                found.setdefault(id(child), child)
    return list(found.values())


def apply_fast_paths(
    segmenter: nn.Module,
    extra: Iterable[nn.Module] = (),
    *,
    autocast: str | None = None,
    channels_last: bool = False,
    compile: bool | str = False,
) -> list[Segmenter]:
    """Switch the fast paths on for ``segmenter`` and every Segmenter inside ``extra`` (heads).

    ``compile`` is ``True`` (the default backend, inductor) or a ``torch.compile`` backend
    name (e.g. ``aot_eager``, which captures the graph without generating code: what the tests
    use, since inductor's code generation is slow on a small CPU). Returns the segmenters
    it changed. A segmenter that is not an fsbench ``Segmenter`` (a
    user's own network) gets ``channels_last`` and ``compile`` as a whole module; ``autocast``
    needs the Segmenter's float32 hand-over to the heads, so it is refused there with the fix.
    """
    dtype = autocast_dtype(autocast)
    targets = segmenters_in(segmenter, *extra)
    if not isinstance(segmenter, Segmenter):
        if dtype is not None and hasattr(segmenter, "autocast_dtype"):
            segmenter.autocast_dtype = dtype  # a rebuilt published network (its decode only)
        elif dtype is not None:
            raise TypeError(
                f"fast.autocast needs an fsbench.models.Segmenter, got {type(segmenter).__name__};"
                " run your network under torch.autocast yourself and return float32 logits, or "
                "set fast.autocast=null"
            )
        if channels_last:
            segmenter.to(memory_format=torch.channels_last)
        if compile:
            segmenter.compile(**_compile_options(compile))
    for target in targets:
        target.autocast_dtype = dtype
        if channels_last:
            target.to(memory_format=torch.channels_last)
            target.channels_last = True
        if compile:
            target.encoder.compile(**_compile_options(compile))
            target.decoder.compile(**_compile_options(compile))
    return targets


def _compile_options(compile: bool | str) -> dict[str, str]:
    return {} if compile is True else {"backend": str(compile)}
