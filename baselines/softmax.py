"""Post-hoc scores computed from the class logits alone.

Each works on logits of shape [N, C, H, W] (C classes along dim 1) and returns float32 [N, H, W]
with the sign convention of fsbench: higher = more anomalous.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsbench.heads import AnomalyHead
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
