"""nvidia_wrn38 (NVIDIA cityscapes_best.pth, DeepWV3Plus) against the original code's own output.

The golden files were written by tests/golden/make_published_nvidia_wrn38_golden.py, which runs
``network/deepv3.py::DeepWV3Plus`` of NVIDIA/semantic-segmentation (branch sdcnet,
2f548ab30ab0d56e91de66a4dea4757a0c64e7e4) filled with ``seeded_state`` of the key list it
recorded (the published file's keys, ``module.criterion.nll_loss.weight`` included). Here the same
tensors are saved in the published layout and loaded through ``load_published``.
"""

from __future__ import annotations

from pathlib import Path

import published_files as shared
import pytest
import torch
from seeded_weights import seeded_images

import fsbench.models.published as published
from fsbench.models.published import build_published, load_published

FAMILY = "nvidia_wrn38"
KEYS = shared.recorded_keys(FAMILY)
CRITERION = "module.criterion.nll_loss.weight"


def _save(path: Path, weights: dict[str, torch.Tensor], **extra) -> Path:
    """``weights`` (keys without "module.") as train.py saved cityscapes_best.pth."""
    return shared.save_state(FAMILY, path, weights, epoch=1, **extra)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The seeded network, saved as the published file is and loaded through load_published."""
    path = tmp_path_factory.mktemp(FAMILY) / "cityscapes_best.pth"
    _save(path, shared.seeded_state_of(FAMILY))
    yield load_published(FAMILY, path)  # memory-mapped from the file
    path.unlink()


@pytest.fixture(scope="module")
def outputs(network):
    return shared.seeded_outputs(network)


@pytest.fixture(scope="module")
def cheap() -> dict[str, torch.Tensor]:
    """The file's state with every tensor a broadcast scalar (tiny on disk)."""
    return shared.hollow_state(FAMILY)


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
    out = outputs[index]
    image = seeded_images()[index]
    assert out.logits.shape == (1, 19, *image.shape[-2:])
    shared.check_matches_golden(FAMILY, out, index)
    assert network.feature_channels == out.features.shape[1] == 256
    assert network.dropout is None  # no dropout before final.6 in DeepWV3Plus


def test_classify_of_features_is_forward(network, outputs):
    image = seeded_images()[1]
    with torch.no_grad():
        logits = network.classify(network.extract_features(image), image.shape[-2:])
    assert torch.equal(logits, outputs[1].logits)


def test_missing_tensor_is_refused(cheap, tmp_path):
    shared.check_missing_tensor_refused(FAMILY, _save, cheap, "final.6.weight", tmp_path)


def test_unexpected_tensor_is_refused(cheap, tmp_path):
    extra = torch.zeros(4096)  # the trunk's unused output BN
    shared.check_unexpected_tensor_refused(FAMILY, _save, cheap, "bn_out.0.weight", extra, tmp_path)


def test_wrong_shape_is_refused_with_its_cause(cheap, tmp_path):
    wrong = torch.zeros(20, 256, 1, 1)
    shared.check_wrong_shape_refused(
        FAMILY, _save, cheap, "final.6.weight", wrong, tmp_path, "num_classes"
    )


@pytest.mark.parametrize("layout", shared.other_layouts(FAMILY))
def test_file_of_another_layout_is_refused(cheap, tmp_path, layout):
    shared.check_other_layout_refused(FAMILY, layout, cheap, tmp_path)


def test_skipped_tensors_and_old_files_without_step_counters_are_accepted(cheap, tmp_path):
    criterion = CRITERION.removeprefix("module.")
    assert next(iter(cheap)) == criterion  # the loss buffer is the file's first tensor
    net = shared.check_accepted_without_step_counters(FAMILY, _save, cheap, tmp_path)
    assert criterion not in net.state_dict()
    skipped = dict(published.family_spec(FAMILY).family.skipped)
    assert "criterion." in skipped
