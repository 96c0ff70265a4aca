"""Datasets and the LightningDataModule that serves them."""

from fsbench.data.anomaly_sets import (
    FishyscapesLostAndFound,
    FishyscapesStatic,
    RoadAnomaly,
    SegmentMeIfYouCan,
)
from fsbench.data.check import DatasetError, DatasetReport, check_dataset
from fsbench.data.cityscapes import Cityscapes
from fsbench.data.datamodule import SegmentationDataModule
from fsbench.data.paste import (
    FolderOutliers,
    OutlierPasting,
    OutlierSource,
    PolygonOutliers,
    paste_object,
    poisson_blend,
)
from fsbench.data.synthetic import SyntheticScenes, render_scene

__all__ = [
    "FolderOutliers",
    "paste_object",
    "poisson_blend",
    "Cityscapes",
    "DatasetError",
    "DatasetReport",
    "FishyscapesLostAndFound",
    "FishyscapesStatic",
    "OutlierPasting",
    "OutlierSource",
    "PolygonOutliers",
    "RoadAnomaly",
    "SegmentMeIfYouCan",
    "SegmentationDataModule",
    "SyntheticScenes",
    "check_dataset",
    "render_scene",
]
