"""Feature-density heads against NumPy, SciPy and scikit-learn; their fits, reloads and configs."""

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.spatial.distance import cdist, mahalanobis
from scipy.stats import chisquare, multivariate_normal
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from torch import nn

from baselines.flow import FlowDensity, RealNVP
from baselines.gaussian import ClassConditionalGaussian
from baselines.knn import KNNDensity
from fsbench.heads import AnomalyHead, FeatureReservoir
from fsbench.models import Segmenter, SegOutput

CONF = Path(__file__).resolve().parents[1] / "conf"
D = 6  # feature channels of the stand-in segmenter
CLASSES = (0, 2, 4)  # the classes present in the training labels (1 and 3 never are)


@pytest.fixture(autouse=True)
def _one_thread():
    """Run on one CPU thread: every tensor here is tiny, and on a busy machine a second OpenMP
    thread makes each small op wait for a descheduled worker (flow training slows down 20x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class IdentityFeatures(nn.Module):
    """A stand-in segmenter whose 'images' are the decoder features [N, D, h, w] themselves.

    Its logits are a fixed 1x1 linear classifier of the features, at the same resolution.
    """

    def __init__(self, dims: int = D, classes: int = 5) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(dims, classes, kernel_size=1)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            self.classifier.weight.copy_(torch.randn(classes, dims, 1, 1, generator=generator))
            self.classifier.bias.zero_()

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def forward(self, images: torch.Tensor) -> SegOutput:
        return SegOutput(logits=self.classifier(images), features=images)


def _batches(seed: int, count: int = 3, n: int = 2, h: int = 5, w: int = 7, void: float = 1e3):
    """Class-dependent correlated Gaussian features; ~15% void pixels (label 255) at ``void``."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(D, D, generator=generator)
    centres = 3 * torch.randn(5, D, generator=generator)
    batches = []
    for _ in range(count):
        labels = torch.tensor(CLASSES)[torch.randint(3, (n, h, w), generator=generator)]
        noise = torch.randn(n, h, w, D, generator=generator) @ mixing
        features = centres[labels] + noise
        void_pixels = torch.rand(n, h, w, generator=generator) < 0.15
        labels[void_pixels] = 255
        features[void_pixels] = void
        batches.append({"image": features.permute(0, 3, 1, 2).contiguous(), "label": labels})
    return batches


def _pixels(batches) -> tuple[np.ndarray, np.ndarray]:
    """float64 [P, D] feature vectors and labels [P] of every pixel, void ones included."""
    features = [b["image"].permute(0, 2, 3, 1).reshape(-1, D).double().numpy() for b in batches]
    return np.concatenate(features), np.concatenate([b["label"].reshape(-1) for b in batches])


def _score(head: AnomalyHead, queries: torch.Tensor) -> torch.Tensor:
    """Score features [N, D, h, w] at their own resolution."""
    logits = torch.zeros(queries.shape[0], 5, *queries.shape[-2:])
    with torch.inference_mode():
        return head.score(SegOutput(logits=logits, features=queries))


def _queries(seed: int, n: int = 2, h: int = 4, w: int = 5, scale: float = 4.0) -> torch.Tensor:
    return scale * torch.randn(n, D, h, w, generator=torch.Generator().manual_seed(seed))


def _rows(features: torch.Tensor) -> np.ndarray:
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double().numpy()


def _class_statistics(x: np.ndarray, classes: np.ndarray):
    ids = np.unique(classes)
    means = np.stack([x[classes == c].mean(axis=0) for c in ids])
    centred = x - means[np.searchsorted(ids, classes)]
    return ids, means, centred.T @ centred / len(x)


# --- class-conditional Gaussian ----------------------------------------------------------------


def test_gaussian_statistics_and_scores_match_numpy_and_scipy():
    batches = _batches(0)
    head = ClassConditionalGaussian(shrinkage=1e-3)
    head.fit(IdentityFeatures(), batches)
    x, labels = _pixels(batches)
    usable = labels != 255
    ids, means, covariance = _class_statistics(x[usable], labels[usable])
    assert ids.tolist() == list(CLASSES) and head.class_ids.tolist() == list(CLASSES)
    np.testing.assert_allclose(head.class_means, means, rtol=1e-6, atol=1e-6 * np.abs(means).max())
    np.testing.assert_allclose(
        head.covariance, covariance, rtol=1e-6, atol=1e-6 * np.abs(covariance).max()
    )
    precision = np.linalg.inv(covariance + 1e-3 * np.trace(covariance) / D * np.eye(D))
    np.testing.assert_allclose(head.precision, precision, rtol=1e-4, atol=1e-5)

    queries = _queries(1)
    score = _score(head, queries)
    assert score.shape == (2, 4, 5) and score.dtype == torch.float32
    expected = [min(mahalanobis(q, m, precision) ** 2 for m in means) for q in _rows(queries)]
    # float32 expanded form |y|^2 - 2 y m^T + |m|^2 against float64: the error is a few ulps of
    # those terms, so the absolute tolerance follows the scores' scale (up to ~900 here, measured
    # difference 1.2e-4); 1e-5 of the scale is ~80 ulps, 1e5 times below a wrong statistic.
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(score.reshape(-1), expected, rtol=1e-4, atol=1e-5 * scale)


def test_gaussian_streaming_over_batches_equals_one_pass_and_ignores_void_pixels():
    batches = _batches(0)
    streamed = ClassConditionalGaussian()
    streamed.fit(IdentityFeatures(), batches)
    whole = {key: torch.cat([b[key] for b in batches]) for key in ("image", "label")}
    at_once = ClassConditionalGaussian()
    at_once.fit(IdentityFeatures(), [whole])
    small_chunks = ClassConditionalGaussian(chunk_size=4)
    small_chunks.fit(IdentityFeatures(), batches)
    other_void = ClassConditionalGaussian()
    other_void.fit(IdentityFeatures(), _batches(0, void=-7.0))
    for name in ("class_ids", "class_means", "covariance", "whitener"):
        torch.testing.assert_close(getattr(streamed, name), getattr(at_once, name))
        torch.testing.assert_close(getattr(streamed, name), getattr(small_chunks, name))
        assert torch.equal(getattr(streamed, name), getattr(other_void, name))
    queries = _queries(2)
    # Statistics accumulated over other chunkings: scores (up to ~1200) may move by ulps of the
    # scale, which the default absolute 1e-5 would not admit.
    at_once_score = _score(at_once, queries)
    scale = float(at_once_score.abs().max())
    torch.testing.assert_close(
        _score(streamed, queries), at_once_score, rtol=1.3e-6, atol=1e-5 * scale
    )


def test_gaussian_assigns_predicted_classes():
    batches = _batches(3)
    segmenter = IdentityFeatures()
    head = ClassConditionalGaussian(assign="prediction")
    head.fit(segmenter, batches)
    x, labels = _pixels(batches)
    with torch.no_grad():
        predicted = np.concatenate(
            [segmenter(b["image"]).logits.argmax(1).reshape(-1) for b in batches]
        )
    usable = labels != 255
    ids, means, covariance = _class_statistics(x[usable], predicted[usable])
    assert head.class_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(head.class_means, means, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head.covariance, covariance, rtol=1e-5, atol=1e-5)


def test_gaussian_scores_zero_at_each_class_mean_and_keeps_the_seen_classes_only():
    batches = _batches(4)
    head = ClassConditionalGaussian()
    head.fit(IdentityFeatures(), batches)
    # Nothing is fitted for the classes never seen (1, 3); a query at a class mean scores 0.
    at_means = head.class_means.T[None, :, :, None].contiguous()  # [1, D, K, 1]
    assert _score(head, at_means).abs().max() < 1e-3
    assert head.class_means.shape == (len(CLASSES), D)


# --- k nearest neighbours ----------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
def test_knn_scores_match_sklearn_on_the_bank(normalize):
    batches = _batches(5)
    head = KNNDensity(k=4, bank_size=40, normalize=normalize, chunk_size=7)
    head.fit(IdentityFeatures(), batches)
    x, labels = _pixels(batches)
    x = x[labels != 255]
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    bank = head.bank.double().numpy()
    assert bank.shape == (40, D)
    nearest = cdist(bank, x).argmin(axis=1)  # each bank row is one training pixel, none twice
    np.testing.assert_allclose(bank, x[nearest], atol=1e-6)
    assert len(set(nearest.tolist())) == 40

    queries = _queries(6)
    rows = _rows(queries)
    if normalize:
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    distances, _ = NearestNeighbors(n_neighbors=4).fit(bank).kneighbors(rows)
    score = _score(head, queries)
    assert score.shape == (2, 4, 5) and score.dtype == torch.float32
    np.testing.assert_allclose(score.reshape(-1), distances[:, -1], rtol=1e-4, atol=1e-4)


def test_knn_chunking_does_not_change_scores_and_a_short_stream_is_kept_whole():
    batches = _batches(7)
    head = KNNDensity(k=3, bank_size=10_000, normalize=False, chunk_size=1)
    head.fit(IdentityFeatures(), batches)
    x, labels = _pixels(batches)
    np.testing.assert_array_equal(head.bank.double().numpy(), x[labels != 255])  # stream order
    queries = _queries(8)
    single = _score(head, queries)
    # Other chunk sizes are other matmul shapes (blocking, summation order): the expanded
    # |q|^2 - 2 q b^T + |b|^2 moves by ulps of the largest terms, so the tolerance follows the
    # scores' scale (~12 here, measured 9.5e-7).
    scale = float(single.abs().max())
    for chunk_size in (7, 10**6):
        head.chunk_size = chunk_size
        torch.testing.assert_close(_score(head, queries), single, atol=1e-5 * scale, rtol=1e-6)


def _algorithm_r(sizes: list[int], capacity: int, seed: int) -> list[int]:
    """Vitter's Algorithm R, one row at a time, with the reservoir's random draws per batch."""
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.cat([torch.rand(m, generator=generator, dtype=torch.float64) for m in sizes])
    kept: list[int] = []
    for i, u in enumerate(uniform.tolist()):
        if i < capacity:
            kept.append(i)
        elif (slot := int(u * (i + 1))) < capacity:
            kept[slot] = i
    return kept


def test_reservoir_is_algorithm_r_and_keeps_every_row_with_probability_capacity_over_n():
    sizes, capacity = [5, 13, 1, 30, 11], 12
    n = sum(sizes)
    rows = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 2)
    counts = np.zeros(n)
    for seed in range(400):
        reservoir = FeatureReservoir(capacity, seed)
        for part in rows.split(sizes):
            reservoir.add(part)
        kept = reservoir.sample[:, 0].long().tolist()
        if seed < 20:
            assert kept == _algorithm_r(sizes, capacity, seed)
        assert reservoir.sample.shape == (capacity, 2) and len(set(kept)) == capacity
        counts[kept] += 1
    assert chisquare(counts).pvalue > 1e-3  # each row kept about 400 * 12 / 60 = 80 times
    short = FeatureReservoir(100, seed=0)
    short.add(rows[:7])
    short.add(rows[7:9])
    assert torch.equal(short.sample, rows[:9])
    assert FeatureReservoir(3).sample is None


# --- normalizing flow --------------------------------------------------------------------------


def _random_flow(dims: int, layers: int = 4, hidden: int = 16, seed: int = 0) -> RealNVP:
    """A flow whose couplings are not the identity (their last layers start at zero)."""
    torch.manual_seed(seed)
    flow = RealNVP(dims, layers, hidden).double()
    with torch.no_grad():
        for coupling in flow.couplings:
            coupling.net[-1].weight.normal_(0, 0.5)
            coupling.net[-1].bias.normal_(0, 0.5)
    return flow


def test_flow_log_det_matches_the_autograd_jacobian_and_log_prob_the_change_of_variables():
    flow = _random_flow(5)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z, log_det = flow(x)
    assert log_det.abs().min() > 1e-3
    for point, point_log_det in zip(x, log_det, strict=True):
        jacobian = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], point)
        sign, log_abs = torch.linalg.slogdet(jacobian)
        assert sign != 0 and log_abs.item() == pytest.approx(point_log_det.item(), abs=1e-10)
    expected = multivariate_normal(np.zeros(5), np.eye(5)).logpdf(z.detach().numpy())
    log_prob = flow.log_prob(x).detach().numpy()
    np.testing.assert_allclose(log_prob, expected + log_det.detach().numpy(), atol=1e-10)
    masks = torch.stack([coupling.mask for coupling in flow.couplings])
    assert torch.equal(masks[0] + masks[1], torch.ones(5)) and masks[0].sum() == 2


def test_flow_density_integrates_to_one_in_two_dimensions():
    flow = _random_flow(2, layers=6)
    axis = torch.linspace(-10, 10, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    step = (axis[1] - axis[0]).item()
    assert density.sum().item() * step**2 == pytest.approx(1.0, abs=2e-3)


def _flow_head(**kwargs) -> FlowDensity:
    settings = {"dims": 4, "layers": 4, "hidden": 16, "steps": 20, "batch_size": 128} | kwargs
    return FlowDensity(**settings)


def test_flow_learns_a_curved_density_and_scores_outliers_higher():
    generator = torch.Generator().manual_seed(0)

    def banana(
        count: int,
    ) -> torch.Tensor:  # x1 ~ N(0, 1), x2 = x1^2 + N(0, 0.3^2), x3, x4 ~ N(0, 1)
        x = torch.randn(count, 4, generator=generator)
        x[:, 1] = x[:, 0] ** 2 + 0.3 * x[:, 1]
        return x

    def as_image(rows: torch.Tensor) -> torch.Tensor:  # [M, 4] -> features [1, 4, 1, M]
        return rows.T.reshape(1, 4, 1, -1).contiguous()

    loader = [{"image": as_image(banana(500))} for _ in range(8)]  # no labels: all pixels
    head = _flow_head(layers=6, hidden=32, steps=400, batch_size=256)
    head.fit(IdentityFeatures(dims=4), loader)
    assert head.projection.shape == (4, 4) and not any(p.requires_grad for p in head.parameters())
    training = torch.cat([b["image"] for b in loader], dim=-1)[0, :, 0].T
    whitened = (training - head.feature_mean) @ head.projection
    torch.testing.assert_close(torch.cov(whitened.T), torch.eye(4), atol=1e-3, rtol=0)

    inliers = banana(400)
    inside = torch.randn(400, 4, generator=generator)  # in the parabola's bend: x1 ~ 0, x2 ~ 2
    inside[:, 0] *= 0.3
    inside[:, 1] = 2 + 0.1 * inside[:, 1]
    shifted = torch.randn(400, 4, generator=generator) + torch.tensor([0.0, 0, 5, 0])
    truth = np.r_[np.zeros(400), np.ones(400)]
    for outliers in (shifted, inside):
        scores = _score(head, as_image(torch.cat([inliers, outliers]))).reshape(-1)
        assert roc_auc_score(truth, scores) > 0.95
    # The whitening alone (a Gaussian model) finds the points inside the bend typical.
    gaussian = ((torch.cat([inliers, inside]) - head.feature_mean) @ head.projection).square()
    assert roc_auc_score(truth, gaussian.sum(1)) < 0.6


def test_flow_projects_on_the_top_principal_directions():
    batches = _batches(9, void=0.0)
    head = _flow_head(dims=3, steps=2)
    head.fit(IdentityFeatures(), batches)
    x, labels = _pixels(batches)
    x = x[labels != 255]
    covariance = np.cov(x.T)
    projection = head.projection.double().numpy()
    assert projection.shape == (D, 3) and head.flow.dims == 3
    np.testing.assert_allclose(projection.T @ covariance @ projection, np.eye(3), atol=1e-4)
    top = np.linalg.eigh(covariance)[1][:, -3:]
    _, singular, _ = np.linalg.svd(top.T @ (projection / np.linalg.norm(projection, axis=0)))
    np.testing.assert_allclose(singular, 1, atol=1e-5)  # same subspace
    np.testing.assert_allclose(head.feature_mean, x.mean(axis=0), atol=1e-5)
    assert _flow_head(dims=32, steps=2).dims == 32  # more than D: all D are kept
    wide = _flow_head(dims=32, steps=2)
    wide.fit(IdentityFeatures(), batches)
    assert wide.projection.shape == (D, D)


def test_flow_fit_is_seeded_and_works_under_inference_mode():
    batches = _batches(10)
    first, second = _flow_head(), _flow_head()
    first.fit(IdentityFeatures(), batches)
    with torch.inference_mode():
        second.fit(IdentityFeatures(), batches)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


# --- every head, on a real segmenter -----------------------------------------------------------

HEADS = {
    "gaussian": lambda: ClassConditionalGaussian(),
    "gaussian_prediction": lambda: ClassConditionalGaussian(assign="prediction"),
    "knn": lambda: KNNDensity(k=5, bank_size=300, chunk_size=100),
    "flow": lambda: FlowDensity(dims=8, layers=2, hidden=16, steps=30, bank_size=300),
}


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter("resnet18", num_classes=5, decoder_channels=16).eval()


@pytest.fixture(scope="module")
def image_batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        labels = torch.randint(5, (2, 32, 64), generator=generator)
        labels[:, :8] = 255  # a void band over the top two rows of feature pixels
        images = torch.rand(2, 3, 32, 64, generator=generator)
        batches.append({"image": images, "label": labels, "name": ["a", "b"]})
    return batches


def test_gaussian_takes_the_label_at_each_feature_pixel_centre(segmenter, image_batches):
    head = ClassConditionalGaussian()
    head.fit(segmenter, image_batches)
    with torch.no_grad():
        features = [segmenter.extract_features(b["image"]) for b in image_batches]
    assert features[0].shape == (2, 16, 8, 16)
    x = np.concatenate([_rows(f) for f in features])
    labels = np.concatenate([b["label"][:, 2::4, 2::4].reshape(-1) for b in image_batches])
    usable = labels != 255
    ids, means, covariance = _class_statistics(x[usable], labels[usable])
    assert head.class_ids.tolist() == ids.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(head.class_means, means, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head.covariance, covariance, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(HEADS))
def test_heads_score_at_image_resolution_and_survive_a_state_dict_round_trip(
    name, segmenter, image_batches, tmp_path
):
    head = HEADS[name]()
    assert isinstance(head, AnomalyHead) and head.requires_fit and not head.is_fitted
    images = image_batches[0]["image"]
    with pytest.raises(RuntimeError, match="has not been fitted"), torch.inference_mode():
        head(segmenter, images)
    head.fit(segmenter, image_batches)
    assert head.is_fitted and not segmenter.training
    with torch.inference_mode():
        prediction = head(segmenter, images)
        odd = head(segmenter, torch.rand(1, 3, 30, 50))
    assert prediction.score.shape == (2, 32, 64) and prediction.score.dtype == torch.float32
    assert odd.score.shape == (1, 30, 50)
    assert torch.isfinite(prediction.score).all() and torch.isfinite(odd.score).all()

    torch.save(head.state_dict(), tmp_path / "head.pt")
    fresh = HEADS[name]()
    fresh.load_state_dict(torch.load(tmp_path / "head.pt"))
    assert fresh.is_fitted
    with torch.inference_mode():
        assert torch.equal(fresh(segmenter, images).score, prediction.score)


def test_state_dict_keys_and_the_former_module_path_are_unchanged(segmenter, image_batches):
    """Checkpoint compatibility of the split into one module per head: the same state dict
    keys as before, and ``baselines.density.*`` (old run configs' ``_target_``) still builds the
    same classes."""
    from baselines import density

    keys = {
        ClassConditionalGaussian: ["class_ids", "class_means", "covariance", "whitener"],
        KNNDensity: ["bank"],
        FlowDensity: ["feature_mean", "projection"],
    }
    for cls, names in keys.items():
        assert list(cls().state_dict()) == names, cls.__name__
        assert getattr(density, cls.__name__) is cls
        assert type(instantiate({"_target_": f"baselines.density.{cls.__name__}"})) is cls
    assert density.FeatureReservoir is FeatureReservoir
    flow = HEADS["flow"]()
    flow.fit(segmenter, image_batches)
    assert [key for key in flow.state_dict() if not key.startswith("flow.")] == keys[FlowDensity]
    assert "flow.couplings.0.mask" in flow.state_dict()


@pytest.mark.parametrize("name", list(HEADS))
def test_fits_without_usable_pixels_are_refused(name, image_batches):
    void = [{**b, "label": torch.full_like(b["label"], 255)} for b in image_batches]
    for loader in ([], void):
        with pytest.raises(ValueError, match="usable training pixel"):
            HEADS[name]().fit(IdentityFeatures(dims=3), loader)


def test_argument_errors():
    with pytest.raises(ValueError, match="assign must be one of label, prediction"):
        ClassConditionalGaussian(assign="both")
    with pytest.raises(ValueError, match="shrinkage"):
        ClassConditionalGaussian(shrinkage=-1)
    with pytest.raises(ValueError, match="larger than bank_size"):
        KNNDensity(k=10, bank_size=5)
    with pytest.raises(ValueError, match="k must be an integer"):
        KNNDensity(k=0)
    with pytest.raises(ValueError, match="dims must be >= 2"):
        FlowDensity(dims=1)
    with pytest.raises(ValueError, match="lr"):
        FlowDensity(lr=0)
    with pytest.raises(ValueError, match="fewer than k=5"):
        KNNDensity(k=5, bank_size=10).fit(IdentityFeatures(), [_batches(0, count=1, h=1, w=1)[0]])
    singular = [{"image": torch.ones(1, D, 2, 2), "label": torch.zeros(1, 2, 2, dtype=torch.long)}]
    with pytest.raises(ValueError, match="increase shrinkage"):
        ClassConditionalGaussian(shrinkage=0).fit(IdentityFeatures(), singular)


# --- configs -----------------------------------------------------------------------------------


def test_head_configs_compose_and_match_the_constructor_defaults():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=["head=[gaussian,knn,flow]"])
    assert list(cfg.head) == ["gaussian", "knn", "flow"]
    for name, cls in (
        ("gaussian", ClassConditionalGaussian),
        ("knn", KNNDensity),
        ("flow", FlowDensity),
    ):
        node = OmegaConf.to_container(cfg.head[name])
        head = instantiate(cfg.head[name])
        assert type(head) is cls and not head.is_fitted
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        assert node.pop("_target_") == f"baselines.{name}.{cls.__name__}"  # one module per head
        assert node == defaults, name
    assert math.isclose(cfg.head.gaussian.shrinkage, 1e-6)
