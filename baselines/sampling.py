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
takes them one at a time, so the heads' memory does not grow with T. The entropies themselves
are fsbench's (:func:`fsbench.heads.entropy_from_probs`, :func:`fsbench.heads.softmax_and_entropy`),
the same as the single-pass entropy head's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fsbench.heads import entropy_from_probs, softmax_and_entropy

#: Score names understood by :meth:`MemberAverage.score`.
SCORES = ("entropy", "mutual_information", "max_softmax")

#: Score names that were renamed: old name -> new name (refused with a message naming the new).
RENAMED_SCORES = {"max_prob": "max_softmax"}


def predictive_entropy(probs: Tensor) -> Tensor:
    """H[mean_t p_t]: probs float [T, N, C, ...] (T predictions, C classes) -> [N, ...]."""
    _check_members(probs)
    return entropy_from_probs(probs.mean(dim=0), dim=1)


def expected_entropy(probs: Tensor) -> Tensor:
    """mean_t H[p_t]: probs float [T, N, C, ...] -> [N, ...]."""
    _check_members(probs)
    return entropy_from_probs(probs, dim=2).mean(dim=0)


def mutual_information(probs: Tensor) -> Tensor:
    """H[mean_t p_t] - mean_t H[p_t], clamped at 0 against rounding: [T, N, C, ...] -> [N, ...]."""
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp(min=0)


def check_score(score: str, allowed: tuple[str, ...], owner: str) -> str:
    """Return ``score`` if it is one of ``allowed``, else raise a ValueError naming ``owner``.

    A renamed score (:data:`RENAMED_SCORES`, e.g. ``max_prob``, now ``max_softmax``) is refused
    with a message that gives its new name; there are no silent aliases.
    """
    renamed = RENAMED_SCORES.get(score)
    if renamed in allowed:
        raise ValueError(
            f"{owner} score {score!r} is now called {renamed!r} (the score 1 - max_c p_c, as "
            f"the max_softmax head names it); use score={renamed}"
        )
    if score not in allowed:
        raise ValueError(f"{owner} score must be one of {', '.join(allowed)}; got {score!r}")
    return score


#: Single-threaded on the CPU, :class:`MemberAverage` works through predictions in chunks of
#: this many elements (classes x pixels; 1 MiB in float64), so that its passes run in cache, not
#: in memory (benchmarks/README.md). With several threads it uses whole tensors, as on GPUs:
#: every op is then a parallel region, and many small ones stall on a busy machine.
CPU_CHUNK_ELEMENTS = 1 << 17


def _chunk_elements(device: torch.device) -> int | None:
    """Elements per chunk of :class:`MemberAverage` on ``device``; ``None``: whole tensors."""
    if device.type == "cpu" and torch.get_num_threads() == 1:
        return CPU_CHUNK_ELEMENTS
    return None


class MemberAverage:
    """Running average of T predictions, added one at a time as logits float [N, C, ...].

    Keeps sum_t p_t and sum_t H[p_t] only (memory independent of T), accumulated in place, and
    computes them in float64 (float32 on MPS, which lacks float64): mutual information is a small
    difference of two entropies, and 1 - max p of confident pixels rounds to 0 in float32.
    Without gradients (``torch.no_grad``/``inference_mode``, the heads' case) :meth:`add` and
    :meth:`score` work in place in two buffers made at the first add and reused: the size of the
    logits, or cache-sized chunks on a single-threaded CPU (:data:`CPU_CHUNK_ELEMENTS`). With
    gradients they compute out of place, differentiably.
    """

    def __init__(self) -> None:
        self.count = 0
        self._prob_sum: Tensor | None = None  # sum_t p_t, [N, C, ...]
        self._entropy_sum: Tensor | None = None  # sum_t H[p_t], [N, ...]
        self._work: tuple[Tensor, Tensor] | None = None  # in-place buffers, [n, C, p]
        self._steps: tuple[int, int] = (0, 0)  # images and pixels per chunk (n, p), fixed once

    def add(self, logits: Tensor) -> None:
        """Add one prediction given by its logits float [N, C, ...] (classes along dim 1).

        p = softmax(logits) and H[p] come from :func:`fsbench.heads.softmax_and_entropy`: one
        exponential per element, no logarithm of p, and 0 log 0 = 0 (logits of -inf included).
        ``logits`` is not modified.
        """
        if logits.ndim < 2:
            raise ValueError(f"expected logits [N, C, ...], got shape {tuple(logits.shape)}")
        if self._prob_sum is not None and logits.shape != self._prob_sum.shape:
            raise ValueError(
                f"MemberAverage: a prediction of shape {tuple(logits.shape)} after ones of shape "
                f"{tuple(self._prob_sum.shape)}"
            )
        dtype = torch.float32 if logits.device.type == "mps" else torch.float64
        if torch.is_grad_enabled() and logits.requires_grad:
            probs, member_entropy = softmax_and_entropy(logits.to(dtype))
            if self._prob_sum is None:
                self._prob_sum, self._entropy_sum = probs, member_entropy
            else:
                self._prob_sum.add_(probs)
                self._entropy_sum.add_(member_entropy)
            self.count += 1
            return
        first = self._prob_sum is None
        if first:
            self._prob_sum = torch.empty(logits.shape, dtype=dtype, device=logits.device)
            self._entropy_sum = torch.zeros(
                (logits.shape[0], *logits.shape[2:]), dtype=dtype, device=logits.device
            )
        flat = logits.reshape(_flat(logits.shape))
        prob_sum = self._prob_sum.view(flat.shape)
        entropy_sum = self._entropy_sum.view(flat.shape[0], flat.shape[2])
        for chunk, (shifted, exp) in self._chunks():
            probs, member_entropy = softmax_and_entropy(shifted.copy_(flat[chunk]), out=exp)
            if first:
                prob_sum[chunk].copy_(probs)
            else:
                prob_sum[chunk].add_(probs)
            entropy_sum[chunk[0], chunk[2]].add_(member_entropy)
        self.count += 1

    def _chunks(self) -> list[tuple[tuple[slice, slice, slice], tuple[Tensor, Tensor]]]:
        """Indices of the chunks of the sum as [N, C, P], each with its views of the buffers."""
        images, classes, pixels = _flat(self._prob_sum.shape)
        if self._work is None:
            elements = _chunk_elements(self._prob_sum.device)
            per_chunk = pixels if elements is None else max(1, elements // classes)
            step_pixels = max(1, min(pixels, per_chunk))
            step_images = images if elements is None else min(images, per_chunk // step_pixels)
            self._steps = (max(1, step_images), step_pixels)
            like = {"dtype": self._prob_sum.dtype, "device": self._prob_sum.device}
            size = (self._steps[0], classes, step_pixels)
            self._work = (torch.empty(size, **like), torch.empty(size, **like))
        step_images, step_pixels = self._steps
        chunks = []
        for i in range(0, images, step_images):
            for p in range(0, pixels, step_pixels):
                n, m = min(step_images, images - i), min(step_pixels, pixels - p)
                index = (slice(i, i + n), slice(None), slice(p, p + m))
                chunks.append((index, tuple(w[:n, :, :m] for w in self._work)))
        return chunks

    def mean_probs(self) -> Tensor:
        """mean_t p_t, [N, C, ...] (accumulation dtype)."""
        self._check_not_empty()
        return self._prob_sum / self.count

    def log_mean_probs(self) -> Tensor:
        """log mean_t p_t, float32 [N, C, ...]; probabilities that underflow give a finite floor."""
        mean = self.mean_probs()
        return mean.clamp(min=torch.finfo(mean.dtype).tiny).log().float()

    def score(self, kind: str) -> Tensor:
        """float32 [N, ...]: ``entropy`` (predictive), ``mutual_information`` or ``max_softmax``.

        ``max_softmax`` is 1 - max_c mean_t p_tc, the maximum-softmax score of the averaged
        prediction.
        """
        check_score(kind, SCORES, "MemberAverage")
        self._check_not_empty()
        if kind == "max_softmax":
            return (1 - self._prob_sum.amax(dim=1) / self.count).float()
        predictive = self._predictive_entropy()
        if kind == "entropy":
            return predictive.float()
        return (predictive - self._entropy_sum / self.count).clamp(min=0).float()

    def _predictive_entropy(self) -> Tensor:
        """H[mean_t p_t], [N, ...] in the accumulation dtype."""
        if torch.is_grad_enabled() and self._prob_sum.requires_grad:
            return entropy_from_probs(self._prob_sum / self.count, dim=1)
        flat = self._prob_sum.view(_flat(self._prob_sum.shape))
        result = torch.empty_like(self._entropy_sum)
        flat_result = result.view(flat.shape[0], flat.shape[2])
        for chunk, (mean, terms) in self._chunks():
            torch.div(flat[chunk], self.count, out=mean)
            entropy_from_probs(mean, dim=1, work=terms, out=flat_result[chunk[0], chunk[2]])
        return result

    def _check_not_empty(self) -> None:
        if self._prob_sum is None:
            raise RuntimeError("MemberAverage is empty: add at least one prediction")


def _flat(shape: torch.Size) -> tuple[int, int, int]:
    """[N, C, ...] as [N, C, P], P the number of pixels (also for empty batches)."""
    return (shape[0], shape[1], math.prod(shape[2:]))


def _check_members(probs: Tensor) -> None:
    if probs.ndim < 3:
        raise ValueError(
            f"expected member probabilities [T, N, C, ...], got shape {tuple(probs.shape)}"
        )
