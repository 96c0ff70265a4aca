"""Segmentation networks: DeepLabv3+ returning logits and decoder features."""

from fsbench.models.checkpoint import load_segmenter, save_segmenter
from fsbench.models.segmenter import Segmenter, SegOutput

__all__ = ["SegOutput", "Segmenter", "load_segmenter", "save_segmenter"]
