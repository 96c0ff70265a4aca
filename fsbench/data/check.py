"""Reading and validating datasets on disk: the checks every reader of a real dataset runs.

A reader indexes its files into :class:`Sample` records (an image, a label, a name) and hands them
to :class:`LabelledImages`, which refuses a broken tree at construction: a missing root or
subfolder (naming the expected path and what to download), images without labels, labels without
images, an empty dataset. Every label read is checked against the values the dataset's encoding
allows, and its size against the image's, so a wrong file fails with its path instead of producing
quietly wrong metrics.

:func:`check_dataset` runs the same structural checks and, with ``scan=True``, reads every file:
unreadable or truncated files, unexpected label values (listed beside the expected ones, with a
hint for known foreign encodings such as void stored as 2), image/label size mismatches. Its
:class:`DatasetReport` counts the images, the pixel shares of inlier / anomaly / void (shares of
*all* pixels) and the resolutions. ``python -m fsbench.data check`` prints it.

Images and labels are read with Pillow. Label PNGs may be stored in mode ``L`` (grey) or ``P``
(palette; the indices are the labels). Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set:
a truncated file must fail, not come back half grey.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset

VOID = 255
LABEL_MODES = ("L", "P")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ANOMALY_VALUES = {0: "inlier", 1: "anomaly", VOID: "void"}
VOID_AS_2_HINT = (
    "value 2 where void (255) is expected looks like a DenseHybrid-style pack that stores void "
    "as 2; fsbench does not guess encodings: use the benchmark's original label files, or "
    "remap explicitly with label_map={2: 255} if you know that 2 means void in your copy"
)
LABEL_MAP_OPTION = (
    "To read these values, remap them explicitly to 0 (inlier), 1 (anomaly) or 255 (void): "
    "data.shared.label_map={{{example}}} on the command line, label_map={{{example}}} in Python "
    "(or force the right layout with data.shared.layout=NAME)"
)


class DatasetError(ValueError):
    """A dataset on disk is missing, incomplete, or holds files its reader cannot accept."""


def listing(items: Iterable[object], first: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, ... (12 in all)``: the first few of a long list."""
    items = [str(item) for item in items]
    shown = ", ".join(items[:first])
    return shown if len(items) <= first else f"{shown}, ... ({len(items)} in all)"


def require_dir(path: Path, what: str, download: str) -> Path:
    """``path`` if it is a folder, else a :class:`DatasetError` naming it and what to fetch."""
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DatasetError(f"{what}: expected folder {path} {state}. {download}")
    return path


def require_file(path: Path, what: str, download: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what}: expected file {path} does not exist. {download}")
    return path


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``; any failure names the file."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes every byte: a truncated file raises here
        return image
    except FileNotFoundError as error:
        raise DatasetError(f"cannot read {path}: the file does not exist") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise DatasetError(
            f"cannot read {path}: {error} (the file is truncated, corrupt or not an image; "
            "download or unpack it again)"
        ) from error


def read_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 [H, W, 3] RGB."""
    return np.asarray(_open(path).convert("RGB"), dtype=np.uint8)


def read_label(path: Path) -> np.ndarray:
    """A label PNG as uint8 [H, W]: the grey values of mode ``L``, the indices of mode ``P``."""
    image = _open(path)
    if image.mode not in LABEL_MODES:
        raise DatasetError(
            f"{path} is a mode {image.mode!r} image; label files must be single-channel 8-bit "
            f"(mode 'L' or 'P'). Is it a colour visualisation (*_color.png) instead of the labels?"
        )
    return np.array(image, dtype=np.uint8)  # writable: load_label may return it as it is


def _only_allowed(raw: np.ndarray, allowed: np.ndarray) -> bool:
    """Whether every value of the uint8 array ``raw`` is allowed (``allowed``: bool [256]).

    Looks for the runs of consecutive values that are not allowed (few for label encodings:
    2..254 for anomaly labels): ``raw`` holds one of ``first..last`` iff the minimum of
    ``raw - first`` (uint8, wrapping) is at most ``last - first``. Two passes per run and no
    boolean image, where a table lookup would widen every pixel's index.
    """
    edges = np.flatnonzero(np.diff(np.r_[True, allowed, True]))
    runs = edges.reshape(-1, 2)  # [first, last + 1) of each run of values not allowed
    if len(runs) > 8:
        return bool(allowed[raw].all())
    if raw.size == 0:
        return True
    shifted = np.empty_like(raw, dtype=np.uint8)
    for first, stop in runs:
        np.subtract(raw, np.uint8(first), out=shifted, dtype=np.uint8, casting="unsafe")
        if int(shifted.min()) <= stop - 1 - first:
            return False
    return True


def resize_rgb(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of uint8 [H, W, 3] to ``size`` = (H, W)."""
    height, width = (int(s) for s in size)
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8)  # a writable copy


def resize_label(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of uint8 [H, W] to ``size`` = (H, W): no invented label values."""
    height, width = (int(s) for s in size)
    if label.shape == (height, width):
        return label
    resized = Image.fromarray(label).resize((width, height), Image.Resampling.NEAREST)
    return np.array(resized, dtype=np.uint8)  # a writable copy


def _check_resize(resize) -> tuple[int, int] | None:
    if resize is None:
        return None
    size = tuple(int(s) for s in resize)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"resize must be (height, width) with positive sizes, got {resize!r}")
    return size  # type: ignore[return-value]


@dataclass
class Sample:
    """One indexed frame: its name, image file, label file and, for FS Static, overlay file."""

    name: str
    image: Path
    label: Path
    overlay: Path | None = None


class LabelledImages(Dataset):
    """Base of the file-based readers: an index of samples, label decoding, validation.

    Subclasses build ``samples`` (and the orphans they found) and call :meth:`_finish`. They set
    ``label_values``: the stored label values accepted and what each becomes (``kind`` =
    ``"anomaly"``: 0 inlier, 1 anomaly, 255 void; ``kind`` = ``"segmentation"``: train ids, 255
    ignore). Items are ``{image: float32 [3, H, W] in [0, 1], anomaly: uint8 [H, W], name}`` for
    anomaly sets and ``{image, label: int64 [H, W], name}`` for segmentation sets.
    """

    kind: ClassVar[str] = "anomaly"
    title: str = "dataset"
    download: str = ""
    label_values: Mapping[int, int] = {0: 0, 1: 1, VOID: VOID}
    expected_description: str = "0 inlier, 1 anomaly, 255 void"
    resize_label_too: ClassVar[bool] = False

    def __init__(self, root: str | Path, resize: Sequence[int] | None = None) -> None:
        self.root = Path(root).expanduser()
        self.resize = _check_resize(resize)
        self.samples: list[Sample] = []
        self.orphan_images: list[Path] = []
        self.orphan_labels: list[Path] = []
        self.notes: list[str] = []
        self.problems: list[str] = []  # index problems found by the subclass (duplicates, ...)
        self._lut = np.full(256, -1, np.int16)

    # -- index --------------------------------------------------------------------------------
    def _finish(
        self,
        samples: list[Sample],
        orphan_images: Iterable[Path] = (),
        orphan_labels: Iterable[Path] = (),
        scan: bool = False,
    ) -> None:
        """Store the index, refuse a broken tree, optionally read every file (``scan``)."""
        self.samples = list(samples)
        self.orphan_images = sorted(orphan_images)
        self.orphan_labels = sorted(orphan_labels)
        self._lut = np.full(256, -1, np.int16)
        for stored, meaning in self.label_values.items():
            self._lut[stored] = meaning
        problems = structure_errors(self)
        if problems:
            raise DatasetError(f"{self.title} at {self.root}:\n  - " + "\n  - ".join(problems))
        if scan:
            report = check_dataset(self, scan=True)
            if not report.ok:
                raise DatasetError(report.summary())

    # -- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, sample: Sample) -> np.ndarray:
        """The native-resolution image, uint8 [H, W, 3]."""
        return read_rgb(sample.image)

    def unexpected_values_hint(self, values: Sequence[int]) -> str:
        """A sentence about what unexpected label ``values`` suggest, or an empty string."""
        if self.kind == "anomaly" and 2 in values and 2 not in self.label_values:
            return VOID_AS_2_HINT
        return ""

    def load_label(self, sample: Sample) -> np.ndarray:
        """The decoded label, uint8 [H, W] (anomaly 0/1/255 or train ids/255); values checked."""
        raw = read_label(sample.label)
        if not _only_allowed(raw, self._lut >= 0):
            bad = [int(v) for v in np.unique(raw[self._lut[raw] < 0])]
            hint = self.unexpected_values_hint(bad)
            expected = sorted(int(v) for v in np.nonzero(self._lut >= 0)[0])
            option = ""
            if self.kind == "anomaly":
                option = ". " + LABEL_MAP_OPTION.format(example=f"{bad[0]}:255")
            raise DatasetError(
                f"{sample.label}: unexpected label values [{listing(bad, 10)}]; "
                f"{self.title} labels hold {self.expected_description} "
                f"(expected values [{listing(expected, 40)}])"
                + (f". Hint: {hint}" if hint else "")
                + option
            )
        allowed = np.flatnonzero(self._lut >= 0)
        if np.array_equal(self._lut[allowed], allowed):  # nothing to remap: as stored
            return raw
        return np.maximum(self._lut, 0).astype(np.uint8)[raw]

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """Image and decoded label at native resolution, their sizes checked against each other."""
        image = self.load_image(sample)
        label = self.load_label(sample)
        if image.shape[:2] != label.shape:
            raise DatasetError(
                f"size mismatch in {sample.name}: image {sample.image} is "
                f"{image.shape[1]}x{image.shape[0]} (WxH) but label {sample.label} is "
                f"{label.shape[1]}x{label.shape[0]}"
            )
        return image, label

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image, label = self.load(sample)
        if self.resize is not None:
            image = resize_rgb(image, self.resize)
            if self.resize_label_too:
                label = resize_label(label, self.resize)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        item = {"image": tensor.float().div_(255), "name": sample.name}
        if self.kind == "anomaly":
            item["anomaly"] = torch.from_numpy(label)
        else:
            item["label"] = torch.from_numpy(label).long()
        return item

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.title!r}, root={str(self.root)!r}, n={len(self)})"


def structure_errors(dataset: LabelledImages) -> list[str]:
    """What is wrong with the index alone: orphans and emptiness (no file is read)."""
    problems = list(dataset.problems)
    if dataset.orphan_images:
        problems.append(
            f"{len(dataset.orphan_images)} image(s) without a label file: "
            f"{listing(dataset.orphan_images)}"
        )
    if dataset.orphan_labels:
        problems.append(
            f"{len(dataset.orphan_labels)} label file(s) without an image: "
            f"{listing(dataset.orphan_labels)}"
        )
    if not dataset.samples and not problems:
        problems.append(
            f"no labelled image found under {dataset.root}; is this the right folder? "
            f"{dataset.download}".rstrip()
        )
    return problems


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found.

    ``pixels`` counts decoded label values over *all* pixels of all labels: for anomaly sets
    ``inlier`` / ``anomaly`` / ``void``, for segmentation sets ``labelled`` / ``ignore``.
    ``resolutions`` counts image sizes as (H, W).
    """

    title: str
    root: str
    kind: str
    n_images: int
    scanned: bool
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pixels: dict[str, int] = field(default_factory=dict)
    resolutions: Counter = field(default_factory=Counter)
    without_anomaly: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def shares(self) -> dict[str, float]:
        """Each pixel class's share of all pixels (void included in the total)."""
        total = sum(self.pixels.values())
        return {key: (count / total if total else 0.0) for key, count in self.pixels.items()}

    def summary(self, max_errors: int = 20) -> str:
        lines = [f"{self.title} at {self.root}: {self.n_images} images"]
        if self.resolutions:
            sizes = ", ".join(f"{w}x{h} (WxH): {n}" for (h, w), n in self.resolutions.most_common())
            lines.append(f"  resolutions: {sizes}")
        if self.pixels:
            total = sum(self.pixels.values())
            shares = " / ".join(f"{key} {100 * s:.3f}%" for key, s in self.shares().items())
            lines.append(f"  pixel shares of all {total} pixels: {shares}")
            if self.kind == "anomaly":
                valid = self.pixels["inlier"] + self.pixels["anomaly"]
                if valid:
                    lines.append(
                        f"  anomaly share of the valid (non-void) pixels: "
                        f"{100 * self.pixels['anomaly'] / valid:.3f}%"
                    )
                if self.without_anomaly:
                    lines.append(
                        f"  images without any anomaly pixel (kept, as the benchmarks do): "
                        f"{listing(self.without_anomaly)}"
                    )
        elif not self.scanned:
            lines.append("  (labels not read: pass scan=True / omit --quick for pixel shares)")
        lines += [f"  note: {note}" for note in self.notes]
        if self.errors:
            lines.append(f"  {len(self.errors)} error(s):")
            lines += [f"  - {error}" for error in self.errors[:max_errors]]
            if len(self.errors) > max_errors:
                lines.append(f"  ... and {len(self.errors) - max_errors} more")
        else:
            lines.append("  OK" + ("" if self.scanned else " (structure only)"))
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise DatasetError(self.summary())


def check_dataset(
    dataset: LabelledImages,
    scan: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetReport:
    """Validate a reader's index and, with ``scan``, every file it names.

    The scan decodes each image (FS Static: base image plus overlay) and label, checks the label
    values against the dataset's encoding and the sizes against each other, and counts pixels.
    Errors are collected, not raised: see :meth:`DatasetReport.raise_for_errors`.
    """
    report = DatasetReport(
        title=dataset.title,
        root=str(dataset.root),
        kind=dataset.kind,
        n_images=len(dataset.samples),
        scanned=scan,
        errors=structure_errors(dataset),
        notes=list(dataset.notes),
    )
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        report.notes.append(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process: truncated files may "
            "read as partly grey instead of failing"
        )
    if not scan:
        return report
    counts = np.zeros(256, np.int64)
    for index, sample in enumerate(dataset.samples):
        try:
            image, label = dataset.load(sample)
        except DatasetError as error:
            report.errors.append(str(error))
        else:
            report.resolutions[image.shape[:2]] += 1
            frame = np.bincount(label.ravel(), minlength=256)
            counts += frame
            if dataset.kind == "anomaly" and frame[1] == 0:
                report.without_anomaly.append(sample.name)
        if progress is not None:
            progress(index + 1, len(dataset.samples))
    if dataset.kind == "anomaly":
        report.pixels = {
            "inlier": int(counts[0]),
            "anomaly": int(counts[1]),
            "void": int(counts[VOID]),
        }
    else:
        report.pixels = {"labelled": int(counts[:VOID].sum()), "ignore": int(counts[VOID])}
    return report
