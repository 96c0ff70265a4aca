"""mmseg_r101_d8 against mmsegmentation's own output (tests/golden/published_mmseg_r101_d8*).

The golden files were written by tests/golden/make_published_mmseg_r101_d8_golden.py, which
builds DeepLabV3+ R101-D8 from mmsegmentation 0.30.0's own config
(configs/deeplabv3plus/deeplabv3plus_r101-d8_512x1024_80k_cityscapes.py) with mmseg's builder,
fills it with the seeded weights of its own state-dict key list and records
``EncoderDecoder.encode_decode`` on the seeded images normalised by mmseg's test pipeline. Here
the same seeded tensors are saved in the published layout (``{"meta", "state_dict"}``, auxiliary
head included) and loaded through fsbench's strict loader.
"""

from __future__ import annotations

from pathlib import Path

import published_files as shared
import pytest
import torch
from seeded_weights import seeded_images

from fsbench.models.published import family_spec, load_published

FAMILY = "mmseg_r101_d8"
KEYS = shared.recorded_keys(FAMILY)


def _save(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """``state`` in the published layout: mmcv's save_checkpoint without the optimizer."""
    return shared.save_state(FAMILY, path, state, meta={"mmseg_version": "0.5.0", "iter": 80000})


@pytest.fixture(scope="module")
def seeded() -> dict[str, torch.Tensor]:
    return shared.seeded_state_of(FAMILY)


@pytest.fixture(scope="module")
def hollow() -> dict[str, torch.Tensor]:
    """The same keys and shapes, each tensor a broadcast zero (a file of a few KB, not 250 MB)."""
    return shared.hollow_state(FAMILY)


@pytest.fixture(scope="module")
def network(seeded, tmp_path_factory):
    path = _save(tmp_path_factory.mktemp(FAMILY) / "seeded.pth", dict(seeded))
    return load_published(FAMILY, path)


@pytest.fixture(scope="module")
def outputs(network):
    return shared.seeded_outputs(network)


def test_key_list_is_the_files() -> None:
    assert KEYS["family"] == FAMILY and KEYS["container"] == "state_dict"
    assert KEYS["prefix"] == ""
    prefixes = {key.split(".", 1)[0] for key, _, _ in KEYS["keys"]}
    assert prefixes == {"backbone", "decode_head", "auxiliary_head"}


@pytest.mark.parametrize("index", [0, 1])
def test_logits_and_features_match_mmseg(outputs, index: int) -> None:
    shared.check_matches_golden(FAMILY, outputs[index], index)


def test_classify_of_features_is_forward(network) -> None:
    image = seeded_images()[1][..., :37, :51]  # small and odd: cheap, and crops at every stride
    with torch.no_grad():
        output = network(image)
        logits = network.classify(network.extract_features(image), image.shape[-2:])
    torch.testing.assert_close(logits, output.logits, rtol=0, atol=0)
    assert tuple(output.features.shape) == (1, 512, 10, 13)
    assert network.feature_channels == 512
    assert isinstance(network.dropout, torch.nn.Dropout2d) and network.dropout.p == 0.1


def test_missing_tensor_is_refused(hollow, tmp_path) -> None:
    shared.check_missing_tensor_refused(
        FAMILY, _save, hollow, "decode_head.bottleneck.conv.weight", tmp_path
    )


def test_unexpected_tensor_is_refused(hollow, tmp_path) -> None:
    extra = torch.zeros(3)
    shared.check_unexpected_tensor_refused(
        FAMILY, _save, hollow, "decode_head.extra.weight", extra, tmp_path
    )


def test_wrong_shape_is_refused(hollow, tmp_path) -> None:
    key, wrong = "decode_head.c1_bottleneck.conv.weight", torch.zeros(64, 256, 1, 1)
    shared.check_wrong_shape_refused(FAMILY, _save, hollow, key, wrong, tmp_path)


@pytest.mark.parametrize("layout", shared.other_layouts(FAMILY))
def test_other_layout_is_refused(hollow, tmp_path, layout) -> None:
    shared.check_other_layout_refused(FAMILY, layout, hollow, tmp_path)


def test_auxiliary_head_is_skipped_and_may_be_absent(seeded, tmp_path) -> None:
    skipped = dict(family_spec(FAMILY).family.skipped)
    assert skipped == {"auxiliary_head.": "auxiliary FCN head, used only as a training loss"}
    state = {k: v for k, v in seeded.items() if not k.startswith("auxiliary_head.")}
    network = shared.check_accepted_without_step_counters(FAMILY, _save, state, tmp_path)
    assert not any(key.startswith("auxiliary_head") for key in network.state_dict())
    assert torch.equal(network.decode_head.conv_seg.bias, seeded["decode_head.conv_seg.bias"])
