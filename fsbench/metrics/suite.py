"""The scoring protocols as metrics, built from ``conf/protocol/*.yaml`` for one dataset.

``evaluate.py protocol=[fishyscapes,smiyc,per_image]`` and ``fsbench score --protocol NAME``
both build each protocol's metric with :func:`protocol_metric`, feed it ``update(score, target,
names)`` and read it with :func:`protocol_values`: one code path from score maps to numbers.
Every metric's state is summed or concatenated across processes, so each protocol runs under
DDP too.

* ``fishyscapes``: :class:`~fsbench.metrics.anomaly.AnomalyMetrics`;
* ``smiyc``: :class:`~fsbench.metrics.smiyc.SmiycMetrics`;
* ``per_image``: :class:`~fsbench.metrics.per_image.PerImageMetrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import hydra
import torchmetrics
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from fsbench.metrics.anomaly import AnomalyMetrics
from fsbench.metrics.protocols import PROTOCOLS

__all__ = [
    "describe",
    "protocol_config",
    "protocol_metric",
    "protocol_names",
    "protocol_values",
    "update_metric",
]


def protocol_names() -> list[str]:
    """The protocols fsbench knows: the configs of ``conf/protocol/``."""
    from fsbench.registry import options

    return options("protocol")


def protocol_config(name: str, overrides: Mapping[str, Any] | None = None) -> DictConfig:
    """The packaged ``conf/protocol/<name>.yaml`` with ``overrides`` merged into it."""
    from fsbench.registry import conf_dir

    known = protocol_names()
    if name not in known:
        raise ValueError(
            f"unknown protocol {name!r}; choose one of {', '.join(known)} (conf/protocol/)"
        )
    node = OmegaConf.load(conf_dir() / "protocol" / f"{name}.yaml")
    return OmegaConf.merge(node, dict(overrides or {}))  # type: ignore[return-value]


def protocol_metric(
    name: str,
    node: Mapping[str, Any] | DictConfig,
    dataset: str,
    ignore_index: int = 255,
    **extra: Any,
) -> torchmetrics.Metric:
    """The metric of protocol ``name`` (config ``node``, a ``conf/protocol`` entry) for a dataset.

    ``smiyc`` takes its component sizes from ``track`` or, when that is null, from the dataset's
    name (:func:`~fsbench.metrics.smiyc.smiyc_track`); the others take ``ignore_index``.
    ``extra`` goes to the metric's constructor (``AnomalyMetrics(per_image=True)``).
    """
    node = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(dict(node)), resolve=True))
    if name == "smiyc":
        from fsbench.metrics.smiyc import smiyc_track

        extra["track"] = smiyc_track(dataset, node.pop("track", None))
        if ignore_index != 255:
            raise ValueError(
                f"the smiyc protocol reads 255 as void (the toolkit's label < 255), but "
                f"ignore_index is {ignore_index}; remap the void label to 255"
            )
    else:
        extra["ignore_index"] = ignore_index
    factory = hydra.utils.instantiate(node)
    return factory(**extra)


def update_metric(
    metric: torchmetrics.Metric, score: Tensor, target: Tensor, names: Sequence[str] | None
) -> None:
    """One batch into a protocol's metric (``AnomalyMetrics`` takes no names)."""
    if isinstance(metric, AnomalyMetrics):
        metric.update(score, target)
    else:
        metric.update(score, target, names)


def protocol_values(name: str, metric: torchmetrics.Metric) -> dict[str, Any]:
    """The protocol's numbers, as every result file holds them."""
    values = metric.compute()
    if name == "fishyscapes":
        total = values["n_anomaly"] + values["n_inlier"]
        values["anomaly_fraction"] = values["n_anomaly"] / total
    return values


def describe(name: str, node: Mapping[str, Any] | None = None) -> str:
    """The one-line description of a protocol, printed in every result file."""
    commit = (node or {}).get("commit") or protocol_config("smiyc").commit
    return PROTOCOLS[name].format(commit=commit)
