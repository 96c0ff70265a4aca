"""Console scripts: ``fsbench-train`` and ``fsbench-evaluate`` (and the ``train.py`` /
``evaluate.py`` shims) run the pipelines of :mod:`fsbench.pipelines` on the packaged configs.

The configs are the package ``fsbench.conf`` (the repository's ``conf/``), found by Hydra as
``pkg://fsbench.conf``, so an installed fsbench trains and evaluates from any folder. A folder of
your own configs goes on Hydra's search path, before the packaged ones:
``fsbench-evaluate hydra.searchpath=[file:///path/to/my_conf] data=my_data``.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONFIG_PATH = "pkg://fsbench.conf"


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> float | None:
    """``fsbench-train [data=...] [model=...] [trainer=...] [seed=...]``: train a segmenter."""
    from fsbench.pipelines import report_input_errors
    from fsbench.pipelines import train as run

    output_dir = HydraConfig.get().runtime.output_dir
    metrics = report_input_errors(lambda: run(cfg, output_dir))
    return metrics.get("val/miou")  # the value a Hydra sweeper optimises


@hydra.main(config_path=CONFIG_PATH, config_name="evaluate", version_base="1.3")
def evaluate(cfg: DictConfig) -> None:
    """``fsbench-evaluate [checkpoint=PATH | model=<family> model.checkpoint=FILE] [head=...]``."""
    from fsbench.pipelines import evaluate as run
    from fsbench.pipelines import report_input_errors

    output_dir = HydraConfig.get().runtime.output_dir
    report_input_errors(lambda: run(cfg, output_dir))
