"""The sml_r101_os8 rebuild against the original network's own output (tests/golden/).

tests/golden/make_published_sml_r101_os8_golden.py ran shjung13/Standardized-max-logits @c52a513
``DeepR101V3PlusD_OS8`` (eval mode) with the seeded weights of its key list on the seeded images
and recorded its logits and the input of ``final2``. Here the same weights are saved in the
published file's layout (``{"state_dict": {"module." + key: tensor}, "epoch", "mean_iu"}``, with
``mean_iu`` a numpy float64 as train.py's ``np.nanmean`` gives it), read back through
``load_published`` and compared; the strict loader's refusals are checked on cheap stand-in files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import published_files as shared
import pytest
import torch
from seeded_weights import seeded_images

import fsbench.models.published as published
from fsbench.models.published import load_published

FAMILY = "sml_r101_os8"
DOCUMENT = shared.recorded_keys(FAMILY)
KEYS = DOCUMENT["keys"]
PREFIX = DOCUMENT["prefix"]


def _save(path: Path, weights: dict[str, torch.Tensor], **extra) -> Path:
    """``weights`` (unprefixed keys) in the published layout."""
    return shared.save_state(FAMILY, path, weights, epoch=1, mean_iu=np.float64(0.8), **extra)


@pytest.fixture(scope="module")
def seeded() -> dict[str, torch.Tensor]:
    """The golden weights, unprefixed keys, in the file's order."""
    return shared.seeded_state_of(FAMILY)


@pytest.fixture(scope="module")
def cheap() -> dict[str, torch.Tensor]:
    """Stand-ins of the file's tensors (right shapes, one stored value each): fast to save."""
    return shared.hollow_state(FAMILY)


@pytest.fixture(scope="module")
def network(seeded, tmp_path_factory):
    path = _save(tmp_path_factory.mktemp("sml") / "r101_os8_base_cty.pth", seeded)
    return load_published(FAMILY, path)


@pytest.fixture(scope="module")
def outputs(network):
    return shared.seeded_outputs(network)


def test_key_list_is_the_original_networks():
    assert DOCUMENT["family"] == FAMILY
    assert DOCUMENT["source"].startswith("shjung13/Standardized-max-logits@c52a513")
    assert (DOCUMENT["container"], PREFIX) == ("state_dict", "module.")
    assert len(KEYS) == 701 and all(key.startswith(PREFIX) for key, _, _ in KEYS)


def test_rebuild_holds_every_tensor_but_the_skipped_ones(seeded):
    family = published.FAMILIES[FAMILY].family
    with torch.device("meta"):
        expected = published.FAMILIES[FAMILY].load_class()().state_dict()
    kept = {
        key: value
        for key, value in seeded.items()
        if not any(key.startswith(prefix) for prefix, _ in family.skipped)
    }
    assert list(kept) == list(expected)
    assert all(kept[key].shape == expected[key].shape for key in kept)
    assert {key.split(".")[0] for key in seeded if key not in kept} == {"dsn"}


@pytest.mark.parametrize("index", [0, 1])
def test_logits_and_features_equal_the_original(outputs, index):
    shared.check_matches_golden(FAMILY, outputs[index], index)


def test_classify_of_extracted_features_is_forward(network, outputs):
    image = seeded_images()[1]
    with torch.no_grad():
        features = network.extract_features(image)
        logits = network.classify(features, image.shape[-2:])
    torch.testing.assert_close(logits, outputs[1].logits, rtol=0, atol=1e-6)
    assert network.feature_channels == features.shape[1] == 256
    assert network.dropout is None and network.align_corners is True


def test_missing_tensor_is_refused(cheap, tmp_path):
    shared.check_missing_tensor_refused(FAMILY, _save, cheap, "final1.3.weight", tmp_path)


def test_unexpected_tensor_is_refused(cheap, tmp_path):
    extra = torch.zeros(19, 256, 1, 1)
    shared.check_unexpected_tensor_refused(FAMILY, _save, cheap, "final3.0.weight", extra, tmp_path)


def test_wrong_shape_is_refused(cheap, tmp_path):
    wrong = torch.zeros(256, 2048, 1, 1)
    shared.check_wrong_shape_refused(
        FAMILY, _save, cheap, "aspp.features.2.0.weight", wrong, tmp_path
    )


def test_other_class_count_is_refused_with_its_cause(cheap, tmp_path):
    weights = {**cheap, "final2.0.weight": torch.zeros(20, 256, 1, 1)}
    weights["final2.0.bias"] = torch.zeros(20)
    shared.refusal(FAMILY, _save(tmp_path / "f.pth", weights), "num_classes")


@pytest.mark.parametrize("layout", shared.other_layouts(FAMILY))
def test_file_of_another_layout_is_refused(cheap, tmp_path, layout):
    shared.check_other_layout_refused(FAMILY, layout, cheap, tmp_path)


def test_skipped_tensors_are_accepted_and_unneeded(seeded, tmp_path):
    """The dsn head may be present or absent; a multi_scale (SML post-processing) copy too."""
    without_dsn = {key: value for key, value in seeded.items() if not key.startswith("dsn.")}
    network = load_published(FAMILY, _save(tmp_path / "a.pth", without_dsn))
    assert not any(key.startswith("dsn") for key in network.state_dict())
    with_post = {
        **seeded,
        "multi_scale.first_conv.weight": torch.ones(1, 1, 3, 3),
        "multi_scale.second_conv.weight": torch.ones(1, 1, 7, 7) / 49,
    }
    load_published(FAMILY, _save(tmp_path / "b.pth", with_post))


def test_state_without_step_counters_is_accepted(seeded, tmp_path):
    network = shared.check_accepted_without_step_counters(FAMILY, _save, seeded, tmp_path)
    torch.testing.assert_close(network.final2[0].weight, seeded["final2.0.weight"])
