"""Metrics under Lightning DDP (2 CPU processes, gloo) equal the single-process result exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("ddp_evaluation.py")


def _evaluate(devices: int, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SCRIPT.parents[1])}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(devices), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_process_evaluation_equals_one_process_exactly(tmp_path):
    single = _evaluate(1, tmp_path / "single.json")
    distributed = _evaluate(2, tmp_path / "ddp.json")
    assert single["world_size"] == 1 and distributed["world_size"] == 2
    # Histogram and confusion-matrix states are summed: every number is bit-identical.
    assert distributed["results"] == single["results"]
    values = single["results"]["max_logit"]["datasets"]["anomaly"]
    assert values["n_anomaly"] > 0 and 0 < values["ap"] < 1
