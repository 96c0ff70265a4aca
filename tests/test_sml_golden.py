"""SML post-processing against the official code's own output (tests/golden/sml_*.npz).

The golden files were written by tests/golden/make_sml_golden.py, which runs
`BoundarySuppressionWithSmoothing`, `find_boundaries`, `expand_boundaries` and `DeepV3Plus.forward`
of shjung13/Standardized-max-logits @c52a513 (`network/deepv3.py`) with kornia @af948c5 on seeded
label maps: curved regions of 19 classes (ids >= 2 touching the border), 1-2 px lines, single-pixel
islands, batches, non-square, tiny and one-row images, tied scores and tied logits. The official
score is SML (higher = inlier); fsbench's is -SML, and the post-processing is linear.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.softmax import StandardizedMaxLogit, class_boundaries, suppress_boundaries
from fsbench.models import SegOutput

GOLDEN = Path(__file__).resolve().parent / "golden"
META = json.loads((GOLDEN / "sml_golden.json").read_text())
CASES = ["scenes", "tall", "tiny", "strip"]
CLASSES = 19


def _load(case: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"sml_{case}.npz") as arrays:
        return dict(arrays)


def _head(config: dict) -> StandardizedMaxLogit:
    return StandardizedMaxLogit(
        boundary_suppression=config["boundary_suppression"],
        boundary_iterations=config["boundary_iteration"],
        boundary_width=config["boundary_width"],
        dilated_smoothing=config["dilated_smoothing"],
        smoothing_kernel=config["kernel_size"],
        smoothing_dilation=config["dilation"],
    )


def _assert_close(found: np.ndarray, expected: np.ndarray, scale: float) -> None:
    assert found.shape == expected.shape
    worst = np.abs(found - expected).max() / scale
    assert worst <= 1e-4, f"max |fsbench - official| = {worst:.3g} x std of the score map"


def test_golden_files_come_from_the_pinned_commits():
    assert META["sml_commit"].startswith("c52a513")
    assert META["kornia_commit"].startswith("af948c5")
    assert len(META["configs"]) >= 10


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_class_boundaries_equal_the_official_ones(case, radius):
    golden = _load(case)
    predicted = torch.from_numpy(golden["prediction"].astype(np.int64))
    found = class_boundaries(predicted, radius)
    assert found.dtype == torch.bool
    np.testing.assert_array_equal(found[:, 0].numpy(), golden[f"boundary__r{radius}"])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", sorted(META["configs"]))
def test_sml_head_post_processing_equals_the_official_code(case, name):
    golden = _load(case)
    score = torch.from_numpy(golden["score"])
    predicted = torch.from_numpy(golden["prediction"].astype(np.int64))
    # Logits whose max is the official SML map at the predicted class; with class mean 0 and std
    # 1 the head's standardized max logit is that map itself.
    logits = (score[:, None] - 100.0).expand(-1, CLASSES, -1, -1).clone()
    logits.scatter_(1, predicted[:, None], score[:, None])
    head = _head(META["configs"][name])
    head.class_mean, head.class_std = torch.zeros(CLASSES), torch.ones(CLASSES)
    found = head.score(SegOutput(logits=logits, features=logits))
    assert found.dtype == torch.float32
    _assert_close(-found.numpy(), golden[f"out__{name}"], float(golden["score"].std()))


@pytest.mark.parametrize("name", ["plain", "defaults"])
def test_sml_head_equals_the_official_forward(name):
    """Standardization (and the default post-processing) of DeepV3Plus.forward on tied logits."""
    golden = _load("forward")
    logits = torch.from_numpy(golden["logits"])
    post = name == "defaults"
    head = StandardizedMaxLogit(boundary_suppression=post, dilated_smoothing=post)
    head.class_mean = torch.from_numpy(golden["class_mean"]).float()
    head.class_std = torch.from_numpy(golden["class_var"]).sqrt().float()
    found = head.score(SegOutput(logits=logits, features=logits))
    expected = golden[f"out__{name}"]
    _assert_close(-found.numpy(), expected, float(expected.std()))


def test_border_pixels_of_class_ids_from_2_are_boundaries_as_in_kornia_af948c5():
    # kornia@af948c5 erodes with the constant 1 as padding: min(neighbours, 1) < label at the
    # border for labels >= 2, so a uniform map of class 2 has its whole border as "boundary".
    border = torch.ones(5, 6, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    for label, marked in [(0, False), (1, False), (2, True), (18, True)]:
        found = class_boundaries(torch.full((1, 5, 6), label), 0)[0, 0]
        assert torch.equal(found, border if marked else torch.zeros_like(border)), label


def test_sml_names_a_width_that_is_not_a_multiple_of_the_rounds():
    message = r"head.sml.boundary_width \(5\) must be a multiple of head.sml.boundary_iterations"
    with pytest.raises(ValueError, match=message):
        StandardizedMaxLogit(boundary_width=5, boundary_iterations=2)
    with pytest.raises(ValueError, match=message):
        suppress_boundaries(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), 2, 5)
    for bad in [{"boundary_width": -4}, {"boundary_iterations": -1}, {"boundary_width": 4.0}]:
        with pytest.raises(ValueError, match=r"head.sml.boundary_\w+ must be an integer >= 0"):
            StandardizedMaxLogit(**bad)
    StandardizedMaxLogit(boundary_width=5, boundary_iterations=2, boundary_suppression=False)
    StandardizedMaxLogit(boundary_width=3, boundary_iterations=0)  # no rounds, as officially


def test_class_boundaries_name_a_negative_radius():
    with pytest.raises(ValueError, match="radius must be >= 0, got -1"):
        class_boundaries(torch.zeros(1, 4, 4, dtype=torch.long), -1)
