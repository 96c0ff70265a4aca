"""Every head config runs on every segmenter family; the protocol and WrappedSegmenter's errors.

The families: fsbench's own ``Segmenter`` (smp DeepLabv3+), ``WrappedSegmenter`` around
torchvision's ``deeplabv3_resnet50`` (random weights) and every rebuilt published network
(``fsbench.models.published``, untrained, at its published widths). Tiny inputs, random images
and labels.
"""

import functools
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50

from baselines.mc_dropout import MCDropout
from fsbench.heads import AnomalyHead
from fsbench.models import (
    Segmenter,
    SegmenterProtocol,
    SegOutput,
    WrappedSegmenter,
    check_segmenter,
    save_segmenter,
)
from fsbench.models.protocol import PROTOCOL_MEMBERS, missing_members
from fsbench.models.published import FAMILIES as PUBLISHED
from fsbench.models.published import build_published
from fsbench.models.segmenter import IMAGENET_MEAN, IMAGENET_STD

CONF = Path(__file__).resolve().parents[1] / "conf"
HEADS = sorted(path.stem for path in (CONF / "head").glob("*.yaml"))
CLASSES = 5
N, H, W = 2, 64, 96
# The other families run at their full widths (up to 4096 channels): smaller images there.
SMALL_SIZE = (2, 32, 48)

# Settings that keep the fitted heads fast here (their defaults are sized for Cityscapes).
CHEAP = {
    "flow": ["head.flow.steps=5", "head.flow.dims=8", "head.flow.layers=2", "head.flow.hidden=8"],
    "knn": ["head.knn.bank_size=500"],
    # the rate is given: the published networks but mmseg's have no dropout before the classifier
    "mc_dropout": ["head.mc_dropout.num_samples=2", "head.mc_dropout.dropout=0.1"],
    "bayesian_deeplab": [
        "head.bayesian_deeplab.num_samples=2",
        "head.bayesian_deeplab.dropout=0.1",
    ],
}


def _torchvision(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=CLASSES).eval()


def _fsbench_segmenter() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter("resnet18", None, num_classes=CLASSES, decoder_channels=16, dropout=0.1)


def _wrapped(**kwargs) -> WrappedSegmenter:
    kwargs = {"features": "classifier.3", "classifier": "classifier.4", **kwargs}
    return WrappedSegmenter(_torchvision(), num_classes=CLASSES, dropout=0.1, **kwargs).eval()


def _published(name: str):
    """A rebuilt published network (fsbench.models.published), untrained, CLASSES classes."""

    def build():
        torch.manual_seed(0)
        return build_published(name, num_classes=CLASSES)

    return build


FAMILIES = {
    "fsbench_segmenter": _fsbench_segmenter,
    "torchvision_wrapped": _wrapped,
    **{f"published_{name}": _published(name) for name in PUBLISHED},
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param, FAMILIES[request.param]().eval()


def _size(family_name: str) -> tuple[int, int, int]:
    return (N, H, W) if family_name == "fsbench_segmenter" else SMALL_SIZE


def _images(seed: int, size: tuple[int, int, int] = (N, H, W)) -> torch.Tensor:
    n, h, w = size
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _loader(size: tuple[int, int, int] = (N, H, W)) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for index in range(2):
        labels = torch.randint(CLASSES, size, generator=generator)
        labels[:, :4] = 255  # some ignored pixels
        batches.append({"image": _images(10 + index, size), "label": labels, "name": ["a", "b"]})
    return batches


@pytest.fixture(scope="module")
def member_checkpoint(tmp_path_factory) -> Path:
    """A second fsbench segmenter for the ensemble (its members are train.py checkpoints)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ensemble") / "member.ckpt"
    save_segmenter(Segmenter("resnet18", None, num_classes=CLASSES, decoder_channels=8), path)
    return path


@functools.cache
def _head_config(name: str, member_checkpoint: Path):
    """The composed config of a head (composed once per head: Hydra's compose is not free)."""
    overrides = [f"head={name}", *CHEAP.get(name, [])]
    if name == "ensemble":
        overrides.append(f"head.ensemble.checkpoints=[{member_checkpoint}]")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("evaluate", overrides=overrides).head[name]


def _head(name: str, member_checkpoint: Path) -> AnomalyHead:
    return instantiate(_head_config(name, member_checkpoint))


@pytest.mark.parametrize("name", HEADS)
def test_every_head_config_runs_on_every_segmenter_family(name, family, member_checkpoint):
    family_name, segmenter = family
    size = _size(family_name)
    head = _head(name, member_checkpoint)
    # As evaluate.py: attach, restore or fit, score. The training-time heads (void_classifier,
    # outlier_exposure) score with their freshly attached layers; a checkpoint would restore them.
    head.attach(segmenter)
    if head.requires_fit:
        head.fit(segmenter, _loader(size))
    images = _images(0, size)
    with torch.inference_mode():
        prediction = head.eval()(segmenter, images)
    assert prediction.score.shape == size, (name, family_name)
    assert prediction.score.dtype == torch.float32
    assert torch.isfinite(prediction.score).all(), (name, family_name)
    assert prediction.logits.shape == (size[0], CLASSES, *size[1:])
    if head.trained_with_segmenter:  # and their training loss runs on the family's output
        batch = {**_loader(size)[0], "outlier": torch.zeros(size, dtype=torch.bool)}
        batch["outlier"][:, 10:20, 20:30] = True
        with torch.no_grad():
            loss = head.training_loss(segmenter(batch["image"]), batch)
        assert torch.isfinite(loss)


def test_every_family_satisfies_the_protocol(family):
    family_name, segmenter = family
    n, h, w = _size(family_name)
    assert isinstance(segmenter, SegmenterProtocol)
    assert missing_members(segmenter) == []
    check_segmenter(segmenter, "test")
    images = _images(3, (n, h, w))
    with torch.no_grad():
        out = segmenter(images)
        features = segmenter.extract_features(images)
        again = segmenter.classify(features, images.shape[-2:])
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (n, segmenter.num_classes, h, w)
    assert features.shape[1] == segmenter.feature_channels == out.features.shape[1]
    torch.testing.assert_close(features, out.features)
    torch.testing.assert_close(again, out.logits)
    at_features = segmenter.classify(features, features.shape[-2:])
    assert at_features.shape == (n, CLASSES, *features.shape[-2:])


def test_wrapped_logits_and_features_are_torchvisions_own():
    wrapped = _wrapped()
    network = wrapped.module
    hooked = []
    handle = network.classifier[3].register_forward_hook(lambda m, i, o: hooked.append(o))
    images = _images(4)
    with torch.no_grad():
        out = wrapped(images)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        reference = network((images - mean) / std)["out"]  # torchvision upsamples to the input
    handle.remove()
    assert reference.shape == out.logits.shape == (N, CLASSES, H, W)
    scale = reference.std().item()
    assert (out.logits - reference).abs().max().item() <= 1e-5 * scale
    assert len(hooked) == 2  # the wrapper's pass, then the reference pass
    assert torch.equal(out.features, hooked[0])
    torch.testing.assert_close(hooked[0], hooked[1], rtol=0, atol=1e-5 * hooked[1].std().item())
    assert out.features.shape == (N, 256, H // 8, W // 8)  # torchvision's DeepLabv3 is OS8


class _Tiny(nn.Module):
    """A user's own network: stride-4 features, 1x1 classifier, logits left at stride 4."""

    def __init__(self, output: str = "tensor", classes: int = 3) -> None:
        super().__init__()
        self.output = output
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        logits = self.head(self.body(x))
        if self.output == "dict":
            return {"aux": logits * 0, "seg": logits}
        if self.output == "tuple":
            return logits, None
        if self.output == "string":
            return "logits"
        return logits


@pytest.mark.parametrize(("output", "options"), [
    ("tensor", {}), ("dict", {"logits_key": "seg"}), ("tuple", {}),
])  # fmt: skip
@pytest.mark.parametrize("align_corners", [False, True])
def test_wrapped_takes_logits_from_tensor_dict_or_tuple_and_upsamples(
    output, options, align_corners
):
    torch.manual_seed(0)
    network = _Tiny(output).eval()
    wrapped = WrappedSegmenter(
        network, "body", num_classes=3, classifier="head", mean=(0.5,) * 3, std=(0.25,) * 3,
        align_corners=align_corners, **options,
    ).eval()  # fmt: skip
    images = torch.rand(2, 3, 30, 42)
    with torch.no_grad():
        out = wrapped(images)
        own = network.head(network.body((images - 0.5) / 0.25))
    expected = F.interpolate(own, size=(30, 42), mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(out.logits, expected)
    assert out.features.shape == (2, 8, 8, 11)
    assert wrapped.feature_channels == 8
    assert set(wrapped.state_dict()) == {f"module.{key}" for key in network.state_dict()}


def test_wrapped_infers_feature_channels_lazily_and_check_does_not_probe():
    wrapped = WrappedSegmenter(_Tiny(), "body", num_classes=3, classifier="head")
    check_segmenter(wrapped, "test")  # static look-up: no probing forward pass yet
    assert wrapped._feature_channels is None
    assert wrapped.train().feature_channels == 8
    assert wrapped.training  # the probe ran in eval mode and restored the mode


def test_wrapped_unknown_submodule_lists_close_names():
    with pytest.raises(ValueError, match=r"features='classifer\.3'.*close names: classifier\.3"):
        WrappedSegmenter(_torchvision(), "classifer.3", num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"classifier='hed'.*close names: head"):
        WrappedSegmenter(_Tiny(), "body", num_classes=3, classifier="hed")


def test_mc_dropout_without_a_classifier_names_the_requirement():
    wrapped = WrappedSegmenter(_Tiny(), "body", num_classes=3, dropout=0.1).eval()
    with pytest.raises(ValueError, match=r"no classifier.*MC dropout.*classifier=NAME"):
        MCDropout(num_samples=2)(wrapped, torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="no classifier"):
        MCDropout(num_samples=2, resolution="features")(wrapped, torch.rand(1, 3, 16, 16))


def test_wrapped_refuses_bad_outputs_by_name():
    images = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="returned str; it must return logits as a tensor"):
        WrappedSegmenter(_Tiny("string"), "body", num_classes=3)(images)
    with pytest.raises(ValueError, match=r"3 channels but num_classes=19; set num_classes=3"):
        WrappedSegmenter(_Tiny(), "body", num_classes=19)(images)
    with pytest.raises(ValueError, match=r"keys \['aux', 'seg'\], none is logits_key='out'"):
        WrappedSegmenter(_Tiny("dict"), "body", num_classes=3)(images)
    with pytest.raises(ValueError, match=r"features='head\.weight'|no submodule"):
        WrappedSegmenter(_Tiny(), "head.weight", num_classes=3)
    with pytest.raises(ValueError, match="does not reproduce"):  # classify skips the ReLU
        WrappedSegmenter(_Tiny(), "body.0", num_classes=3, classifier="head").eval()(images)


def test_check_segmenter_names_the_missing_members_and_the_adapter():
    class LogitsOnly(nn.Module):
        num_classes = 3

        def forward(self, images):
            return images[:, :3]

    with pytest.raises(ValueError) as error:
        check_segmenter(LogitsOnly(), "KNNDensity")
    message = str(error.value)
    assert (
        "KNNDensity" in message
        and "LogitsOnly lacks feature_channels, extract_features, classify" in message
    )
    assert "WrappedSegmenter(module, features=" in message and "docs/segmenters.md" in message
    assert not isinstance(LogitsOnly(), SegmenterProtocol)
    assert missing_members(object()) == list(PROTOCOL_MEMBERS)
    with pytest.raises(ValueError, match="lacks extract_features"):
        MCDropout(num_samples=2, dropout=0.1)(LogitsOnly(), torch.rand(1, 3, 8, 8))


def test_wrapped_config_builds_torchvision_from_overrides():
    overrides = [
        "model=wrapped",
        "model.module._target_=torchvision.models.segmentation.deeplabv3_resnet50",
        "+model.module.weights=null",
        "+model.module.weights_backbone=null",
        f"+model.module.num_classes={CLASSES}",
        "model.features=classifier.3",
        "model.classifier=classifier.4",
        f"model.num_classes={CLASSES}",
    ]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    segmenter = instantiate(cfg.model).eval()
    assert isinstance(segmenter, WrappedSegmenter)
    with torch.no_grad():
        out = segmenter(torch.rand(1, 3, 40, 48))
    assert out.logits.shape == (1, CLASSES, 40, 48) and segmenter.feature_channels == 256


def test_docs_examples_run():
    page = Path(__file__).resolve().parents[1] / "docs" / "segmenters.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2
    scope: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), scope)
    assert scope["out"].logits.shape == (1, 19, 64, 96)
    assert scope["out"].features.shape == (1, 256, 8, 12)
    assert scope["score"].shape == (1, 64, 96) and torch.isfinite(scope["score"]).all()
    with torch.no_grad():
        out = scope["mine"](torch.rand(1, 3, 32, 48))
    assert out.logits.shape == (1, 19, 32, 48) and out.features.shape == (1, 32, 8, 12)
