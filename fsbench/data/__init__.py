"""Datasets and the LightningDataModule that serves them."""

from fsbench.data.datamodule import SegmentationDataModule
from fsbench.data.synthetic import SyntheticScenes, render_scene

__all__ = ["SegmentationDataModule", "SyntheticScenes", "render_scene"]
