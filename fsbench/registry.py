"""The config tree is the registry: what fsbench names (datasets, models, heads, ...) is a config.

The tree is the package ``fsbench.conf`` (the repository's ``conf/``, shipped in the wheel), so
an installed fsbench finds it wherever it runs; Hydra reads it as ``pkg://fsbench.conf``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CONF_PACKAGE = "fsbench.conf"


def conf_dir() -> Path:
    """The folder of the config tree fsbench ships (``conf/`` in a checkout)."""
    return Path(str(files(CONF_PACKAGE)))


def options(group: str, root: str | Path | None = None) -> list[str]:
    """The names of the configs in a group, e.g. ``options("head")``: ["bayesian_deeplab", ...]."""
    folder = Path(root or conf_dir()) / group
    return sorted(path.stem for path in folder.glob("*.yaml"))
