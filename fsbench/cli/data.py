"""``python -m fsbench.data check | detect | convert | make-anomaly-set``: dataset trees on disk.

Also the ``fsbench-data`` console script. ``check NAME ROOT`` validates a dataset tree before
using it (any supported layout; ``--layout`` forces one, ``--label-map 2:255`` remaps label values
explicitly). ``detect ROOT`` says which anomaly sets and layouts a folder holds, how many labelled
frames each has and what is missing. ``convert NAME SRC DST`` writes a set from any supported
layout into the official one (or ``--to validation_dataset``), with ``manifest.json`` and
``SHA256SUMS`` (see :mod:`fsbench.data.convert`).

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

``check`` takes ``cityscapes`` and every anomaly set of the data configs
(:func:`fsbench.registry.anomaly_sets`), with one ``--<name>-root`` option for each second root
a set's config names; a set generated in memory (``synthetic_anomaly``) takes no ROOT.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fsbench.data.check import VOID, DatasetError, DatasetReport, LabelledImages, check_dataset
from fsbench.data.cityscapes import Cityscapes
from fsbench.data.layouts import AUTO, LAYOUTS
from fsbench.registry import DatasetEntry, anomaly_sets, build_anomaly_set, locate

CITYSCAPES = "cityscapes"
CITYSCAPES_HELP = "Cityscapes train/val (ROOT holds leftImg8bit/ and gtFine/)"
GENERATED = "(generated in memory)"


def _builders(name: str, args: argparse.Namespace) -> list[Callable[[], Any]]:
    """One constructor call per dataset to check (Cityscapes: one per split)."""
    if name == CITYSCAPES:
        return [
            partial(Cityscapes, args.root, split=split, labels=args.labels) for split in args.split
        ]
    entry = anomaly_sets()[name]
    options = {root: getattr(args, root, None) for root in entry.roots}
    options |= {"version": args.version, "layout": args.layout, "label_map": args.label_map}
    return [partial(build_anomaly_set, name, args.root, **options)]


def _describe(entry: DatasetEntry) -> str:
    """``Title (layouts ...; --laf-root)``: the ``check`` help of one anomaly set."""
    facts = []
    if not entry.reads_files:
        facts.append("generated in memory, no ROOT")
    elif entry.name in LAYOUTS:
        facts.append("layouts " + ", ".join(LAYOUTS[entry.name]))
    facts += [_option(root) for root in entry.roots]
    return f"{entry.title} ({'; '.join(facts)})" if facts else entry.title


def datasets() -> dict[str, str]:
    """The names ``check`` takes, with their help: ``cityscapes`` and every anomaly set."""
    return {CITYSCAPES: CITYSCAPES_HELP} | {
        name: _describe(entry) for name, entry in anomaly_sets().items()
    }


def __getattr__(name: str) -> Any:
    """``DATASETS``: :func:`datasets`, computed on access."""
    if name == "DATASETS":
        return datasets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _option(argument: str) -> str:
    """``laf_root`` -> ``--laf-root``."""
    return "--" + argument.replace("_", "-")


def _argument_text(target: str, argument: str) -> str:
    """The first sentence of ``argument``'s entry in the ``Args:`` of ``target``'s docstring."""
    doc = getattr(locate(target), "__doc__", None) or ""
    lines = doc.expandtabs().splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith(f"{argument}:"):
            indent = len(line) - len(line.lstrip())
            text = [line.strip()[len(argument) + 1 :].strip()]
            for more in lines[index + 1 :]:
                if not more.strip() or len(more) - len(more.lstrip()) <= indent:
                    break
                text.append(more.strip())
            return " ".join(text).replace("``", "").split(". ")[0].rstrip(".")
    return ""


def _add_root_options(command: argparse.ArgumentParser) -> None:
    """One ``--<name>-root`` option per second root named by the anomaly sets' configs."""
    takers: dict[str, list[DatasetEntry]] = {}
    for entry in anomaly_sets().values():
        for root in entry.roots:
            takers.setdefault(root, []).append(entry)
    for root, entries in sorted(takers.items()):
        text = _argument_text(entries[0].target, root) or f"the {root} argument of its reader"
        command.add_argument(
            _option(root), help=f"{', '.join(e.name for e in entries)}: {text}", default=None
        )


def _label_map(text: str) -> dict[int, int]:
    """``2:255,3:0`` -> {2: 255, 3: 0}."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        return {int(stored): int(meaning) for stored, meaning in pairs}
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--label-map takes STORED:MEANING pairs separated by commas, e.g. 2:255; got {text!r}"
        ) from error


def _add_layout_options(command: argparse.ArgumentParser, default: str | None) -> None:
    """``--layout`` (``default`` None: the set's config, ``auto`` in every shipped one) and
    ``--label-map``."""
    names = sorted({name for layouts in LAYOUTS.values() for name in layouts})
    command.add_argument(
        "--layout",
        default=default,
        choices=[AUTO, *names],
        help="the on-disk layout to read (default "
        + ("the set's config: " if default is None else "")
        + "auto, the one found)",
    )
    command.add_argument(
        "--label-map",
        type=_label_map,
        default=None,
        metavar="STORED:MEANING,...",
        help="remap stored label values explicitly, e.g. 2:255 (meanings 0, 1, 255)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fsbench.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    names = datasets()
    check = commands.add_parser(
        "check",
        help="validate a dataset tree and print its summary",
        description="Validate a dataset tree: " + "; ".join(f"{k}: {v}" for k, v in names.items()),
    )
    check.add_argument("name", choices=sorted(names), metavar="NAME", help=", ".join(names))
    check.add_argument(
        "root",
        metavar="ROOT",
        nargs="?",
        default=None,
        help="the dataset's root folder (none for a set generated in memory)",
    )
    _add_root_options(check)
    check.add_argument(
        "--version", type=int, default=None, help="fs_static: 1, 2 or 3 (default: the config's, 3)"
    )
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
    _add_layout_options(check, default=None)
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
    _add_layout_options(convert, default=AUTO)
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
    defaults = anomaly_sets()[args.name].defaults  # what an option not given leaves
    layout = args.layout if args.layout is not None else defaults.get("layout", AUTO)
    if layout not in (AUTO, "official"):
        return False
    if layout == "official":
        return True
    from fsbench.data.anomaly_sets import fs_label_folder

    root = Path(args.root)
    if args.name == "fs_lost_and_found":
        return fs_label_folder(root) is not None and not (root / "laf_images").is_dir()
    version = args.version if args.version is not None else defaults.get("version", 3)
    return any((root / f"fs_val_v{version}").glob("*_rgb.npz"))


def _check_generated(
    name: str, dataset: Any, scan: bool, progress: Callable[[int, int], None]
) -> DatasetReport:
    """The report of an anomaly set generated in memory: with ``scan``, every frame is built and
    its ``anomaly`` label counted and checked for values other than 0 / 1 / 255."""
    report = DatasetReport(
        title=anomaly_sets()[name].title,
        root=GENERATED,
        kind="anomaly",
        n_images=len(dataset),
        scanned=scan,
        notes=["nothing is read from disk"],
    )
    if not scan:
        return report
    counts, resolutions = np.zeros(256, np.int64), Counter()
    for index in range(len(dataset)):
        item = dataset[index]
        label = np.asarray(item["anomaly"], dtype=np.uint8)
        resolutions[tuple(item["image"].shape[-2:])] += 1
        frame = np.bincount(label.ravel(), minlength=256)
        counts += frame
        if frame[1] == 0:
            report.without_anomaly.append(item["name"])
        progress(index + 1, len(dataset))
    unexpected = [value for value in np.flatnonzero(counts) if value not in (0, 1, VOID)]
    if unexpected:
        report.errors.append(f"unexpected anomaly label values {unexpected}")
    report.resolutions = resolutions
    report.pixels = {
        "inlier": int(counts[0]),
        "anomaly": int(counts[1]),
        "void": int(counts[VOID]),
    }
    return report


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
    reads_files = args.name == CITYSCAPES or anomaly_sets()[args.name].reads_files
    if reads_files and args.root is None:
        parser.error(f"{args.name} needs ROOT, the dataset's root folder")
    if not reads_files and args.root is not None:
        parser.error(f"{args.name} is generated in memory: give no ROOT")
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
        if isinstance(dataset, LabelledImages):
            report = check_dataset(dataset, scan=not args.quick, progress=_progress(sys.stderr))
        else:
            report = _check_generated(args.name, dataset, not args.quick, _progress(sys.stderr))
        print(report.summary(), flush=True)
        failed |= not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
