"""Each softmax-family head against its closed form on hand-made logits."""

import math

import pytest
import torch

from baselines.softmax import Energy, MaxLogit, MaxSoftmax, SoftmaxEntropy
from fsbench.heads import AnomalyHead, AnomalyPrediction
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
