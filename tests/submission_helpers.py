"""Small real inputs shared by test_submit.py and test_export.py: checkpoints, fitted heads.

Imported by those tests (pytest puts tests/ on sys.path); not a test module itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fsbench.data import SyntheticScenes
from fsbench.models import Segmenter, save_segmenter
from fsbench.models.checkpoint import HEAD_CLASS_KEY, HEAD_PREFIX, class_path

HEIGHT, WIDTH = 64, 128


def tiny_segmenter(seed: int = 0, num_classes: int = 19) -> Segmenter:
    torch.manual_seed(seed)
    return Segmenter(
        encoder_name="resnet18",
        encoder_weights=None,
        num_classes=num_classes,
        decoder_channels=16,
    ).eval()


def save_checkpoint(path: Path, segmenter: Segmenter, pretrained_config: bool = True) -> Path:
    """A load_segmenter checkpoint; its config names ImageNet weights, as train.py's do.

    Loading it must not download them (the submission container is offline).
    """
    if pretrained_config:
        segmenter.config["encoder_weights"] = "imagenet"
    save_segmenter(segmenter, path)
    segmenter.config["encoder_weights"] = None
    return path


def save_trained_with_head(path: Path, segmenter: Segmenter, head, name: str, config: dict):
    """A checkpoint as train.py writes it for a training-time head (weights + head + config)."""
    save_segmenter(segmenter, path)
    stored = torch.load(path, weights_only=False)
    stored["state_dict"].update({HEAD_PREFIX + k: v for k, v in head.state_dict().items()})
    stored[HEAD_CLASS_KEY] = class_path(head)
    stored["fsbench_run_config"] = {"head": {name: config}}
    torch.save(stored, path)
    return path


def train_loader(length: int = 2) -> DataLoader:
    return DataLoader(SyntheticScenes("train", length, HEIGHT, WIDTH, seed=1), batch_size=2)


def anomaly_scenes(length: int = 3) -> SyntheticScenes:
    return SyntheticScenes("anomaly", length, HEIGHT, WIDTH, seed=2)


def write_png(path: Path, image: torch.Tensor) -> np.ndarray:
    """Write float [3, H, W] in [0, 1] (from uint8) as an RGB PNG; return the uint8 [H, W, 3]."""
    array = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array
