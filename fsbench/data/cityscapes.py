"""Cityscapes (Cordts et al., CVPR 2016): the inlier training and validation set, 19 train ids.

Layout under ``root`` (the official ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``
unpacked into one folder)::

    leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
    gtFine/{split}/{city}/..._gtFine_labelTrainIds.png   (only after cityscapesScripts'
                                                           createTrainIdLabelImgs)

``labelIds`` (0..33) are mapped to the 19 train ids by the official table (cityscapesScripts
``helpers/labels.py``); every other id becomes 255 (ignore). ``labelTrainIds`` files are read as
they are (0..18, 255).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from fsbench.data.check import (
    VOID,
    DatasetError,
    LabelledImages,
    Sample,
    listing,
    require_dir,
)

# labelId -> trainId of the 19 evaluated classes; every other labelId (0..33) is ignored (255).
LABEL_ID_TO_TRAIN_ID = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
NUM_LABEL_IDS = 34  # 0 unlabeled .. 33 bicycle; license plate (-1) is never written to a PNG
SPLITS = ("train", "val")
LABEL_KINDS = ("auto", "labelIds", "labelTrainIds")
DOWNLOAD = (
    "Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ (free registration) and unzip both into the "
    "same folder, which then holds leftImg8bit/ and gtFine/."
)
IMAGE_SUFFIX = "_leftImg8bit.png"


def _stems(folder: Path, suffix: str) -> dict[str, Path]:
    """``{city}_{seq}_{frame}`` -> path for every ``{city}/*{suffix}`` file under ``folder``."""
    return {
        path.name[: -len(suffix)]: path for path in folder.glob(f"*/*{suffix}") if path.is_file()
    }


class Cityscapes(LabelledImages):
    """One split of Cityscapes with fine labels.

    Items are ``{image: float32 [3, H, W] in [0, 1], label: int64 [H, W] (train ids 0..18,
    255 ignore), name: "{city}_{seq}_{frame}"}``, ordered by city and frame.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train`` (2975 images) or ``val`` (500).
        labels: ``labelIds`` (mapped by the official table), ``labelTrainIds`` (read as stored),
            or ``auto``: ``labelTrainIds`` if every image of the split has one, else ``labelIds``.
        resize: optional (H, W); the image is resized bilinearly and the label by nearest
            neighbour, so losses and the mIoU are computed at that resolution.
        scan: read every file at construction and refuse the split on any error.
    """

    kind: ClassVar[str] = "segmentation"
    resize_label_too: ClassVar[bool] = True
    download = DOWNLOAD

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        labels: str = "auto",
        resize: Sequence[int] | None = None,
        scan: bool = False,
    ) -> None:
        super().__init__(root, resize)
        if split not in SPLITS:
            raise ValueError(f"Cityscapes split must be one of {SPLITS}, got {split!r}")
        if labels not in LABEL_KINDS:
            raise ValueError(f"labels must be one of {LABEL_KINDS}, got {labels!r}")
        self.split = split
        self.title = f"Cityscapes {split}"
        what = f"Cityscapes {split} split"
        require_dir(self.root, "Cityscapes root", DOWNLOAD)
        image_dir = require_dir(self.root / "leftImg8bit" / split, what, DOWNLOAD)
        label_dir = require_dir(self.root / "gtFine" / split, what, DOWNLOAD)

        images = _stems(image_dir, IMAGE_SUFFIX)
        label_ids = _stems(label_dir, "_gtFine_labelIds.png")
        train_ids = _stems(label_dir, "_gtFine_labelTrainIds.png")
        if labels == "auto":
            complete = bool(images) and all(stem in train_ids for stem in images)
            labels = "labelTrainIds" if complete else "labelIds"
            if train_ids and not complete:
                self.notes.append(
                    f"labelTrainIds files exist for only {len(set(train_ids) & set(images))} of "
                    f"{len(images)} images; reading labelIds instead"
                )
        self.labels = labels
        chosen = train_ids if labels == "labelTrainIds" else label_ids
        if labels == "labelTrainIds":
            self.label_values = {t: t for t in range(len(CLASS_NAMES))} | {VOID: VOID}
            self.expected_description = "train ids 0..18 and 255 (ignore)"
        else:
            self.label_values = train_id_table()
            self.expected_description = "label ids 0..33"
        self.notes.append(f"labels read from *_gtFine_{labels}.png")

        samples = [
            Sample(name=stem, image=images[stem], label=chosen[stem])
            for stem in sorted(images)
            if stem in chosen
        ]
        orphan_images = [images[stem] for stem in images if stem not in chosen]
        orphan_labels = [chosen[stem] for stem in chosen if stem not in images]
        if orphan_images and labels == "labelTrainIds":
            self.problems.append(
                "labels='labelTrainIds' reads *_gtFine_labelTrainIds.png files, which only "
                "cityscapesScripts' createTrainIdLabelImgs writes: run it, or use "
                "labels='labelIds' (or 'auto')"
            )
        self._finish(samples, orphan_images, orphan_labels, scan=scan)

    def unexpected_values_hint(self, values: Sequence[int]) -> str:
        if self.labels == "labelIds":
            return (
                "label ids above 33 are not Cityscapes labelIds; is this an *_instanceIds.png "
                "or *_color.png file, or a label of another dataset?"
            )
        return (
            f"train ids must be 0..18 or 255 (values seen: {listing(values)}); "
            "recreate the labelTrainIds files or read labels='labelIds'"
        )


def train_id_table() -> dict[int, int]:
    """labelId -> trainId for every label id 0..33 (255 where the class is not evaluated)."""
    return {i: LABEL_ID_TO_TRAIN_ID.get(i, VOID) for i in range(NUM_LABEL_IDS)}


__all__ = [
    "CLASS_NAMES",
    "Cityscapes",
    "DatasetError",
    "LABEL_ID_TO_TRAIN_ID",
    "train_id_table",
]
