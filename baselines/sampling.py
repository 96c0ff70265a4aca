"""Uncertainty scores of sampling methods: several categorical predictions of the same pixel.

The predictions p_1..p_T come from T stochastic passes (MC dropout) or T networks (a deep
ensemble). With H[p] = -sum_c p_c log p_c in nats (0 log 0 = 0):

* predictive entropy  H[mean_t p_t]                        total uncertainty;
* expected entropy    mean_t H[p_t]                        the aleatoric part;
* mutual information  H[mean_t p_t] - mean_t H[p_t] >= 0   the epistemic part, i.e. the
  disagreement of the predictions (BALD: Houlsby et al. 2011; Gal et al., ICML 2017;
  Depeweg et al., ICML 2018).

Two confident predictions that disagree have predictive entropy ln 2 and mutual information
ln 2 (their expected entropy is 0, which is why the mean of the members' entropies is no substitute
for the predictive entropy); identical predictions have mutual information 0.

The functions take all predictions at once, float [T, N, C, ...]; :class:`MemberAverage`
takes them one at a time, so the heads' memory does not grow with T.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Score names understood by :meth:`MemberAverage.score`.
SCORES = ("entropy", "mutual_information", "max_prob")


def entropy(probs: Tensor, dim: int = 1) -> Tensor:
    """Entropy in nats of the distributions ``probs`` along ``dim`` (0 log 0 = 0)."""
    return -torch.xlogy(probs, probs).sum(dim)


def predictive_entropy(probs: Tensor) -> Tensor:
    """H[mean_t p_t]: probs float [T, N, C, ...] (T predictions, C classes) -> [N, ...]."""
    _check_members(probs)
    return entropy(probs.mean(dim=0), dim=1)


def expected_entropy(probs: Tensor) -> Tensor:
    """mean_t H[p_t]: probs float [T, N, C, ...] -> [N, ...]."""
    _check_members(probs)
    return entropy(probs, dim=2).mean(dim=0)


def mutual_information(probs: Tensor) -> Tensor:
    """H[mean_t p_t] - mean_t H[p_t], clamped at 0 against rounding: [T, N, C, ...] -> [N, ...]."""
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp(min=0)


def check_score(score: str, allowed: tuple[str, ...], owner: str) -> str:
    """Return ``score`` if it is one of ``allowed``, else raise a ValueError naming ``owner``."""
    if score not in allowed:
        raise ValueError(f"{owner} score must be one of {', '.join(allowed)}; got {score!r}")
    return score


class MemberAverage:
    """Running average of T predictions, added one at a time as logits float [N, C, ...].

    Keeps sum_t p_t and sum_t H[p_t] only (memory independent of T) and computes them in float64
    (float32 on MPS, which lacks float64): mutual information is a small difference of two
    entropies, and 1 - max p of confident pixels rounds to 0 in float32.
    """

    def __init__(self) -> None:
        self.count = 0
        self._prob_sum: Tensor | None = None  # sum_t p_t, [N, C, ...]
        self._entropy_sum: Tensor | None = None  # sum_t H[p_t], [N, ...]

    def add(self, logits: Tensor) -> None:
        """Add one prediction given by its logits float [N, C, ...] (classes along dim 1)."""
        dtype = torch.float32 if logits.device.type == "mps" else torch.float64
        probs = torch.softmax(logits.to(dtype), dim=1)
        member_entropy = entropy(probs, dim=1)
        if self._prob_sum is None:
            self._prob_sum, self._entropy_sum = probs, member_entropy
        else:
            self._prob_sum = self._prob_sum + probs
            self._entropy_sum = self._entropy_sum + member_entropy
        self.count += 1

    def mean_probs(self) -> Tensor:
        """mean_t p_t, [N, C, ...] (accumulation dtype)."""
        if self._prob_sum is None:
            raise RuntimeError("MemberAverage is empty: add at least one prediction")
        return self._prob_sum / self.count

    def log_mean_probs(self) -> Tensor:
        """log mean_t p_t, float32 [N, C, ...]; probabilities that underflow give a finite floor."""
        mean = self.mean_probs()
        return mean.clamp(min=torch.finfo(mean.dtype).tiny).log().float()

    def score(self, kind: str) -> Tensor:
        """float32 [N, ...]: ``entropy`` (predictive), ``mutual_information`` or ``max_prob``.

        ``max_prob`` is 1 - max_c mean_t p_tc, the maximum-softmax score of the averaged
        prediction.
        """
        check_score(kind, SCORES, "MemberAverage")
        mean = self.mean_probs()
        if kind == "max_prob":
            return (1 - mean.amax(dim=1)).float()
        predictive = entropy(mean, dim=1)
        if kind == "entropy":
            return predictive.float()
        return (predictive - self._entropy_sum / self.count).clamp(min=0).float()


def _check_members(probs: Tensor) -> None:
    if probs.ndim < 3:
        raise ValueError(
            f"expected member probabilities [T, N, C, ...], got shape {tuple(probs.shape)}"
        )
