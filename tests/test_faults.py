"""Runs that survive faults: resume after a kill, weights-only checkpoints, atomic and
reproducible results."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from fsbench.lit.segmentation import RNG_STATES_KEY, restore_rng_states, rng_states
from fsbench.models import load_segmenter
from fsbench.pipelines import evaluate
from fsbench.report import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
# 16 scenes in batches of 4: an epoch is 4 steps; the kill comes after the first epoch's checkpoint
TINY = [
    "data.shared.height=64",
    "data.shared.width=128",
    "data.train.length=16",
    "data.val.length=4",
    "data.anomaly.synthetic_anomaly.length=4",
    "data.batch_size=4",
    "trainer.enable_progress_bar=false",
    "trainer.max_steps=8",
    "checkpoint_every_n_steps=4",
]


def _python(script: str, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / script), *TINY, *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """An uninterrupted run, a run killed (SIGKILL) at step 4, and its resumption to step 8."""
    root = tmp_path_factory.mktemp("faults")
    _ok(_python("train.py", root, f"hydra.run.dir={root / 'full'}"))
    kill = "+callbacks.kill={_target_:tests.kill_at_step.KillAtStep,step:4}"
    killed = _python("train.py", root, f"hydra.run.dir={root / 'killed'}", kill)
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: no handler, no final save
    last = root / "killed" / "checkpoints" / "last.ckpt"
    _ok(_python("train.py", root, f"hydra.run.dir={root / 'resumed'}", f"resume_from={last}"))
    return root


def test_training_resumed_after_a_kill_ends_with_the_uninterrupted_weights(runs):
    killed = torch.load(runs / "killed/checkpoints/last.ckpt", weights_only=True)
    assert killed["global_step"] == 4  # the kill came before step 5 was taken
    full = torch.load(runs / "full/checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(runs / "resumed/checkpoints/last.ckpt", weights_only=True)
    assert full["global_step"] == resumed["global_step"] == 8
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_checkpoints_load_with_weights_only(runs):
    for path in sorted((runs / "full" / "checkpoints").glob("*.ckpt")):
        stored = torch.load(path, map_location="cpu", weights_only=True)
        assert stored["segmenter_config"]["encoder_name"] == "resnet18"
        assert RNG_STATES_KEY in stored
    segmenter = load_segmenter(runs / "full/checkpoints/last.ckpt")
    assert segmenter.num_classes == 19 and not segmenter.training


def test_the_same_seed_reproduces_results_json(runs):
    checkpoint = runs / "full/checkpoints/last.ckpt"
    overrides = [o for o in TINY if not o.startswith(("trainer.max", "checkpoint_"))]
    overrides += [f"checkpoint={checkpoint}", "head=[max_softmax,energy]", "report_images=1"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    payloads = []
    for name in ("eval_a", "eval_b"):
        out = runs / name
        evaluate(cfg, out)
        payloads.append(json.loads((out / "results.json").read_text()))
        assert (out / "worst_best_synthetic_anomaly_energy.png").is_file()
        assert not list(out.glob("*.tmp"))
    first, second = payloads
    assert first["results"] == second["results"]  # every float bit-identical
    assert first["config"] == second["config"] and first["datasets"] == second["datasets"]
    assert "per_image" not in first["results"]["energy"]["datasets"]["synthetic_anomaly"]


def test_rng_states_round_trip():
    states = rng_states()
    drawn = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002 - global
    restore_rng_states(states)
    again = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002 - global
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2])


def test_a_failed_results_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"ap": 0.5})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"ap": object()})  # not JSON: fails before the file is touched
    assert json.loads(path.read_text()) == {"ap": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
