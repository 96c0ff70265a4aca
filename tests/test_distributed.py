"""Evaluation under Lightning DDP (2 CPU processes, gloo) scores every frame exactly once.

Two checks, each where its claim is real:

* ``evaluate.py`` on 7 frames (not a multiple of 2: Lightning's test ``DistributedSampler`` would
  repeat one) with 1 and 2 processes: the same pixels are counted (exact integer equality) and
  the metrics agree to 1e-6. Not bit identity: the scores come from a network run in another
  process, and its float32 convolutions need not round alike there (other thread counts, which
  Lightning halves per DDP process unless OMP_NUM_THREADS is set, or other kernels); a score
  that moves by an ulp across a histogram bin edge (relative width 1.2e-4) moves AP by about
  1/(rank * anomaly pixels). Pinning the threads (below) makes such moves rare, not impossible.
* ``tests/ddp_evaluation.py`` feeds precomputed scores through a pass-through "segmenter": every
  process sees bit-identical scores, so the summed metric states (integer histograms, confusion
  matrix) and everything computed from them must be bit-identical between 1 and 2 processes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_evaluation import PassThrough, StoredScore, StoredScores
from torch.utils.data import DataLoader, DistributedSampler

from fsbench.data import SegmentationDataModule
from fsbench.lit import AnomalyEvaluation
from fsbench.lit.evaluation import check_every_process_has_frames
from fsbench.models import Segmenter, save_segmenter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("ddp_evaluation.py")
FRAMES = 7
# OMP_NUM_THREADS pins the threads of every process (Lightning leaves a set value alone), so the
# runs compare like with like; it also keeps the test from oversubscribing a small CI machine.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random.ckpt"
    save_segmenter(Segmenter("resnet18", num_classes=19, decoder_channels=32), path)
    return path


def _evaluate(checkpoint: Path, devices: int, out: Path) -> tuple[dict, str]:
    """results.json of evaluate.py, and what its processes printed (stdout and stderr)."""
    overrides = [
        f"checkpoint={checkpoint}",
        "data.shared.height=64",
        "data.shared.width=128",
        "data.train.length=4",
        "data.val.length=3",
        f"data.anomaly.synthetic_anomaly.length={FRAMES}",
        "data.eval_batch_size=1",
        "head=[max_logit,energy]",
        "per_image=true",
        "report_images=0",
        "trainer.enable_progress_bar=false",
        f"trainer.devices={devices}",
        f"hydra.run.dir={out}",
    ]
    if devices > 1:
        overrides.append("+trainer.strategy=ddp")
    result = _run([sys.executable, str(ROOT / "evaluate.py"), *overrides], out.parent)
    return json.loads((out / "results.json").read_text()), result.stdout + result.stderr


def test_two_processes_score_every_frame_once(checkpoint, tmp_path):
    single, _ = _evaluate(checkpoint, 1, tmp_path / "single")
    distributed, log = _evaluate(checkpoint, 2, tmp_path / "ddp")
    assert single["processes"] == 1 and distributed["processes"] == 2
    assert "replicates some samples" not in log  # Lightning's padding sampler was not used
    assert (
        distributed["datasets"]
        == single["datasets"]
        == {
            "synthetic_anomaly": FRAMES,
            "inlier_val": 3,
        }
    )
    names = [f"synthetic_anomaly_{i:05d}" for i in range(FRAMES)]
    for head in ("max_logit", "energy"):
        one, two = single["results"][head], distributed["results"][head]
        a, b = one["datasets"]["synthetic_anomaly"], two["datasets"]["synthetic_anomaly"]
        # Pixel counts are exact: every pixel of every frame counted once (padding gave 2017 vs
        # 1661 anomaly pixels).
        assert (b["n_anomaly"], b["n_inlier"]) == (a["n_anomaly"], a["n_inlier"])
        assert a["n_anomaly"] > 0 and 0 < a["ap"] < 1
        for key in ("ap", "auroc", "fpr95", "anomaly_fraction"):
            assert b[key] == pytest.approx(a[key], abs=1e-6), (head, key)
        assert two["miou"] == pytest.approx(one["miou"], abs=1e-6)
        # Per-image results gathered across processes name each frame once, in dataset order.
        assert [image["name"] for image in b["per_image"]] == names
        assert [image["name"] for image in a["per_image"]] == names
        for x, y in zip(a["per_image"], b["per_image"], strict=True):
            assert y["ap"] == pytest.approx(x["ap"], abs=1e-6)
            assert y["anomaly_fraction"] == x["anomaly_fraction"]  # pixel counts: exact
    assert log.count("results: ") == 1  # rank 0 alone writes and prints the results


def _stored_scores(devices: int, out: Path) -> dict:
    _run([sys.executable, str(SCRIPT), str(devices), str(out)], out.parent)
    return json.loads(out.read_text())


def test_summed_states_of_identical_scores_are_bit_identical(tmp_path):
    single = _stored_scores(1, tmp_path / "single.json")
    distributed = _stored_scores(2, tmp_path / "ddp.json")
    assert single["world_size"] == 1 and distributed["world_size"] == 2
    # 7 frames on 2 processes: contiguous blocks of 3 and 4, none repeated, none dropped.
    names = [f"anomaly_{i:03d}" for i in range(7)]
    assert distributed["frames_per_process"] == [names[:3], names[3:]]
    assert distributed["names"] == single["names"] == names
    # Histogram, label and confusion-matrix states are integer sums: bit-identical.
    assert distributed["states"] == single["states"]
    assert single["states"]["anomaly/stored/anomaly"]["counts"]["sum"] > 0
    # So is everything computed from them, per-image values and curves included.
    assert distributed["results"] == single["results"]
    assert distributed["curves"] == single["curves"]
    values = single["results"]["stored"]["datasets"]["anomaly"]
    assert values["n_anomaly"] > 0 and 0 < values["ap"] < 1 and single["results"]["stored"]["miou"]
    # The smiyc and per_image protocols, components included, under DDP equal one process.
    protocols = single["results"]["stored"]["protocols"]
    assert 0 < protocols["smiyc"]["anomaly"]["ap"] < 1
    assert protocols["smiyc"]["anomaly"]["components"]["n_gt_components"] > 0
    assert [frame["name"] for frame in protocols["per_image"]["anomaly"]["worst"]] != []
    assert protocols["per_image"]["anomaly"]["n_frames"] == 7


def test_a_padding_sampler_is_refused_and_too_few_frames_are_named():
    module = AnomalyEvaluation(PassThrough(), {"s": StoredScore()}, ["anomaly"], ["anomaly"])
    frames = StoredScores(FRAMES, "anomaly")
    padded = DistributedSampler(frames, num_replicas=2, rank=0, shuffle=False)  # 7 -> 8
    with pytest.raises(ValueError, match="spreads 7 frames over 2 processes as 8"):
        module._refuse_padded_samplers([DataLoader(frames, sampler=padded)])
    even = StoredScores(8, "anomaly")  # a multiple of the processes: nothing repeated
    module._refuse_padded_samplers([DataLoader(even, sampler=DistributedSampler(even, 2, 0))])
    # Lightning skips a process without any batch, and the others would wait for it.
    loaders = list(SegmentationDataModule(anomaly={"a": frames}).anomaly_dataloaders().values())
    check_every_process_has_frames(loaders, FRAMES)
    with pytest.raises(ValueError, match="too few for 8 processes: process 0 would score none"):
        check_every_process_has_frames(loaders, FRAMES + 1)
