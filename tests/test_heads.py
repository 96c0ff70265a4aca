"""Each softmax-family head against its closed form on hand-made logits."""

import math

import numpy as np
import pytest
import torch

from baselines.softmax import (
    Energy,
    MaxLogit,
    MaxSoftmax,
    SoftmaxEntropy,
    StandardizedMaxLogit,
    dilated_gaussian_smoothing,
    suppress_boundaries,
)
from fsbench.heads import (
    AnomalyHead,
    AnomalyPrediction,
    entropy_from_logits,
    entropy_from_probs,
    softmax_and_entropy,
)
from fsbench.models import SegOutput

# Two pixels, three classes: a uniform pixel and a confident one.
LOGITS = torch.tensor([[0.0, 0.0, 0.0], [4.0, 1.0, -1.0]]).T.reshape(1, 3, 1, 2)


def _out(logits: torch.Tensor) -> SegOutput:
    return SegOutput(logits=logits, features=torch.zeros(logits.shape[0], 4, 1, 1))


def _softmax_confident() -> list[float]:
    z = math.exp(4) + math.exp(1) + math.exp(-1)
    return [math.exp(4) / z, math.exp(1) / z, math.exp(-1) / z]


def test_max_softmax_is_one_minus_max_probability():
    score = MaxSoftmax().score(_out(LOGITS))
    expected = [1 - 1 / 3, 1 - _softmax_confident()[0]]
    assert score.shape == (1, 1, 2) and score.dtype == torch.float32
    assert score.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_max_softmax_keeps_resolution_for_confident_pixels():
    # p_max = 1 - ~2e-9 rounds to 1.0 in float32; the head must still see the difference.
    logits = torch.tensor([20.0, 0.0]).reshape(1, 2, 1, 1)
    score = MaxSoftmax().score(_out(logits)).item()
    assert score == pytest.approx(math.exp(-20) / (1 + math.exp(-20)), rel=1e-5)


def test_entropy_matches_closed_form():
    probs = _softmax_confident()
    expected = [math.log(3), -sum(p * math.log(p) for p in probs)]
    score = SoftmaxEntropy().score(_out(LOGITS))
    assert score.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_entropy_is_finite_for_extreme_logits():
    logits = torch.tensor([1000.0, -1000.0, 0.0]).reshape(1, 3, 1, 1)
    score = SoftmaxEntropy().score(_out(logits))
    assert torch.isfinite(score).all() and score.item() == pytest.approx(0.0, abs=1e-6)


def test_one_entropy_from_logits_and_from_probabilities_on_every_path():
    """fsbench.heads' entropy: the CPU's class planes, the whole tensor (GPUs' form), in place
    (MemberAverage's buffers) and -sum p log p of the probabilities agree, also for a class of
    logit -inf (0 log 0 = 0), float16 logits (computed in float32) and under autograd."""
    logits = torch.randn(2, 7, 3, 5, generator=torch.Generator().manual_seed(0)) * 4
    logits[0, 3, 1, 2] = -math.inf
    probs = torch.softmax(logits.double(), dim=1)
    expected = -(probs * probs.clamp(min=1e-300).log()).sum(dim=1)
    planes = entropy_from_logits(logits)
    whole_probs, whole = softmax_and_entropy(logits)
    work, out = logits.clone(), torch.empty_like(logits)
    in_place_probs, in_place = softmax_and_entropy(work, out=out)
    assert planes.dtype == torch.float32 and planes.shape == (2, 3, 5)
    for found in (planes, whole, in_place, entropy_from_probs(probs)):
        assert torch.isfinite(found).all()
        torch.testing.assert_close(found.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(whole_probs.double(), probs, rtol=1e-5, atol=1e-7)
    assert in_place_probs is out  # times 1 / S in place, divided by S out of place: rounding
    torch.testing.assert_close(in_place_probs, whole_probs, rtol=1e-6, atol=0)
    terms, into = torch.empty_like(probs), torch.empty_like(expected)
    assert entropy_from_probs(probs, work=terms, out=into) is into
    torch.testing.assert_close(into, entropy_from_probs(probs), rtol=0, atol=0)
    half = logits.clamp(min=-60).half()
    torch.testing.assert_close(
        entropy_from_logits(half), entropy_from_logits(half.float()), rtol=0, atol=0
    )
    leaf = logits.clone().requires_grad_()
    with_grad = entropy_from_logits(leaf)
    with_grad.sum().backward()
    assert torch.equal(with_grad.detach(), planes) and torch.isfinite(leaf.grad).all()
    # The gradient of H: dH/dl_c = -p_c (log p_c + H).
    p = probs.float()
    grad = -p * (p.clamp(min=1e-30).log() + expected.float()[:, None])
    torch.testing.assert_close(leaf.grad, grad, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected logits \[N, C, \.\.\.\]"):
        entropy_from_logits(torch.zeros(3))


def test_max_logit_is_negative_maximum():
    score = MaxLogit().score(_out(LOGITS))
    assert score.flatten().tolist() == [0.0, -4.0]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_energy_matches_closed_form(temperature):
    expected = [
        -temperature * math.log(3),
        -temperature * math.log(sum(math.exp(v / temperature) for v in (4.0, 1.0, -1.0))),
    ]
    score = Energy(temperature).score(_out(LOGITS))
    assert score.flatten().tolist() == pytest.approx(expected, abs=1e-5)


def test_energy_is_stable_for_large_logits():
    logits = torch.tensor([1000.0, 999.0]).reshape(1, 2, 1, 1)
    assert Energy().score(_out(logits)).item() == pytest.approx(-1000 - math.log1p(math.exp(-1)))


def test_energy_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        Energy(0.0)


@pytest.mark.parametrize("head", [MaxSoftmax(), SoftmaxEntropy(), MaxLogit(), Energy()])
def test_uniform_pixel_scores_higher_than_confident_pixel(head):
    uniform, confident = head.score(_out(LOGITS)).flatten().tolist()
    assert uniform > confident


def test_forward_runs_the_segmenter_and_keeps_its_logits():
    class Fixed(torch.nn.Module):
        def forward(self, images):
            return _out(LOGITS.expand(images.shape[0], -1, -1, -1))

    prediction = MaxLogit()(Fixed(), torch.zeros(2, 3, 1, 2))
    assert isinstance(prediction, AnomalyPrediction)
    assert prediction.score.shape == (2, 1, 2)
    assert torch.equal(prediction.logits[0], LOGITS[0])


def test_a_head_without_score_says_what_to_override():
    with pytest.raises(NotImplementedError, match="score"):
        AnomalyHead().score(_out(LOGITS))


class _MeanFeatureDistance(AnomalyHead):
    """A toy fitted head: distance of each feature vector to the mean training feature."""

    def __init__(self) -> None:
        super().__init__()
        self.register_fitted("mean")

    def fit(self, segmenter, loader) -> None:
        total, count = 0.0, 0
        for batch in loader:
            features = segmenter(batch["image"]).features
            total = total + features.sum(dim=(0, 2, 3))
            count += features.shape[0] * features.shape[2] * features.shape[3]
        self.mean = total / count

    def score(self, out: SegOutput) -> torch.Tensor:
        self.check_fitted()
        return (out.features - self.mean.view(1, -1, 1, 1)).norm(dim=1)


class _Features(torch.nn.Module):
    def forward(self, images):
        features = images[:, :2].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        return SegOutput(logits=torch.zeros_like(images), features=features)


def test_fitted_buffers_survive_a_state_dict_round_trip():
    images = torch.arange(24.0).reshape(2, 3, 2, 2)
    head = _MeanFeatureDistance()
    assert head.requires_fit and not head.is_fitted
    head.fit(_Features(), [{"image": images}])
    out = SegOutput(logits=torch.zeros(1, 3, 2, 2), features=torch.ones(1, 3, 2, 2))
    # _Features gives 3 identical channels of the mean of the first two image channels.
    expected_mean = images[:, :2].mean().item()
    assert head.mean.tolist() == pytest.approx([expected_mean] * 3)

    reloaded = _MeanFeatureDistance()
    reloaded.load_state_dict(head.state_dict())
    assert reloaded.is_fitted
    assert torch.equal(reloaded.score(out), head.score(out))


def test_an_unfitted_head_says_to_fit_it_first():
    out = SegOutput(logits=torch.zeros(1, 3, 2, 2), features=torch.ones(1, 3, 2, 2))
    with pytest.raises(RuntimeError, match="fit"):
        _MeanFeatureDistance().score(out)
    assert not MaxLogit().requires_fit


class _FixedLogits(torch.nn.Module):
    """A 'segmenter' whose logits are the image itself (3 classes), for hand-made statistics."""

    def forward(self, images):
        return SegOutput(logits=images, features=images[:, :, ::4, ::4])


def test_sml_fits_per_class_statistics_of_predicted_pixels():
    # Pixels predicted as class 0 have max logits 2 and 4; class 1: 5 (one pixel); class 2: none.
    # Variances are unbiased (ddof=1), as the official statistics take them with Tensor.var.
    logits = torch.tensor([[[2.0, 4.0, 0.0]], [[1.0, 0.0, 5.0]], [[0.0, 0.0, 0.0]]]).reshape(
        1, 3, 1, 3
    )
    head = StandardizedMaxLogit(boundary_suppression=False, dilated_smoothing=False)
    head.fit(_FixedLogits(), [{"image": logits}])
    all_max = np.array([2.0, 4.0, 5.0])
    assert head.class_mean.tolist() == pytest.approx([3.0, 5.0, all_max.mean()])
    everything = all_max.std(ddof=1)  # one pixel or none: the variance of all pixels
    assert head.class_std.tolist() == pytest.approx([np.sqrt(2.0), everything, everything])
    score = head.score(SegOutput(logits=logits, features=logits))
    assert score.shape == (1, 1, 3) and score.dtype == torch.float32
    assert score[0, 0, :2].tolist() == pytest.approx([2**-0.5, -(2**-0.5)])  # -(2 - 3) / sqrt 2


def test_sml_post_processing_keeps_a_constant_map_constant():
    score = torch.full((1, 1, 20, 24), 0.7)
    predicted = torch.zeros(1, 20, 24, dtype=torch.long)
    predicted[:, :, 12:] = 3
    suppressed = suppress_boundaries(score, predicted, iterations=4, width=4)
    assert torch.allclose(suppressed, score)
    assert torch.allclose(dilated_gaussian_smoothing(score, 7, 1.0, 6), score)


def test_boundary_suppression_replaces_boundary_values_by_their_inner_neighbours():
    # Two classes split at column 3 of a 1x6 strip; the boundary of the one round (width 1, not
    # widened) is columns 2 and 3 (class ids 0 and 1: no border pixel is a boundary of its own).
    predicted = torch.tensor([[[0, 0, 0, 1, 1, 1]]])
    score = torch.tensor([[[[1.0, 1.0, 9.0, 9.0, 3.0, 3.0]]]])
    out = suppress_boundaries(score, predicted, iterations=1, width=1)
    # Column 2's non-boundary neighbours: column 1 (value 1) -> 1; column 3's: column 4 -> 3.
    assert out.flatten().tolist() == [1.0, 1.0, 1.0, 3.0, 3.0, 3.0]


def test_dilated_smoothing_matches_a_direct_weighted_average():
    torch.manual_seed(0)
    score = torch.rand(1, 1, 30, 30)
    out = dilated_gaussian_smoothing(score, kernel=3, sigma=1.0, dilation=2)
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / 2)
    weights = np.outer(g, g) / np.outer(g, g).sum()
    y, x = 15, 15
    patch = score[0, 0, y - 2 : y + 3 : 2, x - 2 : x + 3 : 2].numpy()
    assert out[0, 0, y, x].item() == pytest.approx(float((weights * patch).sum()), abs=1e-6)


def test_sml_state_survives_a_reload():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 8, 8)
    head = StandardizedMaxLogit()
    head.fit(_FixedLogits(), [{"image": images}])
    reloaded = StandardizedMaxLogit()
    reloaded.load_state_dict(head.state_dict())
    out = SegOutput(logits=images, features=images)
    assert torch.equal(head.score(out), reloaded.score(out))
