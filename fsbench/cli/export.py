"""``fsbench-export`` (``python -m fsbench.export``): a segmenter + head as one TorchScript file.

``fsbench-export --checkpoint CKPT --head NAME --height H --width W --output model.pt`` writes
a TorchScript file that needs nothing but ``torch`` to run (:mod:`fsbench.export` describes its
inputs, outputs and the parity check)::

    model = torch.jit.load("model.pt")
    score, segmentation = model(image)

The checkpoint and head options are those of ``fsbench-submit`` (``--model``, ``--head-state``,
``--set``, ``--conf-dir``). ``--onnx model.onnx`` also writes an ONNX graph (uint8 input
[1, 3, H, W]; outputs ``score`` [1, H, W] and ``segmentation`` [1, H, W]); it needs the ``onnx``
package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fsbench.cli.submit import add_model_arguments
from fsbench.export import export
from fsbench.submit import SubmissionError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fsbench-export",
        description="Write a segmenter + anomaly head as one TorchScript (and ONNX) module.",
    )
    add_model_arguments(p)
    p.add_argument("--height", type=int, default=1024, help="input height the module takes")
    p.add_argument("--width", type=int, default=2048, help="input width the module takes")
    p.add_argument("--output", required=True, help="TorchScript file to write (model.pt)")
    p.add_argument("--onnx", help="also write this ONNX file (needs the onnx package)")
    args = p.parse_args(argv)
    try:
        metadata = export(
            args.checkpoint,
            args.output,
            args.head,
            args.head_state,
            args.set,
            args.height,
            args.width,
            args.onnx,
            args.conf_dir,
            family=args.model,
        )
    except (SubmissionError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"fsbench-export: error: {error}") from error
    print(
        f"wrote {args.output} (head {metadata['head']}, {args.height} x {args.width}; exported "
        f"vs eager max abs score difference {metadata['parity_max_abs_difference']:.2g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
