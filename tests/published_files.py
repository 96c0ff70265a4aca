"""Files in a published network's own layout, filled by the golden rule (golden/seeded_weights.py),
and the checks every published family's tests make with them.

The key lists are the original code's state dicts as the golden scripts recorded them
(``tests/golden/published_<name>_keys.json``: keys, shapes, dtypes, the file's container and
prefix), so a file written here has exactly the published key names and shapes.

The checks (``tests/test_published_<family>.py`` call them with their family's own examples):
:func:`check_matches_golden` compares a loaded network's output with the original code's golden
file, and the ``check_*_refused`` / ``check_*_accepted`` functions hold the strict loader to its
rules on cheap stand-in files (:func:`hollow_state`). Weights are given by the network's own keys
(the file's prefix removed, as the loader's messages name them); a family's ``save(path,
weights)`` writes them in its file's layout (:func:`save_state` plus the file's other entries).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fsbench.models.published import PublishedCheckpointError, load_published

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
from seeded_weights import (  # noqa: E402
    feature_sample_of,
    grid_sample_of,
    seeded_images,
    seeded_state,
)

# A family's writer of a file in its layout: save(path, weights by network key) -> path.
Save = Callable[[Path, dict[str, torch.Tensor]], Path]

# family -> the key list the golden script recorded for its file
KEY_LISTS = {
    "nvidia_wrn38": "published_nvidia_wrn38_keys.json",
    "sml_r101_os8": "published_sml_r101_os8_keys.json",
    "vainf_r101_os16": "published_vainf_r101_keys.json",
    "vainf_r101_os8": "published_vainf_r101_keys.json",
    "vainf_mbv2_os16": "published_vainf_mbv2_keys.json",
    "mmseg_r101_d8": "published_mmseg_r101_d8_keys.json",
}


def recorded_keys(family: str) -> dict:
    """The golden script's record for ``family``: {"keys", "container", "prefix", "source", ...}."""
    return json.loads((GOLDEN / KEY_LISTS[family]).read_text())


def published_state(family: str) -> dict[str, torch.Tensor]:
    """The seeded tensors under the file's own keys (prefix included, container not)."""
    return seeded_state(recorded_keys(family)["keys"])


def write_published_file(family: str, path: Path, **extra) -> Path:
    """Write ``{container: seeded state, **extra}`` (or the bare state) as the published file."""
    record = recorded_keys(family)
    state = published_state(family)
    payload = state if record["container"] is None else {record["container"]: state, **extra}
    torch.save(payload, path)
    return path


def unprefixed(family: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (the file's keys) under the network's keys: the family's prefix removed."""
    prefix = recorded_keys(family)["prefix"]
    return {key.removeprefix(prefix): value for key, value in state.items()}


def seeded_state_of(family: str) -> dict[str, torch.Tensor]:
    """The golden weights under the network's keys, in the file's order (skipped ones included)."""
    return unprefixed(family, published_state(family))


def hollow_state(family: str) -> dict[str, torch.Tensor]:
    """Stand-ins of the file's tensors under the network's keys: the right shapes and dtypes, each
    a broadcast zero (one stored value), so that a file of them is a few KB and quick to save."""
    return unprefixed(
        family,
        {
            key: torch.zeros((), dtype=getattr(torch, dtype)).expand(shape)
            for key, shape, dtype in recorded_keys(family)["keys"]
        },
    )


def save_state(family: str, path: Path, weights: dict[str, torch.Tensor], **entries) -> Path:
    """``weights`` (network keys) as the family's file stores them: prefixed, in its container,
    next to the file's other ``entries``."""
    record = recorded_keys(family)
    state = {record["prefix"] + key: value for key, value in weights.items()}
    torch.save({record["container"]: state, **entries}, path)
    return path


# ---------------------------------------------------------------------------------------------
# The original code's output


@functools.cache
def golden_arrays_of(family: str) -> dict[str, np.ndarray]:
    """``tests/golden/published_<family>.npz`` (golden_arrays of each seeded image)."""
    with np.load(GOLDEN / f"published_{family}.npz") as arrays:
        return dict(arrays)


def seeded_outputs(network) -> list:
    """The network's output on each of ``seeded_images()`` (without autograd)."""
    with torch.no_grad():
        return [network(image) for image in seeded_images()]


def check_matches_golden(family: str, output, index: int) -> None:
    """The network's output on seeded image ``index`` is the original code's: logits at the grid
    within 1e-4 of their std, argmax on >= 99.9% of the pixels, features (the classifier's input)
    of the same shape and within 1e-4 of their std at the feature grid."""
    golden = golden_arrays_of(family)
    logits, features = output.logits, output.features
    assert tuple(logits.shape[-2:]) == golden[f"argmax_{index}"].shape[-2:]
    assert logits.shape[1] == golden[f"logits_grid_{index}"].shape[1]
    scale = float(golden[f"logits_std_{index}"])
    delta = np.abs(grid_sample_of(logits).numpy() - golden[f"logits_grid_{index}"]).max()
    assert delta <= 1e-4 * scale, f"max |logits delta| = {delta / scale:.3g} x logits std"
    agreement = (logits.argmax(1).numpy() == golden[f"argmax_{index}"]).mean()
    assert agreement >= 0.999, f"argmax agrees on {agreement:.4%} of the pixels"
    assert list(features.shape) == golden[f"features_shape_{index}"].tolist()
    expected = golden[f"features_grid_{index}"]
    delta = np.abs(feature_sample_of(features).numpy() - expected).max() / expected.std()
    assert delta <= 1e-4, f"max |features delta| = {delta:.3g} x features std"


# ---------------------------------------------------------------------------------------------
# The strict loader's rules


def refusal(family: str, path: Path, *words: str) -> str:
    """Loading ``path`` as ``family`` is refused with a message naming the family and ``words``."""
    with pytest.raises(PublishedCheckpointError) as caught:
        load_published(family, path)
    message = str(caught.value)
    for word in (family, *words):
        assert word in message, message
    return message


def check_missing_tensor_refused(
    family: str, save: Save, weights: dict[str, torch.Tensor], key: str, folder: Path
) -> str:
    fewer = dict(weights)
    del fewer[key]
    return refusal(family, save(folder / "missing.pth", fewer), "missing", key)


def check_unexpected_tensor_refused(
    family: str, save: Save, weights: dict[str, torch.Tensor], key: str, tensor, folder: Path
) -> str:
    assert key not in weights
    more = {**weights, key: tensor}
    return refusal(family, save(folder / "unexpected.pth", more), "unexpected", key)


def check_wrong_shape_refused(
    family: str,
    save: Save,
    weights: dict[str, torch.Tensor],
    key: str,
    tensor,
    folder: Path,
    *words: str,
) -> str:
    """``key`` holding ``tensor`` of another shape is refused, naming it (and ``words``)."""
    assert tuple(tensor.shape) != tuple(weights[key].shape)
    changed = {**weights, key: tensor}
    return refusal(family, save(folder / "shape.pth", changed), "shapes differ", key, *words)


# layout -> the file of a state (network keys) in it
_LAYOUTS = {
    # NVIDIA's and SML's train.py (DataParallel saves: "module." keys)
    "state_dict": lambda weights: {
        "state_dict": {"module." + key: value for key, value in weights.items()},
        "epoch": 1,
    },
    # VainF's main.py save_ckpt
    "model_state": lambda weights: {"model_state": dict(weights), "cur_itrs": 1},
    # a bare state dict
    "bare": lambda weights: dict(weights),
}


def other_layouts(family: str) -> list[str]:
    """The layouts of ``_LAYOUTS`` the family's file does not have."""
    return [layout for layout in _LAYOUTS if layout != recorded_keys(family)["container"]]


def check_other_layout_refused(
    family: str, layout: str, weights: dict[str, torch.Tensor], folder: Path
) -> str:
    """A file of another layout is refused, naming the container the family's file has."""
    path = folder / f"{layout}.pth"
    torch.save(_LAYOUTS[layout](weights), path)
    return refusal(family, path, repr(recorded_keys(family)["container"]))


def check_accepted_without_step_counters(
    family: str, save: Save, weights: dict[str, torch.Tensor], folder: Path
):
    """A file without BatchNorm's num_batches_tracked (older torch) loads; returns the network."""
    fewer = {
        key: value for key, value in weights.items() if not key.endswith("num_batches_tracked")
    }
    assert len(fewer) < len(weights)
    network = load_published(family, save(folder / "no_counters.pth", fewer))
    assert not network.training
    return network
