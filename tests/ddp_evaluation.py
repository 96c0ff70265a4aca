"""Helper script for tests/test_distributed.py (not a test itself).

Runs AnomalyEvaluation with N CPU processes (Lightning DDP, gloo) on precomputed scores: the
"segmenter" hands the stored score maps through as its logits and the head reads them, so no
network runs and every process sees bit-identical scores whatever its thread count. Rank 0 writes
the results and a digest of every summed metric state as JSON:
`python tests/ddp_evaluation.py DEVICES OUT.json`.
"""

import hashlib
import json
import sys

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from fsbench.data import SegmentationDataModule
from fsbench.heads import AnomalyHead
from fsbench.lit import AnomalyEvaluation
from fsbench.metrics.suite import protocol_config
from fsbench.models import SegOutput

FRAMES, INLIER_FRAMES, BATCH = (
    7,
    5,
    2,
)  # 7 frames on 2 processes: blocks of 3 and 4, partial batches


class StoredScores(Dataset):
    """Frame i: a seeded score map and a second logit plane as the image, and its labels."""

    def __init__(
        self, length: int, key: str, height: int = 24, width: int = 40, prefix: str = ""
    ) -> None:
        self.length, self.key, self.height, self.width = length, key, height, width
        self.prefix = prefix or key

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([7, index, len(self.prefix)])
        shape = (self.height, self.width)
        score = rng.normal(size=shape).astype(np.float32)
        second = rng.normal(size=shape).astype(np.float32)
        # anomaly: 10% of 4x4 blocks, so that the smiyc protocol finds components
        blocks = rng.random((self.height // 4, self.width // 4)) < 0.1
        labels = np.kron(blocks, np.ones((4, 4))).astype(np.uint8)
        if self.key == "label":  # train ids of the 2-class "segmenter": its argmax, 10% flipped
            labels = (second > score).astype(np.uint8) ^ labels
        labels[rng.random(shape) < 0.05] = 255  # void
        labels = torch.from_numpy(labels)
        return {
            "image": torch.from_numpy(np.stack([score, second, score])),
            self.key: labels.long() if self.key == "label" else labels,
            "name": f"{self.prefix}_{index:03d}",
        }


class PassThrough(nn.Module):
    """A segmenter whose logits are the stored maps (channels 0 and 1 of the image)."""

    num_classes = 2

    def forward(self, images: Tensor) -> SegOutput:
        return SegOutput(logits=images[:, :2], features=images[:, :2])


class StoredScore(AnomalyHead):
    def score(self, out: SegOutput) -> Tensor:
        return out.logits[:, 0]


class RecordingEvaluation(AnomalyEvaluation):
    """AnomalyEvaluation that also records a digest of each metric's summed state."""

    def on_test_epoch_end(self) -> None:
        own = list(self.image_names["anomaly"])  # this process's frames, before the gather
        self.frames_per_process = [own]
        if torch.distributed.is_initialized():
            self.frames_per_process = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(self.frames_per_process, own)
        self.states: dict[str, dict] = {}
        metrics = {f"seg/{h}": m for h, m in self.segmentation_metrics.items()}
        for head, per_dataset in self.anomaly_metrics.items():
            metrics.update({f"anomaly/{head}/{ds}": m for ds, m in per_dataset.items()})
        for key, metric in metrics.items():
            with metric.sync_context():  # summed across processes (no-op in one)
                self.states[key] = {
                    name: _digest(getattr(metric, name))
                    for name in ("counts", "label_values", "non_finite", "confmat")
                    if hasattr(metric, name)
                }
        super().on_test_epoch_end()


def _digest(state: Tensor) -> dict:
    data = state.detach().cpu().contiguous()
    return {
        "sha256": hashlib.sha256(data.numpy().tobytes()).hexdigest(),
        "sum": int(data.sum()),
        "dtype": str(data.dtype),
        "shape": list(data.shape),
    }


def main(devices: int, out: str) -> None:
    data = SegmentationDataModule(
        val=StoredScores(INLIER_FRAMES, "label"),
        # "single": one frame, so the second process scores none of that set (its per-image
        # lists stay empty, and must still gather beside the first process's)
        anomaly={
            "anomaly": StoredScores(FRAMES, "anomaly"),
            "single": StoredScores(1, "anomaly", prefix="single"),
        },
        eval_batch_size=BATCH,
    )
    loaders = [*data.anomaly_dataloaders().values(), data.inlier_dataloader()]
    module = RecordingEvaluation(
        PassThrough(),
        {"stored": StoredScore()},
        dataset_names=["anomaly", "single", "inlier"],
        anomaly_datasets=["anomaly", "single"],
        inlier_dataset="inlier",
        per_image=True,
        # every protocol: the smiyc curve, its components and the per-image values are
        # concatenated across processes, the histograms summed
        protocols={
            "fishyscapes": protocol_config("fishyscapes"),
            "smiyc": protocol_config("smiyc", {"track": "obstacle"}),  # components >= 10 px
            "per_image": protocol_config("per_image"),
        },
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
        results = {
            "world_size": trainer.world_size,
            "results": module.results,
            "curves": module.curves,
            "states": module.states,
            "names": module.image_names["anomaly"],
            "frames_per_process": module.frames_per_process,
        }
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
