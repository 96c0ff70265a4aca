"""Community layouts: one small dataset written in every layout gives identical metrics.

Each anomaly set's frames are built once (images, decoded 0 / 1 / 255 labels) and written in
every layout fsbench reads: official, SynBoost ``data_processed``, the ``images/`` +
``labels_masks/`` "Validation_Dataset", the flat Lost & Found folder and pre-blended Static. Every
tree is read back with ``layout="auto"`` and scored by the same fake score function through
:class:`AnomalyMetrics`; the metrics must equal scikit-learn's on the canonical pixels, whatever
the layout. Malformed variants must fail naming the problem and the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features
from sklearn.metrics import average_precision_score, roc_auc_score
from test_datasets import _save

from fsbench.cli.data import main as cli_main
from fsbench.data.anomaly_sets import FishyscapesLostAndFound, RoadAnomaly
from fsbench.data.check import DatasetError
from fsbench.data.convert import build_reader, convert, detect
from fsbench.data.layouts import LAYOUTS, merge_label_map
from fsbench.metrics.anomaly import AnomalyMetrics

H, W = 32, 64
LAF_IDS = [
    (10, "01_Hanns_Klemm_Str_45_000000_000100"),
    (2, "13_Elly_Beinhorn_Str_000000_000200"),
    (7, "02_Hanns_Klemm_Str_44_000001_000050"),
]
CS_IDS = [(0, "frankfurt_000000_000294"), (1, "aachen_000042_000019"), (5, "lindau_000001_000019")]
SMIYC_IDS = ["validation0000", "validation0001", "road.scene_1.5"]
RA_NAMES = ["animals01_Guardian_A", "cones03_Parking_2", "tent0.2_road"]


def canonical(k: int, void: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Frame k: an RGB image uint8 [H, W, 3] and its decoded label uint8 [H, W] (0 / 1 / 255).

    Frame 2 holds no anomaly pixel (kept, as the benchmarks keep such frames). The image's blue
    channel is brighter on anomalies but overlaps the inliers, so the fake score is imperfect.
    """
    rng = np.random.default_rng(k)
    image = rng.integers(0, 200, (H, W, 3), dtype=np.uint8)
    label = np.zeros((H, W), np.uint8)
    if k != 2:
        label[8 + k : 20 + k, 10 * k + 5 : 10 * k + 17] = 1
    image[..., 2][label == 1] = rng.integers(120, 256, int((label == 1).sum()), dtype=np.uint8)
    if void:
        label[:3, :] = 255
        label[:, -2:] = 255
    return image, label


def fake_score(image: torch.Tensor) -> torch.Tensor:
    """float32 [3, H, W] in [0, 1] -> [H, W]: a pixel-wise function of the image only.

    Integer-valued (4 * blue + red, 0..1275), so that AnomalyMetrics' histogram bins hold one
    distinct score each and its result is exact, comparable with scikit-learn to 1e-9.
    """
    return (image[2] * 255).round() * 4 + (image[0] * 255).round()


def reference_metrics(void: bool = True, frames: int = 3) -> dict[str, float]:
    """scikit-learn on the pooled valid pixels of the canonical frames (independent of fsbench)."""
    scores, labels = [], []
    for k in range(frames):
        image, label = canonical(k, void)
        tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255
        scores.append(fake_score(tensor).numpy().ravel())
        labels.append(label.ravel())
    score, label = np.concatenate(scores), np.concatenate(labels)
    valid = label != 255
    return {
        "ap": average_precision_score(label[valid], score[valid]),
        "auroc": roc_auc_score(label[valid], score[valid]),
    }


def evaluate(dataset) -> tuple[dict[str, float], list[tuple]]:
    """Pooled metrics of the fake score over ``dataset``, and the sorted per-frame fingerprints."""
    metric = AnomalyMetrics()
    prints = []
    for index in range(len(dataset)):
        item = dataset[index]
        assert set(item) == {"image", "anomaly", "name"}
        assert item["anomaly"].dtype == torch.uint8
        metric.update(fake_score(item["image"])[None], item["anomaly"][None])
        prints.append(
            (
                tuple(torch.bincount(item["anomaly"].flatten().long(), minlength=256)[[0, 1, 255]]),
                round(float(item["image"].sum()), 3),
            )
        )
    values = metric.compute()
    return {key: float(values[key]) for key in ("ap", "auroc")}, sorted(prints)


# ------------------------------------------------------------------------------ tree writers
def _png(path: Path, array: np.ndarray) -> Path:
    return _save(path, array)


def _pair(folder: Path, images: str, labels: str, stem, image, label) -> None:
    """A community layout's frame: ``folder/images/<stem>.png`` and ``folder/labels/<stem>.png``."""
    _png(folder / images / f"{stem}.png", image)
    _png(folder / labels / f"{stem}.png", label)


COMMUNITY_ROOTS = {"synboost": "data_processed", "validation_dataset": "Validation_Dataset"}


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def write_fs_lost_and_found(tmp: Path, layout: str, void_as: int = 255) -> dict:
    """One tree of the 3 frames in ``layout``; returns the reader's keyword arguments."""
    root = tmp / f"laf_{layout}"
    for k, (fs_id, laf_id) in enumerate(LAF_IDS):
        image, label = canonical(k)
        label = np.where(label == 255, void_as, label).astype(np.uint8)
        if layout == "official":
            sequence = laf_id[: -len("_000000_000000")]
            split = "test" if k else "train"
            left = root / "lostandfound/leftImg8bit" / split / sequence
            _png(left / f"{laf_id}_leftImg8bit.png", image)
            _png(
                root / f"fishyscapes/fishyscapes_lostandfound/{fs_id:04d}_{laf_id}_labels.png",
                label,
            )
        elif layout == "synboost":
            folder = root / "data_processed/fishyscapes/LostAndFound"
            _pair(folder, "original", "labels", f"{fs_id:04d}_{laf_id}", image, label)
        elif layout == "validation_dataset":
            folder = root / "Validation_Dataset/FS_LostFound_full"
            _pair(folder, "images", "labels_masks", k, image, label)
        else:  # flat
            _png(root / "Fishyscapes/laf_images" / f"{laf_id}_leftImg8bit.png", image)
            _png(
                root / f"Fishyscapes/fishyscapes_lostandfound/{fs_id:04d}_{laf_id}_labels.png",
                label,
            )
    if layout == "official":
        return {"root": root / "fishyscapes", "laf_root": root / "lostandfound"}
    return {"root": root / COMMUNITY_ROOTS.get(layout, "")}


def write_fs_static(tmp: Path, layout: str) -> dict:
    root = tmp / f"static_{layout}"
    for k, (fs_id, cs_id) in enumerate(CS_IDS):
        image, label = canonical(k)
        name = f"{fs_id:04d}_{cs_id}"
        if layout == "official":
            offset = np.where(np.arange(W) % 2, 30, -30).astype(np.int16)[None, :, None]
            base = np.clip(image.astype(np.int16) + offset, 0, 255).astype(np.uint8)
            overlay = image.astype(np.int16) - base  # signed: base + overlay is the image
            city = cs_id.split("_")[0]
            _png(root / "cityscapes/leftImg8bit/val" / city / f"{cs_id}_leftImg8bit.png", base)
            (root / "fishyscapes/fs_val_v3").mkdir(parents=True, exist_ok=True)
            np.savez_compressed(root / f"fishyscapes/fs_val_v3/{name}_rgb.npz", rgb=overlay)
            _png(root / f"fishyscapes/fs_val_v3/{name}_labels.png", label)
        elif layout == "synboost":
            folder = root / "data_processed/fishyscapes/Static"
            _pair(folder, "original", "labels", name, image, label)
        elif layout == "validation_dataset":
            _pair(root / "Validation_Dataset/fs_static", "images", "labels_masks", k, image, label)
        else:  # preblended
            _png(root / "fs_static_images_v3" / f"{name}_rgb.png", image)
            _png(root / "fs_val_v3" / f"{name}_labels.png", label)
    if layout == "official":
        return {"root": root / "fishyscapes", "cityscapes_root": root / "cityscapes"}
    return {"root": root / COMMUNITY_ROOTS.get(layout, "")}


def write_road_anomaly(tmp: Path, layout: str, jpegs: Path) -> dict:
    """Road Anomaly ships JPEGs: every layout gets the same JPEG bytes, hence the same pixels."""
    root = tmp / f"ra_{layout}"
    for k, name in enumerate(RA_NAMES):
        _, label = canonical(k, void=False)
        if layout == "official":
            frames = root / "RoadAnomaly/RoadAnomaly_jpg/frames"
            _copy(jpegs / f"{k}.jpg", frames / f"{name}.jpg")
            _png(frames / f"{name}.labels/labels_semantic.png", label * 2)
        elif layout == "synboost":
            folder = root / "data_processed/road_anomaly"
            _copy(jpegs / f"{k}.jpg", folder / "original" / f"{name}.jpg")
            _png(folder / "labels" / f"{name}.png", label)
        else:
            folder = root / "Validation_Dataset/RoadAnomaly"
            _copy(jpegs / f"{k}.jpg", folder / "images" / f"{k}.jpg")
            _png(folder / "labels_masks" / f"{k}.png", label * 2)
    if layout == "official":
        (root / "RoadAnomaly/RoadAnomaly_jpg/frame_list.json").write_text(
            json.dumps([f"{n}.jpg" for n in RA_NAMES])
        )
        return {"root": root / "RoadAnomaly"}  # the folder holding RoadAnomaly_jpg/
    return {"root": root / COMMUNITY_ROOTS[layout]}


def write_smiyc(tmp: Path, layout: str, track: str) -> dict:
    ext = "webp" if track == "obstacle" else "png"
    root = tmp / f"smiyc_{track}_{layout}"
    for k, fid in enumerate(SMIYC_IDS):
        image, label = canonical(k)
        options = {"lossless": True} if ext == "webp" else {}
        if layout == "official":
            folder = root / (
                "dataset_ObstacleTrack" if track == "obstacle" else "dataset_AnomalyTrack"
            )
            _save(folder / "images" / f"{fid}.{ext}", image, **options)
            _png(folder / "labels_masks" / f"{fid}_labels_semantic.png", label)
            _save(folder / "labels_masks" / f"{fid}_labels_semantic_color.png", image)
        else:
            folder = root / ("RoadObsticle21" if track == "obstacle" else "RoadAnomaly21")
            _save(folder / "images" / f"{k}.{ext}", image, **options)
            _png(folder / "labels_masks" / f"{k}.png", label)
    return {"root": root, "track": track}


def _jpegs(tmp: Path) -> Path:
    folder = tmp / "jpegs"
    for k in range(3):
        _save(folder / f"{k}.jpg", canonical(k, void=False)[0], quality=95)
    return folder


def _jpeg_reference(jpegs: Path) -> tuple[dict[str, float], list]:
    """Road Anomaly's reference: the decoded JPEG pixels (lossy, the same in every layout)."""
    scores, labels = [], []
    for k in range(3):
        image = np.asarray(Image.open(jpegs / f"{k}.jpg").convert("RGB"))
        tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255
        scores.append(fake_score(tensor).numpy().ravel())
        labels.append(canonical(k, void=False)[1].ravel())
    score, label = np.concatenate(scores), np.concatenate(labels)
    return {"ap": average_precision_score(label, score), "auroc": roc_auc_score(label, score)}


needs_webp = pytest.mark.skipif(not features.check("webp"), reason="Pillow without WebP")

CASES = [
    *[("fs_lost_and_found", name) for name in LAYOUTS["fs_lost_and_found"]],
    *[("fs_static", name) for name in LAYOUTS["fs_static"]],
    *[("smiyc_anomaly", name) for name in LAYOUTS["smiyc_anomaly"]],
    *[pytest.param("smiyc_obstacle", name, marks=needs_webp) for name in LAYOUTS["smiyc_obstacle"]],
]


def _write(dataset: str, layout: str, tmp: Path) -> dict:
    if dataset == "fs_lost_and_found":
        return write_fs_lost_and_found(tmp, layout)
    if dataset == "fs_static":
        return write_fs_static(tmp, layout)
    return write_smiyc(tmp, layout, dataset.removeprefix("smiyc_"))


def _reader(dataset: str, kwargs: dict, **extra):
    kwargs = {**kwargs, **extra}
    track = kwargs.pop("track", None)
    if track is not None:
        return build_reader(f"smiyc_{track}", **kwargs)
    return build_reader(dataset, **kwargs)


# ------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("dataset", "layout"), CASES)
def test_every_layout_gives_the_reference_metrics(tmp_path, dataset, layout):
    reader = _reader(dataset, _write(dataset, layout, tmp_path))
    assert reader.layout == layout  # detected, not forced
    assert len(reader) == 3
    metrics, prints = evaluate(reader)
    reference = reference_metrics()
    assert metrics["ap"] == pytest.approx(reference["ap"], abs=1e-9)
    assert metrics["auroc"] == pytest.approx(reference["auroc"], abs=1e-9)
    expected = []
    for k in range(3):
        image, label = canonical(k)
        counts = tuple(int((label == v).sum()) for v in (0, 1, 255))
        expected.append((counts, round(float(torch.from_numpy(image).float().div(255).sum()), 3)))
    assert prints == sorted(expected)  # same frames, same pixels


def test_road_anomaly_layouts_give_identical_metrics(tmp_path):
    jpegs = _jpegs(tmp_path)
    reference = _jpeg_reference(jpegs)
    for layout in LAYOUTS["road_anomaly"]:
        reader = RoadAnomaly(**write_road_anomaly(tmp_path, layout, jpegs))
        assert reader.layout == layout and len(reader) == 3
        metrics, _ = evaluate(reader)
        assert metrics["ap"] == pytest.approx(reference["ap"], abs=1e-9), layout
        assert metrics["auroc"] == pytest.approx(reference["auroc"], abs=1e-9), layout


def test_flat_lost_and_found_keeps_official_names_and_integer_order(tmp_path):
    reader = FishyscapesLostAndFound(**write_fs_lost_and_found(tmp_path, "flat"))
    assert [s.name for s in reader.samples] == [
        f"{fs_id:04d}_{laf_id}" for fs_id, laf_id in sorted(LAF_IDS)
    ]
    assert reader.title == "Fishyscapes Lost & Found (flat layout)"


def test_void_stored_as_2_fails_listing_values_and_the_remap_option(tmp_path):
    kwargs = write_fs_lost_and_found(tmp_path, "validation_dataset", void_as=2)
    reader = FishyscapesLostAndFound(**kwargs)
    with pytest.raises(DatasetError) as error:
        reader[0]
    message = str(error.value)
    assert re.search(r"0\.png: unexpected label values \[2\]", message), message
    assert "expected values [0, 1, 255]" in message
    assert "DenseHybrid" in message and "data.shared.label_map={2:255}" in message
    remapped = FishyscapesLostAndFound(**kwargs, label_map={2: 255})
    assert "with label_map 2 -> 255" in remapped.expected_description
    metrics, _ = evaluate(remapped)
    assert metrics["ap"] == pytest.approx(reference_metrics()["ap"], abs=1e-9)


def test_synboost_road_anomaly_refuses_original_value_2(tmp_path):
    jpegs = _jpegs(tmp_path)
    kwargs = write_road_anomaly(tmp_path, "synboost", jpegs)
    label = kwargs["root"] / "road_anomaly/labels" / f"{RA_NAMES[1]}.png"
    _png(label, canonical(1, void=False)[1] * 2)
    with pytest.raises(
        DatasetError, match=r"unexpected label values \[2\].*road_anomaly/labels hold 0 / 1"
    ):
        RoadAnomaly(**kwargs, scan=True)


def test_layout_choice_errors_name_the_fix(tmp_path):
    laf = write_fs_lost_and_found(tmp_path, "validation_dataset")["root"]
    both = tmp_path / "both"
    shutil.copytree(laf, both)
    synboost = write_fs_lost_and_found(tmp_path, "synboost")["root"]
    shutil.copytree(synboost, both / "data_processed")
    with pytest.raises(
        DatasetError,
        match=r"several layouts: synboost .*validation_dataset .*data\.shared\.layout=NAME",
    ):
        FishyscapesLostAndFound(both)
    assert FishyscapesLostAndFound(both, layout="synboost").layout == "synboost"
    with pytest.raises(
        DatasetError,
        match=r"layout 'flat' expects fishyscapes_lostandfound/DDDD_<LAF id>_labels.*not found",
    ):
        FishyscapesLostAndFound(both, layout="flat")
    with pytest.raises(
        DatasetError, match=r"no layout 'preblended'; its layouts: official, synboost"
    ):
        FishyscapesLostAndFound(both, layout="preblended")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetError, match=r"leftImg8bit does not exist.*also reads these layouts of it: synboost"
    ):
        FishyscapesLostAndFound(tmp_path / "empty", laf_root=tmp_path)
    with pytest.raises(DatasetError, match=r"official layout needs laf_root"):
        FishyscapesLostAndFound(write_fs_lost_and_found(tmp_path, "official")["root"])


def test_label_map_is_checked():
    assert merge_label_map({0: 0, 1: 1}, {"2": "255"}) == (
        {0: 0, 1: 1, 2: 255},
        " (with label_map 2 -> 255)",
    )
    with pytest.raises(ValueError, match=r"values must be 0 \(inlier\), 1 \(anomaly\) or 255"):
        merge_label_map({0: 0}, {2: 3})
    with pytest.raises(ValueError, match="not a stored 8-bit label value"):
        merge_label_map({0: 0}, {300: 255})


def test_malformed_community_trees_list_the_files(tmp_path):
    root = write_fs_static(tmp_path, "preblended")["root"]
    (root / f"fs_static_images_v3/0001_{CS_IDS[1][1]}_rgb.png").unlink()
    with pytest.raises(DatasetError, match=r"1 label file\(s\) without an image: .*0001_aachen"):
        build_reader("fs_static", root)
    root = write_fs_static(tmp_path / "b", "validation_dataset")["root"]
    _png(root / "fs_static/images/9.png", canonical(0)[0])
    with pytest.raises(DatasetError, match=r"1 image\(s\) without a label file: .*9\.png"):
        build_reader("fs_static", root)
    _png(root / "fs_static/labels_masks/1.png", canonical(1)[1][:, :10])
    (root / "fs_static/images/9.png").unlink()
    with pytest.raises(DatasetError, match=r"size mismatch in 1: .* 64x32 .* 10x32"):
        build_reader("fs_static", root)[1]


def test_detect_names_datasets_layouts_counts_and_what_is_missing(tmp_path, capsys):
    data = tmp_path / "disk"
    shutil.copytree(write_fs_lost_and_found(tmp_path, "synboost")["root"], data / "data_processed")
    shutil.copytree(
        write_fs_static(tmp_path, "synboost")["root"], data / "data_processed", dirs_exist_ok=True
    )
    shutil.copytree(
        write_smiyc(tmp_path, "validation_dataset", "anomaly")["root"], data / "Validation_Dataset"
    )
    official = write_fs_static(tmp_path, "official")
    shutil.copytree(official["root"], data / "fishyscapes")
    found = {(f.dataset, f.layout): f for f in detect(data)}
    assert set(found) == {
        ("fs_lost_and_found", "synboost"),
        ("fs_static", "synboost"),
        ("fs_static", "official"),
        ("smiyc_anomaly", "validation_dataset"),
    }
    assert all(f.frames == 3 for f in found.values())
    missing = found[("fs_static", "official")].line()
    assert "3 label file(s) found, but Cityscapes base images missing: expected" in missing
    assert "/leftImg8bit/val/<city>/<Cityscapes id>_leftImg8bit.png" in missing
    assert found[("smiyc_anomaly", "validation_dataset")].line().endswith("3 labelled frames")
    assert cli_main(["detect", str(data)]) == 1  # something is missing
    out = capsys.readouterr().out
    assert "fs_lost_and_found (Fishyscapes Lost & Found), layout synboost" in out
    args = ["detect", str(data), "--cityscapes-root", str(official["cityscapes_root"])]
    assert cli_main(args) == 0
    assert "fs_static (Fishyscapes Static), layout official" in capsys.readouterr().out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("dataset", "source", "to"),
    [
        ("fs_lost_and_found", "synboost", "official"),
        ("fs_lost_and_found", "official", "validation_dataset"),
        ("fs_static", "official", "official"),
        ("fs_static", "preblended", "validation_dataset"),
        ("smiyc_anomaly", "validation_dataset", "official"),
    ],
)
def test_convert_round_trips_reproducibly_with_checksums(tmp_path, dataset, source, to):
    kwargs = _write(dataset, source, tmp_path)
    src = {k: v for k, v in kwargs.items() if k != "track"}
    manifest_path = convert(dataset, dst=tmp_path / "out", to=to, **{"src": src.pop("root"), **src})
    manifest = json.loads(manifest_path.read_text())
    assert manifest["dataset"] == dataset and manifest["source_layout"] == source
    assert len(manifest["frames"]) == 3
    for name, digest in manifest["sha256"].items():
        assert _sha(tmp_path / "out" / name) == digest
    sums = (tmp_path / "out/SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(manifest["sha256"])
    extra = (
        {"laf_root": tmp_path / "out"}
        if dataset == "fs_lost_and_found" and to == "official"
        else {}
    )
    if dataset == "fs_static" and to == "official":
        extra = {"cityscapes_root": tmp_path / "out"}
    back = build_reader(dataset, tmp_path / "out", **extra)
    assert back.layout == to
    metrics, _ = evaluate(back)
    assert metrics["ap"] == pytest.approx(reference_metrics()["ap"], abs=1e-9)
    again = convert(dataset, dst=tmp_path / "again", to=to, **{"src": kwargs["root"], **src})
    assert again.read_bytes() == manifest_path.read_bytes()  # same bytes, same checksums


def test_convert_refuses_what_it_cannot_write(tmp_path, capsys):
    root = write_fs_lost_and_found(tmp_path, "flat")["root"]
    with pytest.raises(DatasetError, match=r"decoded values \[255\].*cannot store"):
        _convert_void_into_road_anomaly(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("")
    assert cli_main(["convert", "fs_lost_and_found", str(root), str(tmp_path / "full")]) == 1
    assert "already holds files" in capsys.readouterr().err
    assert cli_main(["convert", "fs_lost_and_found", str(root), str(tmp_path / "new")]) == 0
    assert "wrote 3 frames of fs_lost_and_found in the official layout" in capsys.readouterr().out


def _convert_void_into_road_anomaly(tmp_path: Path) -> None:
    """A Road Anomaly tree holding void (255) via label_map cannot be written as 0 / 2."""
    jpegs = _jpegs(tmp_path)
    root = write_road_anomaly(tmp_path, "synboost", jpegs)["root"]
    _png(root / "road_anomaly/labels" / f"{RA_NAMES[0]}.png", canonical(0, void=True)[1])
    convert("road_anomaly", root, tmp_path / "ra_out", label_map={255: 255})


def test_configs_pass_layout_and_label_map_to_the_readers(tmp_path):
    from hydra.utils import instantiate
    from test_datasets import _compose

    root = write_fs_lost_and_found(tmp_path, "validation_dataset", void_as=2)["root"]
    overrides = [
        "data=fishyscapes",
        "data.shared.cityscapes_root=unused",
        f"data.shared.fishyscapes_root={root}",
        "data.shared.lostandfound_root=null",
    ]
    cfg = _compose(overrides)
    reader = instantiate(cfg.data.anomaly.fs_lost_and_found)
    assert reader.layout == "validation_dataset" and len(reader) == 3
    with pytest.raises(DatasetError, match=r"unexpected label values \[2\]"):
        reader[0]
    cfg = _compose([*overrides, "data.shared.label_map={2:255}", "data.shared.layout=auto"])
    metrics, _ = evaluate(instantiate(cfg.data.anomaly.fs_lost_and_found))
    assert metrics["ap"] == pytest.approx(reference_metrics()["ap"], abs=1e-9)
    cfg = _compose([*overrides, "data.shared.layout=synboost"])
    with pytest.raises(Exception, match="layout 'synboost' expects") as error:
        instantiate(cfg.data.anomaly.fs_lost_and_found)
    assert isinstance(error.value.__cause__ or error.value, DatasetError)
