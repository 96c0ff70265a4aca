"""Seeded weights and images for the published-network golden files, re-creatable from a key list.

Both sides use this module: the scripts ``make_published_<family>_golden.py`` fill the original
network (built from the fetched original repository) with :func:`seeded_state` and record its
output on :func:`seeded_images` (the arrays of :func:`golden_arrays`); the tests rebuild the same
tensors from the recorded key list and load them through fsbench's loader. The rule depends only
on the ordered list of ``(key, shape, dtype)``: tensor ``i`` comes from a ``torch.Generator``
seeded with ``i``.

The values keep a deep network's activations bounded (so the logits are not dominated by one
channel and argmax comparisons mean something): convolution and linear weights are normal with
variance 1 / fan_in, BatchNorm scales in [0.5, 1], shifts and biases 0.1 x normal, running means
0.1 x normal, running variances in [0.5, 1.5].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

KeyList = Sequence[tuple[str, Sequence[int], str]]

# Where the golden logits are sampled: rows 2, 10, 18, ... and columns 3, 11, 19, ...
GRID = (slice(2, None, 8), slice(3, None, 8))
# Two images: wide enough for every ASPP rate to reach inside the map (at OS8 a 320-pixel width is
# 40 feature columns > 36), and one with odd sides (cropping, padding, align_corners).
IMAGE_SIZES = ((160, 320), (97, 131))
# Where the golden features are sampled: every 16th channel, every 4th row and column from 1.
FEATURE_GRID = (slice(None), slice(None, None, 16), slice(1, None, 4), slice(1, None, 4))


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


def feature_sample_of(features: torch.Tensor) -> torch.Tensor:
    """The features [N, C, H, W] at the golden feature grid."""
    return features[FEATURE_GRID]


def golden_arrays(
    index: int, logits: torch.Tensor, features: torch.Tensor
) -> dict[str, np.ndarray]:
    """What a golden file records of image ``index``: the logits [1, C, H, W] at the grid, their
    argmax and standard deviation, the features (the classifier's input) at the feature grid and
    their shape."""
    logits, features = logits.detach().cpu(), features.detach().cpu()
    return {
        f"logits_grid_{index}": grid_sample_of(logits).numpy().astype(np.float32),
        f"argmax_{index}": logits.argmax(1).numpy().astype(np.uint8),
        f"logits_std_{index}": np.float64(logits.double().std().item()),
        f"features_grid_{index}": feature_sample_of(features).numpy().astype(np.float32),
        f"features_shape_{index}": np.array(features.shape, dtype=np.int64),
    }


def golden_line(index: int, x: torch.Tensor, arrays: dict[str, np.ndarray]) -> str:
    """One printed line about image ``index`` of ``golden_arrays``' output (``x`` its input)."""
    shape = tuple(int(n) for n in arrays[f"features_shape_{index}"])
    return (
        f"image {index}: input {tuple(x.shape)}, features {shape}, "
        f"logits std {float(arrays[f'logits_std_{index}']):.4f}"
    )
