"""``python -m fsbench.data check | detect | convert | make-anomaly-set``: dataset trees on disk.

``check NAME ROOT`` validates a dataset tree before using it (any supported layout; ``--layout``
forces one, ``--label-map 2:255`` remaps label values explicitly). ``detect ROOT`` says which
anomaly sets and layouts a folder holds, how many labelled frames each has and what is missing.
``convert NAME SRC DST`` writes a set from any supported layout into the official one (or
``--to validation_dataset``), with ``manifest.json`` and ``SHA256SUMS`` (see
:mod:`fsbench.data.convert`).

Builds the reader (which refuses a missing folder, orphan files or an empty set), then reads
every image and label (unless ``--quick``) and prints a summary: the number of images, the pixel
shares of inlier / anomaly / void (shares of all pixels), the resolutions, or the errors found.
Exit status 0 when the tree is fine, 1 on any error, 2 on a usage error.

Examples::

    python -m fsbench.data check cityscapes /data/cityscapes --split val
    python -m fsbench.data check fs_lost_and_found /data/fishyscapes_lostandfound \\
        --laf-root /data/lostandfound
    python -m fsbench.data check fs_static /data/fishyscapes --cityscapes-root /data/cityscapes
    python -m fsbench.data check road_anomaly /data/RoadAnomaly_jpg
    python -m fsbench.data check smiyc_obstacle /data/smiyc
    python -m fsbench.data check fs_lost_and_found /data/data_processed --layout synboost
    python -m fsbench.data detect /data/Validation_Dataset
    python -m fsbench.data convert road_anomaly /data/data_processed /data/road_anomaly_official
    python -m fsbench.data make-anomaly-set /data/cityscapes /data/my_static \\
        --objects /data/coco_objects

``make-anomaly-set`` pastes objects into Cityscapes-layout frames and writes a set in the
Fishyscapes Static layout (see :mod:`fsbench.data.make_sets`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from fsbench.data.anomaly_sets import anomaly_set
from fsbench.data.check import DatasetError, LabelledImages, check_dataset
from fsbench.data.cityscapes import Cityscapes
from fsbench.data.layouts import AUTO, LAYOUTS


def _builders(name: str, args: argparse.Namespace) -> list[Callable[[], LabelledImages]]:
    """One constructor call per dataset to check (Cityscapes: one per split)."""
    if name == "cityscapes":
        return [
            partial(Cityscapes, args.root, split=split, labels=args.labels) for split in args.split
        ]
    options = {"laf_root": args.laf_root, "cityscapes_root": args.cityscapes_root}
    options |= {"version": args.version, "layout": args.layout, "label_map": args.label_map}
    return [partial(anomaly_set, name, args.root, **options)]


def _label_map(text: str) -> dict[int, int]:
    """``2:255,3:0`` -> {2: 255, 3: 0}."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        return {int(stored): int(meaning) for stored, meaning in pairs}
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--label-map takes STORED:MEANING pairs separated by commas, e.g. 2:255; got {text!r}"
        ) from error


def _add_layout_options(command: argparse.ArgumentParser) -> None:
    names = sorted({name for layouts in LAYOUTS.values() for name in layouts})
    command.add_argument(
        "--layout",
        default=AUTO,
        choices=[AUTO, *names],
        help="the on-disk layout to read (default auto: the one found)",
    )
    command.add_argument(
        "--label-map",
        type=_label_map,
        default=None,
        metavar="STORED:MEANING,...",
        help="remap stored label values explicitly, e.g. 2:255 (meanings 0, 1, 255)",
    )


DATASETS: dict[str, str] = {
    "cityscapes": "Cityscapes train/val (ROOT holds leftImg8bit/ and gtFine/)",
    "fs_lost_and_found": "Fishyscapes Lost & Found (ROOT holds DDDD_*_labels.png; --laf-root)",
    "fs_static": "Fishyscapes Static (ROOT holds fs_val_v3/; --cityscapes-root)",
    "road_anomaly": "Road Anomaly (ROOT is RoadAnomaly_jpg/)",
    "smiyc_anomaly": "SegmentMeIfYouCan RoadAnomaly21 (ROOT is or holds dataset_AnomalyTrack/)",
    "smiyc_obstacle": "SegmentMeIfYouCan RoadObstacle21 (ROOT is or holds dataset_ObstacleTrack/)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fsbench.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="validate a dataset tree and print its summary",
        description="Validate a dataset tree: "
        + "; ".join(f"{k}: {v}" for k, v in DATASETS.items()),
    )
    check.add_argument("name", choices=sorted(DATASETS), metavar="NAME", help=", ".join(DATASETS))
    check.add_argument("root", metavar="ROOT", help="the dataset's root folder")
    check.add_argument("--laf-root", help="fs_lost_and_found: Lost and Found root (leftImg8bit/)")
    check.add_argument("--cityscapes-root", help="fs_static: Cityscapes root (leftImg8bit/)")
    check.add_argument("--version", type=int, default=3, help="fs_static: 1, 2 or 3 (default 3)")
    check.add_argument(
        "--split",
        nargs="+",
        default=["train", "val"],
        choices=["train", "val"],
        help="cityscapes: the splits to check (default both)",
    )
    check.add_argument(
        "--labels",
        default="auto",
        choices=["auto", "labelIds", "labelTrainIds"],
        help="cityscapes: which label files to read (default auto)",
    )
    check.add_argument(
        "--quick",
        action="store_true",
        help="check the folder structure only, without reading the files",
    )
    _add_layout_options(check)
    detect = commands.add_parser(
        "detect", help="say which anomaly sets and layouts a folder holds, and what is missing"
    )
    detect.add_argument("root", metavar="ROOT")
    detect.add_argument("--laf-root", help="Lost and Found root (official FS Lost & Found)")
    detect.add_argument("--cityscapes-root", help="Cityscapes root (official FS Static)")
    convert = commands.add_parser(
        "convert",
        help="write an anomaly set from any supported layout into the official one "
        "(or images/labels_masks), with checksums",
    )
    convert.add_argument("name", choices=sorted(LAYOUTS), metavar="NAME", help=", ".join(LAYOUTS))
    convert.add_argument("src", metavar="SRC", help="the set's root, in any supported layout")
    convert.add_argument("dst", metavar="DST", help="a new or empty output folder")
    convert.add_argument(
        "--to",
        default="official",
        choices=["official", "validation_dataset"],
        help="the layout to write (default official)",
    )
    convert.add_argument("--laf-root", help="fs_lost_and_found, official source: LAF root")
    convert.add_argument("--cityscapes-root", help="fs_static, official source: Cityscapes root")
    convert.add_argument("--version", type=int, default=3, help="fs_static: 1, 2 or 3")
    _add_layout_options(convert)
    make = commands.add_parser(
        "make-anomaly-set",
        help="paste objects into Cityscapes-layout frames; write a Fishyscapes Static-like set",
    )
    make.add_argument("cityscapes_root", help="a tree in the Cityscapes layout")
    make.add_argument("out", help="output folder; receives fs_val_v<version>/")
    make.add_argument("--objects", help="FolderOutliers folder (images/, masks/); default polygons")
    make.add_argument("--split", default="val", choices=["train", "val"])
    make.add_argument("--count", type=int, help="only the first COUNT frames")
    make.add_argument("--blend", default="poisson", choices=["hard", "feather", "poisson"])
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--version", type=int, default=3)
    return parser


def _make(args: argparse.Namespace) -> int:
    from fsbench.data.make_sets import folder_or_polygons, make_static_like

    folder = make_static_like(
        args.cityscapes_root,
        args.out,
        split=args.split,
        count=args.count,
        source=folder_or_polygons(args.objects),
        blend=args.blend,
        seed=args.seed,
        version=args.version,
    )
    print(f"wrote {folder}; read it with data=fishyscapes (fishyscapes_root={args.out})")
    return 0


def _progress(stream) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if done % 100 == 0 or done == total:
            print(f"  read {done}/{total}", file=stream, flush=True)

    return report


def _detect(args: argparse.Namespace) -> int:
    from fsbench.data.convert import detect

    findings = detect(args.root, laf_root=args.laf_root, cityscapes_root=args.cityscapes_root)
    if not findings:
        print(
            f"{args.root}: no anomaly set found in any supported layout (official, "
            "synboost, validation_dataset, flat, preblended); see docs/datasets.md"
        )
        return 1
    for finding in findings:
        print(finding.line())
    return 1 if any(finding.problem for finding in findings) else 0


def _convert(args: argparse.Namespace) -> int:
    from fsbench.data.convert import convert

    manifest = convert(
        args.name,
        args.src,
        args.dst,
        to=args.to,
        layout=args.layout,
        label_map=args.label_map,
        laf_root=args.laf_root,
        cityscapes_root=args.cityscapes_root,
        version=args.version,
    )
    frames = len(json.loads(manifest.read_text())["frames"])
    print(f"wrote {frames} frames of {args.name} in the {args.to} layout to {args.dst}")
    print(f"checksums: {manifest} and {manifest.parent / 'SHA256SUMS'}")
    return 0


def _official_needs_root(args: argparse.Namespace) -> bool:
    """Whether ``check`` reads an official Fishyscapes layout (which needs a second root)."""
    if args.layout not in (AUTO, "official"):
        return False
    if args.layout == "official":
        return True
    from fsbench.data.anomaly_sets import fs_label_folder

    root = Path(args.root)
    if args.name == "fs_lost_and_found":
        return fs_label_folder(root) is not None and not (root / "laf_images").is_dir()
    return any((root / f"fs_val_v{args.version}").glob("*_rgb.npz"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    commands = {"make-anomaly-set": _make, "detect": _detect, "convert": _convert}
    if args.command in commands:
        try:
            return commands[args.command](args)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    needs = _official_needs_root(args) if args.name in ("fs_lost_and_found", "fs_static") else 0
    if needs and args.name == "fs_lost_and_found" and not args.laf_root:
        parser.error("fs_lost_and_found needs --laf-root (the Lost and Found root)")
    if needs and args.name == "fs_static" and not args.cityscapes_root:
        parser.error("fs_static needs --cityscapes-root (the Cityscapes root)")
    failed = False
    for build in _builders(args.name, args):
        try:
            dataset = build()
        except (DatasetError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
            continue
        report = check_dataset(dataset, scan=not args.quick, progress=_progress(sys.stderr))
        print(report.summary(), flush=True)
        failed |= not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
