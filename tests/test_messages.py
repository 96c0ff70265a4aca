"""Bad input gets a message that names the problem and the fix (issue 7, requirement 6)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from baselines.gaussian import ClassConditionalGaussian
from baselines.softmax import MaxLogit
from fsbench.data import SegmentationDataModule
from fsbench.heads import AnomalyHead
from fsbench.lit.evaluation import AnomalyEvaluation
from fsbench.models import Segmenter, SegOutput, load_segmenter, save_segmenter

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


def test_unknown_head_lists_the_available_ones():
    with pytest.raises(MissingConfigException) as error:
        _compose("head=no_such_head")
    message = str(error.value)
    assert "Could not find 'head/no_such_head'" in message
    assert "Available options in 'head'" in message
    for head in ("energy", "gaussian", "max_softmax", "void_classifier"):
        assert head in message


def test_unknown_dataset_lists_the_available_ones():
    with pytest.raises(MissingConfigException) as error:
        _compose("data=no_such_data")
    assert "Available options in 'data'" in str(error.value)
    assert "fishyscapes" in str(error.value) and "synthetic" in str(error.value)


def test_unknown_head_on_the_command_line_is_one_message_without_a_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "evaluate.py"), "head=no_such_head"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "Available options in 'head'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unknown_encoder_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown encoder 'resnet999'") as error:
        Segmenter(encoder_name="resnet999")
    assert "resnet101" in str(error.value) and "model.encoder_name=NAME" in str(error.value)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_segmenter(Segmenter(encoder_name="resnet18", num_classes=10), path)
    return path


def test_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; train one with `python train.py`"):
        load_segmenter(tmp_path / "nothing.ckpt")


def test_truncated_checkpoint_is_named_unreadable(tiny_checkpoint, tmp_path):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable PyTorch file.*truncated by a killed job"):
        load_segmenter(cut)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "objects.ckpt"
    torch.save({"segmenter_config": {}, "state_dict": {}, "where": Path("/tmp")}, path)
    with pytest.raises(ValueError, match=r"weights_only=True.*Unsupported global"):
        load_segmenter(path)


def _relabel(path: Path, out: Path, **config) -> Path:
    stored = torch.load(path, weights_only=True)
    stored["segmenter_config"].update(config)
    torch.save(stored, out)
    return out


def test_checkpoint_with_another_number_of_classes(tiny_checkpoint, tmp_path):
    wrong = _relabel(tiny_checkpoint, tmp_path / "classes.ckpt", num_classes=19)
    with pytest.raises(ValueError) as error:
        load_segmenter(wrong)
    message = str(error.value)
    assert "does not fit the segmenter its config describes (encoder resnet18, 19 classes)" in (
        message
    )
    assert "shape mismatches" in message and "(10, 256, 1, 1) vs model (19, 256, 1, 1)" in message


def test_checkpoint_with_another_encoder(tiny_checkpoint, tmp_path):
    wrong = _relabel(tiny_checkpoint, tmp_path / "encoder.ckpt", encoder_name="resnet50")
    with pytest.raises(ValueError, match="encoder resnet50, 10 classes") as error:
        load_segmenter(wrong)
    assert "missing" in str(error.value) and "shape mismatches" in str(error.value)


def test_head_that_needs_fitting_used_without_it():
    head = ClassConditionalGaussian()
    assert head.requires_fit and not head.is_fitted
    out = SegOutput(logits=torch.zeros(1, 19, 4, 4), features=torch.zeros(1, 8, 4, 4))
    with pytest.raises(RuntimeError, match="has not been fitted: call head.fit"):
        head.score(out)


class _NaNHead(AnomalyHead):
    def score(self, out: SegOutput) -> torch.Tensor:
        score = MaxLogit.from_logits(out.logits)
        score[:, 5, 7] = float("nan")
        return score


def test_non_finite_score_names_the_pixel():
    segmenter = Segmenter(encoder_name="resnet18", num_classes=4).eval()
    module = AnomalyEvaluation(segmenter, {"nan": _NaNHead()}, ["a"], ["a"])
    anomaly = torch.zeros(1, 32, 32, dtype=torch.uint8)
    anomaly[:, :4] = 1
    batch = {"image": torch.rand(1, 3, 32, 32), "anomaly": anomaly}
    with pytest.raises(ValueError, match=r"1 non-void pixels have non-finite scores.*\(0, 5, 7\)"):
        module.test_step(batch, 0)


def test_empty_dataset_is_named():
    data = SegmentationDataModule(train=[], anomaly={"fs_lost_and_found": []})
    with pytest.raises(ValueError, match=r"the anomaly.fs_lost_and_found set \(list\) is empty"):
        data.anomaly_dataloaders()
    with pytest.raises(ValueError, match="the train set .* is empty; check data.train"):
        data.train_dataloader()


def test_unknown_logger_lists_the_available_ones(tmp_path):
    from fsbench.loggers import make_loggers

    with pytest.raises(ValueError, match="unknown logger 'wandb'; choose from csv, tensorboard"):
        make_loggers("wandb", tmp_path)


def test_input_errors_print_one_message_and_exit_1(capsys, monkeypatch):
    from fsbench.pipelines import report_input_errors

    def missing():
        raise FileNotFoundError("checkpoint x.ckpt does not exist; pass checkpoint=PATH")

    with pytest.raises(SystemExit) as stop:
        report_input_errors(missing)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint x.ckpt does not exist; pass checkpoint=PATH")
    monkeypatch.setenv("FSBENCH_TRACEBACK", "1")  # developers get the exception itself
    with pytest.raises(FileNotFoundError):
        report_input_errors(missing)
    assert report_input_errors(lambda: 3) == 3


def _entry_point(script: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / script), *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def test_unset_dataset_roots_are_one_error_line_with_the_override(tmp_path):
    result = _entry_point("evaluate.py", "data=fishyscapes", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    (error,) = errors
    assert error.startswith(
        "error: data.shared.cityscapes_root, data.shared.fishyscapes_root, "
        "data.shared.lostandfound_root have no value"
    )
    assert (
        "python evaluate.py data=fishyscapes data.shared.cityscapes_root=/path/to/cityscapes "
        "data.shared.fishyscapes_root=/path/to/fishyscapes "
        "data.shared.lostandfound_root=/path/to/lostandfound"
    ) in error
    assert not list(tmp_path.rglob("results.json"))


def test_train_names_its_unset_value_too(tmp_path):
    result = _entry_point("train.py", "data=cityscapes", "trainer.max_steps=1", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert (
        "error: data.shared.cityscapes_root has no value (??? in the config); set it on the "
        "command line, e.g. python train.py data=cityscapes trainer.max_steps=1 "
        "data.shared.cityscapes_root=/path/to/cityscapes\n"
    ) in result.stderr


def test_unset_value_outside_the_data_config_is_named():
    from fsbench.pipelines import check_mandatory_values

    cfg = _compose("head=ensemble")
    with pytest.raises(ValueError, match=r"^head\.ensemble\.checkpoints has no value") as error:
        check_mandatory_values(cfg, "evaluate.py")
    assert "head.ensemble.checkpoints=[/path/to/seed1.ckpt,/path/to/seed2.ckpt]" in str(error.value)
    check_mandatory_values(_compose(), "evaluate.py")  # the defaults set every value


def test_a_missing_value_read_later_is_one_message_too(capsys):
    from omegaconf import OmegaConf

    from fsbench.pipelines import report_input_errors

    cfg = OmegaConf.create({"data": {"root": "???", "train": {"root": "${..root}"}}})
    with pytest.raises(SystemExit):
        report_input_errors(lambda: cfg.data.train.root)
    err = capsys.readouterr().err
    assert err.startswith("error: data.root has no value (??? in the config)")  # the one to set
    assert "data.root=/path/to/data" in err.splitlines()[0]
    with pytest.raises(SystemExit):
        report_input_errors(lambda: cfg.data.root)
    assert capsys.readouterr().err.startswith("error: data.root has no value")
