"""Train a segmenter: `python train.py [data=...] [model=...] [trainer=...] [seed=...]`."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from fsbench.runs import report_input_errors, train

    output_dir = HydraConfig.get().runtime.output_dir
    metrics = report_input_errors(lambda: train(cfg, output_dir))
    return metrics.get("val/miou")  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
