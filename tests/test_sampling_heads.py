"""MC dropout and deep ensembles against NumPy closed forms; their shapes, errors and configs."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from baselines import mc_dropout, sampling
from baselines.ensemble import DeepEnsemble
from baselines.mc_dropout import MCDropout
from baselines.sampling import (
    MemberAverage,
    expected_entropy,
    mutual_information,
    predictive_entropy,
)
from baselines.softmax import MaxSoftmax, SoftmaxEntropy
from fsbench.heads import AnomalyHead
from fsbench.models import Segmenter, save_segmenter

CONF = Path(__file__).resolve().parents[1] / "conf"
N, H, W = 2, 32, 64


def _np_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    safe = np.where(p > 0, p, 1.0)
    return -(p * np.log(safe)).sum(axis=axis)


def _np_softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _np_scores(member_logits: list[torch.Tensor]) -> dict[str, np.ndarray]:
    return _np_scores_from_logits([m.detach().double().numpy() for m in member_logits])


def _np_scores_from_logits(member_logits: list[np.ndarray]) -> dict[str, np.ndarray]:
    probs = np.stack([_np_softmax(m) for m in member_logits])
    mean = probs.mean(axis=0)
    predictive = _np_entropy(mean, axis=1)
    return {
        "entropy": predictive,
        "mutual_information": predictive - _np_entropy(probs, axis=2).mean(axis=0),
        "max_softmax": 1 - mean.max(axis=1),
        "log_mean": np.log(mean),
    }


class CountingSegmenter(Segmenter):
    """A segmenter that counts its calls of extract_features."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.feature_calls = 0

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        self.feature_calls += 1
        return super().extract_features(images)


def _segmenter(seed: int, cls=Segmenter, **kwargs) -> Segmenter:
    torch.manual_seed(seed)
    kwargs = {"num_classes": 5, "decoder_channels": 16, **kwargs}
    return cls("resnet18", **kwargs).eval()


@pytest.fixture(scope="module")
def segmenter() -> CountingSegmenter:
    return _segmenter(0, CountingSegmenter, dropout=0.1)


@pytest.fixture(scope="module")
def sharp() -> Segmenter:
    """A segmenter whose classifier is 30x its random init: entropies from 0.24 to 1.56."""
    segmenter = _segmenter(0, dropout=0.1)
    with torch.no_grad():
        segmenter.classifier.weight.mul_(30.0)
    return segmenter


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(N, 3, H, W, generator=torch.Generator().manual_seed(0))


def _check_prediction(prediction, num_classes: int = 5, size=(H, W)) -> None:
    assert prediction.score.shape == (N, *size) and prediction.score.dtype == torch.float32
    assert prediction.logits.shape == (N, num_classes, *size)
    assert torch.isfinite(prediction.score).all() and torch.isfinite(prediction.logits).all()


# --- the helpers on stacked member probabilities [T, N, C, ...] -------------------------------


def test_confident_disagreeing_members_have_entropy_and_mutual_information_ln2():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64).reshape(2, 1, 2, 1)
    assert predictive_entropy(probs).item() == pytest.approx(math.log(2), abs=1e-12)
    assert mutual_information(probs).item() == pytest.approx(math.log(2), abs=1e-12)
    assert expected_entropy(probs).item() == 0.0  # why mean member entropy is not "entropy"
    average = MemberAverage()
    for logits in ([40.0, -40.0], [-40.0, 40.0]):
        average.add(torch.tensor(logits).reshape(1, 2, 1))
    assert average.score("entropy").item() == pytest.approx(math.log(2), abs=1e-6)
    assert average.score("mutual_information").item() == pytest.approx(math.log(2), abs=1e-6)
    assert average.score("max_softmax").item() == pytest.approx(0.5, abs=1e-6)


def test_identical_members_have_no_mutual_information_and_the_softmax_entropy():
    logits = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(1)) * 3
    probs = torch.softmax(logits.double(), dim=1).expand(4, -1, -1, -1, -1)
    expected = _np_entropy(_np_softmax(logits.double().numpy()), axis=1)
    np.testing.assert_allclose(predictive_entropy(probs).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(mutual_information(probs).numpy(), 0.0, atol=1e-12)
    average = MemberAverage()
    for _ in range(3):
        average.add(logits)
    np.testing.assert_allclose(average.score("entropy").numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(
        average.score("entropy"), SoftmaxEntropy.from_logits(logits), atol=1e-6, rtol=0
    )
    assert average.score("mutual_information").abs().max() < 1e-6


def test_helpers_and_running_average_match_numpy_on_random_members():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(4, 2, 5, 3, 3))  # [T, N, C, H, W]
    probs = _np_softmax(logits, axis=2)
    mean = probs.mean(axis=0)
    entropy = _np_entropy(mean, axis=1)
    info = entropy - _np_entropy(probs, axis=2).mean(axis=0)
    assert (info > 0).all()
    torch_probs = torch.from_numpy(probs)
    np.testing.assert_allclose(predictive_entropy(torch_probs).numpy(), entropy, rtol=1e-12)
    np.testing.assert_allclose(mutual_information(torch_probs).numpy(), info, rtol=1e-10)
    np.testing.assert_allclose(mutual_information(torch_probs.float()).numpy(), info, atol=1e-6)
    average = MemberAverage()
    for member in logits:
        average.add(torch.from_numpy(member).float())
    for kind, expected in (("entropy", entropy), ("mutual_information", info)):
        score = average.score(kind)
        assert score.dtype == torch.float32 and score.shape == (2, 3, 3)
        np.testing.assert_allclose(score.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(
        average.score("max_softmax").numpy(), 1 - mean.max(axis=1), atol=1e-6
    )
    np.testing.assert_allclose(average.log_mean_probs().numpy(), np.log(mean), atol=1e-5)


def test_running_average_leaves_its_input_alone_and_handles_minus_inf_and_gradients():
    logits = torch.randn(
        2, 5, 3, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    logits[0, 2, 1, 1] = -math.inf  # a class ruled out: 0 log 0 = 0
    kept = logits.clone()
    average = MemberAverage()
    for member in (logits, logits.flip(-1)):
        average.add(member)
    assert torch.equal(logits, kept)  # added by copy, even in the accumulation dtype
    expected = _np_scores([logits, logits.flip(-1)])
    for kind in ("entropy", "mutual_information", "max_softmax"):
        np.testing.assert_allclose(average.score(kind).numpy(), expected[kind], atol=1e-6)
    # With gradients it computes out of place, so backward works and gives the same scores.
    leaf = logits.clone().requires_grad_()
    with_grad = MemberAverage()
    for member in (leaf, leaf.flip(-1)):
        with_grad.add(member)
    score = with_grad.score("mutual_information")
    score.sum().backward()
    torch.testing.assert_close(score.detach(), average.score("mutual_information"))
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 19, 40, 60), (2, 4), (1, 3, 0, 2), (0, 3, 2)])
@pytest.mark.parametrize("chunk", [7, 64, 1 << 17])
def test_running_average_by_chunks_whole_tensors_and_gradients_agree(monkeypatch, shape, chunk):
    """Chunks of any size (several images per chunk, or part of one; the single-threaded CPU's
    way) give the scores of whole tensors (GPUs', multi-threaded CPUs') and of the
    differentiable path."""
    rng = np.random.default_rng(5)
    members = [torch.from_numpy(rng.normal(scale=3.0, size=shape)).float() for _ in range(3)]
    expected = _np_scores(members)
    results = {}
    for path, elements in (("chunks", chunk), ("whole", None), ("grad", None)):
        monkeypatch.setattr(sampling, "_chunk_elements", lambda device, elements=elements: elements)
        average = MemberAverage()
        for member in members:
            average.add(member.clone().requires_grad_(path == "grad"))
        results[path] = {kind: average.score(kind).detach() for kind in sampling.SCORES}
        for kind, score in results[path].items():
            assert score.shape == shape[:1] + shape[2:] and score.dtype == torch.float32
            np.testing.assert_allclose(score.numpy(), expected[kind], atol=1e-6, err_msg=path)
        log_mean = average.log_mean_probs().detach().numpy()
        np.testing.assert_allclose(log_mean, expected["log_mean"], atol=1e-5, err_msg=path)
    for kind in sampling.SCORES:
        torch.testing.assert_close(results["chunks"][kind], results["whole"][kind])
        torch.testing.assert_close(results["chunks"][kind], results["grad"][kind])


def test_running_average_chunks_on_a_single_threaded_cpu_only():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert sampling._chunk_elements(torch.device("cpu")) == sampling.CPU_CHUNK_ELEMENTS
        torch.set_num_threads(2)
        assert sampling._chunk_elements(torch.device("cpu")) is None
    finally:
        torch.set_num_threads(threads)
    assert sampling._chunk_elements(torch.device("cuda")) is None


def test_running_average_refuses_predictions_of_another_shape():
    average = MemberAverage()
    average.add(torch.zeros(1, 3, 4, 4))
    with pytest.raises(
        ValueError, match=r"shape \(1, 3, 4, 5\) after ones of shape \(1, 3, 4, 4\)"
    ):
        average.add(torch.zeros(1, 3, 4, 5))
    with pytest.raises(RuntimeError, match="empty"):
        MemberAverage().score("entropy")


# --- MC dropout --------------------------------------------------------------------------------


def _np_bilinear(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of a bilinear resize with align_corners=False (half-pixel centres)."""
    source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(int), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    weight = source - low
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), low), 1 - weight)
    np.add.at(matrix, (np.arange(n_out), high), weight)
    return matrix


def _np_image_logits(segmenter: Segmenter, features: torch.Tensor, size) -> np.ndarray:
    """float64 NumPy: the 1x1 classifier on features [N, D, h, w], then bilinear to ``size``."""
    weight = segmenter.classifier.weight.detach().double().numpy()[:, :, 0, 0]  # [C, D]
    bias = segmenter.classifier.bias.detach().double().numpy()
    f = features.detach().double().numpy()
    logits = np.einsum("cd,ndhw->nchw", weight, f) + bias[None, :, None, None]
    rows, cols = _np_bilinear(f.shape[2], size[0]), _np_bilinear(f.shape[3], size[1])
    return np.einsum("Hh,nchw,Ww->ncHW", rows, logits, cols)


class EdgeSegmenter(Segmenter):
    """Decoder features of a vertical two-class edge: channel 0 is +1 left of it, -1 right of it.

    With the classifier set by :func:`_edge_segmenter`, a feature pixel scores logits (3, -3)
    or (-3, 3) for classes 0 and 1 (entropy 0.017); the other classes are out of the picture.
    """

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        h, w = -(-height // 4), -(-width // 4)
        features = torch.zeros(n, self.feature_channels, h, w)
        features[:, 0, :, : w // 2] = 1.0
        features[:, 0, :, w // 2 :] = -1.0
        return features


def _edge_segmenter() -> EdgeSegmenter:
    segmenter = _segmenter(0, EdgeSegmenter, dropout=0.1)
    with torch.no_grad():
        segmenter.classifier.weight.zero_()
        segmenter.classifier.weight[0, 0] = 3.0
        segmenter.classifier.weight[1, 0] = -3.0
        segmenter.classifier.bias.copy_(torch.tensor([0.0, 0.0, -50.0, -50.0, -50.0]))
    return segmenter


@pytest.mark.parametrize("size", [(H, W), (30, 50)])
def test_mc_dropout_without_dropout_is_the_softmax_head_per_image_pixel(sharp, size):
    segmenter = sharp
    images = torch.rand(N, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = segmenter(images)
        entropy = MCDropout(num_samples=3, dropout=0.0)(segmenter, images)
    _check_prediction(entropy, size=size)
    torch.testing.assert_close(entropy.logits, out.logits)
    # Every sample equals the segmenter's prediction: the same score as the single-pass heads,
    # pixel by pixel (the feature-resolution score resized to the image is off by 15% of its max).
    expected = SoftmaxEntropy().score(out)
    scale = expected.abs().max().item()
    torch.testing.assert_close(entropy.score, expected, rtol=1e-5, atol=1e-5 * scale)
    with torch.no_grad():
        max_softmax = MCDropout(num_samples=2, score="max_softmax", dropout=0.0)(segmenter, images)
    expected = MaxSoftmax().score(out)
    scale = expected.abs().max().item()
    torch.testing.assert_close(max_softmax.score, expected, rtol=1e-5, atol=1e-5 * scale)


def test_mc_dropout_at_feature_resolution_is_the_resized_feature_entropy(sharp, images):
    segmenter = sharp
    with torch.no_grad():
        prediction = MCDropout(num_samples=3, dropout=0.0, resolution="features")(segmenter, images)
        features = segmenter.extract_features(images)
        deterministic = SoftmaxEntropy.from_logits(segmenter.classifier(features))
        expected = F.interpolate(deterministic[:, None], (H, W), mode="bilinear")[:, 0]
        out = segmenter(images)
    _check_prediction(prediction)
    torch.testing.assert_close(prediction.score, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(prediction.logits, out.logits)
    # An approximation of the per-pixel score, not the same score.
    full = SoftmaxEntropy().score(out)
    assert (prediction.score - full).abs().max() > 0.1 * full.max()


def test_mc_dropout_keeps_the_uncertainty_of_a_two_class_edge():
    segmenter = _edge_segmenter()
    images = torch.rand(N, 3, H, W)
    with torch.no_grad():
        image = MCDropout(num_samples=2, dropout=0.0)(segmenter, images)
        expected = SoftmaxEntropy().score(segmenter(images))
    # Between the two feature columns of the edge (image columns 30..33) the upsampled logit
    # difference falls 4.5, 1.5, -1.5, -4.5: entropies 0.061, 0.475, 0.475, 0.061 (ln 2 at most).
    torch.testing.assert_close(image.score, expected, rtol=1e-5, atol=1e-6)
    middle = torch.tensor([0.0605, 0.4746, 0.4746, 0.0605]).expand(N, H, 4)
    torch.testing.assert_close(image.score[..., W // 2 - 2 : W // 2 + 2], middle, rtol=0, atol=1e-3)
    assert image.score[..., : W // 2 - 6].max() < 0.02  # away from the edge: confident
    # At feature resolution both sides are confident and resizing keeps it so: 0.017 everywhere.
    with torch.no_grad():
        features = MCDropout(num_samples=2, dropout=0.0, resolution="features")(segmenter, images)
    assert features.score.max().item() == pytest.approx(0.0173, abs=1e-3)
    assert features.score.max() < 0.05 * image.score.max()


@pytest.mark.parametrize("size", [(H, W), (30, 50)])
def test_mc_dropout_mutual_information_matches_numpy_on_the_drawn_samples(sharp, monkeypatch, size):
    segmenter = sharp
    drawn = []

    def recording(features, rate):
        dropped = original(features, rate)
        drawn.append(dropped.clone())
        return dropped

    original = mc_dropout.sample_dropout
    monkeypatch.setattr(mc_dropout, "sample_dropout", recording)
    images = torch.rand(N, 3, *size, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    with torch.no_grad():
        info = MCDropout(num_samples=5, score="mutual_information")(segmenter, images)
    assert len(drawn) == 5 and not torch.equal(drawn[0], drawn[1])
    replay = iter(drawn)  # the same samples again, scored as predictive entropy
    monkeypatch.setattr(mc_dropout, "sample_dropout", lambda features, rate: next(replay))
    with torch.no_grad():
        entropy = MCDropout(num_samples=5)(segmenter, images)
    _check_prediction(info, size=size)
    expected = _np_scores_from_logits([_np_image_logits(segmenter, f, size) for f in drawn])
    assert (info.score >= 0).all() and (expected["mutual_information"] > 0).all()
    for score, kind in ((info.score, "mutual_information"), (entropy.score, "entropy")):
        reference = expected[kind]
        scale = np.abs(reference).max()
        np.testing.assert_allclose(score.numpy(), reference, rtol=1e-4, atol=1e-5 * scale)


def test_mc_dropout_memory_does_not_hold_the_samples(segmenter, images, monkeypatch):
    """The T samples are summed into one accumulator as they come, never stacked."""
    sizes = []
    add = MemberAverage.add

    def watched(self, logits):
        add(self, logits)
        sizes.append((self.count, tuple(self._prob_sum.shape)))

    monkeypatch.setattr(MemberAverage, "add", watched)
    with torch.no_grad():
        MCDropout(num_samples=4)(segmenter, images)
    assert sizes == [(t, (N, 5, H, W)) for t in range(1, 5)]


@pytest.mark.parametrize("num_samples", [1, 5])
def test_mc_dropout_extracts_features_once_and_samples_differ(segmenter, images, num_samples):
    outputs = []
    hook = segmenter.classifier.register_forward_hook(lambda m, i, o: outputs.append(o))
    segmenter.feature_calls = 0
    try:
        with torch.no_grad():
            prediction = MCDropout(num_samples=num_samples)(segmenter, images)
    finally:
        hook.remove()
    _check_prediction(prediction)
    assert segmenter.feature_calls == 1
    assert len(outputs) == num_samples + 1  # T samples, then the deterministic classify
    samples = outputs[:num_samples]
    assert all(s.shape == (N, 5, H // 4, W // 4) for s in samples)  # upsampled after the 1x1 conv
    for a in range(num_samples):
        for b in range(a + 1, num_samples):
            assert not torch.equal(samples[a], samples[b])
    assert not torch.equal(samples[0], outputs[-1])


@pytest.mark.parametrize("resolution", ["image", "features"])
def test_mc_dropout_uses_the_segmenter_rate_and_mutual_information_is_positive(
    segmenter, images, resolution
):
    head = MCDropout(num_samples=4, score="mutual_information", resolution=resolution)
    assert head.resolve_dropout(segmenter) == pytest.approx(0.1)
    assert MCDropout(dropout=0.3).resolve_dropout(segmenter) == pytest.approx(0.3)
    with torch.no_grad():
        prediction = head(segmenter, images)
        deterministic = MCDropout(
            num_samples=4, score="mutual_information", dropout=0.0, resolution=resolution
        )(segmenter, images)
    _check_prediction(prediction)
    assert (prediction.score >= 0).all() and prediction.score.max() > 0
    assert deterministic.score.abs().max() < 1e-6


def test_mc_dropout_keeps_batchnorm_in_eval_and_its_statistics(segmenter, images):
    before = {k: v.clone() for k, v in segmenter.state_dict().items()}
    with torch.no_grad():
        MCDropout(num_samples=3)(segmenter, images)
    assert not any(module.training for module in segmenter.modules())
    after = segmenter.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("resolution", ["image", "features"])
def test_mc_dropout_scores_odd_image_sizes_at_image_resolution(segmenter, resolution):
    images = torch.rand(N, 3, 30, 50)
    with torch.no_grad():
        prediction = MCDropout(num_samples=2, resolution=resolution)(segmenter, images)
    _check_prediction(prediction, size=(30, 50))


def test_the_old_score_name_max_prob_is_refused_with_its_new_name(member_paths):
    """``max_prob`` is now ``max_softmax``, the max-softmax head's name for 1 - max_c p_c: no
    silent alias, the error gives the new name (for both sampling heads and the average)."""
    message = "score 'max_prob' is now called 'max_softmax'"
    with pytest.raises(ValueError, match=f"MCDropout {message}"):
        MCDropout(score="max_prob")
    with pytest.raises(ValueError, match=f"DeepEnsemble {message}"):
        DeepEnsemble(member_paths, score="max_prob")
    average = MemberAverage()
    average.add(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=f"MemberAverage {message}"):
        average.score("max_prob")
    assert "max_prob" not in sampling.SCORES and "max_prob" not in MCDropout.SCORES


def test_mc_dropout_errors():
    no_dropout = _segmenter(0, dropout=0.0)
    with pytest.raises(ValueError, match=r"model\.dropout>0.*head\.mc_dropout\.dropout"):
        MCDropout()(no_dropout, torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="score must be one of entropy, mutual_information"):
        MCDropout(score="variance")
    with pytest.raises(ValueError, match="num_samples"):
        MCDropout(num_samples=0)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        MCDropout(num_samples=1, score="mutual_information")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        MCDropout(dropout=1.0)
    with pytest.raises(ValueError, match="resolution must be one of image, features"):
        MCDropout(resolution="pixels")


# --- deep ensembles ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def member_paths(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("members")
    paths = [folder / f"seed{seed}.ckpt" for seed in (1, 2)]
    for seed, path in zip((1, 2), paths, strict=True):
        save_segmenter(_segmenter(seed), path)
    return paths


@pytest.mark.parametrize("score", ["entropy", "mutual_information", "max_softmax"])
@pytest.mark.parametrize("include_segmenter", [False, True])
def test_ensemble_matches_numpy_average_of_member_softmax(
    member_paths, segmenter, images, score, include_segmenter
):
    head = DeepEnsemble([str(p) for p in member_paths], score, include_segmenter).eval()
    with torch.no_grad():
        prediction = head(segmenter, images)
        members = [_segmenter(seed)(images).logits for seed in (1, 2)]
        if include_segmenter:
            members.append(segmenter(images).logits)
    _check_prediction(prediction)
    expected = _np_scores(members)
    np.testing.assert_allclose(prediction.score.numpy(), expected[score], atol=1e-6)
    np.testing.assert_allclose(prediction.logits.numpy(), expected["log_mean"], atol=1e-5)


def test_ensemble_of_confident_disagreeing_members_scores_ln2(tmp_path, images):
    paths = []
    for index, sign in enumerate((1.0, -1.0)):
        member = _segmenter(index)
        with torch.no_grad():
            member.classifier.weight.zero_()
            member.classifier.bias.copy_(torch.tensor([30 * sign, -30 * sign, -60, -60, -60]))
        paths.append(tmp_path / f"{index}.ckpt")
        save_segmenter(member, paths[-1])
    with torch.no_grad():
        for score, expected in (
            ("entropy", math.log(2)),
            ("mutual_information", math.log(2)),
            ("max_softmax", 0.5),
        ):
            head = DeepEnsemble(paths, score=score, include_segmenter=False)
            prediction = head(_segmenter(0), images)
            torch.testing.assert_close(prediction.score, torch.full((N, H, W), expected))


def test_ensemble_members_are_frozen(member_paths, segmenter, images):
    head = DeepEnsemble(member_paths).train()
    assert head.training and not any(m.training for m in head.members.modules())
    assert not any(p.requires_grad for p in head.parameters())
    before = {k: v.clone() for k, v in head.state_dict().items()}
    with torch.no_grad():
        head(segmenter, images)
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    assert not head.scores_single_pass


def test_ensemble_warns_when_a_member_is_the_evaluated_segmenter(member_paths, images):
    head = DeepEnsemble(member_paths)
    with pytest.warns(UserWarning, match="averaged in twice"), torch.no_grad():
        head(_segmenter(1), images)


def test_ensemble_errors(member_paths, tmp_path, segmenter, images):
    with pytest.raises(ValueError, match=r"at least one member checkpoint.*checkpoints=\["):
        DeepEnsemble([])
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        DeepEnsemble([member_paths[0], tmp_path / "nope.ckpt"])
    with pytest.raises(ValueError, match="more than once"):
        DeepEnsemble([member_paths[0], member_paths[0]])
    with pytest.raises(ValueError, match="score must be one of"):
        DeepEnsemble(member_paths, score="variance")
    with pytest.raises(ValueError, match="at least two members"):
        DeepEnsemble(member_paths[:1], score="mutual_information", include_segmenter=False)
    save_segmenter(_segmenter(3, num_classes=3), tmp_path / "three.ckpt")
    with pytest.raises(ValueError, match="share their number of classes"):
        DeepEnsemble([member_paths[0], tmp_path / "three.ckpt"])
    head = DeepEnsemble([tmp_path / "three.ckpt"])
    with pytest.raises(ValueError, match="3 classes but the evaluated segmenter predicts 5"):
        head(segmenter, images)


# --- configs -----------------------------------------------------------------------------------


def test_head_configs_instantiate(member_paths):
    listed = ",".join(str(p) for p in member_paths)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        mc = compose("evaluate", ["head=mc_dropout"]).head.mc_dropout
        ensemble = compose(
            "evaluate", ["head=[ensemble,mc_dropout]", f"head.ensemble.checkpoints=[{listed}]"]
        ).head.ensemble
        missing = compose("evaluate", ["head=ensemble"]).head.ensemble
        bayesian = compose("evaluate", ["head=[mc_dropout,bayesian_deeplab]"]).head
        fast = compose("evaluate", ["head=mc_dropout", "head.mc_dropout.resolution=features"])
    head = instantiate(mc)
    assert isinstance(head, MCDropout) and isinstance(head, AnomalyHead)
    assert (head.num_samples, head.score_kind, head.dropout_rate) == (8, "entropy", None)
    assert head.resolution == "image" and instantiate(fast.head.mc_dropout).resolution == "features"
    assert list(bayesian) == ["mc_dropout", "bayesian_deeplab"]  # both side by side
    head = instantiate(bayesian.bayesian_deeplab)
    assert isinstance(head, MCDropout) and head.score_kind == "mutual_information"
    assert (head.num_samples, head.dropout_rate, head.resolution) == (8, None, "image")
    head = instantiate(ensemble)
    assert isinstance(head, DeepEnsemble) and len(head.members) == 2
    assert head.checkpoints == [str(p) for p in member_paths] and head.include_segmenter
    assert missing._get_node("checkpoints")._is_missing()


def test_fast_cpu_dropout_keeps_1_minus_p_and_scales_like_f_dropout():
    from baselines.mc_dropout import sample_dropout

    torch.manual_seed(0)
    features = torch.rand(4, 64, 32, 32) + 0.5  # no zeros: dropped entries are exactly 0
    rate, n = 0.3, features.numel()
    sampled = sample_dropout(features, rate)
    kept = sampled != 0
    # binomial(n, 0.7): the kept fraction is within 5 standard deviations of 0.7
    assert abs(kept.float().mean().item() - 0.7) < 5 * (0.7 * 0.3 / n) ** 0.5
    torch.testing.assert_close(sampled[kept], features[kept] / 0.7)  # F.dropout's scaling
    assert not torch.equal(kept, sample_dropout(features, rate) != 0)  # a new mask per call
    assert sample_dropout(features, 0.0) is features
