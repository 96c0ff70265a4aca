"""The segmenter's outputs, its checkpoints, and the errors a wrong checkpoint gives."""

import pytest
import torch

from fsbench.lit import poly_lr_factor
from fsbench.models import Segmenter, load_segmenter, save_segmenter


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter("resnet18", num_classes=5, decoder_channels=32).eval()


def test_logits_at_input_resolution_and_features_at_stride_four(segmenter):
    with torch.inference_mode():
        out = segmenter(torch.rand(2, 3, 64, 96))
    assert out.logits.shape == (2, 5, 64, 96)
    assert out.features.shape == (2, 32, 16, 24)


def test_logits_are_the_classifier_applied_to_the_features(segmenter):
    images = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        out = segmenter(images)
        at_feature_resolution = segmenter.classifier(out.features)
    resized = torch.nn.functional.interpolate(at_feature_resolution, size=(64, 64), mode="bilinear")
    assert torch.allclose(out.logits, resized, atol=1e-5)


def test_padding_does_not_change_the_visible_part_much(segmenter):
    # An image whose sides are not multiples of 32 is padded and cropped back, not rejected.
    with torch.inference_mode():
        out = segmenter(torch.rand(1, 3, 50, 70))
    assert out.logits.shape[-2:] == (50, 70) and torch.isfinite(out.logits).all()


def test_non_rgb_input_is_refused(segmenter):
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        segmenter(torch.rand(1, 1, 32, 32))


def test_checkpoint_round_trip_gives_identical_logits(segmenter, tmp_path):
    save_segmenter(segmenter, tmp_path / "model.ckpt")
    loaded = load_segmenter(tmp_path / "model.ckpt")
    images = torch.rand(1, 3, 32, 64)
    with torch.inference_mode():
        assert torch.equal(segmenter(images).logits, loaded(images).logits)


def test_checkpoint_of_the_wrong_shape_names_the_mismatch(segmenter, tmp_path):
    save_segmenter(segmenter, tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=False)
    checkpoint["segmenter_config"]["num_classes"] = 19
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    with pytest.raises(ValueError, match=r"classifier.weight: checkpoint \(5, 32, 1, 1\)"):
        load_segmenter(tmp_path / "edited.ckpt")


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="python train.py"):
        load_segmenter(tmp_path / "absent.ckpt")


def test_foreign_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="segmenter_config"):
        load_segmenter(tmp_path / "foreign.ckpt")


def test_poly_schedule_closed_form():
    assert poly_lr_factor(0, 100) == 1.0
    assert poly_lr_factor(50, 100, power=0.9) == pytest.approx(0.5**0.9)
    assert poly_lr_factor(100, 100) == 0.0
    assert poly_lr_factor(150, 100) == 0.0
