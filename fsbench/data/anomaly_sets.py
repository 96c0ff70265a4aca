"""Readers of the real anomaly-segmentation validation sets, in their original layouts.

* :class:`FishyscapesLostAndFound`: Fishyscapes' labels of 100 Lost & Found frames.
* :class:`FishyscapesStatic`: Cityscapes validation images with blended-in objects (v1-v3).
* :class:`RoadAnomaly`: 60 web images of animals and objects on roads (Lis et al., ICCV 2019).
* :class:`SegmentMeIfYouCan`: the labelled validation frames of RoadAnomaly21 and RoadObstacle21.

Every reader yields ``{image: float32 [3, H, W] in [0, 1], anomaly: uint8 [H, W] (0 inlier,
1 anomaly, 255 void), name: str}``. ``resize=(H, W)`` shrinks only the image (to save time);
``anomaly`` stays at the label's native resolution, and the evaluation upsamples the scores to
it, which is what the benchmarks score. Layouts, encodings and downloads: ``docs/datasets.md``.

Each reader also reads the community layouts of its set (:mod:`fsbench.data.layouts`): with
``layout="auto"`` (the default) it picks the one found under ``root``; ``layout=NAME`` forces one;
``label_map={stored: meaning}`` remaps label values explicitly (never guessed).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import features

from fsbench.data.check import (
    IMAGE_SUFFIXES,
    VOID,
    DatasetError,
    LabelledImages,
    Sample,
    listing,
    read_rgb,
    require_dir,
    require_file,
)
from fsbench.data.cityscapes import DOWNLOAD as CITYSCAPES_DOWNLOAD
from fsbench.data.layouts import (
    AUTO,
    FS_LABEL,
    Layout,
    index_paired,
    merge_label_map,
    other_layouts_text,
    resolve_layout,
)
from fsbench.registry import anomaly_sets, build_anomaly_set

FS_OVERLAY = re.compile(r"^(\d+)_(.+)_rgb\.npz$")
LEFT_SUFFIX = "_leftImg8bit.png"

FS_LAF_DOWNLOAD = (
    "Download fishyscapes_lostandfound.zip from https://fishyscapes.com/dataset "
    "(http://robotics.ethz.ch/~asl-datasets/Fishyscapes/fishyscapes_lostandfound.zip) and unzip "
    "it into this folder: the zip has no inner folder, its DDDD_<LAF id>_labels.png files go "
    "directly into the root."
)
LAF_DOWNLOAD = (
    "Download leftImg8bit.zip of Lost and Found from "
    "http://www.6d-vision.com/lostandfounddataset; its root holds leftImg8bit/train and "
    "leftImg8bit/test."
)
RA_DOWNLOAD = (
    "Download RoadAnomaly_jpg.zip from https://www.epfl.ch/labs/cvlab/data/road-anomaly/ and "
    "unzip it; the root is the RoadAnomaly_jpg folder (frame_list.json and frames/)."
)
SMIYC_DOWNLOAD = (
    "Download dataset_AnomalyTrack.zip (RoadAnomaly21) and dataset_ObstacleTrack.zip "
    "(RoadObstacle21) from https://segmentmeifyoucan.com/datasets and unzip them side by side."
)


def _fs_download_static(version: int) -> str:
    return (
        f"Download fs_val_v{version}.zip from https://fishyscapes.com/dataset "
        f"(http://robotics.ethz.ch/~asl-datasets/Fishyscapes/fs_val_v{version}.zip) and unzip it "
        f"so that ROOT/fs_val_v{version}/ holds the DDDD_<Cityscapes id>_labels.png and "
        "DDDD_<Cityscapes id>_rgb.npz files."
    )


def _index_left_images(folder: Path, splits: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """``<id>`` -> every ``{split}/{sequence}/<id>_leftImg8bit.png`` under ``folder``."""
    found: dict[str, list[Path]] = {}
    split_dirs = [folder / s for s in splits] if splits else sorted(folder.iterdir())
    for split_dir in split_dirs:
        if not split_dir.is_dir():
            continue
        for path in sorted(split_dir.glob(f"*/*{LEFT_SUFFIX}")):
            found.setdefault(path.name[: -len(LEFT_SUFFIX)], []).append(path)
    return found


def _fs_files(folder: Path, pattern: re.Pattern) -> tuple[dict[int, tuple[str, Path]], list[str]]:
    """Fishyscapes files by integer id ``DDDD`` -> (base id, path); and duplicate-id problems."""
    by_id: dict[int, tuple[str, Path]] = {}
    duplicates: dict[int, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        match = pattern.match(path.name)
        if match is None or not path.is_file():
            continue
        fs_id, base_id = int(match.group(1)), match.group(2)
        if fs_id in by_id:
            duplicates.setdefault(fs_id, [by_id[fs_id][1]]).append(path)
        else:
            by_id[fs_id] = (base_id, path)
    problems = [
        f"Fishyscapes id {fs_id} is used by several files: {listing(paths)}"
        for fs_id, paths in sorted(duplicates.items())
    ]
    return by_id, problems


class LayoutReader(LabelledImages):
    """A reader of one dataset in any of its layouts (:data:`fsbench.data.layouts.LAYOUTS`).

    Subclasses set ``TITLE`` and ``dataset_key``, decide whether the official layout is present,
    and call :meth:`_read_community`; when it returns False they index the official layout
    themselves, inside :meth:`_official_errors`.
    """

    TITLE: ClassVar[str] = ""
    dataset_key: str = ""

    @classmethod
    def title_for(cls, arguments: Mapping[str, Any]) -> str:
        """The title of the set this class reads with constructor ``arguments`` (the registry's
        :attr:`fsbench.registry.DatasetEntry.title`): ``TITLE``."""
        return cls.TITLE

    def _read_community(
        self,
        layout: str,
        label_map: Mapping | None,
        official_found: bool,
        scan: bool,
        version: int = 3,
    ) -> bool:
        """Pick the layout; read a community one here (True) or leave the official one (False)."""
        spec, folder = resolve_layout(self.dataset_key, self.root, layout, official_found, version)
        self.layout: str = spec.name
        self.label_values, extra = merge_label_map(spec.encoding, label_map)
        self.expected_description = spec.encoding_text + extra
        self._explain_layouts = layout == AUTO and not official_found
        if not spec.paired:
            return False
        assert folder is not None
        self.title = f"{self.title} ({spec.name} layout)"
        self.root = folder
        index = index_paired(spec, folder, self.title, version)
        self.notes += index.notes
        self.problems = index.problems
        self._check_webp(index.samples, folder)
        self._finish(index.samples, index.orphan_images, index.orphan_labels, scan=scan)
        return True

    @contextmanager
    def _official_errors(self):
        """Official-layout errors name the community layouts too when none was found."""
        try:
            yield
        except DatasetError as error:
            if not getattr(self, "_explain_layouts", False):
                raise
            raise DatasetError(str(error) + other_layouts_text(self.dataset_key)) from error

    def _check_webp(self, samples: Sequence[Sample], folder: Path) -> None:
        if any(s.image.suffix.lower() == ".webp" for s in samples) and not features.check("webp"):
            raise DatasetError(
                f"{self.title}: the images in {folder} are WebP, but this Pillow was built "
                "without WebP support (PIL.features.check('webp') is False). Install a Pillow "
                "wheel with WebP (pip install --force-reinstall pillow) or convert the images "
                "to PNG with the same names."
            )


def _has(folder: Path, pattern: str | re.Pattern) -> bool:
    """Whether ``folder`` is a folder holding a file whose name matches ``pattern``."""
    if not folder.is_dir():
        return False
    if isinstance(pattern, str):
        return any(folder.glob(pattern))
    return any(pattern.match(path.name) for path in folder.iterdir())


def fs_label_folder(root: Path) -> Path | None:
    """The folder of official ``DDDD_<LAF id>_labels.png`` files: ``root`` or its
    ``fishyscapes_lostandfound/``."""
    for folder in (root, root / "fishyscapes_lostandfound"):
        if _has(folder, FS_LABEL):
            return folder
    return None


class FishyscapesLostAndFound(LayoutReader):
    """Fishyscapes Lost & Found validation set (Blum et al., IJCV 2021): 100 labelled frames.

    Labels ``root/DDDD_<LAF id>_labels.png`` hold 0 inlier, 1 anomaly, 255 void; the images are
    the Lost and Found frames ``laf_root/leftImg8bit/{train,test}/<sequence>/<LAF id>
    _leftImg8bit.png`` (64 of the 100 are in LAF's train split, 36 in its test split; both are
    searched). Frames are ordered by the integer Fishyscapes id ``DDDD``, as the official scorer
    does. Lost and Found frames without a Fishyscapes label are not part of the set.

    Args:
        root: the folder holding the unzipped ``DDDD_*_labels.png`` files, or the folder holding
            that one as ``fishyscapes_lostandfound/``; or the root of a community layout.
        laf_root: the Lost and Found root holding ``leftImg8bit/`` (official layout only).
        resize: optional (H, W) for the image only; ``anomaly`` keeps the label's resolution.
        scan: read every file at construction and refuse the set on any error.
        layout: ``auto`` (the one found), ``official``, ``synboost``, ``validation_dataset`` or
            ``flat`` (see :mod:`fsbench.data.layouts`).
        label_map: explicit remapping of stored label values, e.g. ``{2: 255}``.
    """

    TITLE = "Fishyscapes Lost & Found"
    title = TITLE
    download = FS_LAF_DOWNLOAD
    dataset_key = "fs_lost_and_found"

    def __init__(
        self,
        root: str | Path,
        laf_root: str | Path | None = None,
        resize: Sequence[int] | None = None,
        scan: bool = False,
        layout: str = AUTO,
        label_map: Mapping | None = None,
    ) -> None:
        super().__init__(root, resize)
        self.laf_root = Path(laf_root).expanduser() if laf_root is not None else None
        require_dir(self.root, "Fishyscapes Lost & Found labels", FS_LAF_DOWNLOAD)
        labels_folder = fs_label_folder(self.root)
        official = labels_folder is not None and self.laf_root is not None
        official = official and (self.laf_root / "leftImg8bit").is_dir()
        if self._read_community(layout, label_map, official, scan):
            return
        self.root = labels_folder or self.root
        with self._official_errors():
            self._index_official(scan)

    def _index_official(self, scan: bool) -> None:
        if self.laf_root is None:
            raise DatasetError(
                f"{self.title}: the official layout needs laf_root, the Lost and Found root "
                f"holding leftImg8bit/ (data.shared.lostandfound_root). {LAF_DOWNLOAD}"
            )
        left = require_dir(self.laf_root / "leftImg8bit", "Lost and Found images", LAF_DOWNLOAD)
        if not any((left / split).is_dir() for split in ("train", "test")):
            raise DatasetError(
                f"Lost and Found images: neither {left / 'train'} nor {left / 'test'} exists. "
                + LAF_DOWNLOAD
            )
        labels, problems = _fs_files(self.root, FS_LABEL)
        images = _index_left_images(left, ("train", "test"))
        samples, orphan_labels = [], []
        for fs_id in sorted(labels):
            laf_id, label = labels[fs_id]
            paths = images.get(laf_id, [])
            if not paths:
                orphan_labels.append(label)
            elif len(paths) > 1:
                problems.append(f"Lost and Found frame {laf_id} exists twice: {listing(paths)}")
            else:
                samples.append(
                    Sample(name=label.name[: -len("_labels.png")], image=paths[0], label=label)
                )
        if orphan_labels:
            problems.append(
                f"{len(orphan_labels)} label file(s) whose Lost and Found frame is in neither "
                f"{left / 'train'} nor {left / 'test'}: {listing(orphan_labels)}"
            )
        unlabelled = len(images) - len(samples)
        if unlabelled > 0:
            self.notes.append(
                f"{unlabelled} Lost and Found frames have no Fishyscapes label (normal: the set "
                "labels 100 of them)"
            )
        self.problems = problems
        self._finish(samples, scan=scan)


class FishyscapesStatic(LayoutReader):
    """Fishyscapes Static validation set (Blum et al., IJCV 2021): objects blended into Cityscapes.

    ``root/fs_val_v{version}/`` holds ``DDDD_<Cityscapes id>_labels.png`` (0 inlier, 1 anomaly,
    255 void) and ``DDDD_<Cityscapes id>_rgb.npz`` whose array ``rgb`` is a *signed* overlay: the
    image is ``clip(int(base) + int(overlay), 0, 255)`` with the Cityscapes ``leftImg8bit`` frame
    as base (found by its id in any split and city). The anomaly label comes from ``labels.png``
    only: version 3 also pastes Cityscapes objects as negatives, so "overlay != 0" is no label.

    Args:
        root: the folder holding ``fs_val_v{version}/``, or the root of a community layout.
        cityscapes_root: the Cityscapes root holding ``leftImg8bit/`` (official layout only).
        version: 1, 2 or 3 (the benchmark's current one, 30 frames).
        resize: optional (H, W) for the image only; ``anomaly`` keeps the label's resolution.
        scan: read every file at construction and refuse the set on any error.
        layout: ``auto``, ``official``, ``synboost``, ``validation_dataset`` or ``preblended``
            (community layouts hold the blended images themselves).
        label_map: explicit remapping of stored label values, e.g. ``{2: 255}``.
    """

    TITLE = "Fishyscapes Static"
    dataset_key = "fs_static"

    def __init__(
        self,
        root: str | Path,
        cityscapes_root: str | Path | None = None,
        version: int = 3,
        resize: Sequence[int] | None = None,
        scan: bool = False,
        layout: str = AUTO,
        label_map: Mapping | None = None,
    ) -> None:
        super().__init__(root, resize)
        if version not in (1, 2, 3):
            raise ValueError(f"Fishyscapes Static version must be 1, 2 or 3, got {version!r}")
        self.version = version
        self.title = f"Fishyscapes Static v{version}"
        self.download = _fs_download_static(version)
        self.cityscapes_root = (
            Path(cityscapes_root).expanduser() if cityscapes_root is not None else None
        )
        official = _has(self.root / f"fs_val_v{version}", FS_OVERLAY)
        if self._read_community(layout, label_map, official, scan, version):
            return
        with self._official_errors():
            self._index_official(scan)

    def _index_official(self, scan: bool) -> None:
        version = self.version
        if self.cityscapes_root is None:
            raise DatasetError(
                f"{self.title}: the official layout needs cityscapes_root, the Cityscapes root "
                f"holding leftImg8bit/ with the base frames. {CITYSCAPES_DOWNLOAD}"
            )
        folder = require_dir(self.root / f"fs_val_v{version}", self.title, self.download)
        left = require_dir(
            self.cityscapes_root / "leftImg8bit", "Cityscapes base images", CITYSCAPES_DOWNLOAD
        )
        labels, problems = _fs_files(folder, FS_LABEL)
        overlays, overlay_problems = _fs_files(folder, FS_OVERLAY)
        problems += overlay_problems
        bases = _index_left_images(left)
        samples, no_overlay, no_base = [], [], []
        for fs_id in sorted(labels):
            cs_id, label = labels[fs_id]
            if fs_id not in overlays:
                no_overlay.append(label)
                continue
            if overlays[fs_id][0] != cs_id:
                problems.append(
                    f"{label} and {overlays[fs_id][1]} share the id {fs_id} but name different "
                    "Cityscapes frames"
                )
                continue
            paths = bases.get(cs_id, [])
            if not paths:
                no_base.append(f"{cs_id} (for {label.name})")
                continue
            samples.append(
                Sample(
                    name=label.name[: -len("_labels.png")],
                    image=paths[0],
                    label=label,
                    overlay=overlays[fs_id][1],
                )
            )
        if no_overlay:
            problems.append(
                f"{len(no_overlay)} label file(s) without their *_rgb.npz overlay: "
                f"{listing(no_overlay)}"
            )
        if no_base:
            problems.append(
                f"{len(no_base)} Cityscapes base image(s) not found in any split under {left}: "
                f"{listing(no_base)}. " + CITYSCAPES_DOWNLOAD
            )
        orphan_overlays = [path for fs_id, (_, path) in overlays.items() if fs_id not in labels]
        self.problems = problems
        self._finish(samples, orphan_images=orphan_overlays, scan=scan)

    def load_image(self, sample: Sample) -> np.ndarray:
        if sample.overlay is None:  # community layouts store the blended image itself
            return read_rgb(sample.image)
        base = read_rgb(sample.image)
        overlay = read_overlay(sample.overlay)
        if overlay.shape != base.shape:
            raise DatasetError(
                f"size mismatch in {sample.name}: overlay {sample.overlay} has shape "
                f"{overlay.shape} but its base image {sample.image} has {base.shape}"
            )
        # int16, never uint8: the overlay is signed and the sum must saturate, not wrap around.
        return np.clip(base.astype(np.int16) + overlay, 0, 255).astype(np.uint8)


def read_overlay(path: Path) -> np.ndarray:
    """The ``rgb`` array of a Fishyscapes Static ``*_rgb.npz`` as int16 [H, W, 3].

    Float overlays are truncated towards zero, as the official reader's ``astype(int)`` does;
    values beyond +-255 are clipped (they saturate the sum either way).
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "rgb" not in archive.files:
                raise DatasetError(
                    f"{path} holds no array 'rgb' (it has {listing(archive.files)}); "
                    "is it a Fishyscapes Static overlay?"
                )
            overlay = archive["rgb"]
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(f"cannot read {path}: {error} (truncated or corrupt?)") from error
    if overlay.ndim != 3 or overlay.shape[-1] != 3:
        raise DatasetError(f"{path}: overlay 'rgb' has shape {overlay.shape}, expected [H, W, 3]")
    if overlay.dtype.kind not in "iuf":
        raise DatasetError(f"{path}: overlay 'rgb' has dtype {overlay.dtype}, expected numbers")
    if overlay.dtype.kind == "f" and not np.isfinite(overlay).all():
        raise DatasetError(f"{path}: overlay 'rgb' holds NaN or infinite values")
    return np.clip(overlay, -255, 255).astype(np.int16)


class RoadAnomaly(LayoutReader):
    """Road Anomaly (Lis et al., ICCV 2019): 60 web images of obstacles and animals on roads.

    ``root`` (the unzipped ``RoadAnomaly_jpg``) holds ``frame_list.json`` (the image file names),
    ``frames/<name>.jpg`` and ``frames/<name>.labels/labels_semantic.png`` with 0 background and
    2 anomaly, read as 0 / 1; the set has no void. Any other stored value is refused. The images
    need not share one resolution: evaluate with batch size 1. ``root`` may also hold
    ``RoadAnomaly_jpg/``; ``layout`` and ``label_map`` as for the other readers (community
    layouts: ``synboost``, ``validation_dataset``).
    """

    TITLE = "Road Anomaly"
    title = TITLE
    download = RA_DOWNLOAD
    label_values = {0: 0, 2: 1}
    expected_description = "0 (background) and 2 (anomaly), no void"
    dataset_key = "road_anomaly"

    def __init__(
        self,
        root: str | Path,
        resize: Sequence[int] | None = None,
        scan: bool = False,
        layout: str = AUTO,
        label_map: Mapping | None = None,
    ) -> None:
        super().__init__(root, resize)
        require_dir(self.root, self.title, RA_DOWNLOAD)
        if (self.root / "RoadAnomaly_jpg" / "frame_list.json").is_file():
            self.root = self.root / "RoadAnomaly_jpg"
        official = (self.root / "frame_list.json").is_file()
        if self._read_community(layout, label_map, official, scan):
            return
        with self._official_errors():
            self._index_official(scan)

    def _index_official(self, scan: bool) -> None:
        listing_file = require_file(self.root / "frame_list.json", self.title, RA_DOWNLOAD)
        frames = require_dir(self.root / "frames", self.title, RA_DOWNLOAD)
        try:
            entries = json.loads(listing_file.read_text())
        except (OSError, ValueError) as error:
            raise DatasetError(f"cannot read {listing_file}: {error}") from error
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise DatasetError(f"{listing_file} must hold a JSON list of image file names")
        problems, samples, orphan_images, seen = [], [], [], set()
        missing = []
        for entry in entries:
            suffix = Path(entry).suffix
            if suffix.lower() in IMAGE_SUFFIXES:
                stem, image = entry[: -len(suffix)], frames / entry
            else:  # a bare name: the images are JPEGs
                stem, image = entry, frames / f"{entry}.jpg"
            if stem in seen:
                problems.append(f"{listing_file} lists {entry} twice")
                continue
            seen.add(stem)
            label = frames / f"{stem}.labels" / "labels_semantic.png"
            if not image.is_file():
                missing.append(image)
            elif not label.is_file():
                orphan_images.append(image)
            else:
                samples.append(Sample(name=stem, image=image, label=label))
        if missing:
            problems.append(
                f"{len(missing)} image(s) listed in {listing_file.name} are missing: "
                f"{listing(missing)}"
            )
        unlisted = [
            p
            for p in sorted(frames.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.name[: -len(p.suffix)] not in seen
        ]
        if unlisted:
            self.notes.append(
                f"{len(unlisted)} image(s) in frames/ are not in frame_list.json and are "
                f"skipped: {listing(unlisted)}"
            )
        self.problems = problems
        self._finish(samples, orphan_images=orphan_images, scan=scan)

    def unexpected_values_hint(self, values: Sequence[int]) -> str:
        if self.layout == "synboost" and 2 in values:
            return (
                "value 2 is the anomaly value of the original labels_semantic.png files; "
                "SynBoost's road_anomaly/labels hold 0 / 1"
            )
        if self.layout in ("official", "validation_dataset") and (1 in values or VOID in values):
            return (
                "values 1 / 255 suggest an already converted copy (0/1/255); the original "
                "labels_semantic.png files hold only 0 and 2"
            )
        return ""


SMIYC_TRACKS = {
    "anomaly": ("dataset_AnomalyTrack", "SegmentMeIfYouCan RoadAnomaly21"),
    "obstacle": ("dataset_ObstacleTrack", "SegmentMeIfYouCan RoadObstacle21"),
}
SMIYC_LABEL_SUFFIX = "_labels_semantic.png"


class SegmentMeIfYouCan(LayoutReader):
    """SegmentMeIfYouCan (Chan et al., NeurIPS 2021 datasets track): the labelled frames.

    A track folder (``dataset_AnomalyTrack`` for RoadAnomaly21, ``dataset_ObstacleTrack`` for
    RoadObstacle21) holds ``images/<fid>.jpg`` (anomaly track) or ``images/<fid>.webp``
    (obstacle track) and ``labels_masks/<fid>_labels_semantic.png`` with 0 inlier (obstacle
    track: road), 1 anomaly / obstacle, 255 void (obstacle track: everything off the road).
    Only frames with a label are read: the unlabelled test images share ``images/``, and the
    ``*_labels_semantic_color.png`` visualisations in ``labels_masks/`` are ignored. Frame ids may
    contain dots. The images need not share one resolution: evaluate with batch size 1.

    Args:
        root: the track folder itself, or the folder holding it.
        track: ``anomaly`` (RoadAnomaly21, 10 labelled frames) or ``obstacle`` (RoadObstacle21,
            30 labelled frames).
        resize: optional (H, W) for the image only; ``anomaly`` keeps the label's resolution.
        scan: read every file at construction and refuse the set on any error.
        layout: ``auto``, ``official`` or ``validation_dataset`` (folders ``RoadAnomaly21``,
            ``RoadObsticle21``).
        label_map: explicit remapping of stored label values, e.g. ``{2: 255}``.
    """

    TITLE = "SegmentMeIfYouCan"
    download = SMIYC_DOWNLOAD

    @classmethod
    def title_for(cls, arguments: Mapping[str, Any]) -> str:
        """The track's title, e.g. ``SegmentMeIfYouCan RoadObstacle21`` for ``track=obstacle``."""
        track = arguments.get("track", "anomaly")
        return SMIYC_TRACKS[track][1] if track in SMIYC_TRACKS else cls.TITLE

    def __init__(
        self,
        root: str | Path,
        track: str = "anomaly",
        resize: Sequence[int] | None = None,
        scan: bool = False,
        layout: str = AUTO,
        label_map: Mapping | None = None,
    ) -> None:
        super().__init__(root, resize)
        if track not in SMIYC_TRACKS:
            raise ValueError(f"track must be one of {list(SMIYC_TRACKS)}, got {track!r}")
        self.track = track
        self.dataset_key = f"smiyc_{track}"
        folder_name, self.title = SMIYC_TRACKS[track]
        require_dir(self.root, self.title, SMIYC_DOWNLOAD)
        official = (self.root / folder_name).is_dir() or _has(
            self.root / "labels_masks", f"*{SMIYC_LABEL_SUFFIX}"
        )
        if self._read_community(layout, label_map, official, scan):
            return
        with self._official_errors():
            self._index_official(folder_name, scan)

    def _index_official(self, folder_name: str, scan: bool) -> None:
        other = next(name for name, _ in SMIYC_TRACKS.values() if name != folder_name)
        if (self.root / folder_name).is_dir():
            self.root = self.root / folder_name
        elif self.root.name == other:
            raise DatasetError(f"{self.root} is the {other} folder, but track={self.track!r}")
        elif not (self.root / "images").is_dir():
            raise DatasetError(
                f"{self.title}: neither {self.root / folder_name} nor {self.root / 'images'} "
                f"exists. {SMIYC_DOWNLOAD}"
            )
        image_dir = require_dir(self.root / "images", self.title, SMIYC_DOWNLOAD)
        label_dir = require_dir(self.root / "labels_masks", self.title, SMIYC_DOWNLOAD)

        images: dict[str, Path] = {}
        problems = []
        for path in sorted(image_dir.iterdir()):
            suffix = path.suffix.lower()
            if suffix not in IMAGE_SUFFIXES or not path.is_file():
                continue
            fid = path.name[: -len(suffix)]
            if fid in images:
                problems.append(f"frame {fid} has two images: {images[fid]} and {path}")
            images[fid] = path
        labels = {
            path.name[: -len(SMIYC_LABEL_SUFFIX)]: path
            for path in sorted(label_dir.iterdir())
            if path.name.endswith(SMIYC_LABEL_SUFFIX) and path.is_file()
        }
        samples = [
            Sample(name=fid, image=images[fid], label=label)
            for fid, label in sorted(labels.items())
            if fid in images
        ]
        orphan_labels = [label for fid, label in labels.items() if fid not in images]
        unlabelled = len(set(images) - set(labels))
        if unlabelled:
            self.notes.append(
                f"{unlabelled} image(s) without a label are skipped (the unlabelled test frames)"
            )
        self._check_webp(samples, image_dir)
        self.problems = problems
        self._finish(samples, orphan_labels=orphan_labels, scan=scan)


def anomaly_set(name: str, root: str | Path | None = None, **options: Any) -> Any:
    """The dataset of anomaly set ``name`` (one of :data:`ANOMALY_SETS`) at ``root``.

    :func:`fsbench.registry.build_anomaly_set`: the sets are the ``anomaly:`` entries of the data
    configs; ``options`` (``laf_root``, ``cityscapes_root``, ``version``, ``layout``,
    ``label_map``, ...) go to the readers that take them. ``root`` is None for a set generated
    in memory (``synthetic_anomaly``).
    """
    return build_anomaly_set(name, root, **options)


def __getattr__(name: str) -> Any:
    """``ANOMALY_SETS``: the names of every anomaly set of the config tree, sorted.

    Computed on access: the registry imports the reader classes, so it cannot run while this
    module is being imported.
    """
    if name == "ANOMALY_SETS":
        return tuple(sorted(anomaly_sets()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ANOMALY_SETS",  # noqa: F822 (module __getattr__)
    "FishyscapesLostAndFound",
    "FishyscapesStatic",
    "Layout",
    "LayoutReader",
    "RoadAnomaly",
    "SegmentMeIfYouCan",
    "anomaly_set",
    "fs_label_folder",
    "read_overlay",
]
