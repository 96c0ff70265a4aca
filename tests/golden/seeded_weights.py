"""Seeded weights and images for the published-network golden files, re-creatable from a key list.

Both sides use this module: the scripts ``make_published_<family>_golden.py`` fill the original
network (built from the fetched original repository) with :func:`seeded_state` and record its
logits on :func:`seeded_images`; the tests rebuild the same tensors from the recorded key list and
load them through fsbench's loader. The rule depends only on the ordered list of
``(key, shape, dtype)``: tensor ``i`` comes from a ``torch.Generator`` seeded with ``i``.

The values keep a deep network's activations bounded (so the logits are not dominated by one
channel and argmax comparisons mean something): convolution and linear weights are normal with
variance 1 / fan_in, BatchNorm scales in [0.5, 1], shifts and biases 0.1 x normal, running means
0.1 x normal, running variances in [0.5, 1.5].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

KeyList = Sequence[tuple[str, Sequence[int], str]]

# Where the golden logits are sampled: rows 2, 10, 18, ... and columns 3, 11, 19, ...
GRID = (slice(2, None, 8), slice(3, None, 8))
# Two images: wide enough for every ASPP rate to reach inside the map (at OS8 a 320-pixel width is
# 40 feature columns > 36), and one with odd sides (cropping, padding, align_corners).
IMAGE_SIZES = ((160, 320), (97, 131))


def key_list(state: dict[str, torch.Tensor]) -> list[tuple[str, list[int], str]]:
    """``[(key, shape, dtype name)]`` of a state dict, in its order."""
    return [
        (key, list(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in state.items()
    ]


def _is_batchnorm(key: str, keys: set[str]) -> bool:
    return f"{key.rsplit('.', 1)[0]}.running_var" in keys


def seeded_tensor(
    index: int, key: str, shape: Sequence[int], dtype: str, keys: set[str]
) -> torch.Tensor:
    """Tensor ``index`` of the key list (see the module docstring for the rule)."""
    shape = tuple(int(n) for n in shape)
    if dtype in ("int64", "long"):  # BatchNorm step counters
        return torch.zeros(shape, dtype=torch.long)
    generator = torch.Generator().manual_seed(index)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=generator)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=generator)
    if _is_batchnorm(key, keys) and leaf == "weight":
        return 0.5 + 0.5 * torch.rand(shape, generator=generator)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    return 0.1 * torch.randn(shape, generator=generator)


def seeded_state(keys: KeyList) -> dict[str, torch.Tensor]:
    """The state dict the rule gives for an ordered key list ``[(key, shape, dtype)]``."""
    names = {key for key, _, _ in keys}
    return {
        key: seeded_tensor(index, key, shape, dtype, names)
        for index, (key, shape, dtype) in enumerate(keys)
    }


def seeded_images() -> list[torch.Tensor]:
    """The golden inputs: float [1, 3, H, W] RGB in [0, 1], on the 1/255 grid of 8-bit images.

    Smooth colour fields plus noise, so that the network's input has structure at every scale.
    """
    images = []
    for index, (height, width) in enumerate(IMAGE_SIZES):
        generator = torch.Generator().manual_seed(1000 + index)
        coarse = torch.rand(1, 3, height // 16 + 2, width // 16 + 2, generator=generator)
        smooth = torch.nn.functional.interpolate(
            coarse, size=(height, width), mode="bilinear", align_corners=False
        )
        noise = torch.rand(1, 3, height, width, generator=generator)
        image = (0.8 * smooth + 0.2 * noise).clamp(0, 1)
        images.append(torch.round(image * 255) / 255)
    return images


def grid_sample_of(logits: torch.Tensor) -> torch.Tensor:
    """The logits [N, C, H, W] at the golden grid's pixels."""
    return logits[..., GRID[0], GRID[1]]
