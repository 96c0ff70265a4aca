"""Export a segmenter and its anomaly head as one self-contained TorchScript (or ONNX) module.

The library behind ``fsbench-export`` (the command line is :mod:`fsbench.cli.export`):
:func:`export` writes a TorchScript file that needs nothing but ``torch`` to run::

    model = torch.jit.load("model.pt")
    score, segmentation = model(image)

``image`` is uint8 (0..255) or float (in [0, 1]), [3, H, W] or [N, 3, H, W], RGB; the scaling
to [0, 1] and the segmenter's normalisation are inside the module. ``score`` is float32
[(N,) H, W] (higher = more anomalous), ``segmentation`` int64 [(N,) H, W] train ids. The head
and segmenter are traced at one input size (H, W): the module refuses any other size with a
message naming the exported one (resolutions of a benchmark are fixed, e.g. 1024 x 2048 for
Fishyscapes). Before writing, the export runs the traced module and the eager model on the same
image and refuses scores that differ by more than ``tolerance`` (1e-4): a head with random
sampling (MC dropout) therefore cannot be exported. The file records what it holds under
``fsbench.json`` (``torch.jit.load(path, _extra_files={"fsbench.json": ""})``).

With ``onnx_path`` (``--onnx``) it also writes an ONNX graph (uint8 input [1, 3, H, W]; outputs
``score`` [1, H, W] and ``segmentation`` [1, H, W]); that needs the ``onnx`` package.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fsbench.heads import AnomalyHead, device_of, resize_score
from fsbench.submit import CONF_DIR, SubmissionError, load_model

#: Parity tolerance, relative to the scores' scale max(1, max |eager score|): the traced and the
#: eager graphs may pick other kernels, whose rounding grows with the values (density scores
#: reach the hundreds).
TOLERANCE = 1e-4
METADATA = "fsbench.json"


class ScoreAndSegment(nn.Module):
    """Traceable core: images float [1, 3, H, W] in [0, 1] -> (score [1, H, W], train ids).

    The segmenter returns a dataclass (``SegOutput``) and the head an ``AnomalyPrediction``,
    which the tracer cannot return; this module unpacks them into a tuple of tensors.
    """

    def __init__(self, segmenter: nn.Module, head: AnomalyHead) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.head = head

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        prediction = self.head(self.segmenter, images)
        score = resize_score(prediction.score, images.shape[-2:]).float()
        return score, prediction.logits.argmax(dim=1)


class ExportedModel(nn.Module):
    """Scripted front of a traced :class:`ScoreAndSegment`: input checks, dtype, batching.

    Images go through the traced core one at a time, so any batch size works although the core
    was traced with one image.
    """

    def __init__(self, core: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.core = core
        self.height = height
        self.width = width

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        batched = image.dim() == 4
        if not batched:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.size(1) != 3:
            raise ValueError("expected an RGB image [3, H, W] or a batch [N, 3, H, W]")
        if image.size(2) != self.height or image.size(3) != self.width:
            raise ValueError(
                "this model was exported for images of "
                + str(self.height)
                + " x "
                + str(self.width)
                + " pixels, got "
                + str(image.size(2))
                + " x "
                + str(image.size(3))
                + "; export again with fsbench-export --height H --width W"
            )
        if image.dtype == torch.uint8:
            images = image.float() / 255.0
        else:
            images = image.float()
            if images.numel() > 0 and (images.min() < 0.0 or images.max() > 1.0):
                raise ValueError("float images must lie in [0, 1]; pass uint8 for values 0..255")
        scores: list[Tensor] = []
        segmentations: list[Tensor] = []
        with torch.no_grad():  # inference only: the outputs carry no autograd graph
            for index in range(images.size(0)):
                score, segmentation = self.core(images[index : index + 1])
                scores.append(score)
                segmentations.append(segmentation)
        score = torch.cat(scores)
        segmentation = torch.cat(segmentations)
        if not batched:
            return score[0], segmentation[0]
        return score, segmentation


def trace(
    segmenter: nn.Module, head: AnomalyHead, height: int, width: int, seed: int = 0
) -> tuple[torch.jit.ScriptModule, Tensor]:
    """Trace segmenter + head at (height, width); return the scripted module and the example.

    The example image (float [1, 3, H, W], uniform noise from ``seed``) is what the tracer ran.
    """
    core = ScoreAndSegment(segmenter, head).eval()
    device = device_of(segmenter)
    generator = torch.Generator().manual_seed(seed)
    example = torch.rand(1, 3, height, width, generator=generator).to(device)
    with warnings.catch_warnings(), torch.no_grad():
        # Shape arithmetic becomes constants of the trace: the module is checked for its size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch.jit is deprecated in favour of torch.export, but TorchScript files still load
        # in any libtorch runtime without Python; docs/submission.md says so.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(core, example, check_trace=False)
        exported = torch.jit.script(ExportedModel(traced, height, width))
    return exported, example


def check_parity(
    exported: nn.Module,
    segmenter: nn.Module,
    head: AnomalyHead,
    images: Tensor,
    tolerance: float = TOLERANCE,
) -> float:
    """Max abs difference of the exported and the eager scores on ``images`` (float [N, 3, H, W]).

    Raises ValueError if it exceeds ``tolerance`` x max(1, max |eager score|) (a stochastic head,
    or control flow the tracer froze at the example's values).
    """
    with torch.no_grad():
        exported_score, _ = exported(images)
        eager = ScoreAndSegment(segmenter, head).eval()
        eager_score, _ = eager(images)
    difference = float((exported_score - eager_score).abs().max())
    allowed = tolerance * max(1.0, float(eager_score.abs().max()))
    if not difference <= allowed:  # also catches NaN
        raise ValueError(
            f"the exported {type(head).__name__} scores differ from the eager model by "
            f"{difference:.3g} (> {allowed:.3g}, {tolerance:g} of the scores' scale): the head "
            "is random (sampling, e.g. MC dropout) or has control flow the TorchScript tracer "
            "cannot follow, so it cannot be exported"
        )
    return difference


def export_onnx(core: nn.Module, height: int, width: int, path: str | Path) -> None:
    """Write an ONNX graph of the eager ``ScoreAndSegment`` core: uint8 [1, 3, H, W] ->
    (score, segmentation). (The exporter traces the eager module itself; it cannot trace a
    module that holds an already traced TorchScript one.)"""
    try:
        import onnx  # noqa: F401 - torch.onnx needs it to write the file
    except ImportError as error:
        raise SubmissionError(
            "ONNX export needs the onnx package: pip install onnx (and onnxruntime to run it)"
        ) from error

    class FromUint8(nn.Module):
        def __init__(self, core: nn.Module) -> None:
            super().__init__()
            self.core = core

        def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
            return self.core(image.float() / 255.0)

    example = torch.zeros(1, 3, height, width, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            FromUint8(core).eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=["score", "segmentation"],
            dynamo=False,
        )


def export(
    checkpoint: str | Path,
    output: str | Path,
    head: str | None = None,
    head_state: str | Path | None = None,
    overrides: Sequence[str] = (),
    height: int = 1024,
    width: int = 2048,
    onnx_path: str | Path | None = None,
    conf_dir: str | Path = CONF_DIR,
    tolerance: float = TOLERANCE,
    family: str | None = None,
) -> dict[str, Any]:
    """Trace, check parity, and write the TorchScript file (and ONNX); return its metadata."""
    if height < 1 or width < 1:
        raise SubmissionError(f"--height and --width must be >= 1, got {height} x {width}")
    segmenter, built, name = load_model(
        checkpoint, head, head_state, overrides, conf_dir, family=family
    )
    exported, example = trace(segmenter, built, height, width)
    difference = check_parity(exported, segmenter, built, example, tolerance)
    metadata = {
        "checkpoint": str(checkpoint),
        "model": family,  # a published network's family, None for a train.py checkpoint
        "head": name,
        "head_class": f"{type(built).__module__}.{type(built).__qualname__}",
        "height": height,
        "width": width,
        "num_classes": getattr(segmenter, "num_classes", None),
        "parity_max_abs_difference": difference,
        "torch": torch.__version__,
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(exported, str(output), _extra_files={METADATA: json.dumps(metadata)})
    if onnx_path is not None:
        export_onnx(ScoreAndSegment(segmenter, built).eval(), height, width, onnx_path)
    return metadata


if __name__ == "__main__":  # python -m fsbench.export: the command line of fsbench.cli.export
    sys.exit(importlib.import_module("fsbench.cli.export").main())
