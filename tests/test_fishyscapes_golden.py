"""fsbench's Fishyscapes metrics against the benchmark's own code, with and without the kernels.

The golden file was written by ``tests/golden/make_fishyscapes_golden.py``, which runs
``calculate_metrics_perpixAP`` of hermannsblum/fishyscapes ``eval.py`` @d78502b (the grader's
function) on the seeded frames of ``fishyscapes_inputs.npz``: pooled over each case's frames and
on each frame alone. ``AnomalyMetrics`` must lie within the error bound it reports for its
histogram, and equal it where every bin holding both classes holds one score, the exact
``anomaly_metrics`` and the per-image metrics within float64 rounding; each on the compiled
kernels (``fsbench.metrics.native``) and on the numpy paths (the ``kernels`` fixture).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fsbench.metrics import AnomalyMetrics, anomaly_metrics
from fsbench.metrics.per_image import per_image_metrics

GOLDEN = Path(__file__).parent / "golden"
OFFICIAL = json.loads((GOLDEN / "fishyscapes_d78502b.json").read_text())
INPUTS = np.load(GOLDEN / "fishyscapes_inputs.npz")
CASES = sorted(OFFICIAL["cases"])
KEYS = {"ap": "AP", "auroc": "auroc", "fpr95": "FPR@95%TPR"}
ROUNDING = 1e-12


def frames(case: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The case's (score float32 [H, W], label uint8 [H, W]) frames."""
    count = OFFICIAL["cases"][case]["frames"]
    return [
        tuple(torch.from_numpy(INPUTS[f"{case}/{i}/{key}"]) for key in ("score", "label"))
        for i in range(count)
    ]


def test_the_cases_hold_what_they_claim():
    continuous = frames("continuous")
    assert any(not bool((label == 1).any()) for _, label in continuous)  # an anomaly-free frame
    for case in CASES:
        for score, label in frames(case):
            assert score.dtype == torch.float32 and label.dtype == torch.uint8
            assert set(torch.unique(label).tolist()) <= {0, 1, 255} and bool((label == 255).any())
    energies = torch.cat([score.reshape(-1) for score, _ in frames("energies_and_zeros")])
    assert bool((energies == 0).any()) and bool(torch.signbit(energies[energies == 0]).any())
    assert float(energies.min()) < -1e29 and float(energies[energies < 0].max()) > -1e-29


#: Cases whose bins holding both classes hold one score each: the histogram is exact there.
EXACT_TIES = {"quantized_ties", "equal_regions"}


@pytest.mark.filterwarnings("ignore::fsbench.metrics.anomaly.BinningWarning")
@pytest.mark.parametrize("case", CASES)
def test_pooled_metrics_equal_the_benchmark_code(case, kernels):
    metric = AnomalyMetrics()
    for score, label in frames(case):
        metric.update(score, label)
    result = metric.compute()
    want = OFFICIAL["cases"][case]["pooled"]
    for ours, theirs in KEYS.items():
        error = abs(result[ours] - want[theirs])
        # what AnomalyMetrics guarantees: the official value lies within its reported bound
        assert error <= result["binning"][f"{ours}_error_bound"] + ROUNDING, (ours, error)
        if case in EXACT_TIES:
            assert error <= ROUNDING, (ours, error)
        else:  # distinct scores a bin apart: docs/metrics.md's "about 1e-5" for AP
            assert error <= 1e-5, (ours, error)
    if case == "continuous":  # continuous scores: a bound below the warning level
        assert max(result["binning"][f"{key}_error_bound"] for key in KEYS) <= 1e-4


@pytest.mark.parametrize("case", CASES)
def test_the_exact_sort_equals_the_benchmark_code(case):
    pairs = frames(case)
    score = torch.cat([s.reshape(-1) for s, _ in pairs])
    label = torch.cat([t.reshape(-1) for _, t in pairs])
    valid = label != 255
    result = anomaly_metrics(score[valid], label[valid] == 1)
    want = OFFICIAL["cases"][case]["pooled"]
    for ours, theirs in KEYS.items():
        assert result[ours] == pytest.approx(want[theirs], abs=ROUNDING), ours


@pytest.mark.parametrize("case", CASES)
def test_per_image_metrics_equal_the_benchmark_code_on_each_frame(case, kernels):
    pairs = frames(case)
    for (score, label), want in zip(pairs, OFFICIAL["cases"][case]["per_frame"], strict=True):
        values = per_image_metrics(score[None], label[None])
        for ours, theirs in KEYS.items():
            got = float(values[ours][0])
            if want is None:  # no anomaly pixel: no per-image metric
                assert math.isnan(got), ours
            else:
                assert got == pytest.approx(want[theirs], abs=ROUNDING), (ours, got, want)
