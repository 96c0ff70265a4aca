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

from fsbench.heads import AnomalyHead, device_of, entropy_from_logits
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
    """Entropy of the softmax distribution, in nats: -sum_c p_c log p_c, in [0, log C].

    Computed by :func:`fsbench.heads.entropy_from_logits` (log-sum-exp form, float32 at least).
    """

    @staticmethod
    def from_logits(logits: Tensor) -> Tensor:
        return entropy_from_logits(logits)

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
# the vectorised formulas make several such passes plus full-size temporaries, a noticeable
# share of a small segmenter's forward. Accumulating one class plane at a time keeps every pass
# contiguous and cache-sized, which is several times faster there, with the same values (within
# float32 rounding; tests/test_fast_heads.py; figures in benchmarks/README.md). GPUs keep the
# vectorised forms: one kernel per step instead of C. (The entropy does the same in
# fsbench.heads.entropy_from_logits.)


def _max_softmax_vectorised(logits: Tensor) -> Tensor:
    shifted = logits - logits.amax(dim=1, keepdim=True)
    is_max = torch.zeros_like(shifted, dtype=torch.bool)
    # The value 1, not True: TorchScript's tracer has no scatter_ overload for a bool scalar.
    is_max.scatter_(1, shifted.argmax(dim=1, keepdim=True), 1)
    rest = shifted.exp().masked_fill_(is_max, 0.0).sum(dim=1)
    return (rest / (1 + rest)).float()


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
    the paper refine the map using the predicted segmentation, as the official code does them
    (shjung13/Standardized-max-logits @c52a513, ``network/deepv3.py``:
    ``BoundarySuppressionWithSmoothing``, with kornia @af948c5 morphology, the commit its
    requirements.txt pins; checked against that code's output in tests/test_sml_golden.py):

    * boundary suppression (:func:`suppress_boundaries`): the class boundaries of the prediction
      (:func:`class_boundaries`) are widened by an L1 (diamond) dilation whose radius shrinks
      over ``boundary_iterations`` rounds, and in each round the values on them are replaced by
      the mean of the non-boundary values in their 3x3 neighbourhood;
    * dilated smoothing (:func:`dilated_gaussian_smoothing`): a Gaussian kernel
      (``smoothing_kernel``, ``smoothing_sigma``) with dilation ``smoothing_dilation`` averages
      the map over a wide support.

    The defaults are the official ones (width 4 in 4 rounds; 7x7 kernel, sigma 1, dilation 6).
    The official code fixes the kernel at 7x7 with sigma 1 (its ``kernel_size`` argument is
    overwritten by that weight); other values here are an extension. The statistics are the
    official ones: mean and unbiased variance (n - 1, ``Tensor.var``) of the max logit per
    predicted class. Classes never predicted on the training set get the statistics of all
    training pixels (one predicted pixel: its mean, with the variance of all pixels).

    Args:
        boundary_suppression: apply boundary suppression.
        boundary_iterations, boundary_width: its rounds and initial width; the width must be a
            multiple of the rounds (an assert in the official code).
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
        if boundary_suppression:
            _expansion_radii(boundary_width, boundary_iterations)  # raises on bad values
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
        # Unbiased variances (n - 1), as the official calculate_statistics.py takes them with
        # torch's Tensor.var (shjung13/Standardized-max-logits @c52a513).
        n = count.sum()
        overall_mean = total.sum() / n
        overall_var = (total_sq.sum() - n * overall_mean**2) / (n - 1).clamp(min=1)
        seen = count > 1
        mean = torch.where(count > 0, total / count.clamp(min=1), overall_mean)
        var = (total_sq - count * mean**2) / (count - 1).clamp(min=1)
        var = torch.where(seen, var, overall_var)
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


def _expansion_radii(width: int, iterations: int) -> list[int]:
    """The boundary dilation radius of each suppression round, as in the official code.

    Round i of k dilates the boundary by width - (width // k) i - 1, the last round by 0: width
    4 in 4 rounds gives 3, 2, 1, 0; width 6 in 3 rounds 5, 3, 0; width 0 gives 0 in every round.
    The official code asserts width % k == 0 and has dilation kernels for radii 1-9 only (width
    <= 10 with two or more rounds); any radius works here.
    """
    for name, value in (("boundary_width", width), ("boundary_iterations", iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"head.sml.{name} must be an integer >= 0, got {value!r}")
    if iterations == 0:
        return []
    if width % iterations:
        raise ValueError(
            f"head.sml.boundary_width ({width}) must be a multiple of "
            f"head.sml.boundary_iterations ({iterations}): each round narrows the boundary by "
            "width // iterations (an assert in the official SML code)"
        )
    step = width // iterations
    last = iterations - 1
    return [0 if width == 0 or i == last else width - step * i - 1 for i in range(iterations)]


def class_boundaries(predicted: Tensor, radius: int = 0) -> Tensor:
    """bool [N, 1, H, W]: the official SML class boundaries of predicted int [N, H, W].

    As ``find_boundaries`` and ``expand_boundaries`` of shjung13/Standardized-max-logits @c52a513
    (``network/deepv3.py``) compute it with kornia @af948c5: a pixel is on the boundary iff the
    dilation of the label map by the 3x3 cross differs from its erosion by the 3x3 square; the
    boundary is then dilated by the L1 ball (diamond) of ``radius``, clipped at the image border.
    So a pixel is on the base boundary iff one of its 4 neighbours has another class, or one of
    its diagonal neighbours has a *smaller* class id (the relation is not symmetric), or it lies
    on the image border and its class id is >= 2: kornia's erosion at that commit pads with the
    constant 1 (its dilation pads with 0), so a border pixel's erosion is at most 1. (Newer
    kornia erodes with a geodesic border and would not mark these; the reference is the pinned
    commit.)
    """
    return _boundaries_by_radius(predicted, [radius])[radius]


def _boundaries_by_radius(predicted: Tensor, radii: list[int]) -> dict[int, Tensor]:
    """:func:`class_boundaries` of predicted int [N, H, W] for each radius, sharing the work.

    The base boundary comes from comparing neighbouring labels as they are (no float copy, no
    morphology): dilation(cross) > label iff a 4-neighbour is larger, erosion(square) < label iff
    an 8-neighbour is smaller, or the pixel is on the border with a label > 1. Larger radii grow
    from the next smaller one by dilations with the 3x3 cross (r of them make the diamond of
    radius r; inside a rectangle clipping commutes with that).
    """
    if any(radius < 0 for radius in radii):
        raise ValueError(f"class_boundaries: radius must be >= 0, got {min(radii)}")
    labels = predicted[:, None]
    height, width = labels.shape[-2:]
    boundary = torch.zeros_like(labels, dtype=torch.bool)
    for down, right in ((0, 1), (1, 0), (1, 1), (1, -1)):
        rows, cols = height - down, width - abs(right)
        first = (..., slice(0, rows), slice(max(0, -right), max(0, -right) + cols))
        second = (..., slice(down, down + rows), slice(max(0, right), max(0, right) + cols))
        if down and right:  # diagonal neighbours: only the larger class sees a smaller one
            boundary[first].logical_or_(labels[first] > labels[second])
            boundary[second].logical_or_(labels[second] > labels[first])
        else:  # 4-neighbours of different classes: the smaller sees a larger, and vice versa
            differs = labels[first] != labels[second]
            boundary[first].logical_or_(differs)
            boundary[second].logical_or_(differs)
    for dim in (-1, -2):  # kornia@af948c5 erosion pads with 1: border labels > 1 are boundary
        size = labels.shape[dim]
        for index in {0, size - 1}:
            edge = boundary.narrow(dim, index, 1)
            edge.logical_or_(labels.narrow(dim, index, 1) > 1)
    masks: dict[int, Tensor] = {}
    reached = 0
    for radius in sorted(set(radii)):
        boundary = _dilate_cross(boundary, radius - reached)
        masks[radius], reached = boundary, radius
    return masks


def _dilate_cross(mask: Tensor, steps: int) -> Tensor:
    """bool [..., H, W] dilated ``steps`` times by the 3x3 cross: the L1 ball of that radius."""
    for _ in range(steps):
        grown = mask.clone()
        for dim in (-1, -2):
            size = mask.shape[dim]
            if size > 1:
                grown.narrow(dim, 1, size - 1).logical_or_(mask.narrow(dim, 0, size - 1))
                grown.narrow(dim, 0, size - 1).logical_or_(mask.narrow(dim, 1, size - 1))
        mask = grown
    return mask


def _box_sum_3x3(x: Tensor) -> Tensor:
    """Sums over the 3x3 neighbourhoods of x [..., H, W], border replicated; rows, then columns.

    Each pass adds the two shifted copies in place and then the replicated border pixel to the
    first and last row or column (no padded copy).
    """
    for dim in (-1, -2):
        size = x.shape[dim]
        total = x.clone()
        if size > 1:
            total.narrow(dim, 1, size - 1).add_(x.narrow(dim, 0, size - 1))
            total.narrow(dim, 0, size - 1).add_(x.narrow(dim, 1, size - 1))
        total.narrow(dim, 0, 1).add_(x.narrow(dim, 0, 1))
        total.narrow(dim, size - 1, 1).add_(x.narrow(dim, size - 1, 1))
        x = total
    return x


def suppress_boundaries(score: Tensor, predicted: Tensor, iterations: int, width: int) -> Tensor:
    """SML boundary suppression (§3.2) of score float [N, 1, H, W] given predicted int [N, H, W].

    As ``BoundarySuppressionWithSmoothing`` of shjung13/Standardized-max-logits @c52a513 does it:
    round i of ``iterations`` takes :func:`class_boundaries` dilated by radius width - (width //
    iterations) i - 1 (0 in the last round; see :func:`_expansion_radii`) and replaces each value
    on it by the mean of the non-boundary values of its 3x3 neighbourhood, the map and the mask
    padded by replicating their border; a boundary pixel without any non-boundary neighbour keeps
    its value in that round. ``width`` must be a multiple of ``iterations``; 0 rounds change
    nothing. The boundaries depend on the prediction only, so all rounds' masks are made at once.
    """
    radii = _expansion_radii(width, iterations)
    masks = _boundaries_by_radius(predicted, radii)
    for radius in radii:
        boundary = masks[radius]
        neighbour_sum = _box_sum_3x3(score.masked_fill(boundary, 0.0))
        neighbour_count = _box_sum_3x3((~boundary).to(torch.uint8))  # 0-9: counted in bytes
        replace = boundary & (neighbour_count > 0)
        score = torch.where(replace, neighbour_sum / neighbour_count.clamp_(min=1), score)
    return score


def dilated_gaussian_smoothing(score: Tensor, kernel: int, sigma: float, dilation: int) -> Tensor:
    """Convolve score float [N, 1, H, W] with a normalised, dilated Gaussian (SML §3.3).

    The 2-D kernel is w_i w_j with w the normalised 1-D Gaussian of ``kernel`` taps at offsets
    i - (kernel - 1) / 2, taps ``dilation`` pixels apart. The map is padded by replicating its
    border by dilation * (kernel - 1) // 2 on each side (an even kernel with an odd dilation
    loses a row and a column), then filtered separably: rows, then columns. With kernel 7 and
    sigma 1 this is the official ``second_conv`` of ``BoundarySuppressionWithSmoothing``
    (shjung13/Standardized-max-logits @c52a513), whose 7x7 Gaussian is the same product of
    normalised 1-D taps and whose padding is dilation * 3.
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
