"""nvidia_wrn38 (NVIDIA cityscapes_best.pth, DeepWV3Plus) against the original code's own output.

The golden files were written by tests/golden/make_published_nvidia_wrn38_golden.py, which runs
``network/deepv3.py::DeepWV3Plus`` of NVIDIA/semantic-segmentation (branch sdcnet,
2f548ab30ab0d56e91de66a4dea4757a0c64e7e4) filled with ``seeded_state`` of the key list it
recorded (the published file's keys, ``module.criterion.nll_loss.weight`` included). Here the same
tensors are saved in the published layout and loaded through ``load_published``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fsbench.models.published as published
from fsbench.models.published import PublishedCheckpointError, build_published, load_published

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))

from seeded_weights import grid_sample_of, seeded_images, seeded_state  # noqa: E402

FAMILY = "nvidia_wrn38"
KEYS = json.loads((GOLDEN / f"published_{FAMILY}_keys.json").read_text())
CRITERION = "module.criterion.nll_loss.weight"


def _golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"published_{FAMILY}.npz") as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The seeded network, saved as the published file is and loaded through load_published."""
    path = tmp_path_factory.mktemp(FAMILY) / "cityscapes_best.pth"
    torch.save({"state_dict": seeded_state(KEYS["keys"]), "epoch": 1}, path)
    yield load_published(FAMILY, path)  # memory-mapped from the file
    path.unlink()


@pytest.fixture(scope="module")
def outputs(network):
    with torch.no_grad():
        return [network(image) for image in seeded_images()]


def _cheap(keys=None, **changes) -> dict:
    """The file's state with every tensor a broadcast scalar (tiny on disk), after ``changes``."""
    state = {
        key: torch.zeros((), dtype=getattr(torch, dtype)).expand(shape)
        for key, shape, dtype in (keys or KEYS["keys"])
    }
    for key, value in changes.items():
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    return state


def _save(tmp_path: Path, content) -> Path:
    path = tmp_path / "cityscapes_best.pth"
    torch.save(content, path)
    return path


def test_key_list_is_the_published_layout():
    assert KEYS["family"] == FAMILY
    assert KEYS["source"] == "NVIDIA/semantic-segmentation@2f548ab30ab0d56e91de66a4dea4757a0c64e7e4"
    assert (KEYS["container"], KEYS["prefix"]) == ("state_dict", "module.")
    keys = [key for key, _, _ in KEYS["keys"]]
    assert keys[0] == CRITERION
    assert all(key.startswith("module.") for key in keys)
    rebuilt = build_published(FAMILY, device="meta").state_dict()
    expected = {key[len("module.") :]: shape for key, shape, _ in KEYS["keys"][1:]}
    assert list(rebuilt) == list(expected)  # the original's order, too
    assert {key: list(value.shape) for key, value in rebuilt.items()} == expected


@pytest.mark.parametrize("index", [0, 1])
def test_logits_and_features_equal_the_original(network, outputs, index):
    golden = _golden()
    out = outputs[index]
    image = seeded_images()[index]
    assert out.logits.shape == (1, 19, *image.shape[-2:])
    scale = float(golden[f"logits_std_{index}"])
    delta = np.abs(grid_sample_of(out.logits).numpy() - golden[f"logits_grid_{index}"]).max()
    assert delta <= 1e-4 * scale, f"max |logits delta| = {delta / scale:.3g} x logits std"
    agreement = (out.logits.argmax(1).numpy() == golden[f"argmax_{index}"]).mean()
    assert agreement >= 0.999, f"argmax agrees on {agreement:.2%} of the pixels"
    assert tuple(out.features.shape) == tuple(golden[f"features_shape_{index}"])
    features = out.features[:, ::16, 1::4, 1::4].numpy()
    expected = golden[f"features_grid_{index}"]
    delta = np.abs(features - expected).max() / expected.std()
    assert delta <= 1e-4, f"max |features delta| = {delta:.3g} x features std"
    assert network.feature_channels == out.features.shape[1] == 256
    assert network.dropout is None  # no dropout before final.6 in DeepWV3Plus


def test_classify_of_features_is_forward(network, outputs):
    image = seeded_images()[1]
    with torch.no_grad():
        logits = network.classify(network.extract_features(image), image.shape[-2:])
    assert torch.equal(logits, outputs[1].logits)


def test_missing_tensor_is_refused(tmp_path):
    path = _save(tmp_path, {"state_dict": _cheap(**{"module.final.6.weight": None})})
    with pytest.raises(PublishedCheckpointError, match="missing") as error:
        load_published(FAMILY, path)
    assert FAMILY in str(error.value) and "final.6.weight" in str(error.value)


def test_unexpected_tensor_is_refused(tmp_path):
    extra = {"module.bn_out.0.weight": torch.zeros(4096)}  # the trunk's unused output BN
    path = _save(tmp_path, {"state_dict": _cheap(**extra)})
    with pytest.raises(PublishedCheckpointError, match="unexpected") as error:
        load_published(FAMILY, path)
    assert FAMILY in str(error.value) and "bn_out.0.weight" in str(error.value)


def test_wrong_shape_is_refused(tmp_path):
    path = _save(
        tmp_path, {"state_dict": _cheap(**{"module.final.6.weight": torch.zeros(20, 256, 1, 1)})}
    )
    with pytest.raises(PublishedCheckpointError, match="shapes differ") as error:
        load_published(FAMILY, path)
    assert FAMILY in str(error.value) and "num_classes" in str(error.value)


def test_file_of_another_layout_is_refused(tmp_path):
    state = {key[len("module.") :]: value for key, value in _cheap().items()}
    path = _save(tmp_path, {"model_state": state, "cur_itrs": 1})  # VainF's layout
    with pytest.raises(PublishedCheckpointError, match="'state_dict'") as error:
        load_published(FAMILY, path)
    assert FAMILY in str(error.value)


def test_skipped_tensors_and_old_files_without_step_counters_are_accepted(tmp_path):
    keys = [entry for entry in KEYS["keys"] if not entry[0].endswith("num_batches_tracked")]
    assert len(keys) < len(KEYS["keys"]) and keys[0][0] == CRITERION  # the loss buffer stays
    net = load_published(FAMILY, _save(tmp_path, {"state_dict": _cheap(keys)}))
    assert not net.training
    assert CRITERION.removeprefix("module.") not in net.state_dict()
    skipped = dict(published.family_spec(FAMILY).family.skipped)
    assert "criterion." in skipped
