"""Evaluation precision is the evaluation's own setting: float32 unless fast.autocast.

A trainer config's ``precision`` (conf/trainer/gpu.yaml: 16-mixed) is a training setting;
``evaluate.py`` replaces it by float32 and says so once.
"""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from fsbench.models import Segmenter, save_segmenter
from fsbench.pipelines import evaluate

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "note: trainer.precision="


def _compose(*overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)  # a random network: bf16 would change its scores (AP 0.03238 -> 0.03256)
    path = tmp_path_factory.mktemp("ckpt") / "random.ckpt"
    save_segmenter(Segmenter("resnet18", num_classes=19, decoder_channels=16), path)
    return path


def _evaluate(checkpoint: Path, out: Path, *overrides: str) -> dict:
    cfg = _compose(
        f"checkpoint={checkpoint}",
        "data.shared.height=64",
        "data.shared.width=128",
        "data.train.length=4",
        "data.val.length=2",
        "data.anomaly.synthetic_anomaly.length=3",
        "head=[max_logit,energy]",
        "report_images=0",
        "trainer.enable_progress_bar=false",
        *overrides,
    )
    return evaluate(cfg, out)


def test_trainer_precision_is_ignored_with_one_notice(checkpoint, tmp_path, capsys):
    plain = _evaluate(checkpoint, tmp_path / "fp32", "trainer.precision=32-true")
    assert NOTICE not in capsys.readouterr().err
    mixed = _evaluate(checkpoint, tmp_path / "bf16", "trainer.precision=bf16-mixed")
    err = capsys.readouterr().err
    assert err.count(NOTICE) == 1
    assert "trainer.precision=bf16-mixed is a training setting, ignored for evaluation" in err
    assert "fast.autocast=bf16" in err  # how to get mixed precision instead
    # Same process, same threads, same float32 network: every number bit-identical (compared as
    # JSON text, where the NaN IoU of a class absent from the tiny val set equals itself).
    assert json.dumps(mixed["results"]) == json.dumps(plain["results"])
    assert mixed["precision"] == plain["precision"] == "32-true"  # what the network ran in
    assert mixed["config"]["trainer"]["precision"] == "bf16-mixed"  # and what was asked


def test_fast_autocast_is_named_as_the_precision_in_use(checkpoint, tmp_path, capsys):
    payload = _evaluate(
        checkpoint, tmp_path / "auto", "trainer.precision=16-mixed", "fast.autocast=bf16"
    )
    err = capsys.readouterr().err
    assert err.count(NOTICE) == 1 and "fast.autocast=bf16 sets it here" in err
    assert payload["precision"] == "bf16"


def test_fishyscapes_post_hoc_recipe_evaluates_in_float32():
    cfg = _compose("+experiment=fishyscapes/post_hoc")
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.precision == "32-true" and cfg.fast.autocast is None
