"""Segmentation networks: DeepLabv3+ returning logits and decoder features, the segmenter
protocol every head relies on, and the adapter that turns any logits network into one."""

from fsbench.models.checkpoint import load_segmenter, save_segmenter
from fsbench.models.protocol import SegmenterProtocol, check_segmenter
from fsbench.models.segmenter import Segmenter, SegOutput
from fsbench.models.wrapped import WrappedSegmenter

__all__ = [
    "SegOutput",
    "Segmenter",
    "SegmenterProtocol",
    "WrappedSegmenter",
    "check_segmenter",
    "load_segmenter",
    "save_segmenter",
]
