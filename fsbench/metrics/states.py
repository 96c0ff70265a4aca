"""What the protocol metrics share about their states across processes."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["cat_state", "check_same_shape", "frame_batch", "gather_objects"]


def cat_state(state: list[Tensor] | Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """One 1-D tensor from a list state, before or after a distributed sync (then a tensor)."""
    if isinstance(state, Tensor):
        return state.reshape(-1)
    if not state:
        return torch.empty(0, dtype=dtype)
    return torch.cat([s.reshape(-1) for s in state])


def gather_objects(items: list[Any]) -> list[Any]:
    """Every process's ``items``, concatenated in rank order (this process's alone without DDP).

    Every process must call it (it is a collective under DDP).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]


def frame_batch(score: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``score`` and ``target`` as a batch [N, H, W] (one [H, W] frame gets N = 1), same shape."""
    if score.dim() == 2:
        score, target = score[None], target[None]
    check_same_shape(score, target)
    return score, target


def check_same_shape(score: Tensor, target: Tensor) -> None:
    """Refuse scores at another resolution than their labels (they are never resized here)."""
    if score.shape != target.shape:
        raise ValueError(
            f"score shape {tuple(score.shape)} differs from target shape "
            f"{tuple(target.shape)}; resize the scores to the label resolution"
        )
