"""Training loggers chosen by name (``logger: csv | tensorboard`` in conf/train.yaml) and the
progress-bar switch that keeps non-interactive logs (batch jobs, CI, ``> log.txt``) free of
carriage-return bar updates."""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

LOGGERS = ("csv", "tensorboard")


def make_loggers(names: str | Sequence[str] | None, output_dir: str | Path) -> list[Logger]:
    """Lightning loggers writing into ``output_dir``: ``metrics.csv`` and/or TensorBoard events.

    ``names`` is one of :data:`LOGGERS`, a list of them, or None / ``[]`` for no logger. CSV writes
    ``<output_dir>/metrics.csv``; TensorBoard writes ``<output_dir>/tensorboard/events.*``
    (``tensorboard --logdir outputs/train``).
    """
    if names is None:
        return []
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise ValueError(
            f"unknown logger {unknown[0]!r}; choose from {', '.join(LOGGERS)} "
            "(e.g. logger=tensorboard or logger=[csv,tensorboard])"
        )
    loggers: list[Logger] = []
    for name in names:
        if name == "csv":
            loggers.append(CSVLogger(str(output_dir), name="", version=""))
        else:
            if not (_installed("tensorboard") or _installed("tensorboardX")):
                raise ModuleNotFoundError(
                    "logger=tensorboard needs the tensorboard package: pip install tensorboard "
                    "(or choose logger=csv)"
                )
            loggers.append(TensorBoardLogger(str(output_dir), name="tensorboard", version=""))
    return loggers


def show_progress(enabled: bool, stream=None) -> bool:
    """True if progress bars are ``enabled`` and ``stream`` (default stdout) is a terminal.

    Lightning's bar writes a carriage-return update per step even into a file; in a batch log it
    is noise, so bars show only on terminals. Loops outside Lightning (head fitting) use
    ``tqdm(..., disable=None)``, which follows the same rule.
    """
    stream = sys.stdout if stream is None else stream
    return bool(enabled) and bool(getattr(stream, "isatty", lambda: False)())


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")  # Lightning's product advertisements


# Library warnings that say nothing about the user's run (version skew inside Lightning; a run
# folder that already holds Hydra's .hydra/ when the CSV logger opens it).
_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"Experiment logs directory .* exists and is not empty.*",
)


def tidy_library_output() -> None:
    """Print each Lightning message once, without product tips or known library noise.

    Lightning gives its ``lightning`` logger a console handler *and* lets records propagate to
    the root logger, which Hydra configures (console + ``<run>/<task>.log``), so every line was
    printed twice. With Hydra's handlers in place, Lightning's own console handler goes.
    """
    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)
    # Handler filters see the records of every child logger (logger filters would not).
    for handler in [*logging.getLogger().handlers, *lightning_logger.handlers]:
        if _not_a_tip not in handler.filters:
            handler.addFilter(_not_a_tip)
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
