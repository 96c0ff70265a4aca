"""Readers of the real datasets, on tiny fixture trees with the official layouts and encodings.

Every fixture image's red channel encodes a frame number k (value 20 + 10 k) and its label
encodes the same k (the anomaly sets: column k is anomalous; Cityscapes: pixel (0, 0) holds the
k-th evaluated label id), so a test can tell whether images and labels were paired correctly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue
from PIL import Image, features

from fsbench.cli.data import main as cli_main
from fsbench.data.anomaly_sets import (
    FishyscapesLostAndFound,
    FishyscapesStatic,
    RoadAnomaly,
    SegmentMeIfYouCan,
)
from fsbench.data.check import DatasetError, check_dataset
from fsbench.data.cityscapes import Cityscapes

H, W = 32, 64
CONF = Path(__file__).resolve().parents[1] / "conf"
REPO = Path(__file__).resolve().parents[1]

# The official Cityscapes table (cityscapesScripts helpers/labels.py), written out independently.
TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
EVALUATED = sorted(TRAIN_ID)


def code(k: int) -> int:
    return 20 + 10 * k


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _image(k: int, height: int = H, width: int = W) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = code(k)
    image[..., 1] = np.arange(width, dtype=np.uint8)[None, :] * 2
    image[..., 2] = 100
    return image


def _anomaly_label(k: int, anomaly: int = 1, height: int = H, width: int = W) -> np.ndarray:
    label = np.zeros((height, width), np.uint8)
    label[:, k] = anomaly
    label[0, :] = 255  # a void row
    return label


def _check_pairing(item: dict, atol: float = 1e-3) -> int:
    """The frame number that the anomaly column encodes, checked against the image's red value."""
    row = item["anomaly"][5].numpy()
    (columns,) = np.nonzero(row == 1)
    assert len(columns) == 1, row
    k = int(columns[0])
    red = float(item["image"][0, 5, 5]) * 255
    assert abs(red - code(k)) <= atol, (item["name"], red, code(k))
    return k


# ------------------------------------------------------------------------------- fixture trees
def make_cityscapes(root: Path, frames=None, label_ids=True, train_ids=False) -> Path:
    frames = frames or {
        "train": [("aachen", 0), ("aachen", 1), ("bochum", 2)],
        "val": [("frankfurt", 3), ("lindau", 4)],
    }
    for split, items in frames.items():
        (root / "leftImg8bit" / split).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split).mkdir(parents=True, exist_ok=True)
        for city, k in items:
            stem = f"{city}_{k:06d}_000019"
            _save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _image(k))
            ids = (np.arange(H * W) % 34).reshape(H, W).astype(np.uint8)  # every label id
            ids[0, 0] = EVALUATED[k]
            gt = root / "gtFine" / split / city
            if label_ids:
                _save(gt / f"{stem}_gtFine_labelIds.png", ids)
            if train_ids:
                mapped = np.vectorize(lambda i: TRAIN_ID.get(int(i), 255))(ids).astype(np.uint8)
                _save(gt / f"{stem}_gtFine_labelTrainIds.png", mapped)
            _save(gt / f"{stem}_gtFine_color.png", _image(k))  # never read
    return root


LAF_FRAMES = [  # (fs id as written, LAF id, LAF split, k)
    ("0010", "01_Hanns_Klemm_Str_45_000000_000100", "train", 1),
    ("0002", "13_Elly_Beinhorn_Str_000000_000200", "test", 2),
    ("7", "02_Hanns_Klemm_Str_44_000001_000050", "test", 3),
]


def make_fs_laf(tmp: Path) -> tuple[Path, Path]:
    fs_root, laf_root = tmp / "fishyscapes" / "fishyscapes_lostandfound", tmp / "lostandfound"
    fs_root.mkdir(parents=True)
    for fs_id, laf_id, split, k in LAF_FRAMES:
        sequence = laf_id[: -len("_000000_000000")]
        _save(laf_root / "leftImg8bit" / split / sequence / f"{laf_id}_leftImg8bit.png", _image(k))
        _save(fs_root / f"{fs_id}_{laf_id}_labels.png", _anomaly_label(k))
    # a Lost and Found frame that Fishyscapes does not label: normal, not an error
    unlabelled = "04_Maurener_Weg_8_000000_000030"
    _save(
        laf_root / "leftImg8bit/train/04_Maurener_Weg_8" / f"{unlabelled}_leftImg8bit.png",
        _image(9),
    )
    return fs_root, laf_root


STATIC_FRAMES = [
    ("0000", "frankfurt_000000_000294", "val"),
    ("0001", "aachen_000042_000019", "train"),
]


def make_fs_static(tmp: Path) -> tuple[Path, Path]:
    fs_root, cs_root = tmp / "fishyscapes", tmp / "cityscapes_static"
    folder = fs_root / "fs_val_v3"
    folder.mkdir(parents=True)
    for k, (fs_id, cs_id, split) in enumerate(STATIC_FRAMES, start=1):
        city = cs_id.split("_")[0]
        base = _image(k)
        base[10:20, 10] = 200
        base[10:20, 11] = 50
        base[10:20, 12] = 100
        _save(cs_root / "leftImg8bit" / split / city / f"{cs_id}_leftImg8bit.png", base)
        overlay = np.zeros((H, W, 3), np.int16 if k == 1 else np.float32)
        overlay[10:20, 10] = 100  # 200 + 100 saturates at 255 (uint8 arithmetic: 44)
        overlay[10:20, 11] = -100  # 50 - 100 saturates at 0 (uint8 arithmetic: 206)
        overlay[10:20, 12] = -30.7 if k == 2 else -30  # truncated towards zero: 70
        overlay[25:30, 40:50] = 60  # a pasted Cityscapes object: a *negative*, label 0
        np.savez_compressed(folder / f"{fs_id}_{cs_id}_rgb.npz", rgb=overlay)
        _save(folder / f"{fs_id}_{cs_id}_labels.png", _anomaly_label(k))
    return fs_root, cs_root


RA_FRAMES = ["animals01_Guardian_A.jpg", "cones03_Parking_2.jpg", "tent0.2_road.jpg"]


def make_road_anomaly(tmp: Path) -> Path:
    root = tmp / "RoadAnomaly_jpg"
    (root / "frames").mkdir(parents=True)
    (root / "frame_list.json").write_text(json.dumps(RA_FRAMES))
    for k, name in enumerate(RA_FRAMES, start=1):
        stem = name[: -len(".jpg")]
        _save(root / "frames" / name, _image(k), quality=100)
        _save(
            root / "frames" / f"{stem}.labels" / "labels_semantic.png", _anomaly_label(k, 2) % 255
        )
    return root


SMIYC_ANOMALY = {"validation0000": 1, "validation0001": 2, "road.scene_1.5": 3}
SMIYC_OBSTACLE = {"validation_1": 4, "snowstorm1_00_00_13.180": 5}


def make_smiyc(tmp: Path) -> Path:
    root = tmp / "smiyc"
    for folder, frames, ext in (
        ("dataset_AnomalyTrack", SMIYC_ANOMALY, "jpg"),
        ("dataset_ObstacleTrack", SMIYC_OBSTACLE, "webp"),
    ):
        track = root / folder
        options = {"quality": 100} if ext == "jpg" else {"lossless": True}
        for fid, k in frames.items():
            _save(track / "images" / f"{fid}.{ext}", _image(k), **options)
            _save(track / "labels_masks" / f"{fid}_labels_semantic.png", _anomaly_label(k))
            _save(track / "labels_masks" / f"{fid}_labels_semantic_color.png", _image(k))
        _save(track / "images" / f"test_unlabelled.1.{ext}", _image(9), **options)
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("datasets")
    fs_laf, laf = make_fs_laf(tmp)
    fs_root, cs_static = make_fs_static(tmp)
    return {
        "cityscapes": make_cityscapes(tmp / "cityscapes"),
        "fs_laf": fs_laf,
        "laf": laf,
        "fishyscapes": fs_root,
        "cs_static": cs_static,
        "road_anomaly": make_road_anomaly(tmp),
        "smiyc": make_smiyc(tmp),
    }


needs_webp = pytest.mark.skipif(not features.check("webp"), reason="Pillow without WebP")


# --------------------------------------------------------------------------------- Cityscapes
def test_cityscapes_counts_pairing_and_the_official_train_id_table(trees):
    train = Cityscapes(trees["cityscapes"], split="train", labels="labelIds")
    val = Cityscapes(trees["cityscapes"], split="val")
    assert (len(train), len(val)) == (3, 2)
    assert val.labels == "labelIds"  # auto: no labelTrainIds files exist
    assert [item["name"] for item in train] == [
        "aachen_000000_000019",
        "aachen_000001_000019",
        "bochum_000002_000019",
    ]
    ids = (np.arange(H * W) % 34).reshape(H, W)
    for item in list(train) + list(val):
        k = int(item["name"].split("_")[1])
        assert set(item) == {"image", "label", "name"}
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, H, W)
        assert item["label"].dtype == torch.int64 and item["label"].shape == (H, W)
        assert round(float(item["image"][0, 3, 3]) * 255) == code(k)
        assert int(item["label"][0, 0]) == TRAIN_ID[EVALUATED[k]]
        expected = np.vectorize(lambda i: TRAIN_ID.get(int(i), 255))(ids)
        np.testing.assert_array_equal(item["label"].numpy()[1:], expected[1:])


def test_cityscapes_auto_prefers_train_ids_only_when_all_exist(tmp_path):
    root = make_cityscapes(tmp_path / "cs", train_ids=True)
    train = Cityscapes(root, split="train")
    assert train.labels == "labelTrainIds"
    assert int(train[1]["label"][0, 0]) == TRAIN_ID[EVALUATED[1]]
    next((root / "gtFine/train/aachen").glob("*000001*labelTrainIds.png")).unlink()
    fallback = Cityscapes(root, split="train")
    assert fallback.labels == "labelIds" and len(fallback) == 3
    assert any("only 2 of 3" in note for note in fallback.notes)
    with pytest.raises(DatasetError, match="aachen_000001_000019_leftImg8bit.png.*"):
        Cityscapes(root, split="train", labels="labelTrainIds")
    with pytest.raises(DatasetError, match="createTrainIdLabelImgs"):
        Cityscapes(root, split="train", labels="labelTrainIds")


def test_cityscapes_resize_resizes_image_and_label(trees):
    item = Cityscapes(trees["cityscapes"], split="val", resize=(16, 32))[0]
    assert item["image"].shape == (3, 16, 32) and item["label"].shape == (16, 32)
    assert set(item["label"].unique().tolist()) <= set(TRAIN_ID.values()) | {255}


def test_cityscapes_accepts_palette_labels(tmp_path):
    root = make_cityscapes(tmp_path / "cs", frames={"val": [("lindau", 5)]})
    path = next((root / "gtFine/val/lindau").glob("*labelIds.png"))
    grey = np.asarray(Image.open(path))
    palette = Image.fromarray(grey, mode="L").convert("P")
    palette.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    palette.save(path)
    assert Image.open(path).mode == "P"
    item = Cityscapes(root, split="val")[0]
    assert int(item["label"][0, 0]) == TRAIN_ID[EVALUATED[5]]


# ----------------------------------------------------------------------- Fishyscapes L&F
def test_fs_lost_and_found_searches_both_splits_and_orders_by_integer_id(trees):
    dataset = FishyscapesLostAndFound(trees["fs_laf"], laf_root=trees["laf"])
    assert len(dataset) == 3  # the unlabelled LAF frame is not part of the set
    # integer order 2, 7, 10 (names sort as "0002" < "0010" < "7")
    assert [item["name"].split("_")[0] for item in dataset] == ["0002", "7", "0010"]
    assert [_check_pairing(item) for item in dataset] == [2, 3, 1]
    assert {s.image.parts[-3] for s in dataset.samples} == {"train", "test"}
    assert any("no Fishyscapes label" in note for note in dataset.notes)
    item = dataset[0]
    assert set(item) == {"image", "anomaly", "name"}
    assert item["anomaly"].dtype == torch.uint8 and item["image"].dtype == torch.float32
    assert set(item["anomaly"].unique().tolist()) == {0, 1, 255}


def test_fs_lost_and_found_accepts_palette_labels(tmp_path):
    fs_root, laf_root = make_fs_laf(tmp_path)
    path = next(fs_root.glob("0002_*_labels.png"))
    Image.fromarray(_anomaly_label(2)).convert("P").save(path)
    assert Image.open(path).mode == "P"
    item = FishyscapesLostAndFound(fs_root, laf_root)[0]
    assert _check_pairing(item) == 2 and int(item["anomaly"][0, 0]) == 255


def test_anomaly_resize_shrinks_only_the_image(trees):
    item = FishyscapesLostAndFound(trees["fs_laf"], trees["laf"], resize=(16, 32))[0]
    assert item["image"].shape == (3, 16, 32) and item["anomaly"].shape == (H, W)


def test_evaluation_upsamples_scores_of_resized_images_to_the_label():
    """A score computed on a resized image is compared at label resolution: upsampled by
    bilinear interpolation, never the label downsampled."""
    from fsbench.lit.evaluation import match_label_size

    score = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # [1, 2, 2]
    label = torch.zeros(1, 4, 4, dtype=torch.uint8)
    up = match_label_size(score, label)
    assert up.shape == (1, 4, 4)
    # bilinear, align_corners=False: corner pixels keep the corner values, the centre averages
    assert up[0, 0, 0] == 0.0 and up[0, 3, 3] == 3.0
    assert up[0, 1:3, 1:3].mean().item() == pytest.approx(1.5)
    same = torch.rand(1, 4, 4)
    assert match_label_size(same, label) is same


# -------------------------------------------------------------------- Fishyscapes Static
def test_fs_static_adds_the_signed_overlay_with_saturation(trees):
    dataset = FishyscapesStatic(trees["fishyscapes"], trees["cs_static"])
    assert len(dataset) == 2
    assert [item["name"] for item in dataset] == [f"{f}_{c}" for f, c, _ in STATIC_FRAMES]
    for item in dataset:
        red = (item["image"][0] * 255).round().to(torch.int64)
        assert (red[10:20, 10] == 255).all()  # 200 + 100, not 44
        assert (red[10:20, 11] == 0).all()  # 50 - 100, not 206
        assert (red[10:20, 12] == 70).all()  # 100 - 30 (and 100 - 30.7 truncated like int())
        k = _check_pairing(item)
        assert int(red[27, 45]) == code(k) + 60
        # the pasted negative changes the image but stays inlier: labels come from labels.png
        assert (item["anomaly"][25:30, 40:50] == 0).all()


def test_fs_static_errors_name_the_file(tmp_path):
    fs_root, cs_root = make_fs_static(tmp_path)
    folder = fs_root / "fs_val_v3"
    overlay = next(folder.glob("0000_*_rgb.npz"))
    np.savez(overlay, rgb=np.zeros((H, W - 1, 3), np.int16))
    with pytest.raises(DatasetError, match=r"size mismatch.*0000_frankfurt.*rgb\.npz"):
        FishyscapesStatic(fs_root, cs_root)[0]
    np.savez(overlay, other=np.zeros((H, W, 3), np.int16))
    with pytest.raises(DatasetError, match="holds no array 'rgb'"):
        FishyscapesStatic(fs_root, cs_root)[0]
    overlay.unlink()
    with pytest.raises(DatasetError, match=r"without their \*_rgb.npz overlay.*0000_frankfurt"):
        FishyscapesStatic(fs_root, cs_root)
    with pytest.raises(DatasetError, match=r"fs_val_v2.*fs_val_v2\.zip"):
        FishyscapesStatic(fs_root, cs_root, version=2)
    (cs_root / "leftImg8bit/train/aachen/aachen_000042_000019_leftImg8bit.png").unlink()
    with pytest.raises(DatasetError, match="not found in any split.*aachen_000042_000019"):
        FishyscapesStatic(fs_root, cs_root)


# ------------------------------------------------------------------------- Road Anomaly
def test_road_anomaly_maps_2_to_1_in_frame_list_order(trees):
    dataset = RoadAnomaly(trees["road_anomaly"])
    assert [item["name"] for item in dataset] == [n[: -len(".jpg")] for n in RA_FRAMES]
    assert [_check_pairing(item, atol=3) for item in dataset] == [1, 2, 3]
    assert set(dataset[0]["anomaly"].unique().tolist()) == {0, 1}  # no void


@pytest.mark.parametrize("value", [1, 255, 7])
def test_road_anomaly_refuses_other_label_values(tmp_path, value):
    root = make_road_anomaly(tmp_path)
    path = root / "frames/cones03_Parking_2.labels/labels_semantic.png"
    label = _anomaly_label(2, 2) % 255
    label[3, 3] = value
    _save(path, label)
    dataset = RoadAnomaly(root)
    with pytest.raises(DatasetError, match=rf"{path}: unexpected label values \[{value}\]"):
        dataset[1]
    if value != 7:
        with pytest.raises(DatasetError, match="already converted copy"):
            dataset[1]


# -------------------------------------------------------------------------------- SMIYC
def test_smiyc_reads_labelled_frames_with_dotted_ids_and_skips_colour_labels(trees):
    for root in (trees["smiyc"], trees["smiyc"] / "dataset_AnomalyTrack"):
        dataset = SegmentMeIfYouCan(root, track="anomaly")
        assert sorted(item["name"] for item in dataset) == sorted(SMIYC_ANOMALY)
        for item in dataset:
            assert _check_pairing(item, atol=3) == SMIYC_ANOMALY[item["name"]]
        assert any("1 image(s) without a label" in note for note in dataset.notes)


@needs_webp
def test_smiyc_obstacle_track_reads_webp(trees):
    dataset = SegmentMeIfYouCan(trees["smiyc"], track="obstacle")
    assert dataset.title == "SegmentMeIfYouCan RoadObstacle21"
    assert {item["name"]: _check_pairing(item) for item in dataset} == SMIYC_OBSTACLE


def test_smiyc_without_webp_support_says_so(trees, monkeypatch):
    monkeypatch.setattr(features, "check", lambda name: False)
    with pytest.raises(DatasetError, match="without WebP support"):
        SegmentMeIfYouCan(trees["smiyc"], track="obstacle")
    SegmentMeIfYouCan(trees["smiyc"], track="anomaly")  # JPEGs need no WebP


def test_smiyc_track_folder_mismatch(trees):
    with pytest.raises(DatasetError, match="dataset_ObstacleTrack folder, but track='anomaly'"):
        SegmentMeIfYouCan(trees["smiyc"] / "dataset_ObstacleTrack", track="anomaly")


# ------------------------------------------------------------------------------- errors
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _noise_png(path: Path, values) -> None:
    rng = np.random.default_rng(0)
    _save(path, rng.choice(np.asarray(values, np.uint8), size=(H, W)))


def test_missing_root_and_subfolders_name_the_path_and_the_download(tmp_path, trees):
    with pytest.raises(
        DatasetError, match=rf"{tmp_path / 'nowhere'} does not exist.*cityscapes-dataset\.com"
    ):
        Cityscapes(tmp_path / "nowhere")
    root = make_cityscapes(tmp_path / "cs")
    for split in ("train", "val"):
        (root / "gtFine" / split).rename(tmp_path / f"gt_{split}")
    with pytest.raises(DatasetError, match=r"gtFine/train does not exist.*gtFine_trainvaltest"):
        Cityscapes(root)
    with pytest.raises(DatasetError, match=r"lostandfound/leftImg8bit does not exist.*6d-vision"):
        FishyscapesLostAndFound(trees["fs_laf"], laf_root=tmp_path / "lostandfound")
    with pytest.raises(
        DatasetError, match=r"nowhere does not exist.*fishyscapes_lostandfound\.zip"
    ):
        FishyscapesLostAndFound(tmp_path / "nowhere", laf_root=trees["laf"])
    with pytest.raises(DatasetError, match=r"frame_list\.json does not exist.*RoadAnomaly_jpg"):
        RoadAnomaly(tmp_path)
    with pytest.raises(DatasetError, match=r"dataset_AnomalyTrack nor .*segmentmeifyoucan\.com"):
        SegmentMeIfYouCan(tmp_path)
    (tmp_path / "empty/images").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"empty/labels_masks does not exist"):
        SegmentMeIfYouCan(tmp_path / "empty")


def test_empty_dataset_is_refused(tmp_path):
    root = tmp_path / "cs"
    for part in ("leftImg8bit/train", "gtFine/train"):
        (root / part).mkdir(parents=True)
    with pytest.raises(DatasetError, match="no labelled image found"):
        Cityscapes(root)


def test_orphan_images_and_labels_are_listed(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    next((root / "gtFine/train/bochum").glob("*labelIds.png")).unlink()
    _save(
        root / "gtFine/train/aachen/aachen_000099_000019_gtFine_labelIds.png",
        np.zeros((H, W), np.uint8),
    )
    with pytest.raises(DatasetError) as error:
        Cityscapes(root, split="train")
    message = str(error.value)
    assert "1 image(s) without a label file" in message and "bochum_000002_000019" in message
    assert "1 label file(s) without an image" in message and "aachen_000099_000019" in message

    smiyc = make_smiyc(tmp_path)
    _save(
        smiyc / "dataset_AnomalyTrack/labels_masks/ghost.7_labels_semantic.png", _anomaly_label(1)
    )
    with pytest.raises(DatasetError, match=r"label file\(s\) without an image: .*ghost\.7"):
        SegmentMeIfYouCan(smiyc)

    fs_root, laf_root = make_fs_laf(tmp_path / "laf_case")
    _save(fs_root / "0050_05_Schafgasse_1_000000_000010_labels.png", _anomaly_label(1))
    with pytest.raises(DatasetError, match=r"in neither .*train nor .*test: .*0050_05_Schafgasse"):
        FishyscapesLostAndFound(fs_root, laf_root)

    ra = make_road_anomaly(tmp_path)
    (ra / "frames/cones03_Parking_2.labels/labels_semantic.png").unlink()
    with pytest.raises(DatasetError, match=r"image\(s\) without a label file: .*cones03_Parking_2"):
        RoadAnomaly(ra)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([0, 1, 7], r"unexpected label values \[7\]; .* hold 0 inlier, 1 anomaly, 255 void"),
        ([0, 1, 2], r"unexpected label values \[2\].*DenseHybrid.*void as 2"),
    ],
)
def test_bad_anomaly_label_values_are_refused(tmp_path, values, match):
    root = make_smiyc(tmp_path)
    path = root / "dataset_AnomalyTrack/labels_masks/validation0001_labels_semantic.png"
    _noise_png(path, values)
    dataset = SegmentMeIfYouCan(root)
    index = [s.name for s in dataset.samples].index("validation0001")
    with pytest.raises(DatasetError, match=rf"{path}: {match}"):
        dataset[index]
    with pytest.raises(DatasetError, match=match):
        SegmentMeIfYouCan(root, scan=True)


def test_bad_cityscapes_label_values_are_refused(tmp_path):
    root = make_cityscapes(tmp_path / "cs", frames={"val": [("lindau", 0)]}, train_ids=True)
    path = next((root / "gtFine/val/lindau").glob("*labelIds.png"))
    _noise_png(path, [7, 40])
    with pytest.raises(DatasetError, match=r"unexpected label values \[40\]; .* label ids 0\.\.33"):
        Cityscapes(root, split="val", labels="labelIds")[0]
    path = next((root / "gtFine/val/lindau").glob("*labelTrainIds.png"))
    _noise_png(path, [0, 18, 19, 255])
    with pytest.raises(DatasetError, match=r"unexpected label values \[19\]; .* train ids 0\.\.18"):
        Cityscapes(root, split="val")[0]


def test_colour_label_is_refused_by_mode(tmp_path):
    root = make_road_anomaly(tmp_path)
    path = root / "frames/tent0.2_road.labels/labels_semantic.png"
    _save(path, _image(3))
    with pytest.raises(DatasetError, match=rf"{path} is a mode 'RGB' image.*'L' or 'P'"):
        RoadAnomaly(root)[2]


def test_truncated_files_fail_naming_the_file(tmp_path):
    fs_root, laf_root = make_fs_laf(tmp_path)
    label = next(fs_root.glob("0002_*_labels.png"))
    _noise_png(label, [0, 1, 255])
    _truncate(label)
    dataset = FishyscapesLostAndFound(fs_root, laf_root)
    with pytest.raises(DatasetError, match=rf"cannot read {label}.*truncated"):
        dataset[0]
    root = make_cityscapes(tmp_path / "cs", frames={"val": [("lindau", 0)]})
    image = next((root / "leftImg8bit/val/lindau").glob("*.png"))
    _save(image, np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8))
    _truncate(image)
    with pytest.raises(DatasetError, match=rf"cannot read {image}"):
        Cityscapes(root, split="val")[0]


def test_size_mismatch_is_refused(tmp_path):
    root = make_smiyc(tmp_path)
    path = root / "dataset_AnomalyTrack/labels_masks/validation0000_labels_semantic.png"
    _save(path, _anomaly_label(1, height=H, width=W // 2))
    dataset = SegmentMeIfYouCan(root)
    index = [s.name for s in dataset.samples].index("validation0000")
    with pytest.raises(DatasetError, match=r"size mismatch in validation0000: .* 64x32 .* 32x32"):
        dataset[index]


def test_check_dataset_summarises_and_collects_every_error(tmp_path, trees):
    report = check_dataset(FishyscapesLostAndFound(trees["fs_laf"], trees["laf"]))
    assert report.ok and report.n_images == 3
    assert report.resolutions == {(H, W): 3}
    assert report.pixels == {"inlier": 3 * (H - 1) * (W - 1), "anomaly": 3 * (H - 1), "void": 3 * W}
    assert sum(report.shares().values()) == pytest.approx(1.0)
    text = report.summary()
    assert "3 images" in text and "pixel shares of all" in text and "64x32 (WxH): 3" in text
    assert "anomaly share of the valid (non-void) pixels" in text

    root = make_smiyc(tmp_path)
    masks = root / "dataset_AnomalyTrack/labels_masks"
    _noise_png(masks / "validation0000_labels_semantic.png", [0, 2])
    _truncate(masks / "validation0000_labels_semantic.png")
    _noise_png(masks / "validation0001_labels_semantic.png", [0, 2])
    _save(masks / "road.scene_1.5_labels_semantic.png", np.zeros((H + 1, W), np.uint8))
    report = check_dataset(SegmentMeIfYouCan(root))
    assert not report.ok and len(report.errors) == 3
    assert "cannot read" in report.errors[1] and "validation0000" in report.errors[1]
    assert "DenseHybrid" in report.errors[2] and "validation0001" in report.errors[2]
    assert "size mismatch in road.scene_1.5" in report.errors[0]
    with pytest.raises(DatasetError, match="3 error"):
        report.raise_for_errors()


# ---------------------------------------------------------------------------------- CLI
def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "fsbench.data", "check", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip


def test_cli_prints_the_summary_and_the_errors(tmp_path):
    root = make_road_anomaly(tmp_path)
    _noise_png(root / "frames/cones03_Parking_2.labels/labels_semantic.png", [0, 1, 2])
    done = _run_cli("road_anomaly", str(root))
    assert done.returncode == 1, done.stderr
    assert f"Road Anomaly at {root}: 3 images" in done.stdout
    assert "pixel shares of all" in done.stdout and "64x32 (WxH): 2" in done.stdout
    assert "1 error(s)" in done.stdout and "unexpected label values [1]" in done.stdout


def test_cli_in_process_exit_codes(tmp_path, trees, capsys):
    assert cli_main(["check", "cityscapes", str(trees["cityscapes"]), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "Cityscapes val" in out and "2 images" in out and "labelled" in out
    fs_laf = ["check", "fs_lost_and_found", str(trees["fs_laf"]), "--laf-root"]
    assert cli_main([*fs_laf, str(trees["laf"])]) == 0
    out = capsys.readouterr().out
    assert "Fishyscapes Lost & Found" in out and "3 images" in out and "OK" in out
    assert cli_main(["check", "smiyc_anomaly", str(trees["smiyc"]), "--quick"]) == 0
    assert "structure only" in capsys.readouterr().out
    assert cli_main(["check", "road_anomaly", str(tmp_path / "nowhere")]) == 1
    assert "nowhere does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli_main(["check", "fs_static", str(trees["fishyscapes"])])
    assert usage.value.code == 2
    assert "--cityscapes-root" in capsys.readouterr().err
    args = ["check", "fs_static", str(trees["fishyscapes"]), "--cityscapes-root"]
    assert cli_main([*args, str(trees["cs_static"])]) == 0


# ------------------------------------------------------------------------------ configs
def _compose(overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("evaluate", overrides=overrides)


def _overrides(name: str, trees: dict[str, Path], cityscapes: Path) -> list[str]:
    roots = {
        "cityscapes": {},
        "fishyscapes": {
            "fishyscapes_root": trees["fishyscapes"],
            "lostandfound_root": trees["laf"],
        },
        "road_anomaly": {"road_anomaly_root": trees["road_anomaly"]},
        "smiyc": {"smiyc_root": trees["smiyc"]},
    }[name]
    return [
        f"data={name}",
        f"data.shared.cityscapes_root={cityscapes}",
        *(f"data.shared.{key}={value}" for key, value in roots.items()),
        "data.num_workers=0",
        "data.batch_size=2",
        "data.eval_batch_size=2",
    ]


@pytest.fixture(scope="module")
def config_cityscapes(trees) -> Path:
    """Cityscapes train/val plus the Static base frames, as one tree (as in real use)."""
    root = trees["cityscapes"].parent / "cityscapes_all"
    make_cityscapes(root)
    for path in trees["cs_static"].rglob("*_leftImg8bit.png"):
        target = root / path.relative_to(trees["cs_static"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        stem = path.name[: -len("_leftImg8bit.png")]
        _save(target.parent.parent.parent.parent / "gtFine" / target.parts[-3] / target.parts[-2]
              / f"{stem}_gtFine_labelIds.png", np.full((H, W), 7, np.uint8))  # fmt: skip
    return root


@pytest.mark.parametrize(
    ("name", "anomaly_sets"),
    [
        ("cityscapes", set()),
        ("fishyscapes", {"fs_lost_and_found", "fs_static"}),
        ("road_anomaly", {"road_anomaly"}),
        ("smiyc", {"smiyc_anomaly", "smiyc_obstacle"}),
    ],
)
def test_data_configs_build_every_loader(trees, config_cityscapes, name, anomaly_sets):
    if name == "smiyc" and not features.check("webp"):
        pytest.skip("Pillow without WebP")
    cfg = _compose(_overrides(name, trees, config_cityscapes))
    datamodule = instantiate(cfg.data)
    assert set(datamodule.anomaly_sets) == anomaly_sets
    assert len(datamodule.train_set) == 4 and len(datamodule.val_set) == 3
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        batch = next(iter(loader))
        assert set(batch) == {"image", "label", "name"}
        assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (3, H, W)
        assert batch["label"].dtype == torch.int64 and batch["label"].shape[1:] == (H, W)
    if not anomaly_sets:
        with pytest.raises(ValueError, match="defines no anomaly set"):
            datamodule.anomaly_dataloaders()
        return
    for loader in datamodule.anomaly_dataloaders().values():
        batch = next(iter(loader))
        assert set(batch) == {"image", "anomaly", "name"}
        assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (3, H, W)
        assert batch["anomaly"].dtype == torch.uint8 and batch["anomaly"].shape[1:] == (H, W)
        assert set(batch["anomaly"].unique().tolist()) <= {0, 1, 255}


def test_data_configs_refuse_a_missing_root_by_name(trees, config_cityscapes):
    overrides = [o for o in _overrides("fishyscapes", trees, config_cityscapes)]
    overrides = [o for o in overrides if "lostandfound_root" not in o]
    cfg = _compose(overrides)
    errors = (MissingMandatoryValue, InterpolationToMissingValueError)
    with pytest.raises(errors, match="data.shared.lostandfound_root"):
        instantiate(cfg.data)


# -------------------------------------------------------------------- make-anomaly-set
@pytest.mark.parametrize("blend", ["hard", "poisson"])
def test_make_anomaly_set_round_trips_through_the_static_reader(tmp_path, blend):
    from fsbench.data.make_sets import make_static_like

    cityscapes = make_cityscapes(tmp_path / "cs")
    folder = make_static_like(cityscapes, tmp_path / "made", split="val", blend=blend, seed=3)
    assert folder == tmp_path / "made" / "fs_val_v3"
    made = FishyscapesStatic(tmp_path / "made", cityscapes)
    inliers = Cityscapes(cityscapes, split="val")
    assert len(made) == len(inliers) == 2
    for index in range(len(made)):
        item, inlier = made[index], inliers[index]
        assert item["name"] == f"{index:04d}_{inlier['name']}"
        anomaly = item["anomaly"]
        assert (anomaly == 1).any()
        changed = (item["image"] - inlier["image"]).abs().amax(dim=0) > 1e-6
        # nothing changes outside the pasted objects; void only where Cityscapes is void
        assert not (changed & (anomaly != 1)).any()
        assert torch.equal(anomaly == 255, (inlier["label"] == 255) & (anomaly != 1))
    # reproducible from the seed
    again = make_static_like(cityscapes, tmp_path / "again", split="val", blend=blend, seed=3)
    for path in folder.iterdir():
        other = again / path.name
        if path.suffix == ".png":
            assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(other)))
        else:
            assert np.array_equal(np.load(path)["rgb"], np.load(other)["rgb"])
    with pytest.raises(FileExistsError, match="already holds files"):
        make_static_like(cityscapes, tmp_path / "made")


def test_make_anomaly_set_cli(tmp_path, capsys):
    from fsbench.cli.data import main

    cityscapes = make_cityscapes(tmp_path / "cs")
    out = tmp_path / "made"
    assert (
        main(["make-anomaly-set", str(cityscapes), str(out), "--count", "1", "--blend", "hard"])
        == 0
    )
    assert "fs_val_v3" in capsys.readouterr().out
    assert len(list((out / "fs_val_v3").glob("*_labels.png"))) == 1
    assert main(["make-anomaly-set", str(cityscapes), str(out)]) == 1  # not empty: refused
    assert "already holds files" in capsys.readouterr().err
    assert main(["make-anomaly-set", str(tmp_path / "none"), str(tmp_path / "x")]) == 1
