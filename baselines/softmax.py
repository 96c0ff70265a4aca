"""Post-hoc scores computed from the class logits alone.

Each works on logits of shape [N, C, H, W] (C classes along dim 1) and returns float32 [N, H, W]
with the sign convention of fsbench: higher = more anomalous.
"""

from __future__ import annotations

import math

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
        if logits.device.type == "cpu":
            return _max_softmax_by_class(logits)
        return _max_softmax_vectorised(logits)

    def score(self, out: SegOutput) -> Tensor:
        return self.from_logits(out.logits)


class SoftmaxEntropy(AnomalyHead):
    """Entropy of the softmax distribution, in nats: -sum_c p_c log p_c, in [0, log C]."""

    @staticmethod
    def from_logits(logits: Tensor) -> Tensor:
        if logits.device.type == "cpu":
            return _entropy_by_class(logits)
        return _entropy_vectorised(logits)

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
        if logits.device.type == "cpu":
            return _energy_by_class(logits, temperature)
        return _energy_vectorised(logits, temperature)

    def score(self, out: SegOutput) -> Tensor:
        return self.from_logits(out.logits, self.temperature)


# On the CPU, reductions over the class dimension of [N, C, H, W] read C planes H*W apart, and
# the vectorised formulas above make several such passes plus full-size temporaries (max softmax:
# 310 ms for 19 x 512 x 1024 on one core, 15% of a ResNet-18 forward). Accumulating one class
# plane at a time keeps every pass contiguous and cache-sized: 3-4x faster, same values (within
# float32 rounding; tests/test_fast_heads.py). GPUs keep the vectorised forms: one kernel per
# step instead of C.


def _max_softmax_vectorised(logits: Tensor) -> Tensor:
    shifted = logits - logits.amax(dim=1, keepdim=True)
    is_max = torch.zeros_like(shifted, dtype=torch.bool)
    # The value 1, not True: TorchScript's tracer has no scatter_ overload for a bool scalar.
    is_max.scatter_(1, shifted.argmax(dim=1, keepdim=True), 1)
    rest = shifted.exp().masked_fill_(is_max, 0.0).sum(dim=1)
    return (rest / (1 + rest)).float()


def _entropy_vectorised(logits: Tensor) -> Tensor:
    log_probs = torch.log_softmax(logits, dim=1)
    return (-(log_probs.exp() * log_probs).sum(dim=1)).float()


def _energy_vectorised(logits: Tensor, temperature: float) -> Tensor:
    return (-temperature * torch.logsumexp(logits / temperature, dim=1)).float()


def _max_softmax_by_class(logits: Tensor) -> Tensor:
    top = logits.amax(dim=1)
    rest = torch.zeros_like(top, dtype=torch.float32)
    ties = torch.full_like(rest, -1.0)  # every maximal class beyond the first adds exp(0) = 1
    for c in range(logits.shape[1]):
        shifted = logits[:, c] - top
        at_max = shifted == 0
        rest += shifted.exp().masked_fill_(at_max, 0.0)
        ties += at_max
    rest += ties
    return rest / (1 + rest)


def _entropy_by_class(logits: Tensor) -> Tensor:
    # H = log S - sum_c e_c d_c / S with d_c = l_c - max l, e_c = exp(d_c), S = sum_c e_c.
    top = logits.amax(dim=1)
    total = torch.zeros_like(top, dtype=torch.float32)
    weighted = torch.zeros_like(total)
    for c in range(logits.shape[1]):
        shifted = (logits[:, c] - top).float()
        exp = shifted.exp()
        total += exp
        weighted += exp * shifted
    return total.log() - weighted / total


def _energy_by_class(logits: Tensor, temperature: float) -> Tensor:
    scaled_top = logits.amax(dim=1).float() / temperature
    total = torch.zeros_like(scaled_top)
    for c in range(logits.shape[1]):
        total += (logits[:, c].float() / temperature - scaled_top).exp()
    return -temperature * (scaled_top + total.log())


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
    """bool [N, 1, H, W]: pixels with another predicted class within ``width`` pixels (square).

    predicted int [N, H, W]. The window is the (2 width + 1)^2 square around the pixel, clipped at
    the image border; width 0 marks nothing.
    """
    return _boundaries_by_width(predicted, [width])[width]


def _boundaries_by_width(predicted: Tensor, widths: list[int]) -> dict[int, Tensor]:
    """:func:`class_boundaries` of predicted int [N, H, W] for each width, sharing the work.

    A pixel has another class within width w iff some pixel within w - 1 of it has another class
    among its 8 neighbours (walk from the pixel towards the other class: the first change of class
    happens between 8-neighbours, the first of them within w - 1). So the width-1 boundary comes
    from comparing 8-neighbours of the labels as they are (no float copy, no max filter), and
    wider ones by dilating it, each width from the next smaller one.
    """
    if any(width < 0 for width in widths):
        raise ValueError(f"class_boundaries: width must be >= 0, got {min(widths)}")
    labels = predicted[:, None]
    height, image_width = labels.shape[-2:]
    near = torch.zeros_like(labels, dtype=torch.bool)
    # Each pair of 8-neighbours once: right, down, down-right, down-left; both ends are marked.
    for down, right in ((0, 1), (1, 0), (1, 1), (1, -1)):
        rows, cols = height - down, image_width - abs(right)
        first = (..., slice(0, rows), slice(max(0, -right), max(0, -right) + cols))
        second = (..., slice(down, down + rows), slice(max(0, right), max(0, right) + cols))
        differs = labels[first] != labels[second]
        near[first].logical_or_(differs)
        near[second].logical_or_(differs)
    masks: dict[int, Tensor] = {}
    reached = 1
    for width in sorted(set(widths)):
        if width == 0:
            masks[width] = torch.zeros_like(near)
            continue
        near = _dilate(near, width - reached)
        masks[width], reached = near, width
    return masks


def _dilate(mask: Tensor, radius: int) -> Tensor:
    """bool [..., H, W]: pixels within ``radius`` (square window, clipped) of a True pixel.

    Separable: a square window is a row window, then a column window.
    """
    if radius < 1:
        return mask
    for dim in (-1, -2):
        size = mask.shape[dim]
        grown = mask.clone()
        for shift in range(1, min(radius, size - 1) + 1):
            grown.narrow(dim, shift, size - shift).logical_or_(mask.narrow(dim, 0, size - shift))
            grown.narrow(dim, 0, size - shift).logical_or_(mask.narrow(dim, shift, size - shift))
        mask = grown
    return mask


def _box_sum_3x3(x: Tensor) -> Tensor:
    """Sums over the 3x3 neighbourhoods of x [..., H, W], border replicated; rows, then columns."""
    for dim in (-1, -2):
        size = x.shape[dim]
        padded = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, size - 1, 1)], dim)
        x = padded.narrow(dim, 0, size) + padded.narrow(dim, 1, size) + padded.narrow(dim, 2, size)
    return x


def suppress_boundaries(score: Tensor, predicted: Tensor, iterations: int, width: int) -> Tensor:
    """Replace values on class boundaries by the mean of non-boundary 3x3 neighbours (SML §3.2).

    score float [N, 1, H, W]; predicted int [N, H, W]. The boundary width shrinks linearly from
    ``width`` to 1 over ``iterations`` rounds; a boundary pixel without any non-boundary
    neighbour keeps its value in that round. The neighbourhood is padded by replicating the
    border. The boundaries depend on the prediction only, so all rounds' masks are made at once.
    """
    step = max(1, width // max(1, iterations))
    widths = [max(1, width - round_index * step) for round_index in range(iterations)]
    masks = _boundaries_by_width(predicted, widths)
    for current in widths:
        boundary = masks[current]
        keep = (~boundary).to(score.dtype)
        neighbour_sum = _box_sum_3x3(score * keep)
        neighbour_count = _box_sum_3x3(keep)
        replaced = neighbour_sum / neighbour_count.clamp(min=1)
        score = torch.where(boundary & (neighbour_count > 0), replaced, score)
    return score


def dilated_gaussian_smoothing(score: Tensor, kernel: int, sigma: float, dilation: int) -> Tensor:
    """Convolve score float [N, 1, H, W] with a normalised, dilated Gaussian (SML §3.3).

    The 2-D kernel is w_i w_j with w the normalised 1-D Gaussian of ``kernel`` taps at offsets
    i - (kernel - 1) / 2, taps ``dilation`` pixels apart. The map is padded by replicating its
    border by dilation * (kernel - 1) // 2 on each side (an even kernel with an odd dilation
    loses a row and a column), then filtered separably: rows, then columns.
    """
    if kernel < 1 or dilation < 1 or not sigma > 0:
        raise ValueError(
            "dilated_gaussian_smoothing needs kernel >= 1, sigma > 0 and dilation >= 1, got "
            f"kernel={kernel}, sigma={sigma}, dilation={dilation} (head.sml.smoothing_*)"
        )
    gauss = [math.exp(-((i - (kernel - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(kernel)]
    weights = [value / math.fsum(gauss) for value in gauss]
    pad = dilation * (kernel - 1) // 2
    smoothed = F.pad(score, (pad, pad, pad, pad), mode="replicate")
    for dim in (-1, -2):
        size = smoothed.shape[dim] - dilation * (kernel - 1)
        total = smoothed.narrow(dim, 0, size) * weights[0]
        for tap in range(1, kernel):
            total.add_(smoothed.narrow(dim, tap * dilation, size), alpha=weights[tap])
        smoothed = total
    return smoothed
