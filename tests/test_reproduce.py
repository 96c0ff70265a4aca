"""Every reproduce row runs: ``evaluate.py +experiment=reproduce/<row> model.checkpoint=FILE``.

On the dataset fixture trees of test_datasets.py (32 x 64 frames) and files in each family's
published layout with seeded weights (tests/published_files.py): the command a user types,
with the trainer on the CPU and MC dropout at 2 samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import features
from published_files import write_published_file
from test_datasets import _overrides, config_cityscapes, trees  # noqa: F401 (fixtures)

from fsbench.pipelines import evaluate

CONF = Path(__file__).resolve().parents[1] / "conf"
ROWS = sorted(path.stem for path in (CONF / "experiment" / "reproduce").glob("*.yaml"))
CHEAP = ["trainer=cpu", "report_images=0"]


def _compose(overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("evaluate", overrides=overrides)


@pytest.fixture(scope="module")
def published_files(tmp_path_factory):
    """family -> a file in its published layout (written when first asked for)."""
    folder = tmp_path_factory.mktemp("published")
    written: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in written:
            written[family] = write_published_file(family, folder / f"{family}.pth", epoch=1)
        return written[family]

    return get


def _row(row: str) -> tuple[str, str]:
    """(family, data config) of a row."""
    cfg = _compose([f"+experiment=reproduce/{row}"])
    return cfg.model.family, next(
        name for name in ("fishyscapes", "road_anomaly", "smiyc") if name in row
    )


@pytest.mark.parametrize("row", ROWS)
def test_every_reproduce_row_runs_from_its_one_command(
    row,
    trees,  # noqa: F811 (the fixture imported above)
    config_cityscapes,  # noqa: F811
    published_files,
    tmp_path,
):
    family, data = _row(row)
    if data == "smiyc" and not features.check("webp"):
        pytest.skip("Pillow without WebP")
    roots = [o for o in _overrides(data, trees, config_cityscapes) if not o.startswith("data=")]
    overrides = [f"+experiment=reproduce/{row}", f"model.checkpoint={published_files(family)}"]
    cheap = [*CHEAP, *(["head.mc_dropout.num_samples=2"] if "mc_dropout" in row else [])]
    cfg = _compose([*overrides, *roots, *cheap])
    payload = evaluate(cfg, tmp_path)
    assert payload["model"] == family
    assert payload["checkpoint"] == str(published_files(family))
    results = payload["results"]
    assert set(results) == set(cfg.head)
    expected = {"fishyscapes": {"fs_lost_and_found", "fs_static"},
                "road_anomaly": {"road_anomaly"},
                "smiyc": {"smiyc_anomaly", "smiyc_obstacle"}}[data]  # fmt: skip
    for head, entry in results.items():
        assert set(entry["datasets"]) == expected, (row, head)
        assert math.isfinite(entry["miou"]), (row, head)
        for dataset, numbers in entry["datasets"].items():
            assert math.isfinite(numbers["ap"]), (row, head, dataset)
    assert (tmp_path / "results.json").is_file()


def test_a_published_model_with_a_train_checkpoint_is_refused(published_files, tmp_path):
    cfg = _compose([
        "model=vainf_mbv2_os16", f"model.checkpoint={published_files('vainf_mbv2_os16')}",
        "checkpoint=/some/last.ckpt",
    ])  # fmt: skip
    with pytest.raises(ValueError, match="both checkpoint=/some/last.ckpt"):
        evaluate(cfg, tmp_path)


def test_an_untrained_fsbench_model_config_is_refused(tmp_path):
    cfg = _compose(["model=deeplabv3plus_resnet18"])
    with pytest.raises(ValueError, match="untrained fsbench Segmenter.*nvidia_wrn38"):
        evaluate(cfg, tmp_path)


def test_the_published_file_is_a_mandatory_value(tmp_path):
    cfg = _compose(["model=nvidia_wrn38"])
    with pytest.raises(ValueError, match=r"model.checkpoint has no value .*model.checkpoint="):
        evaluate(cfg, tmp_path)


def test_a_training_time_head_needs_its_train_checkpoint(published_files, tmp_path):
    cfg = _compose([
        "model=vainf_mbv2_os16", f"model.checkpoint={published_files('vainf_mbv2_os16')}",
        "head=void_classifier",
    ])  # fmt: skip
    with pytest.raises(ValueError, match="head void_classifier is trained with the segmenter"):
        evaluate(cfg, tmp_path)


def test_a_missing_published_file_names_where_it_is_published(tmp_path):
    cfg = _compose(["model=sml_r101_os8", f"model.checkpoint={tmp_path / 'none.pth'}"])
    with pytest.raises(FileNotFoundError, match="r101_os8_base_cty.pth, published at"):
        evaluate(cfg, tmp_path)


def test_evaluate_scores_a_wrapped_network_from_the_config_alone(tmp_path):
    """model=wrapped: torchvision's DeepLabv3 (random weights), as docs/segmenters.md says."""
    cfg = _compose([
        "model=wrapped",
        "model.module._target_=torchvision.models.segmentation.deeplabv3_resnet50",
        "+model.module.weights=null", "+model.module.weights_backbone=null",
        "+model.module.num_classes=19", "model.features=classifier.3",
        "model.classifier=classifier.4", "model.num_classes=19",
        "data.shared.height=32", "data.shared.width=48", "data.val.length=2",
        "data.anomaly.synthetic_anomaly.length=2", "head=[max_softmax,entropy]",
        "report_images=0",
    ])  # fmt: skip
    payload = evaluate(cfg, tmp_path)
    assert payload["model"] is None
    assert payload["checkpoint"] == (
        "fsbench.models.wrapped.WrappedSegmenter of "
        "torchvision.models.segmentation.deeplabv3_resnet50"
    )
    for head in ("max_softmax", "entropy"):
        assert math.isfinite(payload["results"][head]["datasets"]["synthetic_anomaly"]["ap"])
