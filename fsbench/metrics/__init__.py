"""Streaming, distributed-safe metrics: Fishyscapes anomaly metrics, SegmentMeIfYouCan component
metrics, and segmentation mIoU."""

from fsbench.metrics.anomaly import AnomalyMetrics, anomaly_metrics, ranking_metrics
from fsbench.metrics.components import ComponentMetrics, component_metrics, frame_components
from fsbench.metrics.segmentation import SegmentationMetrics, iou_from_confmat

__all__ = [
    "AnomalyMetrics",
    "ComponentMetrics",
    "SegmentationMetrics",
    "anomaly_metrics",
    "component_metrics",
    "frame_components",
    "iou_from_confmat",
    "ranking_metrics",
]
