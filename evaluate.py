"""Evaluate anomaly heads.

`python evaluate.py [checkpoint=PATH] [head=NAME | head=[A,B]] [data=...]`
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from fsbench.runs import evaluate, report_input_errors

    output_dir = HydraConfig.get().runtime.output_dir
    report_input_errors(lambda: evaluate(cfg, output_dir))


if __name__ == "__main__":
    main()
