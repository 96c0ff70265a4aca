"""What the train and evaluate pipelines share: config checks, input errors, the heads."""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra.utils
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from fsbench.heads import AnomalyHead

# What fsbench raises about a run's input (paths, checkpoints, labels, options); hydra wraps
# errors raised while building an object from a config in InstantiationException; omegaconf
# raises MissingMandatoryValue on reading a ``???`` value that check_mandatory_values missed.
INPUT_ERRORS = (
    ValueError,
    FileNotFoundError,
    ModuleNotFoundError,
    InstantiationException,
    MissingMandatoryValue,
)


def report_input_errors(run: Callable[[], Any]) -> Any:
    """Run an entry point; an input error prints as one message (no traceback) and exits 1.

    fsbench's messages name the problem and the fix; a traceback through Lightning and Hydra
    would bury them. ``FSBENCH_TRACEBACK=1`` re-raises, for debugging.
    """
    try:
        return run()
    except INPUT_ERRORS as error:
        if os.environ.get("FSBENCH_TRACEBACK"):
            raise
        message = str(error)
        if isinstance(error, (MissingMandatoryValue, InterpolationToMissingValueError)):
            message = missing_values_message([_missing_key(error)], _script_name())
        print(
            f"error: {message}\n(set FSBENCH_TRACEBACK=1 to see the traceback)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def _missing_key(error: Exception) -> str:
    """The unset key of omegaconf's (several-line) error; an interpolation's target if any."""
    named = re.search(r"Missing mandatory value: (\S+)", str(error))
    if isinstance(error, InterpolationToMissingValueError) and named:
        return named.group(1)
    return getattr(error, "full_key", None) or (named.group(1) if named else "?")


def _script_name() -> str:
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return script if script in ("train.py", "evaluate.py") else "evaluate.py"


def _example_value(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
    if leaf.endswith("root"):
        return f"/path/to/{leaf.removesuffix('root').rstrip('_') or 'data'}"
    if leaf == "checkpoints":
        return "[/path/to/seed1.ckpt,/path/to/seed2.ckpt]"
    if "checkpoint" in leaf or "path" in leaf:
        return "/path/to/file"
    return "VALUE"


def missing_values_message(keys: list[str], script: str) -> str:
    """One line: which config values are unset (``???``) and a command line that sets them."""
    given = [str(o) for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []
    given = [o for o in given if o.split("=", 1)[0].lstrip("+~") not in keys]
    settings = [f"{key}={_example_value(key)}" for key in keys]
    example = " ".join(["python", script, *map(shlex.quote, given + settings)])
    what = f"{keys[0]} has" if len(keys) == 1 else f"{', '.join(keys)} have"
    them = "it" if len(keys) == 1 else "them"
    return f"{what} no value (??? in the config); set {them} on the command line, e.g. {example}"


def _missing_keys(node: Any, prefix: str) -> list[str]:
    """Dotted keys of the ``???`` values in a config container, interpolations left unresolved."""
    if isinstance(node, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
    else:
        return [prefix] if node == "???" else []
    return [key for name, value in items for key in _missing_keys(value, name)]


def check_mandatory_values(cfg: DictConfig, script: str) -> None:
    """Raise one ValueError naming every ``???`` value of the composed config, with the fix."""
    missing = _missing_keys(OmegaConf.to_container(cfg, resolve=False), "")
    if missing:
        raise ValueError(missing_values_message(missing, script))


def selected_heads(cfg: DictConfig) -> dict[str, AnomalyHead]:
    heads = cfg.get("head") or {}
    return {name: hydra.utils.instantiate(head_cfg) for name, head_cfg in heads.items()}
