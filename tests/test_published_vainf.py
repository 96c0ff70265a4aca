"""The vainf_* rebuilds against VainF's own network output (tests/golden/).

tests/golden/make_published_vainf_golden.py ran VainF/DeepLabV3Plus-Pytorch @4e1087d's
``deeplabv3plus_resnet101`` at output stride 16 and 8 and ``deeplabv3plus_mobilenet`` at 16
(eval mode) with the seeded weights of their key lists on the seeded images, and recorded the
logits and the input of the last classifier conv. Here the same weights are saved in the published
layout (main.py's ``save_ckpt``: ``{"cur_itrs", "model_state", "optimizer_state",
"scheduler_state", "best_score"}``, with an optimizer state holding a tensor and ``best_score`` a
numpy float64, which the loader must ignore), read back through ``load_published`` and compared;
the strict loader's refusals are checked on cheap stand-in files.
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

KEYS_OF = {"vainf_r101_os16": "r101", "vainf_r101_os8": "r101", "vainf_mbv2_os16": "mbv2"}
FAMILIES = list(KEYS_OF)
MBV2 = "vainf_mbv2_os16"
# key list -> a family of the key list (both ResNet-101 families have the same file)
FAMILY_OF = {"r101": "vainf_r101_os16", "mbv2": MBV2}
DOCUMENTS = {name: shared.recorded_keys(family) for name, family in FAMILY_OF.items()}


def _save(path: Path, weights: dict[str, torch.Tensor], **extra) -> Path:
    """``weights`` in the layout of main.py's save_ckpt (SGD with momentum, PolyLR)."""
    first = next(iter(weights.values()))
    return shared.save_state(
        MBV2,  # every vainf family: "model_state", no prefix
        path,
        weights,
        cur_itrs=30000,
        optimizer_state={
            "state": {0: {"momentum_buffer": torch.zeros_like(first, device="cpu")}},
            "param_groups": [
                {
                    "lr": 1e-3,
                    "momentum": 0.9,
                    "dampening": 0,
                    "weight_decay": 1e-4,
                    "nesterov": False,
                    "params": [0],
                },
            ],
        },
        scheduler_state={"last_epoch": 30000, "base_lrs": [0.01, 0.1], "power": 0.9},
        best_score=np.float64(0.762),
        **extra,
    )


@pytest.fixture(scope="module")
def seeded() -> dict[str, dict[str, torch.Tensor]]:
    """The golden weights of each key list, in the file's order."""
    return {name: shared.seeded_state_of(family) for name, family in FAMILY_OF.items()}


@pytest.fixture(scope="module")
def files(seeded, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vainf")
    return {
        "r101": _save(folder / "best_deeplabv3plus_resnet101_cityscapes_os16.pth", seeded["r101"]),
        "mbv2": _save(folder / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth", seeded["mbv2"]),
    }


@pytest.fixture(scope="module")
def cheap() -> dict[str, torch.Tensor]:
    """Stand-ins of the MobileNetV2 file's tensors (right shapes, one stored value each)."""
    return shared.hollow_state(MBV2)


@pytest.fixture(scope="module")
def loaded(files):
    """family -> (network, [forward output of each seeded image])."""
    cache = {}

    def get(family: str):
        if family not in cache:
            network = load_published(family, files[KEYS_OF[family]])
            with torch.no_grad():
                cache[family] = network, [network(image) for image in seeded_images()]
        return cache[family]

    return get


def test_key_lists_are_the_original_networks():
    for name, count in (("r101", 674), ("mbv2", 356)):
        document = DOCUMENTS[name]
        assert document["source"].startswith("VainF/DeepLabV3Plus-Pytorch@4e1087d")
        assert (document["container"], document["prefix"]) == ("model_state", "")
        assert len(document["keys"]) == count
    assert DOCUMENTS["r101"]["family"] == ["vainf_r101_os16", "vainf_r101_os8"]
    assert DOCUMENTS["mbv2"]["family"] == ["vainf_mbv2_os16"]


@pytest.mark.parametrize("family", FAMILIES)
def test_rebuild_holds_every_tensor_of_the_file(family, seeded):
    spec = published.FAMILIES[family]
    with torch.device("meta"):
        network = spec.load_class()(**spec.options)
    expected = network.state_dict()
    state = seeded[KEYS_OF[family]]
    assert list(state) == list(expected)  # same keys, same order
    assert all(state[key].shape == expected[key].shape for key in state)
    assert network.family.name == network.config["family"] == family
    assert network.family.container == "model_state" and network.family.skipped == ()


@pytest.mark.parametrize("family", FAMILIES)
def test_dilations_and_rates_follow_the_output_stride(family):
    spec = published.FAMILIES[family]
    with torch.device("meta"):
        network = spec.load_class()(**spec.options)
    rates = [network.classifier.aspp.convs[i][0].dilation[0] for i in (1, 2, 3)]
    assert rates == {16: [6, 12, 18], 8: [12, 24, 36]}[spec.options["output_stride"]]
    if family.startswith("vainf_r101"):
        layer3, layer4 = network.backbone.layer3, network.backbone.layer4
        expected = {"vainf_r101_os16": (1, 2), "vainf_r101_os8": (2, 4)}[family]
        assert (layer3[1].conv2.dilation[0], layer4[1].conv2.dilation[0]) == expected
    assert network.dropout is None and network.align_corners is False
    assert network.feature_channels == 256


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_features_equal_the_original(loaded, family, index):
    shared.check_matches_golden(family, loaded(family)[1][index], index)


@pytest.mark.parametrize("family", FAMILIES)
def test_classify_of_the_features_is_forward(loaded, family):
    network, outputs = loaded(family)
    for image, out in zip(seeded_images(), outputs, strict=True):
        logits = network.classify(out.features, image.shape[-2:])
        torch.testing.assert_close(logits, out.logits, rtol=0, atol=1e-6)
        assert out.features.shape[1] == network.feature_channels


def test_classify_of_extracted_features_is_forward(loaded):
    """The two calls a head makes give forward's logits (on the cheap network: a ResNet-101
    forward costs seconds here whatever the image size)."""
    network, _ = loaded(MBV2)
    image = seeded_images()[1][..., :45, :67]  # small and odd
    with torch.no_grad():
        features = network.extract_features(image)
        logits = network.classify(features, image.shape[-2:])
        out = network(image)
    torch.testing.assert_close(logits, out.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(features, out.features, rtol=0, atol=0)
    assert logits.shape[-2:] == (45, 67)


def test_missing_tensor_is_refused(cheap, tmp_path):
    shared.check_missing_tensor_refused(
        MBV2, _save, cheap, "classifier.classifier.3.weight", tmp_path
    )


def test_unexpected_tensor_is_refused(cheap, tmp_path):
    key, extra = "classifier.classifier.4.weight", torch.zeros(19, 256, 1, 1)
    shared.check_unexpected_tensor_refused(MBV2, _save, cheap, key, extra, tmp_path)


def test_wrong_shape_is_refused(cheap, tmp_path):
    key, wrong = "classifier.aspp.convs.1.0.weight", torch.zeros(256, 320, 1, 1)
    shared.check_wrong_shape_refused(MBV2, _save, cheap, key, wrong, tmp_path)


def test_other_class_count_is_refused_with_its_cause(cheap, tmp_path):
    """A Pascal VOC file (21 classes) of the same network."""
    weights = {**cheap, "classifier.classifier.3.weight": torch.zeros(21, 256, 1, 1)}
    weights["classifier.classifier.3.bias"] = torch.zeros(21)
    shared.refusal(MBV2, _save(tmp_path / "f.pth", weights), "num_classes")


def test_file_of_the_other_backbone_is_refused_with_its_family(files):
    shared.refusal("vainf_r101_os16", files["mbv2"], "use model=vainf_mbv2_os16")
    shared.refusal(MBV2, files["r101"], "vainf_r101_os")


@pytest.mark.parametrize("layout", shared.other_layouts(MBV2))
def test_file_of_another_layout_is_refused(cheap, tmp_path, layout):
    shared.check_other_layout_refused(MBV2, layout, cheap, tmp_path)


def test_non_weight_entries_of_the_file_are_ignored(seeded, tmp_path):
    """Nothing of the network is skipped; the file's other entries (optimizer and scheduler
    state, iteration, score, here one more) are not looked at."""
    assert all(published.FAMILIES[name].family.skipped == () for name in FAMILIES)
    path = _save(tmp_path / "f.pth", seeded["mbv2"], extra_note="anything")
    network = load_published(MBV2, path)
    torch.testing.assert_close(
        network.classifier.classifier[3].bias, seeded["mbv2"]["classifier.classifier.3.bias"]
    )


def test_state_without_step_counters_is_accepted(seeded, tmp_path):
    network = shared.check_accepted_without_step_counters(MBV2, _save, seeded["mbv2"], tmp_path)
    torch.testing.assert_close(
        network.backbone.low_level_features[0][0].weight,
        seeded["mbv2"]["backbone.low_level_features.0.0.weight"],
    )
