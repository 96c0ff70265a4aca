"""The softmax entropy, from logits or from probabilities: one implementation for every head.

With p = softmax(l) over the C classes along dim 1 of [N, C, ...], H[p] = -sum_c p_c log p_c in
nats, in [0, log C], with 0 log 0 = 0.

From logits, with d_c = l_c - max_c l_c, e_c = exp(d_c) and S = sum_c e_c,

    H = log S - sum_c e_c d_c / S,

the log-sum-exp form: d_c <= 0 and 1 <= S <= C, so nothing overflows; it takes one exponential
per element and no logarithm of a probability, so classes whose p_c underflows still add their
(vanishing) share. d_c is clamped at :data:`LOGIT_FLOOR` so that a class of logit -inf adds
e_c d_c = 0 * (-1e4) = 0, not 0 * (-inf) = NaN. float16 and bfloat16 logits are computed in
float32; float32 and float64 in their own precision.

From probabilities (the mean of several predictions, which has no logits), -sum_c p_c log p_c
with p_c clamped to the dtype's smallest normal number inside the logarithm: p_c = 0 then adds
0 * log(tiny) = 0, and its gradient stays finite.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LOGIT_FLOOR", "entropy_from_logits", "entropy_from_probs", "softmax_and_entropy"]

#: Shifted logits d_c = l_c - max l are clamped here (exp(-1e4) is 0 in every float dtype).
LOGIT_FLOOR = -1e4


def entropy_from_logits(logits: Tensor) -> Tensor:
    """float32 [N, ...]: the entropy of softmax(logits) for logits [N, C, ...] (classes dim 1).

    On the CPU the sums run over one class plane [N, ...] at a time, so every pass is contiguous
    and cache-sized, and no [N, C, ...] temporary is made (reductions over dim 1 of a whole
    tensor read C planes far apart and make several full-size temporaries). Elsewhere (GPUs)
    they run over the whole tensor, one kernel per step. Both compute the formula of
    :mod:`fsbench.heads.scores`, so they agree to rounding; both are differentiable.
    """
    _check_logits(logits)
    dtype = _compute_dtype(logits.dtype)
    if logits.device.type != "cpu":
        return _whole_tensor(logits.to(dtype))[2].float()
    top = logits.amax(dim=1).to(dtype)
    total = torch.zeros_like(top)  # S
    weighted = torch.zeros_like(top)  # sum_c e_c d_c
    # Without autograd two plane buffers serve every class (no allocation per plane).
    reuse = not (torch.is_grad_enabled() and logits.requires_grad)
    buffers = (torch.empty_like(top), torch.empty_like(top)) if reuse else (None, None)
    for c in range(logits.shape[1]):
        shifted = torch.sub(logits[:, c], top, out=buffers[0]).clamp_(min=LOGIT_FLOOR)
        exp = torch.exp(shifted, out=buffers[1])
        total += exp
        weighted.addcmul_(exp, shifted)
    return _entropy_of_sums(total, weighted).float()


def softmax_and_entropy(logits: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(softmax, entropy) along dim 1 of logits [N, C, ...]: [N, C, ...] and [N, ...].

    Computed in the logits' dtype, by the formula of :mod:`fsbench.heads.scores`, with a single
    exponential per element serving both (for heads that need the probabilities as well, e.g.
    to average predictions). With ``out`` (a tensor of the logits' shape and dtype) it works in
    place: ``logits`` is overwritten and the probabilities are written into ``out``. Without,
    it is out of place and differentiable.
    """
    _check_logits(logits)
    exp, total, entropy = _whole_tensor(logits, out)
    probs = exp.mul_(total.reciprocal()) if out is not None else exp / total
    return probs, entropy


def entropy_from_probs(
    probs: Tensor, dim: int = 1, *, out: Tensor | None = None, work: Tensor | None = None
) -> Tensor:
    """-sum p log p of probabilities ``probs`` along ``dim`` (0 log 0 = 0), in their dtype.

    With ``work`` (a tensor of the probabilities' shape and dtype) the terms are computed in it
    and the sum is written to ``out`` when given: no allocation, not differentiable. Without,
    it is out of place and differentiable.
    """
    tiny = torch.finfo(probs.dtype).tiny
    if work is None:
        return -(probs.clamp(min=tiny).log() * probs).sum(dim)
    torch.clamp(probs, min=tiny, out=work).log_().mul_(probs)
    return torch.sum(work, dim=dim, out=out).neg_()


def _whole_tensor(logits: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(e [N, C, ...], S [N, 1, ...], H [N, ...]) of logits over the whole tensor at once.

    With ``out``, in place: d overwrites ``logits`` (and then e d), e is written into ``out``.
    Without autograd the work stays in two full-size tensors (d, then e d; and e).
    """
    top = logits.amax(dim=1, keepdim=True)
    shifted = logits.sub_(top) if out is not None else logits - top
    if out is None and torch.is_grad_enabled() and shifted.requires_grad:
        shifted = shifted.clamp(min=LOGIT_FLOOR)
        exp = shifted.exp()
        weighted = (shifted * exp).sum(dim=1)
    else:
        exp = torch.exp(shifted.clamp_(min=LOGIT_FLOOR), out=out)
        weighted = shifted.mul_(exp).sum(dim=1)
    total = exp.sum(dim=1, keepdim=True)
    return exp, total, _entropy_of_sums(total[:, 0], weighted)


def _entropy_of_sums(total: Tensor, weighted: Tensor) -> Tensor:
    """H = log S - sum_c e_c d_c / S."""
    return total.log() - weighted / total


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the logit form computes in: at least float32."""
    return torch.promote_types(dtype, torch.float32)


def _check_logits(logits: Tensor) -> None:
    if logits.ndim < 2:
        raise ValueError(f"expected logits [N, C, ...], got shape {tuple(logits.shape)}")
