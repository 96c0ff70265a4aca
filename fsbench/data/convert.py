"""What a folder holds (:func:`detect`) and layout conversion (:func:`convert`).

:func:`detect` looks for every layout of every anomaly set (:data:`fsbench.data.layouts.LAYOUTS`)
at a root and in its immediate subfolders, builds the reader of each one found (structure only,
no file decoded) and reports how many labelled frames it has, or what is missing.

:func:`convert` reads a dataset in any supported layout, checking every label against that
layout's encoding, and writes it in the official layout or the ``images/`` + ``labels_masks/``
one. Labels are written re-encoded as 8-bit PNGs; images are copied byte for byte where the
target layout accepts their format, and written as lossless PNGs where they must be composed
(Fishyscapes Static overlays) or renamed to a fixed suffix. The output is reproducible (same
input, same bytes) and carries ``manifest.json`` and ``SHA256SUMS`` with the checksum of every
file, so a dataset evaluated on can be shared and verified exactly (``sha256sum -c SHA256SUMS``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fsbench.data.anomaly_sets import FS_OVERLAY, LayoutReader, fs_label_folder
from fsbench.data.check import VOID, DatasetError, Sample, listing
from fsbench.data.layouts import AUTO, LAYOUTS, OFFICIAL, Layout
from fsbench.registry import anomaly_set_entry, anomaly_sets, build_anomaly_set

TARGETS = (OFFICIAL, "validation_dataset")
MANIFEST_FORMAT = "fsbench-dataset-manifest/1"
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def __getattr__(name: str) -> Any:
    """``DATASET_TITLES``: anomaly set name -> title, for every set of the config tree."""
    if name == "DATASET_TITLES":
        return {key: entry.title for key, entry in anomaly_sets().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_reader(
    dataset: str,
    root: str | Path,
    layout: str = AUTO,
    label_map: Mapping | None = None,
    laf_root: str | Path | None = None,
    cityscapes_root: str | Path | None = None,
    version: int | None = None,
) -> LayoutReader:
    """The reader of anomaly set ``dataset`` at ``root``, built by the registry
    (:func:`fsbench.registry.build_anomaly_set`).

    Only the sets with an on-disk layout (the keys of :data:`LAYOUTS`) are read here; the readers
    ignore the roots they do not take. ``version`` None: the config's (Fishyscapes Static: 3).

    Raises:
        ValueError: for a set of the config tree without a layout (generated in memory), or a
            name no data config defines.
    """
    if dataset not in LAYOUTS:
        entry = anomaly_set_entry(dataset)  # an unknown name: the registry's error
        raise ValueError(
            f"{dataset} ({entry.title}, read by {entry.target}) has no on-disk layout in "
            f"fsbench.data.layouts.LAYOUTS, so detect and convert cannot read it; they read "
            f"{listing(LAYOUTS)}"
        )
    return build_anomaly_set(
        dataset,
        root,
        layout=layout,
        label_map=label_map,
        laf_root=laf_root,
        cityscapes_root=cityscapes_root,
        version=version,
    )


# ------------------------------------------------------------------------------------- detect
@dataclass
class Finding:
    """One dataset in one layout found by :func:`detect`."""

    dataset: str
    layout: str
    folder: Path
    frames: int  # labelled frames the reader indexed; label files found when it failed
    problem: str = ""

    def line(self) -> str:
        title = anomaly_set_entry(self.dataset).title
        head = f"{self.dataset} ({title}), layout {self.layout}, at {self.folder}"
        if self.problem:
            return f"{head}: {self.frames} label file(s) found, but {self.problem}"
        return f"{head}: {self.frames} labelled frames"


def _official_candidates(dataset: str, root: Path) -> list[tuple[Path, dict]]:
    """Folders under which ``dataset``'s official layout seems to be, with reader arguments."""
    if dataset == "fs_lost_and_found":
        folder = fs_label_folder(root)
        if folder is None or (folder.parent / "laf_images").is_dir():  # the flat layout
            return []
        return [(folder, {})]
    if dataset == "fs_static":
        return [
            (root, {"version": v}) for v in (1, 2, 3) if _any(root / f"fs_val_v{v}", FS_OVERLAY)
        ]
    if dataset == "road_anomaly":
        for folder in (root, root / "RoadAnomaly_jpg"):
            if (folder / "frame_list.json").is_file():
                return [(folder, {})]
        return []
    name = "dataset_AnomalyTrack" if dataset == "smiyc_anomaly" else "dataset_ObstacleTrack"
    for folder in (root / name, root):
        if folder.name == name and (folder / "labels_masks").is_dir():
            return [(folder, {})]
    return []


def _any(folder: Path, pattern: re.Pattern) -> bool:
    return folder.is_dir() and any(pattern.match(p.name) for p in folder.iterdir())


def _count_labels(dataset: str, folder: Path, spec: Layout, version: int) -> int:
    if spec.paired:
        return sum(
            1 for p in (folder / spec.folders(version)[1]).iterdir() if spec.label_key(p.name)
        )
    if dataset == "fs_lost_and_found":
        return sum(1 for p in folder.iterdir() if re.match(r"^\d+_.+_labels\.png$", p.name))
    if dataset == "fs_static":
        return len(list((folder / f"fs_val_v{version}").glob("*_labels.png")))
    if dataset == "road_anomaly":
        return len(list((folder / "frames").glob("*.labels/labels_semantic.png")))
    return len(list((folder / "labels_masks").glob("*_labels_semantic.png")))


def _missing_companion(dataset: str, reader_error: str, laf_root, cityscapes_root) -> str:
    """Say which second download an official layout lacks, and the option that points to it."""
    if dataset == "fs_lost_and_found" and (laf_root is None or "Lost and Found" in reader_error):
        where = laf_root if laf_root is not None else "<Lost and Found root>"
        return (
            f"Lost and Found images missing: expected {where}/leftImg8bit/{{train,test}}/"
            "<sequence>/<LAF id>_leftImg8bit.png (pass --laf-root)"
        )
    if dataset == "fs_static" and (cityscapes_root is None or "Cityscapes" in reader_error):
        where = cityscapes_root if cityscapes_root is not None else "<Cityscapes root>"
        return (
            f"Cityscapes base images missing: expected {where}/leftImg8bit/val/<city>/"
            "<Cityscapes id>_leftImg8bit.png (pass --cityscapes-root)"
        )
    return reader_error.replace("\n", " ")


def detect(
    root: str | Path,
    laf_root: str | Path | None = None,
    cityscapes_root: str | Path | None = None,
) -> list[Finding]:
    """Every anomaly set, in every layout, at ``root`` or one folder below it.

    ``laf_root`` / ``cityscapes_root``: the second downloads of the official Fishyscapes sets;
    when not given, ``root`` is tried (a tree that holds everything).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    roots = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    findings: list[Finding] = []
    seen: set[tuple[str, str, Path, int]] = set()
    for dataset, layouts in LAYOUTS.items():
        for spec in layouts.values():
            for where in roots:
                for folder, extra in _locations(dataset, spec, where):
                    version = extra.get("version", 3)
                    key = (dataset, spec.name, folder.resolve(), version)
                    if key in seen:
                        continue
                    seen.add(key)
                    findings.append(
                        _inspect(dataset, spec, folder, version, root, laf_root, cityscapes_root)
                    )
    return findings


def _locations(dataset: str, spec: Layout, where: Path) -> list[tuple[Path, dict]]:
    if not spec.paired:
        return _official_candidates(dataset, where)
    versions = (1, 2, 3) if "{version}" in (spec.images or "") else (3,)
    found = []
    for version in versions:
        folder = spec.locate(where, version=version)
        if folder is not None:
            found.append((folder, {"version": version}))
    return found


def _inspect(dataset, spec, folder, version, root, laf_root, cityscapes_root) -> Finding:
    if spec.name == OFFICIAL and dataset == "fs_lost_and_found" and laf_root is None:
        laf_root = root if (root / "leftImg8bit").is_dir() else None
    if spec.name == OFFICIAL and dataset == "fs_static" and cityscapes_root is None:
        cityscapes_root = root if (root / "leftImg8bit").is_dir() else None
    try:
        reader = build_reader(
            dataset, folder, spec.name, None, laf_root, cityscapes_root, version=version
        )
    except DatasetError as error:
        problem = _missing_companion(dataset, str(error), laf_root, cityscapes_root)
        return Finding(
            dataset, spec.name, folder, _count_labels(dataset, folder, spec, version), problem
        )
    return Finding(dataset, spec.name, folder, len(reader))


# ------------------------------------------------------------------------------------ convert
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", optimize=False)


def _save_overlay(path: Path, overlay: np.ndarray) -> None:
    """An ``.npz`` with array ``rgb``, byte-identical on every run (fixed zip entry time)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(overlay), allow_pickle=False)
    info = zipfile.ZipInfo("rgb.npy", date_time=FIXED_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(info, buffer.getvalue())


def _encode(label: np.ndarray, encoding: Mapping[int, int], target: str, name: str) -> np.ndarray:
    """Decoded label (0 / 1 / 255) -> the stored values of the target encoding."""
    inverse = {meaning: stored for stored, meaning in encoding.items()}
    present = sorted(int(v) for v in np.unique(label))
    lost = [v for v in present if v not in inverse]
    if lost:
        counts = {v: int((label == v).sum()) for v in lost}
        raise DatasetError(
            f"frame {name} holds decoded values {lost} ({counts} pixels) that the {target} "
            f"encoding {dict(encoding)} cannot store (e.g. Road Anomaly has no void); "
            "convert it to another layout"
        )
    lut = np.zeros(256, np.uint8)
    for meaning, stored in inverse.items():
        lut[meaning] = stored
    return lut[label]


def _frame_ids(name: str, index: int) -> tuple[int, str]:
    """(Fishyscapes integer id, base frame id) of a frame name ``DDDD_<id>`` or a plain stem."""
    match = re.match(r"^(\d+)_(.+)$", name)
    if match:
        return int(match.group(1)), match.group(2)
    return index, name


def _write_image(
    sample: Sample, image: np.ndarray, stem_path: Path, fixed_suffix: str | None
) -> Path:
    """Copy the source bytes when allowed, else write a lossless PNG; return the path.

    Bytes are copied when the file is the image itself (no overlay to compose) and the target
    accepts its suffix: decoding the copy gives the same pixels, JPEGs included.
    """
    suffix = sample.image.suffix.lower()
    if sample.overlay is None and (fixed_suffix is None or fixed_suffix == suffix):
        target = stem_path.with_name(stem_path.name + sample.image.suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.image, target)
        return target
    target = stem_path.with_name(stem_path.name + ".png")
    _save_png(target, image)
    return target


def _paths_official(dataset: str, dst: Path, name: str, index: int, version: int):
    """(image stem path, fixed image suffix, label path) in the official layout."""
    if dataset == "fs_lost_and_found":
        fs_id, laf_id = _frame_ids(name, index)
        match = re.match(r"^(.+)_\d{6}_\d{6}$", laf_id)
        sequence = match.group(1) if match else "converted"
        image = dst / "leftImg8bit" / "test" / sequence / f"{laf_id}_leftImg8bit"
        label = dst / "fishyscapes_lostandfound" / f"{fs_id:04d}_{laf_id}_labels.png"
        return image, ".png", label
    if dataset == "fs_static":
        fs_id, cs_id = _frame_ids(name, index)
        if not re.match(r"^[^_]+_\d{6}_\d{6}$", cs_id):
            cs_id = f"converted_{index:06d}_000000"
        city = cs_id.split("_")[0]
        image = dst / "leftImg8bit" / "val" / city / f"{cs_id}_leftImg8bit"
        label = dst / f"fs_val_v{version}" / f"{fs_id:04d}_{cs_id}_labels.png"
        return image, ".png", label
    if dataset == "road_anomaly":
        frames = dst / "RoadAnomaly_jpg" / "frames"
        return frames / name, None, frames / f"{name}.labels" / "labels_semantic.png"
    track = dst / (
        "dataset_AnomalyTrack" if dataset == "smiyc_anomaly" else "dataset_ObstacleTrack"
    )
    return track / "images" / name, None, track / "labels_masks" / f"{name}_labels_semantic.png"


def convert(
    dataset: str,
    src: str | Path,
    dst: str | Path,
    to: str = OFFICIAL,
    layout: str = AUTO,
    label_map: Mapping | None = None,
    laf_root: str | Path | None = None,
    cityscapes_root: str | Path | None = None,
    version: int = 3,
) -> Path:
    """Write ``dataset`` read from ``src`` (any supported layout) into ``dst`` in layout ``to``.

    ``to="official"`` writes the benchmark's own layout (Fishyscapes Lost & Found: labels in
    ``dst/fishyscapes_lostandfound/`` and the images as ``dst/leftImg8bit/test/<sequence>/``,
    so ``dst`` is also the Lost and Found root; Fishyscapes Static: ``dst/fs_val_v<N>/`` with a
    zero overlay and the blended image as the Cityscapes base frame under ``dst/leftImg8bit/``,
    so ``dst`` is also the Cityscapes root). ``to="validation_dataset"`` writes
    ``dst/<folder>/images/<i>`` and ``labels_masks/<i>.png`` with integer stems in reading order.
    Returns the path of ``manifest.json``.
    """
    if to not in TARGETS:
        raise ValueError(f"unknown target layout {to!r}; choose one of {listing(TARGETS)}")
    dst = Path(dst).expanduser()
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} already holds files; convert into a new or empty folder")
    reader = build_reader(dataset, src, layout, label_map, laf_root, cityscapes_root, version)
    spec = LAYOUTS[dataset][to]
    frames, written = [], []
    for index, sample in enumerate(reader.samples):
        image, label = reader.load(sample)
        if to == OFFICIAL:
            stem, fixed, label_path = _paths_official(dataset, dst, sample.name, index, version)
        else:
            folder = dst / spec.places[0]
            stem, fixed, label_path = (
                folder / "images" / str(index),
                None,
                folder / "labels_masks" / f"{index}.png",
            )
        image_path = _write_image(sample, image, stem, fixed)
        _save_png(label_path, _encode(label, spec.encoding, f"{dataset} {to}", sample.name))
        written += [image_path, label_path]
        if to == OFFICIAL and dataset == "fs_static":
            overlay_path = label_path.with_name(label_path.name.replace("_labels.png", "_rgb.npz"))
            _save_overlay(overlay_path, np.zeros(image.shape, np.int16))
            written.append(overlay_path)
        frames.append(
            {
                "name": sample.name,
                "image": image_path.relative_to(dst).as_posix(),
                "label": label_path.relative_to(dst).as_posix(),
                "pixels": {
                    "inlier": int((label == 0).sum()),
                    "anomaly": int((label == 1).sum()),
                    "void": int((label == VOID).sum()),
                },
            }
        )
    if to == OFFICIAL and dataset == "road_anomaly":
        frame_list = dst / "RoadAnomaly_jpg" / "frame_list.json"
        frame_list.write_text(json.dumps([Path(f["image"]).name for f in frames], indent=1) + "\n")
        written.append(frame_list)
    checksums = {path.relative_to(dst).as_posix(): _sha256(path) for path in written}
    manifest = {
        "format": MANIFEST_FORMAT,
        "dataset": dataset,
        "layout": to,
        "label_encoding": {str(k): v for k, v in sorted(spec.encoding.items())},
        "source_layout": reader.layout,
        "source_label_encoding": {str(k): v for k, v in sorted(reader.label_values.items())},
        "frames": frames,
        "sha256": dict(sorted(checksums.items())),
    }
    path = dst / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    sums = "".join(f"{digest}  {name}\n" for name, digest in sorted(checksums.items()))
    (dst / "SHA256SUMS").write_text(sums)
    return path


__all__ = [
    "DATASET_TITLES",  # noqa: F822 (module __getattr__)
    "Finding",
    "build_reader",
    "convert",
    "detect",
]
