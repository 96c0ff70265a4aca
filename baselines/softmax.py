"""Post-hoc scores computed from the class logits alone.

Each works on logits of shape [N, C, H, W] (C classes along dim 1) and returns float32 [N, H, W]
with the sign convention of fsbench: higher = more anomalous.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from fsbench.heads import AnomalyHead, device_of
from fsbench.models import SegOutput


class MaxSoftmax(AnomalyHead):
    """One minus the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

    Score = 1 - max_c p_c, in [0, 1 - 1/C]. With r = sum over the non-maximal classes of
    exp(l_c - max l), 1 - max p = r / (1 + r); summing r without the maximal term keeps the
    score's resolution for confident pixels, where 1 - p would round to 0 in float32.
    """

    @staticmethod
    def from_logits(logits: Tensor) -> Tensor:
        shifted = logits - logits.amax(dim=1, keepdim=True)
        is_max = torch.zeros_like(shifted, dtype=torch.bool)
        is_max.scatter_(1, shifted.argmax(dim=1, keepdim=True), True)
        rest = shifted.exp().masked_fill_(is_max, 0.0).sum(dim=1)
        return (rest / (1 + rest)).float()

    def score(self, out: SegOutput) -> Tensor:
        return self.from_logits(out.logits)


class SoftmaxEntropy(AnomalyHead):
    """Entropy of the softmax distribution, in nats: -sum_c p_c log p_c, in [0, log C]."""

    @staticmethod
    def from_logits(logits: Tensor) -> Tensor:
        log_probs = torch.log_softmax(logits, dim=1)
        return (-(log_probs.exp() * log_probs).sum(dim=1)).float()

    def score(self, out: SegOutput) -> Tensor:
        return self.from_logits(out.logits)


class MaxLogit(AnomalyHead):
    """Negative maximum logit (Hendrycks et al., "Scaling OOD detection", ICML 2022): -max_c l_c."""

    @staticmethod
    def from_logits(logits: Tensor) -> Tensor:
        return (-logits.amax(dim=1)).float()

    def score(self, out: SegOutput) -> Tensor:
        return self.from_logits(out.logits)


class Energy(AnomalyHead):
    """Free energy (Liu et al., NeurIPS 2020): E(x) = -T logsumexp_c(l_c / T).

    Args:
        temperature: T > 0; T = 1 is the paper's default for scoring.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"Energy temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    @staticmethod
    def from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
        return (-temperature * torch.logsumexp(logits / temperature, dim=1)).float()

    def score(self, out: SegOutput) -> Tensor:
        return self.from_logits(out.logits, self.temperature)


class StandardizedMaxLogit(AnomalyHead):
    """Standardized max logit, SML (Jung et al., "Standardized Max Logits", ICCV 2021).

    The max logit of a pixel is standardized with the mean and standard deviation of the max
    logits of the training pixels *predicted* as the same class: SML = (L - mu_c) / sigma_c with
    c = argmax. The score is -SML (higher = more anomalous). Two optional post-processing steps of
    the paper refine the map using the predicted segmentation:

    * boundary suppression: for ``boundary_iterations`` rounds, with a boundary width shrinking
      from ``boundary_width`` to 1 pixel, the values on class boundaries of the prediction are
      replaced by the mean of the non-boundary values in their 3x3 neighbourhood;
    * dilated smoothing: a Gaussian kernel (``smoothing_kernel``, ``smoothing_sigma``) with
      dilation ``smoothing_dilation`` averages the map over a wide support.

    The defaults follow the paper's (4 rounds, width 4; 7x7 kernel, sigma 1, dilation 6).
    Classes never predicted on the training set get the statistics of all training pixels.

    Args:
        boundary_suppression: apply boundary suppression.
        boundary_iterations, boundary_width: its rounds and initial width.
        dilated_smoothing: apply dilated smoothing.
        smoothing_kernel, smoothing_sigma, smoothing_dilation: its Gaussian kernel.
    """

    def __init__(
        self,
        boundary_suppression: bool = True,
        boundary_iterations: int = 4,
        boundary_width: int = 4,
        dilated_smoothing: bool = True,
        smoothing_kernel: int = 7,
        smoothing_sigma: float = 1.0,
        smoothing_dilation: int = 6,
    ) -> None:
        super().__init__()
        self.boundary_suppression = boundary_suppression
        self.boundary_iterations = boundary_iterations
        self.boundary_width = boundary_width
        self.dilated_smoothing = dilated_smoothing
        self.smoothing_kernel = smoothing_kernel
        self.smoothing_sigma = smoothing_sigma
        self.smoothing_dilation = smoothing_dilation
        self.register_fitted("class_mean")
        self.register_fitted("class_std")

    def fit(self, segmenter, loader) -> None:
        """Per-class mean and std of the max logit over training pixels predicted as the class."""
        count = total = total_sq = None
        segmenter.eval()
        with torch.inference_mode():
            for batch in tqdm(loader, desc="SML statistics", disable=None):
                logits = segmenter(batch["image"].to(device_of(segmenter))).logits
                max_logit, predicted = logits.double().max(dim=1)
                classes = logits.shape[1]
                if count is None:
                    count = torch.zeros(classes, dtype=torch.float64, device=logits.device)
                    total, total_sq = torch.zeros_like(count), torch.zeros_like(count)
                flat = predicted.reshape(-1)
                count += torch.bincount(flat, minlength=classes)
                total += torch.bincount(flat, weights=max_logit.reshape(-1), minlength=classes)
                total_sq += torch.bincount(
                    flat, weights=max_logit.reshape(-1) ** 2, minlength=classes
                )
        if count is None or count.sum() == 0:
            raise ValueError("StandardizedMaxLogit.fit got no training pixels from the loader")
        overall_mean = total.sum() / count.sum()
        overall_var = total_sq.sum() / count.sum() - overall_mean**2
        seen = count > 0
        mean = torch.where(seen, total / count.clamp(min=1), overall_mean)
        var = torch.where(seen, total_sq / count.clamp(min=1) - mean**2, overall_var)
        self.class_mean = mean.float()
        self.class_std = var.clamp(min=1e-12).sqrt().float()

    def score(self, out: SegOutput) -> Tensor:
        self.check_fitted()
        max_logit, predicted = out.logits.max(dim=1)
        standardized = (max_logit - self.class_mean[predicted]) / self.class_std[predicted]
        score = -standardized[:, None].float()
        if self.boundary_suppression:
            score = suppress_boundaries(
                score, predicted, self.boundary_iterations, self.boundary_width
            )
        if self.dilated_smoothing:
            score = dilated_gaussian_smoothing(
                score, self.smoothing_kernel, self.smoothing_sigma, self.smoothing_dilation
            )
        return score[:, 0]


def class_boundaries(predicted: Tensor, width: int) -> Tensor:
    """bool [N, 1, H, W]: pixels with another predicted class within ``width`` pixels (square)."""
    labels = predicted[:, None].float()
    size = 2 * width + 1
    highest = F.max_pool2d(labels, size, stride=1, padding=width)
    lowest = -F.max_pool2d(-labels, size, stride=1, padding=width)
    return highest != lowest


def suppress_boundaries(score: Tensor, predicted: Tensor, iterations: int, width: int) -> Tensor:
    """Replace values on class boundaries by the mean of non-boundary 3x3 neighbours (SML §3.2).

    score float [N, 1, H, W]; predicted int [N, H, W]. The boundary width shrinks linearly from
    ``width`` to 1 over ``iterations`` rounds; a boundary pixel without any non-boundary
    neighbour keeps its value in that round.
    """
    box = torch.ones(1, 1, 3, 3, dtype=score.dtype, device=score.device)
    for round_index in range(iterations):
        current = max(1, width - round_index * max(1, width // max(1, iterations)))
        boundary = class_boundaries(predicted, current)
        keep = (~boundary).to(score.dtype)
        neighbour_sum = F.conv2d(F.pad(score * keep, (1, 1, 1, 1), mode="replicate"), box)
        neighbour_count = F.conv2d(F.pad(keep, (1, 1, 1, 1), mode="replicate"), box)
        replaced = neighbour_sum / neighbour_count.clamp(min=1)
        score = torch.where(boundary & (neighbour_count > 0), replaced, score)
    return score


def dilated_gaussian_smoothing(score: Tensor, kernel: int, sigma: float, dilation: int) -> Tensor:
    """Convolve score float [N, 1, H, W] with a normalised, dilated Gaussian (SML §3.3)."""
    offsets = torch.arange(kernel, dtype=score.dtype, device=score.device) - (kernel - 1) / 2
    gauss = torch.exp(-(offsets**2) / (2 * sigma**2))
    weights = torch.outer(gauss, gauss)
    weights = (weights / weights.sum()).view(1, 1, kernel, kernel)
    pad = dilation * (kernel - 1) // 2
    padded = F.pad(score, (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(padded, weights, dilation=dilation)
