"""Saved score maps as a reader: the frames of a dataset with the score map saved for each.

:class:`SavedScores` pairs each frame of an anomaly set (any reader of :mod:`fsbench.registry`)
with its score file in a folder and yields ``{"score", "anomaly", "name"}``, checked; ``fsbench
score`` feeds it to the protocols' metrics exactly as ``evaluate.py`` feeds a head's output
(:mod:`fsbench.metrics.suite`). Score files are named after the frame (``<name>.npy``;
``<name>_anomaly.npy`` and the Fishyscapes submission's ``DDDD_anomaly.npy`` are matched too):

* ``.npy``: a real [H, W] array (``[1, H, W]`` is squeezed); integer maps are cast to float32;
* ``.npz``: its only array, or the one named by ``key``;
* ``.png``: 16-bit grey (mode ``I;16``), read as value / 65535 (a probability in [0, 1]);
* ``.hdf5`` / ``.h5``: the SegmentMeIfYouCan toolkit's files, dataset ``value`` (float16), as its
  ``Evaluation.save_output`` writes them (``road_anomaly_benchmark/evaluation.py``).

Higher = more anomalous, at the label's resolution; only the labels are decoded, never the images.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fsbench.data.check import VOID, listing

SCORE_SUFFIXES = (".npy", ".npz", ".png", ".hdf5", ".h5")
HDF5_KEY = "value"


class ScoreError(ValueError):
    """Score maps that cannot be scored as they are: missing, surplus, malformed or suspicious."""


# -- reading score maps ---------------------------------------------------------------------


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise ScoreError(
                f"{path} is a mode {image.mode!r} PNG; score PNGs must be 16-bit grey (mode "
                "'I;16', value / 65535 = score). An 8-bit or colour PNG is a label or a "
                "visualisation: save the scores as .npy or a 16-bit PNG"
            )
        values = np.asarray(image)
    if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
        raise ScoreError(f"{path} holds values outside 0..65535; save it as a 16-bit PNG")
    return values.astype(np.uint16)


def _pick(keys: Sequence[str], wanted: str | None, default: str | None, path: Path) -> str:
    """The array to read from a container file with arrays ``keys``."""
    if wanted is not None:
        if wanted not in keys:
            raise ScoreError(f"{path} has no array {wanted!r}; it holds {list(keys)}")
        return wanted
    if default is not None and default in keys:
        return default
    if len(keys) == 1:
        return keys[0]
    raise ScoreError(f"{path} holds arrays {list(keys)}; name the score map with --key NAME")


def read_score_file(path: str | Path, key: str | None = None) -> np.ndarray:
    """The raw array of a score file: any dtype, [H, W] or with leading singleton axes.

    16-bit PNGs come back as uint16 (``as_scores`` divides them by 65535).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return archive[_pick(archive.files, key, None, path)]
    if suffix == ".png":
        return _read_png(path)
    if suffix in (".hdf5", ".h5"):
        import h5py  # a core dependency, imported where it is used

        with h5py.File(path, "r") as handle:
            names = [name for name, item in handle.items() if isinstance(item, h5py.Dataset)]
            return handle[_pick(names, key, HDF5_KEY, path)][()]
    raise ScoreError(f"{path}: unknown score file type; use one of {', '.join(SCORE_SUFFIXES)}")


def as_scores(raw: np.ndarray, path: Path, label: np.ndarray) -> np.ndarray:
    """Check one raw score map against its label and return it as real [H, W] (float16/32/64).

    Raises:
        ScoreError: on a size other than the label's, a boolean map, an integer map holding only
            label-like values (0, 1, 2, 255), or NaN / inf on a valid (non-void) pixel.
    """
    score = np.asarray(raw)
    while score.ndim > 2 and score.shape[0] == 1:
        score = score[0]
    if score.shape != label.shape:
        raise ScoreError(
            f"{path}: the score map is {'x'.join(map(str, score.shape))} (HxW) but the frame's "
            f"label is {label.shape[0]}x{label.shape[1]}; save scores at the label's "
            "resolution (fsbench score never resizes them)"
        )
    if score.dtype == np.bool_:
        raise ScoreError(f"{path} is a boolean mask, not scores; save the continuous score map")
    if np.issubdtype(score.dtype, np.integer):
        values = np.unique(score)
        if values.size <= 3 and set(values.tolist()) <= {0, 1, 2, 255}:
            raise ScoreError(
                f"{path} is an integer map holding only {values.tolist()}: that looks like a "
                "label or a thresholded mask, not anomaly scores; save the continuous score"
            )
        scale = 65535.0 if path.suffix.lower() == ".png" else 1.0
        return (score.astype(np.float64) / scale).astype(np.float32)
    if not np.issubdtype(score.dtype, np.floating):
        raise ScoreError(f"{path} holds dtype {score.dtype}; scores must be real numbers")
    finite = np.isfinite(score)
    if not finite.all():
        bad = ~finite & (label != VOID)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ScoreError(
                f"{path}: {int(bad.sum())} valid (non-void) pixels are NaN or inf, the first "
                f"at (row, col) {first}; scores are never dropped silently, fix the map"
            )
        score = np.where(finite, score, 0).astype(score.dtype)  # void pixels never count
    return score


# -- matching files to frames ---------------------------------------------------------------


def index_score_files(folder: str | Path) -> dict[str, Path]:
    """``<stem> -> path`` for the score files directly in ``folder``.

    Only the known suffix is removed, so names with dots (SegmentMeIfYouCan ids) survive.
    ``*_segmentation.npy`` files (the Fishyscapes submission's class maps) are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ScoreError(f"the score folder {folder} does not exist or is not a folder")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if suffix not in SCORE_SUFFIXES or not path.is_file():
            continue
        stem = path.name[: -len(suffix)]
        if not stem.endswith("_segmentation"):
            found.setdefault(stem, []).append(path)
    clashes = [paths for paths in found.values() if len(paths) > 1]
    if clashes:
        raise ScoreError(
            f"{len(clashes)} frame(s) have several score files, e.g. {listing(clashes[0])}; "
            "keep one file per frame"
        )
    return {stem: paths[0] for stem, paths in found.items()}


def _candidates(name: str) -> list[str]:
    """File stems accepted for frame ``name``: itself, ``<name>_anomaly``, ``DDDD_anomaly``."""
    stems = [name, f"{name}_anomaly"]
    fishyscapes_id = re.match(r"^(\d+)_", name)
    if fishyscapes_id:
        stems.append(f"{fishyscapes_id.group(1)}_anomaly")
    return stems


def match_frames(
    names: Sequence[str], files: dict[str, Path], allow_surplus: bool = False
) -> list[Path]:
    """The score file of each frame, in frame order.

    Raises:
        ScoreError: listing the frames without a score file and, unless ``allow_surplus``, the
            score files that match no frame.
    """
    matched: list[Path] = []
    missing: list[str] = []
    used: set[str] = set()
    for name in names:
        stem = next((s for s in _candidates(name) if s in files and s not in used), None)
        if stem is None:
            missing.append(name)
        else:
            used.add(stem)
            matched.append(files[stem])
    surplus = sorted(set(files) - used)
    problems = []
    if missing:
        problems.append(f"{len(missing)} frame(s) have no score file: {listing(missing)}")
    if surplus and not allow_surplus:
        problems.append(
            f"{len(surplus)} score file(s) match no frame of the dataset: {listing(surplus)} "
            "(a different dataset or track? --allow-surplus ignores them)"
        )
    if problems:
        raise ScoreError(
            f"{len(names)} frames, {len(files)} score files: "
            + "; ".join(problems)
            + ". Name each file after its frame: <name>.npy (.npz, .png, .hdf5)"
        )
    return matched


def frame_names(dataset: Any) -> list[str]:
    """Every frame's name, without decoding any image when the reader keeps an index."""
    if hasattr(dataset, "samples"):
        return [sample.name for sample in dataset.samples]
    return [dataset[index]["name"] for index in range(len(dataset))]


def frame_label(dataset: Any, index: int) -> np.ndarray:
    """Frame ``index``'s anomaly label, uint8 [H, W] (0 / 1 / 255), images left unread."""
    if hasattr(dataset, "samples") and hasattr(dataset, "load_label"):
        return dataset.load_label(dataset.samples[index])
    return np.asarray(dataset[index]["anomaly"], dtype=np.uint8)


class SavedScores:
    """The frames of ``dataset`` with their saved score maps from ``folder``, one at a time.

    ``len()`` is the dataset's; item ``i`` is ``{"score": real [H, W] (float16/32/64, checked by
    :func:`as_scores`; negated with ``negate``), "anomaly": uint8 [H, W], "name": str}``.
    Iterating yields the items in order while a thread reads the next ``read_ahead`` ones, so
    the files are read and decoded while the caller scores (numpy, PIL and torch release the
    GIL): memory holds ``read_ahead + 1`` frames, whatever the number of frames.

    Raises:
        ScoreError: at construction, listing frames without a score file and (unless
            ``allow_surplus``) files matching no frame; per item, a malformed or suspicious map.
    """

    def __init__(
        self,
        folder: str | Path,
        dataset: Any,
        key: str | None = None,
        negate: bool = False,
        allow_surplus: bool = False,
        read_ahead: int = 2,
    ) -> None:
        self.dataset = dataset
        self.read_ahead = max(int(read_ahead), 0)
        self.names = frame_names(dataset)
        self.files = match_frames(self.names, index_score_files(folder), allow_surplus)
        self.key = key
        self.negate = negate

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = frame_label(self.dataset, index)
        path = self.files[index]
        score = as_scores(read_score_file(path, self.key), path, label)
        return {
            "score": -score if self.negate else score,
            "anomaly": label,
            "name": self.names[index],
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.read_ahead == 0:
            yield from (self[index] for index in range(len(self)))
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsbench-read")
        try:
            ahead = range(min(self.read_ahead, len(self)))
            pending = deque(pool.submit(self.__getitem__, index) for index in ahead)
            following = len(pending)
            while pending:
                frame = pending.popleft().result()  # a reading error is raised here, in order
                if following < len(self):
                    pending.append(pool.submit(self.__getitem__, following))
                    following += 1
                yield frame
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
