"""The on-disk layouts each anomaly set comes in: the official releases and the community packs.

Researchers rarely hold the anomaly sets in the official layout: most copied them from another
project's preparation script. Each :class:`Layout` says where such a copy keeps its images and
labels, which raw label values it may hold and what each means (0 inlier, 1 anomaly, 255 void).
The readers in :mod:`fsbench.data.anomaly_sets` pick the layout found on disk
(:func:`resolve_layout`) or the one forced with ``layout=NAME``; label values outside the layout's
encoding stop the run unless ``label_map`` remaps them explicitly. Nothing is guessed.

Layouts (sources and open questions: ``docs/datasets.md``):

* ``official``: the benchmarks' own downloads (the readers' original code paths).
* ``synboost``: SynBoost's ``data_processed`` tree (Di Biase et al., CVPR 2021), read in place by
  PEBAL and RPL: ``fishyscapes/{LostAndFound,Static}/{original,labels}/<stem>.png`` and
  ``road_anomaly/{original/<stem>.jpg, labels/<stem>.png}`` (labels 0 / 1, no void).
* ``validation_dataset``: the ``images/`` + ``labels_masks/`` pack of Mask2Anomaly and many
  course repositories: ``RoadAnomaly21``, ``RoadObsticle21`` (sic), ``FS_LostFound_full``,
  ``fs_static`` (pre-blended), ``RoadAnomaly`` (labels 0 / 2); integer stems, labels
  ``<stem>.png``.
* ``flat``: Fishyscapes Lost & Found labels in ``fishyscapes_lostandfound/`` beside a flat
  ``laf_images/<LAF id>_leftImg8bit.png`` folder (RbA).
* ``preblended``: Fishyscapes Static labels in ``fs_val_v<N>/`` beside the blended images
  ``fs_static_images_v<N>/DDDD_<Cityscapes id>_rgb.png`` (RbA).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fsbench.data.check import (
    IMAGE_SUFFIXES,
    VOID,
    DatasetError,
    Sample,
    listing,
    require_dir,
)

AUTO = "auto"
OFFICIAL = "official"
ANOMALY_MEANINGS = (0, 1, VOID)
FS_LABEL = re.compile(r"^(\d+)_(.+)_labels\.png$")
STANDARD = {0: 0, 1: 1, VOID: VOID}
STANDARD_TEXT = "0 inlier, 1 anomaly, 255 void"


def _strip(suffixes: tuple[str, ...]) -> Callable[[str], str | None]:
    """A key function: the file name without one of ``suffixes`` (case-insensitive), else None."""

    def key(name: str) -> str | None:
        for suffix in suffixes:
            if name.lower().endswith(suffix.lower()) and len(name) > len(suffix):
                return name[: -len(suffix)]
        return None

    return key


def _fs_label_key(name: str) -> str | None:
    """``DDDD_<LAF id>_labels.png`` -> ``<LAF id>`` (the key its Lost and Found image carries)."""
    match = FS_LABEL.match(name)
    return match.group(2) if match else None


def _fs_frame_key(name: str) -> str | None:
    """``DDDD_<Cityscapes id>_labels.png`` -> ``DDDD_<Cityscapes id>``."""
    return name[: -len("_labels.png")] if FS_LABEL.match(name) else None


def _fs_name(name: str) -> str:
    """The official frame name ``DDDD_<id>`` of a Fishyscapes label file."""
    return name[: -len("_labels.png")]


def natural_order(name: str) -> tuple:
    """Frames whose name starts with an integer (``12``, ``0007_<id>``) sort by that integer."""
    match = re.match(r"^(\d+)(?:_|$)", name)
    return (0, int(match.group(1)), name) if match else (1, 0, name)


@dataclass(frozen=True)
class Layout:
    """One way a dataset is arranged on disk, and the label encoding that arrangement uses.

    Attributes:
        dataset: the dataset key (``fs_lost_and_found``, ``fs_static``, ``road_anomaly``,
            ``smiyc_anomaly``, ``smiyc_obstacle``).
        name: the layout's name, the value of ``layout=`` / ``data.shared.layout=``.
        source: where the layout comes from (project and file), for the docs and messages.
        encoding: stored label value -> meaning (0 inlier, 1 anomaly, 255 void); any other
            stored value is refused.
        encoding_text: the same in words.
        expected: the paths the layout holds, relative to the root it is found at.
        places: folders below a root where the layout's top folder may sit ("" = the root).
        names: folder names that make a root itself the layout's top folder.
        images, labels: the image and label subfolders of the top folder (``{version}`` is
            the FS Static version); None for the official layouts, indexed by their readers.
        image_key, label_key: file name -> the key that pairs an image with its label (None:
            not a file of this layout).
        frame_name: label file name -> the frame's name; default: its key.
        unlabelled_ok: images without a label are unlabelled test frames (noted), not errors.
    """

    dataset: str
    name: str
    source: str
    encoding: Mapping[int, int]
    encoding_text: str
    expected: str
    places: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    images: str | None = None
    labels: str | None = None
    image_key: Callable[[str], str | None] = field(default=_strip(IMAGE_SUFFIXES), repr=False)
    label_key: Callable[[str], str | None] = field(default=_strip((".png",)), repr=False)
    frame_name: Callable[[str], str] | None = field(default=None, repr=False)
    unlabelled_ok: bool = False

    @property
    def paired(self) -> bool:
        """Whether the generic paired-folder index reads it (every layout but ``official``)."""
        return self.images is not None

    def folders(self, version: int = 3) -> tuple[str, str]:
        assert self.images is not None and self.labels is not None
        return self.images.format(version=version), self.labels.format(version=version)

    def locate(self, root: Path, forced: bool = False, version: int = 3) -> Path | None:
        """The top folder of this layout at or below ``root``, or None if it is not there.

        A candidate must hold both subfolders and at least one label file of this layout's
        naming. ``forced``: the root itself is a candidate whatever its name.
        """
        if not self.paired:
            return None
        candidates = [root / place if place else root for place in self.places]
        if forced or root.name in self.names:
            candidates.insert(0, root)
        images, labels = self.folders(version)
        for folder in candidates:
            if (folder / images).is_dir() and (folder / labels).is_dir():
                if any(self.label_key(p.name) for p in (folder / labels).iterdir()):
                    return folder
        return None


def _validation(dataset: str, folder: str, encoding, text, image_ext: str) -> Layout:
    return Layout(
        dataset=dataset,
        name="validation_dataset",
        source="Mask2Anomaly (shyam671/Mask2Anomaly-Unmasking-Anomalies-in-Road-Scene-"
        "Segmentation, README link and anomaly_utils/anomaly_inference.py)",
        encoding=encoding,
        encoding_text=text,
        expected=f"{folder}/images/<integer>{image_ext}, {folder}/labels_masks/<integer>.png",
        places=(folder, f"Validation_Dataset/{folder}"),
        names=(folder,),
        images="images",
        labels="labels_masks",
        unlabelled_ok=dataset.startswith("smiyc"),
    )


def _synboost(dataset: str, folder: str, encoding, text, image_ext: str) -> Layout:
    return Layout(
        dataset=dataset,
        name="synboost",
        source="SynBoost data_processed.tar (giandbt/synboost; read by tianyu0207/PEBAL "
        "code/dataset/data_loader.py and its successors)",
        encoding=encoding,
        encoding_text=text,
        expected=f"{folder}/original/<stem>{image_ext}, {folder}/labels/<stem>.png",
        places=(folder, f"data_processed/{folder}", folder.split("/")[-1]),
        names=(folder.split("/")[-1],),
        images="original",
        labels="labels",
    )


def _rba(dataset: str, name: str, images: tuple, labels: tuple, where: str, **extra) -> Layout:
    """An RbA-style layout: a label folder beside an image folder, at the root.

    ``images`` = (folder, image suffix, key in words); ``labels`` = (folder, key function, key in
    words).
    """
    image_dir, image_suffix, image_words = images
    label_dir, label_key, label_words = labels
    expected = (
        f"{label_dir.replace('{version}', '<N>')}/{label_words}_labels.png, "
        f"{image_dir.replace('{version}', '<N>')}/{image_words}{image_suffix}"
    )
    return Layout(
        dataset=dataset,
        name=name,
        source=f"RbA (NazirNayal8/RbA, {where})",
        encoding=STANDARD,
        encoding_text=STANDARD_TEXT,
        expected=expected,
        places=("", "Fishyscapes"),
        images=image_dir,
        labels=label_dir,
        image_key=_strip((image_suffix,)),
        label_key=label_key,
        **extra,
    )


def _official(dataset: str, encoding, text, expected: str, source: str) -> Layout:
    return Layout(dataset, OFFICIAL, source, encoding, text, expected)


LAYOUTS: dict[str, dict[str, Layout]] = {}
for _layout in (
    _official(
        "fs_lost_and_found",
        STANDARD,
        STANDARD_TEXT,
        "DDDD_<LAF id>_labels.png (in ROOT or ROOT/fishyscapes_lostandfound/) + "
        "LAF_ROOT/leftImg8bit/{train,test}/<sequence>/<LAF id>_leftImg8bit.png",
        "fishyscapes.com fishyscapes_lostandfound.zip + Lost and Found leftImg8bit.zip",
    ),
    _synboost("fs_lost_and_found", "fishyscapes/LostAndFound", STANDARD, STANDARD_TEXT, ".png"),
    _validation("fs_lost_and_found", "FS_LostFound_full", STANDARD, STANDARD_TEXT, ".png"),
    _rba(
        "fs_lost_and_found",
        "flat",
        ("laf_images", "_leftImg8bit.png", "<LAF id>"),
        ("fishyscapes_lostandfound", _fs_label_key, "DDDD_<LAF id>"),
        "datasets/README.md and datasets/fishyscapes.py",
        frame_name=_fs_name,
    ),
    _official(
        "fs_static",
        STANDARD,
        STANDARD_TEXT,
        "fs_val_v<N>/DDDD_<Cityscapes id>_labels.png + _rgb.npz, and "
        "CITYSCAPES_ROOT/leftImg8bit/<split>/<city>/<Cityscapes id>_leftImg8bit.png",
        "fishyscapes.com fs_val_v3.zip + Cityscapes leftImg8bit_trainvaltest.zip",
    ),
    _synboost("fs_static", "fishyscapes/Static", STANDARD, STANDARD_TEXT, ".png"),
    _validation("fs_static", "fs_static", STANDARD, STANDARD_TEXT, ".jpg"),
    _rba(
        "fs_static",
        "preblended",
        ("fs_static_images_v{version}", "_rgb.png", "DDDD_<Cityscapes id>"),
        ("fs_val_v{version}", _fs_frame_key, "DDDD_<Cityscapes id>"),
        "datasets/fishyscapes.py, class FishyscapesStatic",
    ),
    _official(
        "road_anomaly",
        {0: 0, 2: 1},
        "0 (background) and 2 (anomaly), no void",
        "frame_list.json, frames/<name>.jpg, frames/<name>.labels/labels_semantic.png "
        "(ROOT is RoadAnomaly_jpg/ or holds it)",
        "EPFL CVLab RoadAnomaly_jpg.zip",
    ),
    _synboost(
        "road_anomaly", "road_anomaly", {0: 0, 1: 1}, "0 background, 1 anomaly, no void", ".jpg"
    ),
    _validation(
        "road_anomaly", "RoadAnomaly", {0: 0, 2: 1}, "0 background, 2 anomaly, no void", ".jpg"
    ),
    _official(
        "smiyc_anomaly",
        STANDARD,
        STANDARD_TEXT,
        "dataset_AnomalyTrack/images/<fid>.jpg, labels_masks/<fid>_labels_semantic.png",
        "segmentmeifyoucan.com dataset_AnomalyTrack.zip",
    ),
    _validation("smiyc_anomaly", "RoadAnomaly21", STANDARD, STANDARD_TEXT, ".png"),
    _official(
        "smiyc_obstacle",
        STANDARD,
        "0 road, 1 obstacle, 255 void (off the road)",
        "dataset_ObstacleTrack/images/<fid>.webp, labels_masks/<fid>_labels_semantic.png",
        "segmentmeifyoucan.com dataset_ObstacleTrack.zip",
    ),
    _validation(
        "smiyc_obstacle",
        "RoadObsticle21",
        STANDARD,
        "0 road, 1 obstacle, 255 void (off the road)",
        ".webp",
    ),
):
    LAYOUTS.setdefault(_layout.dataset, {})[_layout.name] = _layout


def layout_names(dataset: str) -> list[str]:
    return list(LAYOUTS[dataset])


def other_layouts_text(dataset: str) -> str:
    """One sentence listing the community layouts of ``dataset`` and where each is looked for."""
    others = [f"{spec.name} ({spec.expected})" for spec in LAYOUTS[dataset].values() if spec.paired]
    return (
        f" fsbench also reads these layouts of it: {'; '.join(others)}. "
        "`python -m fsbench.data detect ROOT` lists what a folder holds."
    )


def merge_label_map(
    encoding: Mapping[int, int], label_map: Mapping | None
) -> tuple[dict[int, int], str]:
    """The layout's encoding with ``label_map``'s explicit remapping on top, and its wording.

    ``label_map`` maps stored values (0..255) to 0 (inlier), 1 (anomaly) or 255 (void); it adds
    to the encoding or overrides single entries, e.g. ``{2: 255}`` for packs that store void as 2.
    """
    merged = {int(k): int(v) for k, v in encoding.items()}
    if not label_map:
        return merged, ""
    extra: dict[int, int] = {}
    for stored, meaning in dict(label_map).items():
        try:
            stored_i, meaning_i = int(stored), int(meaning)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"label_map entries must be integers, got {stored!r}: {meaning!r}"
            ) from error
        if not 0 <= stored_i <= 255:
            raise ValueError(f"label_map key {stored_i} is not a stored 8-bit label value 0..255")
        if meaning_i not in ANOMALY_MEANINGS:
            raise ValueError(
                f"label_map maps {stored_i} to {meaning_i}; values must be 0 (inlier), "
                "1 (anomaly) or 255 (void)"
            )
        extra[stored_i] = meaning_i
    merged.update(extra)
    text = ", ".join(f"{k} -> {v}" for k, v in sorted(extra.items()))
    return merged, f" (with label_map {text})"


def resolve_layout(
    dataset: str,
    root: Path,
    layout: str,
    official_found: bool,
    version: int = 3,
) -> tuple[Layout, Path | None]:
    """The layout to read ``root`` with and its top folder (None for ``official``).

    ``layout="auto"`` picks the one layout found; several found is an error that names them and
    the option that chooses (``layout=NAME``); none found falls back to ``official``, whose
    reader explains what is missing. A forced layout that is not there is an error.
    """
    options = LAYOUTS[dataset]
    if layout != AUTO:
        if layout not in options:
            raise DatasetError(
                f"{dataset} has no layout {layout!r}; its layouts: {listing(options)} (or 'auto')"
            )
        spec = options[layout]
        if not spec.paired:
            return spec, None
        folder = spec.locate(root, forced=True, version=version)
        if folder is None:
            raise DatasetError(
                f"{dataset}: layout {layout!r} expects "
                f"{spec.expected.replace('<N>', str(version))} at {root} (or below it); not found"
            )
        return spec, folder
    found: list[tuple[Layout, Path | None]] = [(options[OFFICIAL], None)] if official_found else []
    for spec in options.values():
        folder = spec.locate(root, version=version)
        if folder is not None:
            found.append((spec, folder))
    if len(found) > 1:
        where = "; ".join(f"{spec.name} ({folder or root})" for spec, folder in found)
        raise DatasetError(
            f"{root} holds {dataset} in several layouts: {where}. Choose one with "
            "data.shared.layout=NAME (Python: layout=NAME)"
        )
    return found[0] if found else (options[OFFICIAL], None)


@dataclass
class PairedIndex:
    """What :func:`index_paired` found: samples, orphans, problems and notes."""

    samples: list[Sample]
    orphan_images: list[Path]
    orphan_labels: list[Path]
    problems: list[str]
    notes: list[str]


def _by_key(folder: Path, key: Callable[[str], str | None], what: str, problems: list[str]):
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        k = key(path.name)
        if k is None:
            continue
        if k in found:
            problems.append(f"frame {k} has two {what} files: {found[k]} and {path}")
            continue
        found[k] = path
    return found


def index_paired(spec: Layout, folder: Path, title: str, version: int = 3) -> PairedIndex:
    """Pair the images and labels of a community layout by their keys, in natural order."""
    image_name, label_name = spec.folders(version)
    hint = f"expected {spec.expected.replace('<N>', str(version))} ({spec.source})"
    image_dir = require_dir(folder / image_name, title, hint)
    label_dir = require_dir(folder / label_name, title, hint)
    problems: list[str] = []
    images = _by_key(image_dir, spec.image_key, "image", problems)
    labels = _by_key(label_dir, spec.label_key, "label", problems)
    frame_name = spec.frame_name or (lambda name: spec.label_key(name) or name)
    samples = [
        Sample(name=frame_name(label.name), image=images[key], label=label)
        for key, label in labels.items()
        if key in images
    ]
    samples.sort(key=lambda sample: natural_order(sample.name))
    orphan_labels = [label for key, label in labels.items() if key not in images]
    unlabelled = [image for key, image in images.items() if key not in labels]
    notes = []
    if unlabelled and spec.unlabelled_ok:
        notes.append(f"{len(unlabelled)} image(s) without a label are skipped (unlabelled frames)")
        unlabelled = []
    return PairedIndex(samples, unlabelled, orphan_labels, problems, notes)


__all__ = [
    "AUTO",
    "LAYOUTS",
    "OFFICIAL",
    "Layout",
    "PairedIndex",
    "index_paired",
    "layout_names",
    "merge_label_map",
    "natural_order",
    "other_layouts_text",
    "resolve_layout",
]
