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

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fsbench.models.published import PublishedCheckpointError, family_spec, load_published

FAMILY = "mmseg_r101_d8"
GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
from seeded_weights import grid_sample_of, seeded_images, seeded_state  # noqa: E402

KEYS = json.loads((GOLDEN / f"published_{FAMILY}_keys.json").read_text())


def _save(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """``state`` in the published layout: mmcv's save_checkpoint without the optimizer."""
    torch.save({"meta": {"mmseg_version": "0.5.0", "iter": 80000}, "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def seeded() -> dict[str, torch.Tensor]:
    return seeded_state(KEYS["keys"])


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"published_{FAMILY}.npz") as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def network(seeded, tmp_path_factory):
    path = _save(tmp_path_factory.mktemp(FAMILY) / "seeded.pth", dict(seeded))
    return load_published(FAMILY, path)


@pytest.fixture(scope="module")
def outputs(network):
    with torch.no_grad():
        return [network(image) for image in seeded_images()]


def test_key_list_is_the_files() -> None:
    assert KEYS["family"] == FAMILY and KEYS["container"] == "state_dict"
    assert KEYS["prefix"] == ""
    prefixes = {key.split(".", 1)[0] for key, _, _ in KEYS["keys"]}
    assert prefixes == {"backbone", "decode_head", "auxiliary_head"}


@pytest.mark.parametrize("index", [0, 1])
def test_logits_match_mmseg(outputs, golden, index: int) -> None:
    logits = outputs[index].logits
    std = float(golden[f"logits_std_{index}"])
    delta = np.abs(grid_sample_of(logits).numpy() - golden[f"logits_grid_{index}"]).max()
    assert delta <= 1e-4 * std, f"max |delta| {delta:.3g} = {delta / std:.3g} std"
    agreement = (logits.argmax(1).numpy() == golden[f"argmax_{index}"]).mean()
    assert agreement >= 0.999, f"argmax agreement {agreement:.5f}"


@pytest.mark.parametrize("index", [0, 1])
def test_features_match_mmseg(outputs, golden, index: int) -> None:
    features = outputs[index].features
    assert tuple(features.shape) == tuple(golden[f"features_shape_{index}"])
    reference = golden[f"features_grid_{index}"]
    delta = np.abs(features[:, ::16, 1::4, 1::4].numpy() - reference).max()
    scale = reference.std()
    assert delta <= 1e-4 * scale, f"max |delta| {delta:.3g} = {delta / scale:.3g} std"


def test_classify_of_features_is_forward(network) -> None:
    image = seeded_images()[1][..., :37, :51]  # small and odd: cheap, and crops at every stride
    with torch.no_grad():
        output = network(image)
        logits = network.classify(network.extract_features(image), image.shape[-2:])
    torch.testing.assert_close(logits, output.logits, rtol=0, atol=0)
    assert tuple(output.features.shape) == (1, 512, 10, 13)
    assert network.feature_channels == 512
    assert isinstance(network.dropout, torch.nn.Dropout2d) and network.dropout.p == 0.1


def _hollow(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same keys and shapes, each tensor a broadcast zero (a file of a few KB, not 250 MB)."""
    return {
        key: torch.zeros((), dtype=value.dtype).expand(value.shape) for key, value in state.items()
    }


def _refused(path: Path, *words: str) -> None:
    with pytest.raises(PublishedCheckpointError) as raised:
        load_published(FAMILY, path)
    message = str(raised.value)
    for word in (FAMILY, *words):
        assert word in message, message


def test_missing_tensor_is_refused(seeded, tmp_path) -> None:
    state = _hollow(seeded)
    del state["decode_head.bottleneck.conv.weight"]
    _refused(_save(tmp_path / "missing.pth", state), "missing", "decode_head.bottleneck.conv")


def test_unexpected_tensor_is_refused(seeded, tmp_path) -> None:
    state = dict(_hollow(seeded), **{"decode_head.extra.weight": torch.zeros(3)})
    _refused(_save(tmp_path / "extra.pth", state), "unexpected", "decode_head.extra.weight")


def test_wrong_shape_is_refused(seeded, tmp_path) -> None:
    state = _hollow(seeded)
    state["decode_head.c1_bottleneck.conv.weight"] = torch.zeros(64, 256, 1, 1)
    _refused(_save(tmp_path / "shape.pth", state), "shapes differ", "c1_bottleneck")


def test_other_layout_is_refused(seeded, tmp_path) -> None:
    path = tmp_path / "vainf_layout.pth"
    torch.save({"model_state": _hollow(seeded), "cur_itrs": 1}, path)
    _refused(path, "'state_dict'")


def test_auxiliary_head_is_skipped_and_may_be_absent(seeded, tmp_path) -> None:
    skipped = dict(family_spec(FAMILY).family.skipped)
    assert skipped == {"auxiliary_head.": "auxiliary FCN head, used only as a training loss"}
    state = {
        k: v
        for k, v in seeded.items()
        if not k.startswith("auxiliary_head.") and not k.endswith("num_batches_tracked")
    }
    network = load_published(FAMILY, _save(tmp_path / "bare.pth", state))
    assert not any(key.startswith("auxiliary_head") for key in network.state_dict())
    assert torch.equal(network.decode_head.conv_seg.bias, seeded["decode_head.conv_seg.bias"])
