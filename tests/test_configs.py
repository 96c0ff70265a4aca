"""Every config in conf/ composes, and what it names can be built."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from fsbench.heads import AnomalyHead

CONF = Path(__file__).resolve().parents[1] / "conf"


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.mark.parametrize("top", ["train", "evaluate"])
def test_top_level_configs_compose_and_resolve(top):
    cfg = _compose(top, [])
    OmegaConf.resolve(cfg)
    assert cfg.task_name == top


@pytest.mark.parametrize("group", ["data", "model", "optimizer", "trainer", "head"])
def test_every_group_option_composes_into_both_entry_points(group):
    options = _options(group)
    assert options, f"conf/{group} is empty"
    for top in ("train", "evaluate"):
        for option in options:
            if group in ("model", "optimizer") and top == "evaluate":
                continue  # evaluation rebuilds the model from its checkpoint
            cfg = _compose(top, [f"{group}={option}"])
            assert cfg[group] is not None


def test_evaluate_defaults_select_the_four_softmax_heads():
    cfg = _compose("evaluate", [])
    assert list(cfg.head) == ["max_softmax", "entropy", "max_logit", "energy"]
    assert list(_compose("evaluate", ["head=energy"]).head) == ["energy"]
    assert list(_compose("evaluate", ["head=[energy,max_logit]"]).head) == ["energy", "max_logit"]


@pytest.mark.parametrize("head", _options("head"))
def test_every_head_config_instantiates_an_anomaly_head(head):
    cfg = _compose("evaluate", [f"head={head}"])
    missing = OmegaConf.missing_keys(cfg.head[head])
    if missing:  # values the user must give (e.g. ensemble checkpoints) are refused by name
        with pytest.raises(MissingMandatoryValue, match=sorted(missing)[0]):
            instantiate(cfg.head[head])
        return
    assert isinstance(instantiate(cfg.head[head]), AnomalyHead)


@pytest.mark.parametrize("model", _options("model"))
def test_every_model_config_builds_a_segmenter(model):
    composed = _compose("train", [f"model={model}"]).model
    missing = OmegaConf.missing_keys(composed)
    if "family" in composed:  # a published network: its file is mandatory, null = untrained
        assert missing == {"model.checkpoint"}
        segmenter = instantiate(
            _compose("train", [f"model={model}", "model.checkpoint=null"]).model
        )
        with torch.inference_mode():
            out = segmenter.eval()(torch.rand(1, 3, 72, 100))
        assert out.logits.shape == (1, composed.num_classes, 72, 100)
        assert out.features.shape[:2] == (1, segmenter.feature_channels)
        return
    if missing:  # an adapter the user completes (model=wrapped): refused by name until then;
        # built from completed overrides in tests/test_segmenter_protocol.py
        with pytest.raises(MissingMandatoryValue, match="model.module._target_"):
            instantiate(_compose("train", [f"model={model}"]).model)
        return
    cfg = _compose("train", [f"model={model}", "model.encoder_weights=null"])
    segmenter = instantiate(cfg.model).eval()
    with torch.inference_mode():
        out = segmenter(torch.rand(1, 3, 72, 100))  # sides not multiples of 32: padded, cropped
    assert out.logits.shape == (1, cfg.model.num_classes, 72, 100)
    assert out.features.shape == (1, cfg.model.decoder_channels, 18, 25)


@pytest.mark.parametrize("optimizer", _options("optimizer"))
def test_every_optimizer_config_builds_from_parameters(optimizer):
    cfg = _compose("train", [f"optimizer={optimizer}"])
    built = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(built, torch.optim.Optimizer)
    assert built.param_groups[0]["lr"] == cfg.optimizer.lr


def test_synthetic_data_config_builds_all_splits():
    cfg = _compose("train", ["data.shared.height=32", "data.shared.width=64"])
    datamodule = instantiate(cfg.data)
    assert datamodule.train_set[0]["image"].shape == (3, 32, 64)
    assert set(datamodule.anomaly_sets) == {"synthetic_anomaly"}
    assert "anomaly" in datamodule.anomaly_sets["synthetic_anomaly"][0]


def test_cpu_trainer_config_instantiates():
    cfg = _compose("train", ["trainer=cpu"])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == cfg.trainer.max_steps


def _experiments(family: str) -> list[str]:
    return sorted(f"{family}/{p.stem}" for p in (CONF / "experiment" / family).glob("*.yaml"))


@pytest.mark.parametrize("recipe", _experiments("fishyscapes") + _experiments("synthetic"))
def test_experiment_recipes_compose_and_build_their_heads(recipe):
    top = "evaluate" if recipe.endswith("post_hoc") else "train"
    cfg = _compose(top, [f"+experiment={recipe}"])
    OmegaConf.resolve(cfg)
    assert cfg.task_name.startswith(top)
    heads = dict(cfg.get("head") or {})
    for name, head_cfg in heads.items():
        if not OmegaConf.missing_keys(head_cfg):
            head = instantiate(head_cfg)
            assert isinstance(head, AnomalyHead)
            # a training recipe carries exactly one training-time head, evaluation none needed
            assert head.trained_with_segmenter == (top == "train"), name
    if recipe.startswith("fishyscapes/") and top == "train":
        assert cfg.model.encoder_name == "resnet101" and cfg.model.output_stride == 8
        assert cfg.optimizer._target_ in ("torch.optim.SGD", "torch.optim.AdamW")


def test_fishyscapes_post_hoc_recipe_lists_every_post_hoc_baseline():
    cfg = _compose("evaluate", ["+experiment=fishyscapes/post_hoc"])
    assert set(cfg.head) == {
        "max_softmax", "entropy", "max_logit", "energy", "sml",
        "mc_dropout", "ensemble", "gaussian", "knn", "flow",
    }  # fmt: skip


def test_init_from_copies_weights_and_refuses_another_architecture(tmp_path):
    from fsbench.models import Segmenter, save_segmenter
    from fsbench.models.checkpoint import initialise_from

    torch.manual_seed(0)
    source = Segmenter(decoder_channels=16, num_classes=5, dropout=0.0)
    save_segmenter(source, tmp_path / "start.ckpt")
    target = Segmenter(decoder_channels=16, num_classes=5, dropout=0.3)
    initialise_from(target, tmp_path / "start.ckpt")
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="decoder_channels: checkpoint 16 vs model 32"):
        initialise_from(Segmenter(decoder_channels=32, num_classes=5), tmp_path / "start.ckpt")


# The commands of baselines/README.md's table of published rows: each post-hoc and training-time
# row is `evaluate.py +experiment=fishyscapes/post_hoc data=fishyscapes ... head=NAME`.
PUBLISHED_ROW_HEADS = [
    "max_softmax", "entropy", "flow", "knn", "bayesian_deeplab", "void_classifier", "sml",
    "mc_dropout", "gaussian", "outlier_exposure",
]  # fmt: skip


@pytest.mark.parametrize("head", PUBLISHED_ROW_HEADS)
def test_published_row_commands_compose_and_build_their_head(head):
    readme = (CONF.parent / "baselines" / "README.md").read_text()
    assert f"head={head}" in readme
    cfg = _compose(
        "evaluate", ["+experiment=fishyscapes/post_hoc", "data=fishyscapes", f"head={head}"]
    )
    assert list(cfg.head) == [head]  # head= replaces the recipe's list ...
    assert cfg.trainer.precision == "32-true" and cfg.fast.autocast is None  # ... keeps float32
    assert "fs_lost_and_found" in cfg.data.anomaly and "fs_static" in cfg.data.anomaly
    assert isinstance(instantiate(cfg.head[head]), AnomalyHead)
    if head == "bayesian_deeplab":
        assert cfg.head[head].score == "mutual_information"


def test_fishyscapes_void_classifier_trains_the_void_class_on_void_pixels_only():
    """Blum et al.'s void classifier: Cityscapes' void (label 255) is the outlier class."""
    from fsbench.models import Segmenter

    cfg = _compose("train", ["+experiment=fishyscapes/void_classifier", "data=cityscapes"])
    assert cfg.head.void_classifier.void_pixels is True
    assert cfg.data.paste_outliers is None  # no proxy outliers: void pixels only
    head = instantiate(cfg.head.void_classifier)
    assert head.void_pixels and head.trained_with_segmenter
    torch.manual_seed(0)
    segmenter = Segmenter(decoder_channels=8, num_classes=4)
    head.attach(segmenter)
    label = torch.zeros(2, 32, 32, dtype=torch.long)
    label[:, :8] = 255  # void rows: the void class's targets, although nothing was pasted
    out = segmenter(torch.rand(2, 3, 32, 32))
    loss = head.training_loss(out, {"label": label})
    assert loss.item() > 0
    loss.backward()
    assert head.void_logit.weight.grad.abs().sum() > 0
    # The head's default (synthetic recipes) trains on pasted outliers and says so without them.
    default = instantiate(_compose("train", ["head=void_classifier"]).head.void_classifier)
    with pytest.raises(ValueError, match="pasted outliers"):
        default.training_loss(out, {"label": label})


def test_fishyscapes_outlier_exposure_recipe_pastes_outliers_into_cityscapes():
    cfg = _compose("train", ["+experiment=fishyscapes/outlier_exposure", "data=cityscapes"])
    assert cfg.data.train._target_ == "fsbench.data.cityscapes.Cityscapes"
    assert cfg.data.paste_outliers._target_ == "fsbench.data.OutlierPasting"
    assert cfg.head.outlier_exposure.weight == 3.0 and "init_from" in cfg
