"""The config tree is the registry: what fsbench names (datasets, models, heads, ...) is a config.

The tree is the package ``fsbench.conf`` (the repository's ``conf/``, shipped in the wheel), so
an installed fsbench finds it wherever it runs; Hydra reads it as ``pkg://fsbench.conf``.

The anomaly sets are the entries of the ``anomaly:`` mappings of the data configs
(``conf/data/<group>.yaml``): :func:`anomaly_sets` lists them, :func:`build_anomaly_set` builds
one by name. The command lines (``python -m fsbench.data``, ``python -m fsbench.score``) name
sets this way, so a set added to a data config is known to all of them; no table beside the
configs maps names to readers.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_PACKAGE = "fsbench.conf"
DATA_GROUP = "data"
ADD_A_SET = (
    "A new set is added as an entry of the anomaly: mapping of a conf/data/*.yaml "
    "(NAME: {_target_: the reader class, root: ..., the reader's other arguments})."
)


def conf_dir() -> Path:
    """The folder of the config tree fsbench ships (``conf/`` in a checkout)."""
    return Path(str(files(CONF_PACKAGE)))


def options(group: str, root: str | Path | None = None) -> list[str]:
    """The names of the configs in a group, e.g. ``options("head")``: ["bayesian_deeplab", ...]."""
    folder = Path(root or conf_dir()) / group
    return sorted(path.stem for path in folder.glob("*.yaml"))


@dataclass(frozen=True)
class DatasetEntry:
    """One anomaly set: an entry of the ``anomaly:`` mapping of a data config.

    Attributes:
        name: the entry's key, e.g. ``fs_static``: the name the command lines take.
        group: the data config that defines it, e.g. ``fishyscapes`` (``data=fishyscapes``).
        target: the entry's ``_target_``, the dotted path of the reader class.
        params: the argument names the entry gives, besides ``_target_``, in its order.
        title: a human title: the reader's ``title_for(defaults)`` if it has one, else its
            ``TITLE``, else its docstring's first line up to the first comma, colon or full stop.
        roots: the arguments of ``params``, besides ``root``, that name a folder (those ending
            in ``_root``, e.g. ``laf_root``, ``cityscapes_root``).
        defaults: the arguments whose value the config fixes: literal values (``track:
            obstacle``) and interpolations that resolve within the data config (synthetic's
            ``height: ${...shared.height}``, Fishyscapes' ``version: ${...shared.static_version}``).
            Arguments left to the user (``???``, every ``root`` for instance) are absent.
    """

    name: str
    group: str
    target: str
    params: tuple[str, ...]
    title: str
    roots: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def reads_files(self) -> bool:
        """Whether the set is read from a folder (its entry gives ``root``)."""
        return "root" in self.params


def _value(node: DictConfig, key: str) -> tuple[bool, Any]:
    """(True, the plain value of ``node[key]``) if it resolves, else (False, None)."""
    if OmegaConf.is_missing(node, key):
        return False, None
    try:
        value = node[key]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException:  # ??? behind an interpolation, an unknown resolver, ...
        return False, None
    return True, value


def locate(target: str) -> Any:
    """The object a ``_target_`` names: ``package.module.Name``, imported.

    Raises:
        ValueError: if the module does not import or does not hold the name.
    """
    module_name, _, attribute = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"cannot import {target}: {error}") from error


def _title(cls: Any, defaults: Mapping[str, Any]) -> str:
    title_for = getattr(cls, "title_for", None)
    if callable(title_for):
        return str(title_for(defaults))
    title = getattr(cls, "TITLE", None)
    if isinstance(title, str) and title:
        return title
    first = (inspect.getdoc(cls) or cls.__name__).splitlines()[0]
    return re.split(r"[,:.](?:\s|$)", first, maxsplit=1)[0].strip()


def _entries(path: Path) -> list[DatasetEntry]:
    """The anomaly sets of one data config, as written (interpolations resolved per argument)."""
    config = OmegaConf.load(path)
    anomaly = config.get("anomaly") if isinstance(config, DictConfig) else None
    if anomaly is None:
        return []
    if not isinstance(anomaly, DictConfig):
        raise ValueError(f"{path}: anomaly: must be a mapping of set name -> reader config")
    entries = []
    for name in anomaly:
        node = anomaly[name]  # its values are resolved only where _value reads them
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(
                f"{path}: anomaly.{name} must be a mapping with _target_ (the reader class)"
            )
        target = str(node["_target_"])
        params = tuple(str(key) for key in node if key != "_target_")
        defaults = {}
        for key in params:
            known, value = _value(node, key)
            if known:
                defaults[key] = value
        try:
            cls = locate(target)
        except ValueError as error:
            raise ValueError(f"{path}: anomaly.{name}: {error}") from error
        entries.append(
            DatasetEntry(
                name=str(name),
                group=path.stem,
                target=target,
                params=params,
                title=_title(cls, defaults),
                roots=tuple(key for key in params if key != "root" and key.endswith("_root")),
                defaults=MappingProxyType(defaults),
            )
        )
    return entries


def anomaly_sets(conf_root: str | Path | None = None) -> dict[str, DatasetEntry]:
    """Every anomaly set of the config tree, by name: the entries of the ``anomaly:`` mappings
    of ``<conf_root>/data/*.yaml`` (default: the packaged tree, :func:`conf_dir`).

    Each file is read as written with OmegaConf (a Hydra ``defaults:`` list is not followed);
    an argument's value is resolved only to fill :attr:`DatasetEntry.defaults`, so ``???``
    roots are fine. Each reader class is imported (for its title and to catch a wrong
    ``_target_``). The result is kept until a file of ``data/`` is added, removed or changed.

    Raises:
        ValueError: on an ``anomaly:`` entry without ``_target_``, a ``_target_`` that does not
            import, or one name defined differently by two data configs.
    """
    root = Path(conf_root) if conf_root is not None else conf_dir()
    files = []
    for path in sorted((root / DATA_GROUP).glob("*.yaml")):
        stat = path.stat()
        files.append((path, stat.st_mtime_ns, stat.st_size))
    return dict(_read(tuple(files)))


@lru_cache(maxsize=16)
def _read(files: tuple[tuple[Path, int, int], ...]) -> tuple[tuple[str, DatasetEntry], ...]:
    """:func:`anomaly_sets` of the data configs ``files`` ((path, mtime, size) each)."""
    found: dict[str, DatasetEntry] = {}
    for path, _, _ in files:
        for entry in _entries(path):
            first = found.get(entry.name)
            if first is None:
                found[entry.name] = entry
            elif (first.target, dict(first.defaults)) != (entry.target, dict(entry.defaults)):
                raise ValueError(
                    f"anomaly set {entry.name!r} is defined differently by "
                    f"{DATA_GROUP}/{first.group}.yaml and {DATA_GROUP}/{entry.group}.yaml; "
                    "give one of them another name"
                )
    return tuple(found.items())


def anomaly_set_entry(name: str, conf_root: str | Path | None = None) -> DatasetEntry:
    """The entry of anomaly set ``name``.

    Raises:
        ValueError: for a name no data config defines; the message lists the known names.
    """
    known = anomaly_sets(conf_root)
    if name not in known:
        raise ValueError(
            f"unknown anomaly set {name!r}; the data configs define {', '.join(sorted(known))}. "
            + ADD_A_SET
        )
    return known[name]


def build_anomaly_set(
    name: str,
    root: str | Path | None = None,
    *,
    conf_root: str | Path | None = None,
    **options: Any,
) -> Any:
    """The dataset of anomaly set ``name``: its reader class built from the config's arguments.

    The arguments are the entry's :attr:`~DatasetEntry.defaults`, then ``root`` and those
    ``options`` the class accepts (``laf_root``, ``cityscapes_root``, ``version``, ``layout``,
    ``label_map``, ``resize``, ``length``, ...), which replace them. An option whose value is
    None counts as not given; options the class does not take are dropped, so one call serves
    every set. A reader that needs a second root it did not get (e.g. ``laf_root`` for the
    official Fishyscapes Lost & Found layout) raises its own :class:`DatasetError`.

    Raises:
        ValueError: for an unknown name (listing the known ones), a set read from a folder
            without ``root``, or a set generated in memory given a ``root``.
    """
    entry = anomaly_set_entry(name, conf_root)
    cls = locate(entry.target)
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    arguments = copy.deepcopy(dict(entry.defaults))  # a reader may keep and change a list
    given = {key: value for key, value in options.items() if value is not None}
    arguments |= {key: value for key, value in given.items() if takes_any or key in parameters}
    if root is not None:
        if "root" not in parameters and not takes_any:
            raise ValueError(
                f"{name} ({entry.title}) is generated by {entry.target}, which reads no "
                "folder: give no root"
            )
        arguments["root"] = root
    elif "root" in parameters and "root" not in arguments:
        if parameters["root"].default is inspect.Parameter.empty:
            raise ValueError(f"{name} ({entry.title}) needs root, the folder the set is read from")
    return cls(**arguments)


__all__ = [
    "CONF_PACKAGE",
    "DatasetEntry",
    "anomaly_set_entry",
    "anomaly_sets",
    "build_anomaly_set",
    "conf_dir",
    "locate",
    "options",
]
