"""A tiny train + evaluate run through the real entry points, checked against scikit-learn."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from baselines.softmax import MaxLogit
from fsbench.data import SyntheticScenes
from fsbench.models import load_segmenter

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.shared.height=64",
    "data.shared.width=128",
    "data.train.length=48",
    "data.val.length=8",
    "data.anomaly.synthetic_anomaly.length=8",
    "data.batch_size=4",
    "trainer.enable_progress_bar=false",
]


def _run(script: str, outputs: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        str(ROOT / script),
        *[flag for flag in overrides if flag.startswith("--")],  # Hydra flags precede overrides
        *TINY,
        f"paths.outputs={outputs / 'outputs'}",
        f"paths.multirun={outputs / 'multirun'}",
        *[override for override in overrides if not override.startswith("--")],
    ]
    result = subprocess.run(command, cwd=outputs, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("run")
    _run(
        "train.py",
        workdir,
        "trainer.max_steps=24",
        "trainer.log_every_n_steps=1",
        "checkpoint_every_n_steps=12",
    )
    return workdir


def _train_dir(workdir: Path) -> Path:
    (run,) = (workdir / "outputs" / "train").iterdir()
    return run


def test_training_writes_a_checkpoint_and_reduces_the_loss(trained):
    run = _train_dir(trained)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    with open(run / "metrics.csv") as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) >= 20
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first, f"loss went from {first:.3f} to {last:.3f}"


def test_evaluate_finds_the_latest_checkpoint_and_writes_finite_results(trained):
    result = _run("evaluate.py", trained)
    (run,) = (trained / "outputs" / "evaluate").iterdir()
    payload = json.loads((run / "results.json").read_text())
    assert payload["checkpoint"] == str(_train_dir(trained) / "checkpoints" / "last.ckpt")
    assert list(payload["results"]) == ["max_softmax", "entropy", "max_logit", "energy"]
    for entry in payload["results"].values():
        assert 0 <= entry["miou"] <= 1
        values = entry["datasets"]["synthetic_anomaly"]
        for key in ("ap", "fpr95", "auroc"):
            assert math.isfinite(values[key]) and 0 <= values[key] <= 1
        assert values["n_anomaly"] > 0 and values["n_inlier"] > values["n_anomaly"]
    assert "| max_softmax |" in (run / "results.md").read_text()
    assert (run / "curves_synthetic_anomaly.png").stat().st_size > 1000
    assert "| max_softmax |" in result.stdout  # the table is printed


def test_evaluated_numbers_match_scikit_learn_on_the_same_pixels(trained):
    checkpoint = _train_dir(trained) / "checkpoints" / "last.ckpt"
    out_dir = trained / "single"
    _run(
        "evaluate.py",
        trained,
        f"checkpoint={checkpoint}",
        "head=max_logit",
        "per_image=true",
        f"hydra.run.dir={out_dir}",
    )
    reported = json.loads((out_dir / "results.json").read_text())["results"]["max_logit"]
    curves = json.loads((out_dir / "curves.json").read_text())["curves"]

    segmenter = load_segmenter(checkpoint)
    dataset = SyntheticScenes("anomaly", 8, 64, 128)
    scores, labels = [], []
    with torch.inference_mode():
        for i in range(len(dataset)):
            item = dataset[i]
            score = MaxLogit.from_logits(segmenter(item["image"][None]).logits)[0]
            valid = item["anomaly"] != 255
            scores.append(score[valid].numpy())
            labels.append(item["anomaly"][valid].numpy())
    values = reported["datasets"]["synthetic_anomaly"]
    first = values["per_image"][0]
    assert first["name"] == "synthetic_anomaly_00000"
    # evaluate.py scored batches of 8 in another process, this test one image at a time: other
    # convolution shapes and thread counts, so scores equal up to float32 rounding. That may swap
    # an anomaly and an inlier scoring that close, moving AP by at most 1 / (anomaly pixels x
    # rank): 1e-4 (the pooled metrics' histogram tolerance too), not 1e-6, which assumed equality.
    if 0 < labels[0].sum() < labels[0].size:
        expected = average_precision_score(labels[0], scores[0])
        assert first["ap"] == pytest.approx(expected, abs=1e-4)
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    # The metric state is a histogram: 1e-4 is its documented tolerance on continuous scores, and
    # results.json bounds what the binning may have cost.
    assert values["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-4)
    assert values["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-4)
    binning = values["binning"]
    assert binning["bin_bits"] == 22 and binning["ap_error_bound"] >= 0.0
    low, high = binning["ap_interval"]
    assert low - 1e-4 <= average_precision_score(labels, scores) <= high + 1e-4
    assert values["n_anomaly"] == int(labels.sum())
    curve = curves["max_logit"]["synthetic_anomaly"]
    assert curve["tpr"][-1] == 1.0 and curve["fpr"][-1] == 1.0 and len(curve["tpr"]) <= 1000


def test_multirun_over_heads_gives_one_result_per_job(trained):
    checkpoint = _train_dir(trained) / "checkpoints" / "last.ckpt"
    _run(
        "evaluate.py", trained, "--multirun", f"checkpoint={checkpoint}", "head=max_softmax,energy"
    )
    (sweep,) = (trained / "multirun" / "evaluate").iterdir()
    heads = sorted(
        next(iter(json.loads((job / "results.json").read_text())["results"]))
        for job in sweep.iterdir()
        if (job / "results.json").is_file()
    )
    assert heads == ["energy", "max_softmax"]


def _fails(cwd: Path, *arguments: str) -> str:
    """Run evaluate.py expecting an error; return what it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "evaluate.py"), *arguments]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    return result.stderr + result.stdout


def test_evaluate_without_any_checkpoint_says_how_to_get_one(tmp_path):
    output = _fails(
        tmp_path,
        f"paths.outputs={tmp_path / 'none'}",
        f"paths.multirun={tmp_path / 'none'}",
        f"hydra.run.dir={tmp_path / 'ev'}",
    )
    assert "error: no training checkpoint found" in output
    assert "Traceback" not in output  # the message alone, not a stack through Hydra
    assert "FSBENCH_TRACEBACK=1" in output


def test_training_time_head_trains_then_evaluates_and_plain_checkpoint_is_refused(trained):
    _run(
        "train.py",
        trained,
        "+experiment=synthetic/void_classifier",
        "trainer.max_steps=4",
        "data.train.length=16",
    )
    (run,) = (trained / "outputs" / "train_void_classifier").iterdir()
    checkpoint = run / "checkpoints" / "last.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert stored["fsbench_head_class"] == "baselines.training.VoidClassifier"
    assert any(key.startswith("head.void_logit") for key in stored["state_dict"])
    out_dir = trained / "void"
    _run(
        "evaluate.py",
        trained,
        f"checkpoint={checkpoint}",
        "head=[void_classifier,max_softmax]",
        f"hydra.run.dir={out_dir}",
    )
    results = json.loads((out_dir / "results.json").read_text())["results"]
    assert set(results) == {"void_classifier", "max_softmax"}
    assert 0 <= results["void_classifier"]["datasets"]["synthetic_anomaly"]["ap"] <= 1
    # the same head on a checkpoint trained without it: refused, with the fix
    plain = _train_dir(trained) / "checkpoints" / "last.ckpt"
    output = _fails(
        trained,
        *TINY,
        f"checkpoint={plain}",
        "head=void_classifier",
        f"hydra.run.dir={trained / 'refused'}",
    )
    assert "trained with no training-time head" in output


def test_evaluate_protocols_equal_fsbench_score_on_the_saved_maps(trained, tmp_path):
    """evaluate.py protocol=[...] and fsbench score run one code path: identical numbers."""
    from fsbench.cli.score import main as score_main

    checkpoint = _train_dir(trained) / "checkpoints" / "last.ckpt"
    out_dir = trained / "protocols"
    result = _run(
        "evaluate.py",
        trained,
        f"checkpoint={checkpoint}",
        "head=max_logit",
        "protocol=[fishyscapes,smiyc,per_image]",
        "save_scores=true",
        "report_images=0",
        f"hydra.run.dir={out_dir}",
    )
    payload = json.loads((out_dir / "results.json").read_text())
    assert set(payload["protocols"]) == {"fishyscapes", "smiyc", "per_image"}
    entry = payload["results"]["max_logit"]
    evaluated = {
        "fishyscapes": entry["datasets"]["synthetic_anomaly"],
        **{name: entry["protocols"][name]["synthetic_anomaly"] for name in ("smiyc", "per_image")},
    }
    assert "components" in evaluated["smiyc"] and "siou_gt" in evaluated["smiyc"]["components"]
    assert "protocol `smiyc`" in result.stdout and "protocol `per_image`" in result.stdout
    maps = out_dir / "scores" / "max_logit" / "synthetic_anomaly"
    assert len(list(maps.glob("*.npy"))) == 8
    for protocol, values in evaluated.items():
        out = tmp_path / protocol
        argv = [str(maps), "--data", "synthetic_anomaly", "--length", "8", "--size", "64", "128"]
        assert score_main([*argv, "--protocol", protocol, "--quiet", "--out", str(out)]) == 0
        scored = json.loads((out / "results.json").read_text())["results"]
        if protocol == "fishyscapes":  # evaluate also lists the figure's per-image estimates
            values = {key: value for key, value in values.items() if key != "per_image"}
        assert scored == values, protocol
