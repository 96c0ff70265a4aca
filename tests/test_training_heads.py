"""Outlier pasting, the void classifier and outlier exposure: losses and scores in closed form."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from baselines.softmax import MaxSoftmax
from baselines.training import OutlierExposure, VoidClassifier
from fsbench.data import OutlierPasting, PolygonOutliers, SegmentationDataModule, SyntheticScenes
from fsbench.lit import SegmentationTask
from fsbench.models import Segmenter, SegOutput
from fsbench.models.checkpoint import load_head_state

# Training steps here run outside a Trainer, where self.log only warns.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

CONF = Path(__file__).resolve().parents[1] / "conf"


class _Plain(torch.utils.data.Dataset):
    """Uniform grey images labelled 3 everywhere."""

    def __len__(self):
        return 64

    def __getitem__(self, index):
        return {
            "image": torch.full((3, 40, 60), 0.5),
            "label": torch.full((40, 60), 3, dtype=torch.long),
            "name": str(index),
        }


def test_pasting_marks_exactly_the_changed_pixels():
    pasted = OutlierPasting(_Plain(), probability=1.0, max_objects=3, seed=1)
    for index in range(20):
        item = pasted[index]
        changed = (item["image"] != 0.5).any(dim=0)
        outlier = item["outlier"].bool()
        assert item["outlier"].dtype == torch.uint8
        assert outlier.any()
        # pasted colours equal to grey by chance are marked but unchanged; never the converse
        assert not (changed & ~outlier).any()
        assert (changed == outlier).float().mean() > 0.99
        assert (item["label"][outlier] == 255).all()
        assert (item["label"][~outlier] == 3).all()


def test_pasting_is_reproducible_and_respects_probability():
    pasted = OutlierPasting(_Plain(), probability=0.25, seed=3)
    again = OutlierPasting(_Plain(), probability=0.25, seed=3)
    hits = 0
    for index in range(64):
        a, b = pasted[index], again[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["outlier"], b["outlier"])
        hits += int(a["outlier"].any())
    assert 6 <= hits <= 26  # binomial(64, 0.25): mean 16, sd 3.5
    assert not OutlierPasting(_Plain(), probability=0.0)[0]["outlier"].any()
    seed_a = OutlierPasting(_Plain(), probability=1.0, seed=4)[0]["outlier"]
    seed_b = OutlierPasting(_Plain(), probability=1.0, seed=5)[0]["outlier"]
    assert not torch.equal(seed_a, seed_b)


def test_pasting_does_not_touch_the_wrapped_dataset():
    base = SyntheticScenes("train", length=2, height=32, width=64)
    before = base[0]["image"].clone()
    OutlierPasting(base, probability=1.0)[0]
    assert torch.equal(base[0]["image"], before)


def test_polygon_masks_are_convex_hulls_of_their_vertices():
    rng = np.random.default_rng(0)
    source = PolygonOutliers(max_vertices=3, ellipse_share=0.0)  # triangles only
    rgb, mask = source.sample(rng, 64)
    assert rgb.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert 0 <= rgb.min() and rgb.max() <= 1
    # A triangle with vertices on a circle of radius <= 1 covers less than its circumscribed
    # circle and, being drawn from the vertices, more than nothing.
    assert 0 < mask.mean() < math.pi / 4


def test_bad_pasting_arguments_are_refused():
    with pytest.raises(ValueError, match="probability"):
        OutlierPasting(_Plain(), probability=1.5)
    with pytest.raises(ValueError, match="min_size"):
        OutlierPasting(_Plain(), min_size=0.5, max_size=0.1)


def test_datamodule_wraps_only_the_training_set():
    val = _Plain()
    dm = SegmentationDataModule(
        train=_Plain(), val=val, paste_outliers=lambda ds: OutlierPasting(ds, probability=1.0)
    )
    assert isinstance(dm.train_set, OutlierPasting)
    assert dm.val_set is val
    assert "outlier" in next(iter(dm.train_dataloader()))


def _output(logits, features=None):
    if features is None:
        features = torch.zeros(logits.shape[0], 4, *logits.shape[-2:])
    return SegOutput(logits=logits, features=features)


def test_outlier_exposure_loss_is_uniform_cross_entropy_on_outliers():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7)
    outlier = torch.zeros(2, 6, 7, dtype=torch.uint8)
    outlier[0, 1:3, 2:5] = 1
    outlier[1, 4, :] = 1
    head = OutlierExposure(weight=0.5)
    loss = head.training_loss(_output(logits), {"label": torch.zeros(2, 6, 7), "outlier": outlier})
    p = torch.softmax(logits.double(), dim=1).numpy()
    mask = outlier.numpy().astype(bool)
    expected = 0.5 * np.mean(-np.log(p).mean(axis=1)[mask])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    uniform = _output(torch.zeros(1, 5, 2, 2))
    at_minimum = head.training_loss(uniform, {"outlier": torch.ones(1, 2, 2, dtype=torch.uint8)})
    assert at_minimum.item() == pytest.approx(0.5 * math.log(5), rel=1e-6)  # its lower bound
    none = head.training_loss(_output(logits), {"outlier": torch.zeros(2, 6, 7)})
    assert none.item() == 0.0


def test_outlier_exposure_scores_and_errors():
    logits = torch.randn(2, 5, 3, 4)
    p = torch.softmax(logits.double(), dim=1)
    entropy = -(p * p.log()).sum(dim=1)
    assert torch.allclose(OutlierExposure().score(_output(logits)).double(), entropy, atol=1e-5)
    max_softmax = OutlierExposure(score="max_softmax").score(_output(logits)).double()
    top = p.max(dim=1).values
    assert torch.allclose(max_softmax, torch.log((1 - top) / top), atol=1e-5)  # log-odds
    with pytest.raises(ValueError, match="pasted outliers"):
        OutlierExposure().training_loss(_output(logits), {"label": torch.zeros(2, 3, 4)})
    with pytest.raises(ValueError, match="score"):
        OutlierExposure(score="energy")


def test_outlier_exposure_max_softmax_keeps_confident_pixels_ordered():
    # Pixels ever more confident: top-class logit gaps 5 ... 300 over 18 other classes spread
    # below it. 1 - exp(max log p) in float32 was 0 from a gap of ~17 on (all tied).
    gaps = torch.tensor([5.0, 12.0, 17.0, 20.0, 25.0, 30.0, 40.0, 60.0, 90.0, 120.0, 300.0])
    spread = torch.linspace(0.0, 6.0, 18)
    logits = torch.zeros(1, 19, 1, len(gaps))
    logits[0, 3] = 10.0
    logits[0, torch.arange(19) != 3, 0] = 10.0 - gaps[None, :] - spread[:, None]
    score = OutlierExposure(score="max_softmax").score(_output(logits))[0, 0]
    assert score.dtype == torch.float32 and bool(torch.isfinite(score).all())
    assert bool((torch.diff(score) < 0).all()), score  # distinct, more confident = lower
    # Against float64: log((1 - p) / p) = logsumexp of the other logits minus the top one.
    others = logits[0, torch.arange(19) != 3, 0].double()
    expected = torch.logsumexp(others, dim=0) - 10.0
    assert torch.allclose(score.double(), expected, rtol=1e-6, atol=1e-5)
    # A monotone transform of 1 - max softmax: the same order wherever that one is distinct.
    plain = MaxSoftmax.from_logits(logits)[0, 0]
    distinct = plain > 0
    assert torch.equal(torch.argsort(score[distinct]), torch.argsort(plain[distinct]))
    # Two maximal classes: p_max <= 1/2, the log-odds >= 0.
    tied = torch.zeros(1, 4, 1, 1)
    tied[0, :2] = 3.0
    assert OutlierExposure(score="max_softmax").score(_output(tied)).item() >= 0.0


def test_void_classifier_loss_and_score_against_numpy():
    torch.manual_seed(1)
    segmenter = Segmenter(decoder_channels=8, num_classes=4)
    head = VoidClassifier(weight=2.0)
    head.attach(segmenter)
    features = torch.randn(2, 8, 5, 6)
    logits = torch.randn(2, 4, 5, 6)  # same size as the features: upsampling is the identity
    label = torch.randint(0, 4, (2, 5, 6))
    label[0, 0, 0] = 255
    outlier = torch.zeros(2, 5, 6, dtype=torch.uint8)
    outlier[1, 2:4, 1:3] = 1
    out = SegOutput(logits=logits, features=features)
    weight = head.void_logit.weight.detach().view(8).double().numpy()
    bias = head.void_logit.bias.detach().double().item()
    void = np.einsum("nchw,c->nhw", features.double().numpy(), weight) + bias
    joint = np.concatenate([logits.double().numpy(), void[:, None]], axis=1)
    log_p = joint - np.log(np.exp(joint).sum(axis=1, keepdims=True))
    target = label.numpy().copy()
    target[outlier.numpy().astype(bool)] = 4
    valid = target != 255
    picked = np.take_along_axis(log_p, np.where(valid, target, 0)[:, None], axis=1)[:, 0]
    expected = -2.0 * picked[valid].mean()
    loss = head.training_loss(out, {"label": label, "outlier": outlier})
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    score = head.score(out).detach().double().numpy()
    np.testing.assert_allclose(score, np.exp(log_p[:, 4]), atol=1e-6)
    # void_pixels: label-255 pixels become void targets too
    with_void = VoidClassifier(weight=2.0, void_pixels=True)
    with_void.attach(segmenter)
    with_void.load_state_dict(head.state_dict())
    target[0, 0, 0] = 4
    expected_void = -2.0 * np.take_along_axis(log_p, target[:, None], axis=1).mean()
    got = with_void.training_loss(out, {"label": label, "outlier": outlier})
    assert got.item() == pytest.approx(expected_void, rel=1e-5)


def test_void_classifier_needs_outliers_and_attachment():
    head = VoidClassifier()
    out = _output(torch.randn(1, 4, 5, 6))
    with pytest.raises(RuntimeError, match="attach"):
        head.score(out)
    head.attach(Segmenter(decoder_channels=4, num_classes=4))
    with pytest.raises(ValueError, match="pasted outliers"):
        head.training_loss(out, {"label": torch.zeros(1, 5, 6, dtype=torch.long)})


def _train_step(task, batch, steps=3, lr=0.01):
    optimizer = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        task.training_step(batch, 0).backward()
        optimizer.step()


def test_void_classifier_trains_with_the_segmenter_and_reloads(tmp_path):
    torch.manual_seed(0)
    segmenter = Segmenter(decoder_channels=16, num_classes=19)
    head = VoidClassifier()
    task = SegmentationTask(segmenter, optimizer=lambda p: torch.optim.SGD(p, lr=0.01), head=head)
    assert any(name.startswith("head.void_logit") for name, _ in task.named_parameters())
    pasted = OutlierPasting(
        SyntheticScenes("train", length=2, height=32, width=64), probability=1.0
    )
    batch = torch.utils.data.default_collate([pasted[0], pasted[1]])
    before = head.void_logit.weight.detach().clone()
    _train_step(task.train(), batch)
    assert not torch.equal(before, head.void_logit.weight)  # the head's layer is optimised
    # a checkpoint written by the task restores the head exactly
    checkpoint = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "last.ckpt")
    fresh = VoidClassifier()
    fresh.attach(segmenter)
    load_head_state(tmp_path / "last.ckpt", fresh)
    segmenter.eval()
    with torch.no_grad():
        out = segmenter(batch["image"])
        assert torch.equal(head.score(out), fresh.score(out))
    # ... and a checkpoint trained without the head is refused with the fix
    plain = SegmentationTask(segmenter, optimizer=lambda p: torch.optim.SGD(p, lr=0.01))
    checkpoint = {"state_dict": plain.state_dict()}
    plain.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="trained with no training-time head"):
        load_head_state(tmp_path / "plain.ckpt", fresh)
    with pytest.raises(ValueError, match="trained with head baselines.training.VoidClassifier"):
        load_head_state(tmp_path / "last.ckpt", OutlierExposure())


class _TinySegmenter(torch.nn.Module):
    """Two convolutions: enough to learn colour -> class, and fast."""

    num_classes, feature_channels = 19, 16

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.classifier = torch.nn.Conv2d(16, 19, 1)

    def forward(self, images):
        features = torch.relu(self.body(images))
        return SegOutput(logits=self.classifier(features), features=features)


def test_outlier_exposure_keeps_outlier_entropy_high():
    """The same steps from the same start, with and without OE: OE's outlier entropy is higher."""
    pasted = OutlierPasting(
        SyntheticScenes("train", length=4, height=32, width=64), probability=1.0, seed=2
    )
    batch = torch.utils.data.default_collate([pasted[i] for i in range(4)])
    outlier = batch["outlier"].bool()
    entropy = {}
    for name, head in (("plain", None), ("oe", OutlierExposure(weight=3.0))):
        torch.manual_seed(0)
        segmenter = _TinySegmenter()
        task = SegmentationTask(segmenter, optimizer=lambda p: None, head=head)
        _train_step(task, batch, steps=40, lr=2e-2)
        with torch.no_grad():
            score = OutlierExposure().score(segmenter(batch["image"]))
        entropy[name] = (score[outlier].mean().item(), score[~outlier].mean().item())
    assert entropy["plain"][0] < math.log(19) - 1.0  # plain training grows confident...
    assert entropy["oe"][0] > entropy["plain"][0] + 0.5  # ... OE keeps outliers uncertain
    assert entropy["oe"][0] > entropy["oe"][1] + 0.5


def test_train_refuses_post_hoc_heads_and_configs_compose():
    with initialize_config_dir(str(CONF), version_base=None):
        for method in ("void_classifier", "outlier_exposure"):
            cfg = compose("train", overrides=[f"+experiment=synthetic/{method}"])
            assert list(cfg.head) == [method]
            head = instantiate(cfg.head[method])
            assert head.trained_with_segmenter
            cfg.data.train.length = 3
            dm = instantiate(cfg.data)
            assert isinstance(dm.train_set, OutlierPasting)
            assert cfg.task_name == f"train_{method}"
        cfg = compose("train", overrides=["head=max_softmax"])
        assert not instantiate(cfg.head.max_softmax).trained_with_segmenter
    from fsbench.pipelines import train

    with pytest.raises(ValueError, match="adds no training loss"):
        train(cfg, "unused")
    assert not MaxSoftmax().trained_with_segmenter
