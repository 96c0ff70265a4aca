"""Class-conditional Gaussians of the decoder features (Lee et al., NeurIPS 2018).

A feature head: fitted in one streaming pass over the training features, it scores every feature
pixel and resizes the score bilinearly to the image (float32 [N, H, W], higher = more
anomalous). The training pixels and the plumbing from features to pixel rows and back are
:mod:`fsbench.heads.features`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsbench.heads import (
    AnomalyHead,
    feature_pixels,
    in_chunks,
    pixels_to_image,
    positive_int,
    training_pixels,
)
from fsbench.models import SegOutput

__all__ = ["ClassConditionalGaussian"]


class ClassConditionalGaussian(AnomalyHead):
    """Min Mahalanobis distance to class means with a tied covariance (Lee et al., NeurIPS 2018).

    Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
    Adversarial Attacks": the features of class c are modelled as N(mu_c, Sigma) with one shared
    covariance, Sigma = sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T / N. The score of a feature
    x is the squared Mahalanobis distance to the closest class mean,
    min_c (x - mu_c)^T P (x - mu_c) with P = (Sigma + r I)^-1, over the classes seen in fitting.

    The fit streams once over the loader, accumulating in float64 per-class counts n_c, per-class
    sums and the global sum of outer products S = sum_i x_i x_i^T; then Sigma = (S - sum_c n_c
    mu_c mu_c^T) / N. The ridge r = ``shrinkage`` * trace(Sigma) / D (a fraction of the mean
    feature variance) keeps Sigma invertible when some channels are (nearly) constant, as dead
    ReLU channels are. Scoring whitens with W = L^-T, where Sigma + r I = L L^T (so P = W W^T),
    and expands |(x - mu_c) W|^2 = |y|^2 - 2 y m_c^T + |m_c|^2 as matmuls (y = x W, m_c = mu_c W,
    both centred on the mean of the class means), in chunks of ``chunk_size`` pixels.

    Args:
        assign: the class of a training pixel: ``label`` (ground truth) or ``prediction`` (the
            segmenter's argmax at image resolution, resized like the label).
        shrinkage: the ridge as a fraction of the mean variance trace(Sigma) / D.
        chunk_size: feature pixels scored (or accumulated in float64 by the fit) at once.
        ignore_index: label of the pixels left out of the fit.

    Fitted buffers: ``class_ids`` int64 [K] (the classes seen), ``class_means`` [K, D],
    ``covariance`` [D, D] (Sigma, without the ridge) and ``whitener`` [D, D] (W).
    """

    ASSIGNS = ("label", "prediction")

    def __init__(
        self,
        assign: str = "label",
        shrinkage: float = 1e-6,
        chunk_size: int = 65536,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if assign not in self.ASSIGNS:
            raise ValueError(
                f"ClassConditionalGaussian assign must be one of {', '.join(self.ASSIGNS)}, "
                f"got {assign!r}"
            )
        if not shrinkage >= 0:
            raise ValueError(f"ClassConditionalGaussian shrinkage must be >= 0, got {shrinkage}")
        self.assign = assign
        self.shrinkage = float(shrinkage)
        self.chunk_size = positive_int(chunk_size, "chunk_size", self)
        self.ignore_index = int(ignore_index)
        for name in ("class_ids", "class_means", "covariance", "whitener"):
            self.register_fitted(name)

    @property
    def precision(self) -> Tensor:
        """P = (Sigma + r I)^-1 = W W^T, [D, D]."""
        self.check_fitted()
        return self.whitener @ self.whitener.T

    def fit(self, segmenter: nn.Module, loader: Any) -> None:
        """Class means and the tied covariance of the training features, in one pass."""
        count = sums = outer = None
        segmenter.eval()
        with torch.inference_mode():
            pixels = training_pixels(
                segmenter, loader, "Gaussian statistics", self.ignore_index, self.assign
            )
            for features, classes in pixels:
                if outer is None:
                    dims = features.shape[1]
                    outer = features.new_zeros(dims, dims, dtype=torch.float64)
                    count, sums = outer.new_zeros(0), outer.new_zeros(0, dims)
                grow = int(classes.max()) + 1 - count.shape[0]
                if grow > 0:  # classes are numbered as they come, no number of classes needed
                    count, sums = F.pad(count, (0, grow)), F.pad(sums, (0, 0, 0, grow))
                count += torch.bincount(classes, minlength=count.shape[0])
                # float64 copies of chunk_size pixels at a time bound the extra memory.
                for start in range(0, features.shape[0], self.chunk_size):
                    x = features[start : start + self.chunk_size].double()
                    sums.index_add_(0, classes[start : start + self.chunk_size], x)
                    outer += x.T @ x
        if outer is None:
            raise ValueError(
                "ClassConditionalGaussian.fit got no usable training pixel from the loader "
                f"(empty loader, or every label is ignore_index={self.ignore_index})"
            )
        seen = count > 0
        total, class_count = count.sum(), count[seen]
        means = sums[seen] / class_count[:, None]
        covariance = (outer - (means.T * class_count) @ means) / total
        covariance = (covariance + covariance.T) / 2
        dims = covariance.shape[0]
        ridge = self.shrinkage * covariance.trace() / dims
        eye = torch.eye(dims, dtype=covariance.dtype, device=covariance.device)
        factor, info = torch.linalg.cholesky_ex(covariance + ridge * eye)
        if info.item() != 0:
            raise ValueError(
                "ClassConditionalGaussian: the tied covariance is singular (constant features?); "
                f"increase shrinkage (now {self.shrinkage}), e.g. head.gaussian.shrinkage=1e-3"
            )
        whitener = torch.linalg.solve_triangular(factor, eye, upper=False).T  # L^-T
        self.class_ids = torch.nonzero(seen)[:, 0]
        self.class_means = means.float()
        self.covariance = covariance.float()
        self.whitener = whitener.float()

    def score(self, out: SegOutput) -> Tensor:
        self.check_fitted()
        x, shape = feature_pixels(out.features)
        center = self.class_means.mean(dim=0)
        means = (self.class_means - center) @ self.whitener  # [K, D]
        means_sq = means.square().sum(dim=1)

        def min_distance(chunk: Tensor) -> Tensor:
            y = (chunk - center) @ self.whitener
            distances = y.square().sum(dim=1, keepdim=True) - 2 * y @ means.T + means_sq
            return distances.amin(dim=1).clamp_(min=0)

        return pixels_to_image(
            in_chunks(min_distance, x, self.chunk_size), shape, out.logits.shape[-2:]
        )
