"""Anomaly heads: the base class methods subclass."""

from fsbench.heads.base import AnomalyHead, AnomalyPrediction

__all__ = ["AnomalyHead", "AnomalyPrediction"]
