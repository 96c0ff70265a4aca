"""fsbench's SMIYC protocol against the SegmentMeIfYouCan toolkit's own output.

The golden files were written by ``tests/golden/make_smiyc_golden.py``, which runs the toolkit
(SegmentMeIfYouCan/road-anomaly-benchmark @1c7804e, the reference, and @05552386, the older
formula kept as ``--smiyc-commit 05552386``) on the seeded frames of ``smiyc_inputs.npz``.
The pixel curve, its best-F1 threshold and the component metrics at that threshold (and at two
fixed thresholds) must equal the toolkit's to 1e-6 (the issue's bound; the values are sums of
integer counts, so they agree far closer in practice), on the compiled kernels
(``fsbench.metrics.native``) and on the numpy paths alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fsbench.metrics.components import (
    ROAD_ANOMALY_21_SIZES,
    ROAD_OBSTACLE_21_SIZES,
    ComponentMetrics,
)
from fsbench.metrics.protocols import SMIYC_COMMITS, SmiycPixelCurve

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-6

# every test on the compiled kernels and on the numpy paths (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("kernels")


def _inputs() -> tuple[dict, dict]:
    data = np.load(GOLDEN / "smiyc_inputs.npz")
    meta = json.loads(str(data["meta"]))
    frames = {
        name: [(data[f"{name}/{i}/score"], data[f"{name}/{i}/label"]) for i in range(c["frames"])]
        for name, c in meta.items()
    }
    return meta, frames


META, FRAMES = _inputs()
CASES = sorted(META)


def _golden(commit: str) -> tuple[dict, np.lib.npyio.NpzFile]:
    scalars = json.loads((GOLDEN / f"smiyc_{commit}.json").read_text())
    return scalars, np.load(GOLDEN / f"smiyc_{commit}.npz")


def _curve(case: str, commit: str) -> SmiycPixelCurve:
    curve = SmiycPixelCurve(commit=commit)
    for score, label in FRAMES[case]:
        curve.update(score, label)
    return curve


def _scale(values: np.ndarray) -> float:
    return max(1.0, float(np.abs(values).max()))


PIXEL_KEYS = {
    "ap": "area_PRC",
    "auroc": "area_ROC",
    "fpr95": "tpr95_fpr",
    "best_f1": "best_f1",
    "best_f1_threshold": "best_f1_threshold",
}


def _matches(got: dict, want: dict, scale: float) -> bool:
    return all(
        abs(got[ours] - want[theirs]) <= TOL * (scale if ours == "best_f1_threshold" else 1)
        for ours, theirs in PIXEL_KEYS.items()
    )


def _check_pixel(got: dict, want: dict, scale: float) -> None:
    for ours, theirs in PIXEL_KEYS.items():
        tol = TOL * (scale if ours == "best_f1_threshold" else 1)
        assert got[ours] == pytest.approx(want[theirs], abs=tol), ours


@pytest.mark.parametrize("commit", sorted(SMIYC_COMMITS))
@pytest.mark.parametrize("case", CASES)
def test_pixel_metrics_equal_the_toolkit(case, commit):
    """Equal to the toolkit with its tie order pinned to frame order; and to its unpinned
    result wherever the frame order does not decide it (or to one of its results)."""
    scalars, arrays = _golden(commit)
    got = _curve(case, commit).compute()
    scale = _scale(arrays[f"{case}/pixel_ties_in_frame_order/thresholds"])
    _check_pixel(got, scalars["cases"][case]["pixel_ties_in_frame_order"], scale)
    outcomes = scalars["cases"][case]["pixel_by_frame_order"]
    if len(outcomes) == 1:
        _check_pixel(got, outcomes[0], scale)
    elif commit == "1c7804e":  # only the point at index 0 depends on the order there
        assert any(_matches(got, want, scale) for want in outcomes), (got, outcomes)


@pytest.mark.parametrize("commit", sorted(SMIYC_COMMITS))
@pytest.mark.parametrize("case", CASES)
def test_pixel_curve_equals_the_toolkit(case, commit):
    """Every point of the curve, thresholds included (tie order pinned to frame order)."""
    scalars, arrays = _golden(commit)
    want = scalars["cases"][case]["pixel_ties_in_frame_order"]
    points = _curve(case, commit).curve()
    assert points["tpr"].size == want["curve_points"]
    prefix = f"{case}/pixel_ties_in_frame_order"
    for ours, theirs in (
        ("tpr", "curve_tpr"),
        ("fpr", "curve_fpr"),
        ("precision", "curve_precision"),
    ):
        np.testing.assert_allclose(points[ours], arrays[f"{prefix}/{theirs}"], rtol=0, atol=TOL)
    thresholds = arrays[f"{prefix}/thresholds"]
    np.testing.assert_allclose(
        points["thresholds"], thresholds, rtol=0, atol=TOL * _scale(thresholds)
    )


def _components(case: str, threshold: float) -> tuple[ComponentMetrics, dict]:
    sizes = ROAD_OBSTACLE_21_SIZES if META[case]["track"] == "obstacle" else ROAD_ANOMALY_21_SIZES
    metrics = ComponentMetrics(SmiycPixelCurve.component_threshold(threshold), *sizes)
    for score, label in FRAMES[case]:
        metrics.update(score.astype(np.float16), label)  # the toolkit reads float16 maps
    return metrics, metrics.compute()


def _same(got: float | None, want: float) -> bool:
    """A defined value equal to the toolkit's, or None where the toolkit's is NaN."""
    if got is None:
        return bool(np.isnan(want))
    return abs(got - want) <= TOL


@pytest.mark.parametrize("commit", sorted(SMIYC_COMMITS))
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("run", ["best_f1", "fixed0", "fixed1"])
def test_component_metrics_equal_the_toolkit(case, commit, run):
    scalars, arrays = _golden(commit)
    want = scalars["cases"][case]["components"][run]
    assert "error" not in want, want
    if run == "best_f1":
        ours = _curve(case, commit).compute()["best_f1_threshold"]
        outcomes = scalars["cases"][case]["pixel_by_frame_order"]
        tol = TOL * max(1.0, abs(ours))
        if len(outcomes) == 1:
            assert ours == pytest.approx(want["thresh_p"], abs=tol)
        else:  # the toolkit's frame order decides its threshold: ours is one of its choices
            assert any(abs(ours - o["best_f1_threshold"]) <= tol for o in outcomes)
        threshold = want["thresh_p"]  # the component metrics at the toolkit's threshold
    else:
        threshold = META[case]["fixed"][int(run[-1])]
        assert threshold == want["thresh_p"]
    metrics, got = _components(case, threshold)
    assert _same(got["siou_gt"], want["sIoU_gt"]), (got["siou_gt"], want["sIoU_gt"])
    assert _same(got["ppv"], want["prec_pred"]), (got["ppv"], want["prec_pred"])
    assert _same(got["mean_f1"], want["f1_mean"]), (got["mean_f1"], want["f1_mean"])
    assert len(got["undefined"]) == int(np.isnan(want["sIoU_gt"])) + int(
        np.isnan(want["prec_pred"])
    )
    tp, fn, fp = (np.array(want["counts"][k]) for k in ("tp", "fn", "fp"))
    np.testing.assert_allclose(got["f1_per_threshold"], 2 * tp / (2 * tp + fn + fp), atol=TOL)
    assert got["n_gt_components"] == tp[0] + fn[0]
    for i, frame in enumerate(metrics.frames):
        np.testing.assert_allclose(
            frame.sious, arrays[f"{case}/components/{run}/{i}/sIoU_gt"], atol=TOL
        )
        np.testing.assert_allclose(
            frame.precisions, arrays[f"{case}/components/{run}/{i}/prec_pred"], atol=TOL
        )


def test_the_cases_exercise_what_they_claim():
    """The golden cases include repeated thresholds, scores outside [0, 1] and ties."""
    scalars, arrays = _golden("1c7804e")
    ties = arrays["quantized_ties/pixel_ties_in_frame_order/thresholds"]
    assert ties.size < sum(s.size for s, _ in FRAMES["quantized_ties"])
    energy = FRAMES["energy_range"]
    assert min(float(s.min()) for s, _ in energy) < -10  # far outside [0, 1]
    assert scalars["cases"]["energy_range"]["pixel"]["best_f1_threshold"] < 0
    assert len(scalars["cases"]["quantized_ties"]["pixel_by_frame_order"]) > 1
    assert scalars["numpy"].startswith("1.23")  # the toolkit's pinned numpy


@pytest.mark.parametrize("commit", sorted(SMIYC_COMMITS))
@pytest.mark.parametrize("case", CASES)
def test_the_protocol_metric_equals_the_toolkit(case, commit):
    """``SmiycMetrics``, what ``evaluate.py protocol=[smiyc]`` and ``fsbench score --protocol
    smiyc`` run, against the toolkit: its pixel metrics and, where the toolkit's own threshold
    does not depend on its frame order, its component metrics at that threshold."""
    import torch

    from fsbench.metrics.smiyc import SmiycMetrics

    scalars, arrays = _golden(commit)
    track = "obstacle" if META[case]["track"] == "obstacle" else "anomaly"
    metric = SmiycMetrics(commit=commit, track=track)
    for score, label in FRAMES[case]:
        metric.update(torch.from_numpy(score), torch.from_numpy(label), None)
    got = metric.compute()
    scale = _scale(arrays[f"{case}/pixel_ties_in_frame_order/thresholds"])
    _check_pixel(got, scalars["cases"][case]["pixel_ties_in_frame_order"], scale)
    if len(scalars["cases"][case]["pixel_by_frame_order"]) > 1:
        return  # the toolkit's threshold, hence its components, depends on its frame order
    want = scalars["cases"][case]["components"]["best_f1"]
    components = got["components"]
    assert components["threshold"] == SmiycPixelCurve.component_threshold(want["thresh_p"])
    assert _same(components["siou_gt"], want["sIoU_gt"]), (components, want)
    assert _same(components["ppv"], want["prec_pred"]), (components, want)
    assert _same(components["mean_f1"], want["f1_mean"]), (components, want)
