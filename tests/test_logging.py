"""Loggers chosen from the config, and progress bars that stay out of non-interactive logs."""

import csv
import io
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from fsbench.loggers import make_loggers, show_progress
from fsbench.pipelines import train

ROOT = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_show_on_terminals_only():
    assert show_progress(True, _Terminal())
    assert not show_progress(True, io.StringIO())  # a log file, a pipe
    assert not show_progress(False, _Terminal())


def test_logger_names_build_lightning_loggers(tmp_path):
    assert make_loggers(None, tmp_path) == [] and make_loggers([], tmp_path) == []
    (csv_logger,) = make_loggers("csv", tmp_path)
    assert isinstance(csv_logger, CSVLogger)
    both = make_loggers(["csv", "tensorboard"], tmp_path)
    assert [type(logger) for logger in both] == [CSVLogger, TensorBoardLogger]
    assert Path(both[1].log_dir) == tmp_path / "tensorboard"


def test_training_logs_the_same_losses_to_csv_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [
        "data.shared.height=64",
        "data.shared.width=128",
        "data.train.length=8",
        "data.val.length=4",
        "data.batch_size=4",
        "trainer.max_steps=3",
        "trainer.log_every_n_steps=1",
        "logger=[csv,tensorboard]",
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train(cfg, tmp_path)
    with open(tmp_path / "metrics.csv") as f:
        logged = [float(row["train/loss"]) for row in csv.DictReader(f) if row["train/loss"]]
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    scalars = [event.value for event in accumulator.Scalars("train/loss")]
    assert len(logged) == 3
    assert scalars == pytest.approx(logged, rel=1e-6)
    assert "val/miou" in accumulator.Tags()["scalars"]


def test_lightning_messages_print_once_and_without_tips(capsys):
    import logging

    from fsbench.loggers import tidy_library_output

    root = logging.getLogger()
    handler = logging.StreamHandler()  # stands in for the console handler Hydra installs
    root.addHandler(handler)
    try:
        import lightning  # noqa: F401 - its package logger carries a console handler

        tidy_library_output()
        child = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        child.info("GPU available: False, used: False")
        child.info("💡 Tip: try installing something")
        err = capsys.readouterr().err
        assert err.count("GPU available: False") == 1
        assert "Tip" not in err
        # Lightning's own console handler is gone: records reach the console through root only
        own = logging.getLogger("lightning").handlers
        assert not [h for h in own if type(h) is logging.StreamHandler]
    finally:
        root.removeHandler(handler)
