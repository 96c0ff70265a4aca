"""``python -m fsbench.data check NAME ROOT ...``: validate a dataset tree before using it.

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
    python -m fsbench.data make-anomaly-set /data/cityscapes /data/my_static \\
        --objects /data/coco_objects

``make-anomaly-set`` pastes objects into Cityscapes-layout frames and writes a set in the
Fishyscapes Static layout (see :mod:`fsbench.data.make_sets`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import partial

from fsbench.data.anomaly_sets import (
    FishyscapesLostAndFound,
    FishyscapesStatic,
    RoadAnomaly,
    SegmentMeIfYouCan,
)
from fsbench.data.check import DatasetError, LabelledImages, check_dataset
from fsbench.data.cityscapes import Cityscapes


def _builders(name: str, args: argparse.Namespace) -> list[Callable[[], LabelledImages]]:
    """One constructor call per dataset to check (Cityscapes: one per split)."""
    if name == "cityscapes":
        return [
            partial(Cityscapes, args.root, split=split, labels=args.labels) for split in args.split
        ]
    if name == "fs_lost_and_found":
        return [partial(FishyscapesLostAndFound, args.root, laf_root=args.laf_root)]
    if name == "fs_static":
        return [partial(FishyscapesStatic, args.root, args.cityscapes_root, version=args.version)]
    if name == "road_anomaly":
        return [partial(RoadAnomaly, args.root)]
    return [partial(SegmentMeIfYouCan, args.root, track=name.removeprefix("smiyc_"))]


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "make-anomaly-set":
        try:
            return _make(args)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if args.name == "fs_lost_and_found" and not args.laf_root:
        parser.error("fs_lost_and_found needs --laf-root (the Lost and Found root)")
    if args.name == "fs_static" and not args.cityscapes_root:
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
