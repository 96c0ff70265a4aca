"""Helper script for tests/test_distributed.py (not a test itself).

Runs AnomalyEvaluation over a small synthetic set with N CPU processes (Lightning DDP, gloo) and
writes rank 0's results as JSON: `python tests/ddp_evaluation.py DEVICES OUT.json`.
"""

import json
import sys

import lightning as L
from torch.utils.data import DataLoader

from baselines.softmax import Energy, MaxLogit
from fsbench.data import SyntheticScenes
from fsbench.lit import AnomalyEvaluation
from fsbench.models import Segmenter


def main(devices: int, out: str) -> None:
    L.seed_everything(0)  # the same random segmenter in every process
    # Batches of one image: the network computes each image alike in every process, so any
    # difference in the results could only come from the metrics.
    segmenter = Segmenter("resnet18", num_classes=19, decoder_channels=32)
    loaders = [
        DataLoader(SyntheticScenes("anomaly", 8, 64, 128), batch_size=1),
        DataLoader(SyntheticScenes("val", 4, 64, 128), batch_size=1),
    ]
    module = AnomalyEvaluation(
        segmenter,
        {"max_logit": MaxLogit(), "energy": Energy()},
        dataset_names=["anomaly", "inlier"],
        anomaly_datasets=["anomaly"],
        inlier_dataset="inlier",
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.test(module, dataloaders=loaders, verbose=False)
    if trainer.global_rank == 0:
        results = {"world_size": trainer.world_size, "results": module.results}
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
