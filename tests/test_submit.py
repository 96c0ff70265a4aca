"""python -m fsbench.submit: the files the graders read, and metrics equal to the evaluation's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from submission_helpers import (
    anomaly_scenes,
    save_checkpoint,
    tiny_segmenter,
    train_loader,
    write_png,
)

from baselines.softmax import Energy, MaxSoftmax, StandardizedMaxLogit
from fsbench.cli.submit import main
from fsbench.lit.evaluation import match_label_size, predict_heads
from fsbench.metrics import AnomalyMetrics

ROOT = Path(__file__).resolve().parents[1]
FS_IDS = ["0010", "0002", "0003"]  # name order differs from the grader's integer order


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint, an SML state fitted by the evaluate.py convention, and a Fishyscapes input."""
    root = tmp_path_factory.mktemp("submit")
    segmenter = tiny_segmenter()
    checkpoint = save_checkpoint(root / "last.ckpt", segmenter)
    sml = StandardizedMaxLogit()
    sml.fit(segmenter, train_loader())
    (root / "run" / "heads").mkdir(parents=True)
    torch.save(sml.state_dict(), root / "run" / "heads" / "sml.pt")
    scenes = anomaly_scenes(len(FS_IDS))
    for fs_id, index in zip(FS_IDS, range(len(scenes)), strict=True):
        write_png(root / "input" / f"{fs_id}_synthetic_{index}.png", scenes[index]["image"])
    return {"root": root, "segmenter": segmenter, "checkpoint": checkpoint, "sml": sml}


def _in_memory(segmenter, head, cast=np.float32):
    """What the evaluation computes on the same images (batch 1), and the scores it streams."""
    metric = AnomalyMetrics()
    scores = []
    scenes = anomaly_scenes(len(FS_IDS))
    for index in range(len(scenes)):
        item = scenes[index]
        with torch.inference_mode():  # as AnomalyEvaluation.test_step
            prediction = predict_heads(segmenter, {"head": head}, item["image"][None])["head"]
            score = match_label_size(prediction.score, item["anomaly"][None])
        score = torch.from_numpy(score.numpy().astype(cast).astype(np.float32))
        metric.update(score, item["anomaly"][None])
        scores.append(score[0].numpy())
    return metric.compute(), scores


def score_tolerance(reference: np.ndarray) -> float:
    """Max abs difference allowed between score maps of the same model from two processes.

    The container command runs in another process with OMP_NUM_THREADS=1; this one may use every
    core. Convolutions split their sums by thread, so float32 scores may differ by a few ulps of
    the map's largest values: 1e-5 of the map's scale (floor 1: energies of order 1-10 here,
    20-50 for a trained model), ~80 ulps, far below any real difference (a wrong frame order or
    head). Measured here: 0 (bit-identical).
    """
    return 1e-5 * max(1.0, float(np.abs(reference).max()))


def metric_tolerance(maps: list[np.ndarray], others: list[np.ndarray]) -> float:
    """0 when the two sets of maps are bit-identical; else 1e-4 (the histogram's resolution).

    Maps that differ by rounding (see :func:`score_tolerance`) may swap an anomaly and an inlier
    pixel scoring that close, which moves AP by at most 1 / (anomaly pixels x rank) and AUROC by
    1 / (anomaly x inlier pixels): not an error. Equal maps must give equal metrics.
    """
    identical = all(np.array_equal(a, b) for a, b in zip(maps, others, strict=True))
    return 0.0 if identical else 1e-4


def _metrics_of(scores: list[np.ndarray]) -> dict:
    metric = AnomalyMetrics()
    scenes = anomaly_scenes(len(FS_IDS))
    for index, score in enumerate(scores):
        metric.update(
            torch.from_numpy(score.astype(np.float32))[None], scenes[index]["anomaly"][None]
        )
    return metric.compute()


def _args(setup, *extra: str, output: str = "out") -> list[str]:
    root = setup["root"]
    return [
        "--checkpoint", str(setup["checkpoint"]), "--input", str(root / "input"),
        "--output", str(root / output), "--device", "cpu", *extra,
    ]  # fmt: skip


def _fail(setup, *args: str, output: str = "failed") -> str:
    with pytest.raises(SystemExit) as raised:
        main(_args(setup, *args, output=output))
    return str(raised.value)


def _runscript(bake: Path, input_dir: Path, output_dir: Path) -> str:
    """deploy/fsbench.def's %runscript, with the image's paths mapped to this machine's."""
    definition = (ROOT / "deploy" / "fsbench.def").read_text()
    body = definition.split("%runscript\n", 1)[1].split("\n%", 1)[0]
    for inside, outside in [
        ("/opt/fsbench/bake", bake),
        ("/opt/fsbench/src", ROOT),
        ("/input", input_dir),
        ("/output", output_dir),
    ]:
        body = body.replace(inside, str(outside))
    return body


def test_fishyscapes_files_from_the_container_command_match_the_evaluation(setup):
    """The exact %runscript of deploy/fsbench.def, offline with an empty model cache."""
    root = setup["root"]
    bake = root / "bake"
    bake.mkdir()
    (bake / "model.ckpt").write_bytes(setup["checkpoint"].read_bytes())
    (bake / "head_name").write_text("energy\n")  # what %post writes for --build-arg HEAD=energy
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf"),
        "TORCH_HOME": str(root / "torch"),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    script = _runscript(bake, root / "input", root / "out")
    result = subprocess.run(["sh", "-c", script], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / "out"
    expected = {f"{i}_{kind}.npy" for i in FS_IDS for kind in ("anomaly", "segmentation")}
    assert {path.name for path in out.iterdir()} == expected
    scores = []
    for fs_id in sorted(FS_IDS, key=int):  # the grader's order: by integer id
        score = np.load(out / f"{fs_id}_anomaly.npy")
        segmentation = np.load(out / f"{fs_id}_segmentation.npy")
        assert score.shape == segmentation.shape == (64, 128)
        assert score.dtype == np.float32 and segmentation.dtype == np.uint8
        assert segmentation.max() <= 18 and np.isfinite(score).all()
        scores.append(score)
    # FS_IDS sorted by integer are 0002, 0003, 0010: the scenes 1, 2, 0.
    scores = [scores[2], scores[0], scores[1]]
    expected_metrics, memory_scores = _in_memory(setup["segmenter"], Energy())
    for written, memory in zip(scores, memory_scores, strict=True):
        np.testing.assert_allclose(written, memory, rtol=0, atol=score_tolerance(memory))
    from_files = _metrics_of(scores)
    tolerance = metric_tolerance(scores, memory_scores)
    for key in ("ap", "auroc", "fpr95"):
        assert from_files[key] == pytest.approx(expected_metrics[key], abs=tolerance), key
    # An independent reference (scikit-learn, exact sort) agrees on files and memory alike.
    labels = np.concatenate([anomaly_scenes(3)[i]["anomaly"].numpy().ravel() for i in range(3)])
    valid = labels != 255

    def sklearn_ap(maps: list[np.ndarray]) -> float:
        flat = np.concatenate([m.ravel() for m in maps])
        return average_precision_score(labels[valid] == 1, flat[valid])

    assert sklearn_ap(scores) == pytest.approx(sklearn_ap(memory_scores), abs=tolerance)


def test_fitted_head_is_restored_from_the_evaluate_run_state(setup):
    state = str(setup["root"] / "run" / "heads" / "sml.pt")
    assert main(_args(setup, "--head", "sml", "--head-state", state, output="sml")) == 0
    expected, memory_scores = _in_memory(setup["segmenter"], setup["sml"])
    written = np.load(setup["root"] / "sml" / "0010_anomaly.npy")
    # This process, batch 1 both (measured: bit-identical); rounding at most.
    np.testing.assert_allclose(written, memory_scores[0], rtol=0, atol=score_tolerance(written))


def test_smiyc_files_are_float16_hdf5_where_the_toolkit_reads_them(setup, tmp_path):
    track = tmp_path / "dataset_AnomalyTrack"
    scenes = anomaly_scenes(len(FS_IDS))
    fids = ["validation0000", "validation.0001", "validation0002"]  # ids may contain dots
    for fid, index in zip(fids, range(len(scenes)), strict=True):
        write_png(track / "images" / f"{fid}.png", scenes[index]["image"])
    args = ["--head", "max_softmax", "--format", "smiyc", "--input", str(track)]
    args += ["--output", str(tmp_path / "outputs"), "--checkpoint", str(setup["checkpoint"])]
    assert main(args) == 0
    folder = tmp_path / "outputs" / "anomaly_p" / "fsbench_max_softmax" / "AnomalyTrack-all"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{fid}.hdf5" for fid in fids)
    scores = []
    for fid in sorted(fids):  # the toolkit sorts frames by fid
        with h5py.File(folder / f"{fid}.hdf5", "r") as handle:
            value = handle["value"][:]
        assert value.dtype == np.float16 and value.shape == (64, 128)
        scores.append(value)
    scores = [scores[1], scores[0], scores[2]]  # sorted fids: .0001, 0000, 0002
    expected, memory = _in_memory(setup["segmenter"], MaxSoftmax(), cast=np.float16)
    # Exact on purpose: main() runs in this process on the same uint8 pixels, one image a batch,
    # so the float32 scores are bit-identical and so is their float16 rounding.
    for written, in_memory in zip(scores, memory, strict=True):
        np.testing.assert_array_equal(written.astype(np.float32), in_memory)
    from_files = _metrics_of(scores)
    for key in ("ap", "auroc", "fpr95"):
        assert from_files[key] == expected[key], key


def test_unknown_head_lists_the_available_ones(setup):
    message = _fail(setup, "--head", "nope")
    assert "unknown head 'nope'" in message and "max_softmax" in message and "sml" in message


def test_fitted_head_without_its_state_is_refused(setup):
    message = _fail(setup, "--head", "sml")
    assert "is fitted on the training set" in message and "--head-state" in message


def test_a_state_of_another_head_is_refused(setup, tmp_path):
    torch.save({"bank": torch.zeros(3, 16)}, tmp_path / "knn.pt")
    message = _fail(setup, "--head", "sml", "--head-state", str(tmp_path / "knn.pt"))
    assert "is not a fitted state of StandardizedMaxLogit" in message


def test_checkpoint_without_a_trained_head_needs_head(setup):
    message = _fail(setup)
    assert "trained without an anomaly head" in message and "--head NAME" in message


def test_non_finite_scores_are_refused_before_writing(setup):
    message = _fail(setup, "--head", "energy", "--set", "temperature=1e-40", output="nan")
    assert "non-finite scores" in message
    assert not list((setup["root"] / "nan").glob("*.npy"))


def test_scores_beyond_float16_are_refused_for_smiyc(setup, tmp_path):
    write_png(
        tmp_path / "dataset_ObstacleTrack" / "images" / "a.png", anomaly_scenes(1)[0]["image"]
    )
    args = _args(setup, "--head", "energy", "--set", "temperature=1e6", "--format", "smiyc")
    args[args.index("--input") + 1] = str(tmp_path / "dataset_ObstacleTrack")
    with pytest.raises(SystemExit, match="beyond float16's range"):
        main(args)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["frame.png"], "not named DDDD_*.png"),
        (["0001_a.png", "1_b.png"], "share one Fishyscapes id"),
        ([], "holds no DDDD_*.png"),
    ],
)
def test_bad_fishyscapes_inputs_are_named(setup, tmp_path, names, expected):
    image = anomaly_scenes(1)[0]["image"]
    (tmp_path / "in").mkdir()
    for name in names:
        write_png(tmp_path / "in" / name, image)
    args = _args(setup, "--head", "energy")
    args[args.index("--input") + 1] = str(tmp_path / "in")
    with pytest.raises(SystemExit) as raised:
        main(args)
    assert expected in str(raised.value)


def test_missing_checkpoint_is_named(setup, tmp_path):
    args = _args(setup, "--head", "energy")
    args[args.index("--checkpoint") + 1] = str(tmp_path / "missing.ckpt")
    with pytest.raises(SystemExit, match="missing.ckpt does not exist"):
        main(args)
