"""Anomaly heads: the base class methods subclass."""

from fsbench.heads.base import AnomalyHead, AnomalyPrediction, device_of, resize_score

__all__ = ["AnomalyHead", "AnomalyPrediction", "device_of", "resize_score"]
