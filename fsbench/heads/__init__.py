"""Anomaly heads: the base class methods subclass, and the helpers several heads share.

* :mod:`fsbench.heads.base`: :class:`AnomalyHead`, :class:`AnomalyPrediction`, :func:`device_of`,
  :func:`resize_score`.
* :mod:`fsbench.heads.scores`: the softmax entropy from logits (:func:`entropy_from_logits`,
  :func:`softmax_and_entropy`) or from probabilities (:func:`entropy_from_probs`).
* :mod:`fsbench.heads.features`: for heads that model the decoder features: the training
  pixels (:func:`training_pixels`), a uniform sample of them (:class:`FeatureReservoir`), and
  from features to pixel rows and back to an image-sized score (:func:`feature_pixels`,
  :func:`in_chunks`, :func:`pixels_to_image`); :func:`positive_int` checks integer options.
"""

from fsbench.heads.base import AnomalyHead, AnomalyPrediction, device_of, resize_score
from fsbench.heads.features import (
    FeatureReservoir,
    feature_pixels,
    in_chunks,
    pixels_to_image,
    positive_int,
    training_pixels,
)
from fsbench.heads.scores import entropy_from_logits, entropy_from_probs, softmax_and_entropy

__all__ = [
    "AnomalyHead",
    "AnomalyPrediction",
    "FeatureReservoir",
    "device_of",
    "entropy_from_logits",
    "entropy_from_probs",
    "feature_pixels",
    "in_chunks",
    "pixels_to_image",
    "positive_int",
    "resize_score",
    "softmax_and_entropy",
    "training_pixels",
]
