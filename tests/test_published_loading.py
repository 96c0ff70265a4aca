"""Loading published networks: one copy in memory, the errors a user meets, fsbench checkpoints.

The family is VainF's MobileNetV2 (the smallest file); its key list is the one the golden
script recorded from the original code (tests/published_files.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from published_files import published_state, write_published_file

from fsbench.models import load_segmenter, save_segmenter
from fsbench.models.published import (
    FAMILIES,
    PublishedCheckpointError,
    build_published,
    load_published,
)

FAMILY = "vainf_mbv2_os16"


@pytest.fixture(scope="module")
def published_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("published") / "best_deeplabv3plus_mobilenet_cityscapes_os16.pth"
    return write_published_file(
        FAMILY, path, cur_itrs=30000, best_score=np.float64(0.721), optimizer_state={}
    )


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process mapped from ``path`` (/proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_weights_are_the_files_own_pages_not_a_copy(published_file):
    network = load_published(FAMILY, published_file)
    ranges = _mapped_ranges(published_file.resolve())
    assert ranges, "the file is not memory-mapped"
    tensors = [t for t in network.state_dict().values() if t.numel() > 0]
    inside = [any(a <= t.data_ptr() < b for a, b in ranges) for t in tensors]
    assert all(inside), f"{inside.count(False)} of {len(tensors)} tensors were copied"
    assert not any(t.is_meta for t in tensors)


def test_the_loaded_network_equals_the_files_tensors(published_file):
    network = load_published(FAMILY, published_file)
    expected = published_state(FAMILY)
    state = network.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert not network.training


def test_a_legacy_file_is_read_once_in_full(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"model_state": published_state(FAMILY)}, path, _use_new_zipfile_serialization=False)
    network = load_published(FAMILY, path)
    key = "classifier.classifier.3.weight"
    assert torch.equal(network.state_dict()[key], published_state(FAMILY)[key])


def test_a_missing_file_says_where_the_family_is_published(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_published(FAMILY, tmp_path / "nothing.pth")
    message = str(error.value)
    assert "best_deeplabv3plus_mobilenet_cityscapes_os16.pth" in message
    assert "VainF/DeepLabV3Plus-Pytorch" in message or "dropbox" in message.lower()
    assert "downloads nothing" in message


def test_an_unknown_family_lists_the_families():
    with pytest.raises(ValueError, match="unknown published network family 'vainf'") as error:
        load_published("vainf", None)
    for name in FAMILIES:
        assert name in str(error.value)


def test_a_truncated_file_is_refused_with_the_fix(tmp_path, published_file):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(published_file.read_bytes()[: published_file.stat().st_size // 2])
    with pytest.raises(PublishedCheckpointError, match="truncated"):
        load_published(FAMILY, truncated)


def test_a_file_of_another_family_is_named(tmp_path):
    path = write_published_file("sml_r101_os8", tmp_path / "r101_os8_base_cty.pth", epoch=1)
    with pytest.raises(PublishedCheckpointError) as error:
        load_published(FAMILY, path)
    assert "sml_r101_os8" in str(error.value)


def test_a_file_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model_state": published_state(FAMILY), "hook": Path("x")}, path)
    with pytest.raises(PublishedCheckpointError, match=re.escape("weights_only=True")):
        load_published(FAMILY, path)


def test_an_fsbench_checkpoint_of_a_published_network_round_trips(tmp_path, published_file):
    network = load_published(FAMILY, published_file)
    save_segmenter(network, tmp_path / "segmenter.ckpt")
    again = load_segmenter(tmp_path / "segmenter.ckpt")
    assert type(again) is type(network)
    images = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again(images).logits, network(images).logits)


def test_other_class_counts_build_and_are_refused_for_a_19_class_file(published_file):
    assert build_published(FAMILY, num_classes=7).num_classes == 7
    with pytest.raises(PublishedCheckpointError, match="model.num_classes"):
        load_published(FAMILY, published_file, num_classes=7)


# ------------------------------------------------------------------ submit and export: --model
def _input_folder(root: Path) -> Path:
    from submission_helpers import anomaly_scenes, write_png

    scenes = anomaly_scenes(2)
    for index in range(len(scenes)):
        write_png(root / "input" / f"000{index}_synthetic.png", scenes[index]["image"])
    return root / "input"


def test_submit_writes_a_published_networks_scores(published_file, tmp_path):
    from fsbench.cli.submit import main

    folder = _input_folder(tmp_path)
    args = ["--checkpoint", str(published_file), "--model", FAMILY, "--head", "entropy"]
    assert main([*args, "--input", str(folder), "--output", str(tmp_path / "out")]) == 0
    score = np.load(tmp_path / "out" / "0000_anomaly.npy")
    segmentation = np.load(tmp_path / "out" / "0000_segmentation.npy")
    image = torch.from_numpy(np.array(Image.open(folder / "0000_synthetic.png")))
    network = load_published(FAMILY, published_file)
    with torch.no_grad():
        logits = network(image.permute(2, 0, 1)[None].float() / 255).logits
    probabilities = logits.softmax(1)
    entropy = -(probabilities * probabilities.clamp_min(1e-30).log()).sum(1)[0]
    np.testing.assert_allclose(score, entropy.numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(segmentation, logits.argmax(1)[0].numpy())


def test_submit_without_a_head_for_a_published_file_lists_the_heads(published_file, tmp_path):
    from fsbench.cli.submit import main

    folder = _input_folder(tmp_path)
    with pytest.raises(SystemExit, match="holds no anomaly head; choose one with --head"):
        main(["--checkpoint", str(published_file), "--model", FAMILY, "--input", str(folder),
              "--output", str(tmp_path / "out")])  # fmt: skip


def test_export_traces_a_published_network(published_file, tmp_path):
    from fsbench.export import export

    metadata = export(
        published_file, tmp_path / "model.pt", "max_logit", height=48, width=64, family=FAMILY
    )
    assert metadata["model"] == FAMILY
    assert metadata["parity_max_abs_difference"] <= 1e-4


def test_the_familys_notice_is_printed_once(published_file, capsys, monkeypatch):
    from fsbench.models import published

    monkeypatch.setattr(published, "_NOTICES_SHOWN", set())
    load_published(FAMILY, published_file)
    load_published(FAMILY, published_file)
    notice = published.FAMILIES[FAMILY].family.notice
    assert capsys.readouterr().out.count(notice) == 1


def test_nvidias_notice_names_the_licence_and_the_val_cities():
    notice = FAMILIES["nvidia_wrn38"].family.notice
    assert "CC BY-NC-SA" in notice and "non-commercial" in notice.lower()
    assert "val" in notice and "NVIDIA/semantic-segmentation#6" in notice
