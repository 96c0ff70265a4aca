"""LightningModules: SegmentationTask trains a segmenter, AnomalyEvaluation scores heads."""

from fsbench.lit.evaluation import AnomalyEvaluation, predict_heads
from fsbench.lit.segmentation import SegmentationTask, poly_lr_factor

__all__ = ["AnomalyEvaluation", "SegmentationTask", "poly_lr_factor", "predict_heads"]
