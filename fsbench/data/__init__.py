"""Datasets and the LightningDataModule that serves them."""

from fsbench.data.datamodule import SegmentationDataModule
from fsbench.data.pasting import OutlierPasting, OutlierSource, PolygonOutliers
from fsbench.data.synthetic import SyntheticScenes, render_scene

__all__ = [
    "OutlierPasting",
    "OutlierSource",
    "PolygonOutliers",
    "SegmentationDataModule",
    "SyntheticScenes",
    "render_scene",
]
