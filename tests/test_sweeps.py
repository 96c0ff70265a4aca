"""A real two-job Hydra sweep through the joblib launcher, gathered by ``fsbench-report``."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fsbench.cli.report import main as report_main
from fsbench.models import Segmenter, save_segmenter

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.shared.height=64",
    "data.shared.width=128",
    "data.val.length=4",
    "data.anomaly.synthetic_anomaly.length=4",
    "trainer.enable_progress_bar=false",
    "report_images=1",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    torch.manual_seed(0)
    checkpoint = root / "tiny.ckpt"
    save_segmenter(Segmenter(encoder_name="resnet18", encoder_weights=None), checkpoint)
    command = [
        sys.executable,
        str(ROOT / "evaluate.py"),
        "--multirun",
        "hydra/launcher=parallel",
        *TINY,
        f"checkpoint={checkpoint}",
        "head=energy",
        "head.energy.temperature=1,20",
        f"paths.multirun={root / 'multirun'}",
    ]
    # No OMP_NUM_THREADS: joblib's loky workers must split the cores between them.
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (folder,) = (root / "multirun" / "evaluate").iterdir()
    return folder


def test_joblib_launcher_ran_both_jobs(sweep):
    jobs = sorted(path for path in sweep.iterdir() if path.is_dir())
    assert [job.name for job in jobs] == ["0", "1"]
    for job in jobs:
        hydra = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra
        assert hydra.launcher._target_.endswith("JoblibLauncher")
        assert (job / "results.json").is_file()
        assert (job / "worst_best_synthetic_anomaly_energy.png").is_file()
        # 2 jobs at once (parallel.yaml): each runs torch on half of the cores (loky sets
        # OMP_NUM_THREADS in its workers); a full thread pool per job would oversubscribe
        cores = len(os.sched_getaffinity(0))
        assert json.loads((job / "results.json").read_text())["threads"] == max(1, cores // 2)


def test_leaderboard_gathers_both_jobs_sorted_by_ap(sweep, capsys):
    assert report_main([str(sweep)]) == 0
    with open(sweep / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    expected = {}
    for job in ("0", "1"):
        payload = json.loads((sweep / job / "results.json").read_text())
        values = payload["results"]["energy"]["datasets"]["synthetic_anomaly"]
        temperature = payload["config"]["head"]["energy"]["temperature"]
        expected[job] = (str(temperature), values["ap"])
    assert sorted(row["run"] for row in rows) == ["0", "1"]
    for row in rows:
        assert row["head.energy.temperature"] == expected[row["run"]][0]
        assert float(row["ap"]) == pytest.approx(expected[row["run"]][1], rel=1e-12)
    assert float(rows[0]["ap"]) >= float(rows[1]["ap"])
    assert (sweep / "leaderboard.png").stat().st_size > 1000
    assert "head.energy.temperature" in (sweep / "leaderboard.md").read_text()
