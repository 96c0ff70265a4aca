"""Streaming, distributed-safe metrics: Fishyscapes anomaly metrics and segmentation mIoU."""

from fsbench.metrics.anomaly import AnomalyMetrics, anomaly_metrics
from fsbench.metrics.segmentation import SegmentationMetrics, iou_from_confmat

__all__ = ["AnomalyMetrics", "SegmentationMetrics", "anomaly_metrics", "iou_from_confmat"]
