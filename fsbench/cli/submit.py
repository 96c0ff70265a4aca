"""``fsbench-submit`` (``python -m fsbench.submit``): a benchmark submission from a checkpoint.

``fsbench-submit --checkpoint CKPT --head NAME --input DIR --output DIR`` runs a trained
segmenter and an anomaly head over every image of ``DIR`` and writes, per ``--format``, exactly
what the benchmark's grader reads (:mod:`fsbench.submit` describes the files):

* ``fishyscapes`` (the default): ``DDDD_anomaly.npy`` and ``DDDD_segmentation.npy`` for each
  input ``DDDD_<anything>.png``;
* ``smiyc``: ``anomaly_p/<method>/<dataset>/<fid>.hdf5`` for the SegmentMeIfYouCan toolkit
  (``--method``, default ``fsbench_<head>``; ``--dataset``, default from the input folder).

The head comes from ``conf/head/NAME.yaml`` (``--set key=value`` overrides its arguments), or,
without ``--head``, from the training-time head the checkpoint was trained with. A head that is
fitted on the training set (``head.requires_fit``) is restored from the state ``evaluate.py``
saved in ``<run>/heads/NAME.pt`` (``--head-state``); it is never fitted here, so the submission
needs no training data. ``--model FAMILY`` reads ``--checkpoint`` as a published network's file.
Guide: ``docs/submission.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from fsbench.models.published import FAMILIES
from fsbench.submit import CONF_DIR, FORMATS, SubmissionError, load_model, submit


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The options that choose the checkpoint and the head (shared with fsbench-export)."""
    p.add_argument(
        "--checkpoint",
        required=True,
        help="train.py checkpoint (last.ckpt), or with --model a published network's file",
    )
    p.add_argument(
        "--model",
        metavar="FAMILY",
        help=f"the published network family of --checkpoint ({', '.join(FAMILIES)}; "
        "docs/reproduce.md)",
    )
    p.add_argument(
        "--head",
        help="head config name (conf/head/NAME.yaml); default: the checkpoint's training-time head",
    )
    p.add_argument("--head-state", help="fitted head state, <evaluate run>/heads/NAME.pt")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an argument of the head config (repeatable)",
    )
    p.add_argument("--conf-dir", default=str(CONF_DIR), help="the Hydra config tree")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fsbench.submit",
        description="Write a Fishyscapes or SegmentMeIfYouCan submission from a checkpoint.",
    )
    add_model_arguments(p)
    p.add_argument("--input", required=True, help="folder of input images")
    p.add_argument("--output", required=True, help="folder the files are written to")
    p.add_argument("--format", default="fishyscapes", choices=FORMATS)
    p.add_argument("--method", help="SegmentMeIfYouCan method name (default fsbench_<head>)")
    p.add_argument(
        "--dataset",
        help="SegmentMeIfYouCan dataset name (default from the input "
        "folder: AnomalyTrack-all or ObstacleTrack-all)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.perf_counter()
    try:
        segmenter, head, name = load_model(
            args.checkpoint,
            args.head,
            args.head_state,
            args.set,
            args.conf_dir,
            args.device,
            family=args.model,
        )
        written = submit(
            segmenter,
            head,
            args.input,
            args.output,
            args.format,
            method=args.method or f"fsbench_{name}",
            dataset=args.dataset,
        )
    except (SubmissionError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"fsbench.submit: error: {error}") from error
    seconds = time.perf_counter() - started
    print(f"{len(written)} files written to {args.output} by head {name} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
