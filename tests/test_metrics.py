"""AnomalyMetrics and SegmentationMetrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    jaccard_score,
    roc_auc_score,
    roc_curve,
)

import fsbench.metrics.anomaly as anomaly_module
from fsbench.metrics import (
    AnomalyMetrics,
    SegmentationMetrics,
    anomaly_metrics,
    iou_from_confmat,
    ranking_metrics,
)
from fsbench.metrics.anomaly import (
    BinningWarning,
    bin_lower_edges,
    binning_bounds,
    histogram_slots,
    score_bins,
)
from fsbench.metrics.per_image import per_image_metrics

KEYS = ("ap", "auroc", "fpr95")


# --------------------------------------------------------------------------- helpers


def sklearn_reference(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The Fishyscapes definition written with scikit-learn (scores cast to float32 first)."""
    scores = scores.astype(np.float32)
    # Keep every threshold: the default drop_intermediate=True may drop the first point whose
    # TPR reaches 0.95 when it lies on a straight ROC segment.
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {
        "ap": average_precision_score(labels, scores),
        "auroc": roc_auc_score(labels, scores),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],  # the first (highest) threshold reaching 95 % TPR
    }


def make_batches(seed: int, levels: int | None = None, n_batches: int = 3):
    """Score maps [2, 16, 24] with ~10 % anomaly and ~10 % void (255) pixels.

    With ``levels``, every score is one of ``levels`` integers (heavy ties).
    """
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        target = (rng.random((2, 16, 24)) < 0.1).astype(np.uint8)
        target[rng.random(target.shape) < 0.1] = 255
        score = rng.normal(size=target.shape) + 1.5 * (target == 1)
        if levels is not None:
            score = np.clip(np.round(score + 1), 0, levels - 1)
        batches.append((score, target))
    return batches


def update_all(batches, **kwargs) -> dict[str, float]:
    metric = AnomalyMetrics(**kwargs)
    for score, target in batches:
        metric.update(torch.from_numpy(score), torch.from_numpy(target))
    return metric.compute()


def pooled_valid_pixels(batches) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([s[t != 255] for s, t in batches])
    labels = np.concatenate([t[t != 255] for s, t in batches])
    return scores, labels


# The histogram state may merge distinct scores closer than 1.2e-4 (relative): the tolerances the
# metrics must meet on continuous scores. Tied and quantized scores must be exact.
BINNED = {"ap": 1e-4, "auroc": 1e-4, "fpr95": 1e-3}


def assert_matches(result: dict, reference: dict, tol: float | dict[str, float]) -> None:
    for key in KEYS:
        limit = tol[key] if isinstance(tol, dict) else tol
        assert result[key] == pytest.approx(reference[key], abs=limit), key


# --------------------------------------------------------------------------- anomaly: values


# 2,000 pixels: a handful of bins shared by both classes can move AP by 1e-4 (seed 2 warns).
@pytest.mark.filterwarnings("ignore::fsbench.metrics.anomaly.BinningWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_continuous_scores_pooled_over_batches_match_scikit_learn(seed):
    batches = make_batches(seed)
    scores, labels = pooled_valid_pixels(batches)
    reference = sklearn_reference(scores, labels)
    result = update_all(batches)
    assert_matches(result, reference, tol=BINNED)
    assert_inside_binning_intervals(result, reference)
    exact = anomaly_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    assert_matches(exact, reference, tol=1e-9)


@pytest.mark.parametrize("levels", [3, 4, 5])
def test_heavily_tied_scores_are_exact(levels):
    batches = make_batches(10 + levels, levels=levels)
    scores, labels = pooled_valid_pixels(batches)
    assert len(np.unique(scores)) == levels
    # The counts cannot tell exact ties from distinct scores sharing a bin: the bound (and its
    # warning, which says so) is pessimistic here, while the values are exact.
    with pytest.warns(BinningWarning, match="exactly equal scores"):
        assert_matches(update_all(batches), sklearn_reference(scores, labels), tol=1e-9)


def test_negative_scores_over_sixty_orders_of_magnitude():
    rng = np.random.default_rng(3)
    labels = rng.random(4000) < 0.2
    magnitude = 10.0 ** rng.uniform(-30, 30, size=4000)
    scores = -magnitude * np.where(labels, 0.01, 1.0)  # anomalies closer to zero, i.e. higher
    result = anomaly_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    assert_matches(result, sklearn_reference(scores, labels), tol=1e-9)


def test_large_distance_like_scores_are_ranked_without_a_sigmoid():
    # A sigmoid (as torchmetrics' Binary* metrics apply to scores outside [0, 1]) maps all of
    # these to 1.0 in float32 and would report AUROC 0.5.
    rng = np.random.default_rng(4)
    labels = rng.random(2000) < 0.1
    scores = 100.0 + rng.gamma(2.0, 50.0, size=2000) + 60.0 * labels
    result = anomaly_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    reference = sklearn_reference(scores, labels)
    assert_matches(result, reference, tol=1e-9)
    assert result["auroc"] > 0.7


def test_hand_computed_case_with_a_tie():
    # score: 0.9  0.8  0.8  0.3  0.3  0.1
    # label: A    I    A    I    I    A        (3 anomaly, 3 inlier; A = 1, I = 0)
    # Distinct thresholds (TP, FP):  0.9 (1, 0)  0.8 (2, 1)  0.3 (2, 3)  0.1 (3, 3)
    #   recall    = 1/3, 2/3, 2/3, 1     precision = 1, 2/3, 2/5, 1/2
    #   AP = 1/3 * 1 + 1/3 * 2/3 + 0 * 2/5 + 1/3 * 1/2 = 13/18
    #   ROC (FPR, TPR): (0, 0) (0, 1/3) (1/3, 2/3) (1, 2/3) (1, 1)
    #   AUROC = 1/3 * (1/3 + 2/3) / 2 + 2/3 * 2/3 = 1/6 + 4/9 = 11/18
    #     (Mann-Whitney check: pairs won 3 + 2.5 + 0 = 5.5 of 9 = 11/18)
    #   TPR first reaches 0.95 at threshold 0.1, where FPR = 3/3 = 1.
    scores = torch.tensor([0.9, 0.8, 0.8, 0.3, 0.3, 0.1])
    labels = torch.tensor([1, 0, 1, 0, 0, 1])
    result = anomaly_metrics(scores, labels)
    assert result["ap"] == pytest.approx(13 / 18, abs=1e-12)
    assert result["auroc"] == pytest.approx(11 / 18, abs=1e-12)
    assert result["fpr95"] == 1.0
    assert (result["n_anomaly"], result["n_inlier"]) == (3, 3)


def test_fpr95_is_taken_where_tpr_first_reaches_exactly_095():
    # 20 anomalies, 10 inliers, ranked: 18 A, 1 I, 1 A, 1 I, 1 A, 8 I.
    # After the 19th anomaly TPR = 19/20 = 0.95 exactly with FPR = 1/10: the official
    # "TPR >= 0.95" rule gives 0.1 (a "TPR > 0.95" rule would give 0.2).
    labels = torch.tensor([1] * 18 + [0, 1, 0, 1] + [0] * 8)
    scores = torch.arange(len(labels), 0, -1, dtype=torch.float32)
    assert anomaly_metrics(scores, labels)["fpr95"] == pytest.approx(0.1, abs=1e-12)


def test_fpr95_takes_the_first_point_at_or_above_095_without_interpolation():
    # 10 anomalies, 10 inliers: 9 A at 5.0, 2 I at 4.0, {1 A, 2 I} tied at 3.0, 6 I at 1.0.
    # ROC points (FPR, TPR): (0, .9) (.2, .9) (.4, 1) (1, 1). The first TPR >= 0.95 is at
    # FPR 0.4; interpolating to TPR 0.95 would give 0.3.
    scores = torch.tensor([5.0] * 9 + [4.0] * 2 + [3.0] * 3 + [1.0] * 6)
    labels = torch.tensor([1] * 9 + [0] * 2 + [1, 0, 0] + [0] * 6)
    assert anomaly_metrics(scores, labels)["fpr95"] == pytest.approx(0.4, abs=1e-12)


def test_fpr_at_tpr_level_is_configurable():
    scores = torch.tensor([5.0] * 9 + [4.0] * 2 + [3.0] * 3 + [1.0] * 6)
    labels = torch.tensor([1] * 9 + [0] * 2 + [1, 0, 0] + [0] * 6)
    assert anomaly_metrics(scores, labels, fpr_at_tpr=0.9)["fpr95"] == 0.0


def test_constant_scorer_gets_the_prevalence_and_chance_auroc():
    labels = torch.tensor([1] * 5 + [0] * 95)
    result = anomaly_metrics(torch.zeros(100), labels)
    assert result["ap"] == pytest.approx(0.05, abs=1e-12)
    assert result["auroc"] == pytest.approx(0.5, abs=1e-12)
    assert result["fpr95"] == 1.0


def test_scores_are_compared_in_float32_like_the_official_code():
    # 1 + 1e-12 and 1 are distinct in float64 but equal in float32: one tied threshold.
    scores = torch.tensor([1.0 + 1e-12, 1.0], dtype=torch.float64)
    result = anomaly_metrics(scores, torch.tensor([1, 0]))
    assert result["auroc"] == 0.5
    assert result["ap"] == 0.5


def test_splitting_the_data_into_batches_changes_nothing():
    batches = make_batches(5, n_batches=4)
    whole = [(np.concatenate([s for s, _ in batches]), np.concatenate([t for _, t in batches]))]
    assert update_all(batches) == update_all(whole)


def test_compute_returns_python_floats_and_ints():
    result = update_all(make_batches(6))
    assert set(result) == {"ap", "auroc", "fpr95", "n_anomaly", "n_inlier", "binning"}
    assert all(type(result[key]) is float and 0.0 <= result[key] <= 1.0 for key in KEYS)
    assert type(result["n_anomaly"]) is int and type(result["n_inlier"]) is int
    binning = result["binning"]
    assert binning["bin_bits"] == 22
    assert type(binning["mixed_bins"]) is int and type(binning["pixels_in_mixed_bins"]) is int
    for key in KEYS:
        low, high = binning[f"{key}_interval"]
        assert type(binning[f"{key}_error_bound"]) is float and type(low) is float
        assert 0.0 <= low <= result[key] <= high <= 1.0


# --------------------------------------------------------------------------- anomaly: void


def test_void_pixels_are_excluded():
    target = torch.tensor([[1, 0, 255, 0, 255]], dtype=torch.uint8)
    first, changed = AnomalyMetrics(), AnomalyMetrics()
    first.update(torch.tensor([[0.9, 0.1, 0.5, 0.2, -3.0]]), target)
    changed.update(torch.tensor([[0.9, 0.1, 100.0, 0.2, float("nan")]]), target)
    assert first.compute() == changed.compute()
    assert (first.compute()["n_anomaly"], first.compute()["n_inlier"]) == (1, 2)


def test_a_custom_ignore_index_marks_void():
    metric = AnomalyMetrics(ignore_index=7)
    metric.update(torch.tensor([0.9, 0.5, 0.1]), torch.tensor([1, 7, 0]))
    assert metric.compute()["n_inlier"] == 1


# --------------------------------------------------------------------------- anomaly: errors


def test_void_stored_as_two_is_refused_naming_the_value_found():
    metric = AnomalyMetrics()
    with pytest.raises(ValueError, match=r"unexpected values \[2\].*\{0, 1, 255\}"):
        metric.update(torch.rand(1, 2, 2), torch.tensor([[[0, 1], [2, 0]]]))


def test_functional_core_refuses_labels_other_than_0_and_1():
    with pytest.raises(ValueError, match=r"values \[255\]"):
        anomaly_metrics(torch.rand(3), torch.tensor([0, 1, 255]))


def test_non_finite_scores_are_refused_with_count_and_first_position():
    score = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, float("nan"), 0.3, float("inf")]])
    target = torch.tensor([[0, 1, 0, 0], [0, 1, 0, 0]])
    with pytest.raises(ValueError, match=r"2 non-void pixels .* index \(1, 1\)"):
        AnomalyMetrics().update(score, target)


def test_float64_scores_beyond_the_float32_range_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        AnomalyMetrics().update(
            torch.tensor([1e39, 0.0], dtype=torch.float64), torch.tensor([1, 0])
        )


def test_no_anomaly_pixel_is_an_error_not_a_number():
    metric = AnomalyMetrics()
    metric.update(torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="undefined .* 0 anomaly and 32 inlier"):
        metric.compute()


def test_no_inlier_pixel_is_an_error():
    with pytest.raises(ValueError, match="3 anomaly and 0 inlier"):
        anomaly_metrics(torch.rand(3), torch.ones(3, dtype=torch.bool))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*\(1, 8, 8\)"):
        AnomalyMetrics().update(torch.rand(1, 4, 4), torch.zeros(1, 8, 8, dtype=torch.uint8))


# --------------------------------------------------------------------------- anomaly: state


def test_reset_forgets_earlier_updates():
    metric = AnomalyMetrics()
    metric.update(torch.tensor([0.0, 1.0]), torch.tensor([1, 0]))
    assert metric.compute()["auroc"] == 0.0
    metric.reset()
    metric.update(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0, 1, 1]))
    result = metric.compute()
    assert result["auroc"] == 1.0
    assert (result["n_anomaly"], result["n_inlier"]) == (2, 1)


def _two_process_sync(rank0_batches, rank1_batches) -> dict[str, float]:
    """compute() on "rank 0" with a fake all-gather that also returns "rank 1"'s states."""
    rank1 = AnomalyMetrics()
    for score, target in rank1_batches:
        rank1.update(torch.from_numpy(score), torch.from_numpy(target))
    # Every state has its own shape (counts, label_values, non_finite): gather by shape.
    states = {tuple(rank1.counts.shape): rank1.counts.clone()}
    states[tuple(rank1.label_values.shape)] = rank1.label_values.clone()
    states[tuple(rank1.non_finite.shape)] = rank1.non_finite.clone()
    states[tuple(rank1.bin_range.shape)] = rank1.bin_range.clone()

    def fake_all_gather(tensor, group=None):
        return [tensor, states[tuple(tensor.shape)]]

    rank0 = AnomalyMetrics(dist_sync_fn=fake_all_gather, distributed_available_fn=lambda: True)
    for score, target in rank0_batches:
        rank0.update(torch.from_numpy(score), torch.from_numpy(target))
    return rank0.compute()


def test_states_from_several_processes_are_pooled():
    a, b = make_batches(8), make_batches(9)
    assert _two_process_sync(a, b) == update_all(a + b)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_a_process_without_data_does_not_break_the_sync():
    b = make_batches(9)
    assert _two_process_sync([], b) == update_all(b)


# --------------------------------------------------------------------------- anomaly: histogram


def _metric_of(score: np.ndarray, target: np.ndarray, **kwargs) -> dict:
    metric = AnomalyMetrics(**kwargs)
    metric.update(torch.from_numpy(score), torch.from_numpy(target))
    return metric.compute()


def _labels(rng, shape, fraction: float) -> np.ndarray:
    return (rng.random(shape) < fraction).astype(np.uint8)


SCORE_MAKERS = {
    # name: (labels -> scores); every case mixes the classes so that the ranking matters
    "normal": lambda rng, y: rng.normal(size=y.shape) + 1.2 * y,
    "energy_negative": lambda rng, y: -20.0 + 3.0 * rng.standard_gamma(2.0, size=y.shape) * (1 + y),
    "orders_of_magnitude": lambda rng, y: 10.0 ** (rng.uniform(-20, 20, y.shape) + 4.0 * y),
    # 1 - p of confident pixels, computed stably (as MaxSoftmax does): values near 0 keep their
    # resolution. Raw p near 1 would not: see the AnomalyMetrics docstring.
    "complement_of_probabilities": lambda rng, y: (
        10.0 ** rng.uniform(-7, -1, y.shape) * (1 + 9 * y)
    ),
    "signed_zero_ties": lambda rng, y: (
        np.where(rng.random(y.shape) < 0.5, np.float32(-0.0), np.float32(0.0))
        + np.where(rng.random(y.shape) < 0.4 + 0.3 * y, 1.0, 0.0)
    ),
}


@pytest.mark.parametrize("case", sorted(SCORE_MAKERS))
def test_histogram_state_matches_scikit_learn_on_the_test_matrix(case):
    rng = np.random.default_rng(len(case))
    target = _labels(rng, (4, 100, 100), 0.05)
    target[rng.random(target.shape) < 0.05] = 255
    score = SCORE_MAKERS[case](rng, (target == 1).astype(np.float64))
    valid = target != 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BinningWarning)  # signed_zero_ties: exact ties, see above
        result = _metric_of(score, target)
    reference = sklearn_reference(score[valid], target[valid])
    assert_matches(result, reference, BINNED)
    assert_inside_binning_intervals(result, reference)


def assert_inside_binning_intervals(result: dict, reference: dict) -> None:
    """The exact metrics lie in the intervals, and the bounds are the reported value's distance."""
    binning = result["binning"]
    for key in KEYS:
        low, high = binning[f"{key}_interval"]
        assert low - 1e-12 <= reference[key] <= high + 1e-12, (key, reference[key], low, high)
        bound = max(result[key] - low, high - result[key])
        assert binning[f"{key}_error_bound"] == pytest.approx(bound, abs=1e-15), key


def _crowded_offsets() -> tuple[np.ndarray, np.ndarray]:
    """float64 offsets within +- 1e-3, anomalies 5e-4 higher, and the targets (10 % anomaly)."""
    rng = np.random.default_rng(0)
    target = (rng.random((4, 100, 100)) < 0.1).astype(np.uint8)
    return 1e-3 * np.tanh(0.4 * rng.normal(size=target.shape) + 0.5 * target), target


def _crowded() -> tuple[np.ndarray, np.ndarray]:
    """40,000 float32 scores within 5 +- 1e-3: the histogram's bins are 4.9e-4 wide there."""
    offsets, target = _crowded_offsets()
    return (5.0 + offsets).astype(np.float32), target


def test_crowded_scores_get_a_bound_holding_the_exact_metrics_and_one_warning():
    score, target = _crowded()
    metric = AnomalyMetrics()
    metric.update(torch.from_numpy(score), torch.from_numpy(target))
    with pytest.warns(BinningWarning) as record:
        result = metric.compute()
        metric.compute()  # cached: no second warning for the same head and dataset
    assert len(record) == 1
    message = str(record[0].message)
    for fix in ("rescale", "log-space", "bin_bits", "anomaly_metrics", "FPR95 by up to 0.41"):
        assert fix in message, fix
    reference = sklearn_reference(score.reshape(-1), target.reshape(-1))
    # The histogram is far off here (FPR95 0.910 vs 0.680, AP 0.251 vs 0.372) and says so:
    # every pixel shares a bin with the other class.
    assert abs(result["fpr95"] - reference["fpr95"]) > 0.2
    binning = result["binning"]
    assert binning["mixed_bins"] == 4 and binning["pixels_in_mixed_bins"] == 40000
    for key in KEYS:
        assert binning[f"{key}_error_bound"] > 1e-4
        assert binning[f"{key}_error_bound"] >= abs(result[key] - reference[key])
    assert_inside_binning_intervals(result, reference)
    # The exact sort agrees with scikit-learn, inside the interval too.
    exact = anomaly_metrics(torch.from_numpy(score), torch.from_numpy(target))
    assert_matches(exact, reference, tol=1e-9)


def test_the_fixes_the_warning_names_work_on_crowded_scores():
    score, target = _crowded()
    centred, _ = _crowded_offsets()  # the same scores shifted by -5 where they are computed
    with warnings.catch_warnings():
        warnings.simplefilter("error", BinningWarning)
        result = _metric_of(centred, target)
    assert all(result["binning"][f"{key}_error_bound"] <= 1e-4 for key in KEYS)
    reference = sklearn_reference(centred.reshape(-1), target.reshape(-1))
    assert_matches(result, reference, BINNED)
    with pytest.warns(BinningWarning):  # 16x finer bins shrink the bound, not enough here
        finer = _metric_of(score, target, bin_bits=26)["binning"]
    assert 1e-4 < finer["fpr95_error_bound"] < 0.1


def test_well_separated_scores_have_bound_zero_and_no_warning():
    rng = np.random.default_rng(11)
    target = _labels(rng, (4, 100, 100), 0.1)
    target[rng.random(target.shape) < 0.05] = 255
    # Many pixels per bin, ties included, but every anomaly above every inlier.
    score = np.round(rng.random(target.shape), 3) + 2.0 * (target == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BinningWarning)
        result = _metric_of(score, target)
    binning = result["binning"]
    assert (binning["mixed_bins"], binning["pixels_in_mixed_bins"]) == (0, 0)
    assert all(binning[f"{key}_error_bound"] == 0.0 for key in KEYS)
    assert (result["ap"], result["auroc"], result["fpr95"]) == (1.0, 1.0, 0.0)


def test_binning_bounds_are_the_best_and_worst_orders_inside_the_bins():
    # Bins, highest first, as (anomaly, inlier) counts. The AP interval's ends are the AP of the
    # best order (each bin's anomalies tied above its inliers) and of the worst (inliers first,
    # anomalies distinct); FPR95's are the crossing bin without / with its inliers; AUROC's count
    # each shared pair as won / lost. The pure-anomaly bin (3, 0) below inliers moves AP too.
    bins = [(2, 1), (0, 2), (3, 0), (1, 3), (4, 2), (0, 5)]
    tps = torch.tensor(np.cumsum([a for a, _ in bins]))
    fps = torch.tensor(np.cumsum([n for _, n in bins]))
    binning = binning_bounds(tps, fps, ranking_metrics(tps, fps))

    def ordered(best: bool) -> dict[str, float]:
        scores, labels, value = [], [], 1000.0
        for a, n in bins:
            if best:
                groups = [([1] * a, [value] * a), ([0] * n, [value - 1] * n)]
            else:
                groups = [([0] * n, [value] * n), ([1] * a, [value - 1 - k for k in range(a)])]
            for group_labels, group_scores in groups:
                labels += group_labels
                scores += group_scores
            value -= 100.0
        return sklearn_reference(np.array(scores), np.array(labels))

    best, worst = ordered(best=True), ordered(best=False)
    assert binning["ap_interval"] == pytest.approx([worst["ap"], best["ap"]], abs=1e-12)
    assert binning["auroc_interval"] == pytest.approx([worst["auroc"], best["auroc"]], abs=1e-12)
    assert binning["fpr95_interval"] == pytest.approx([best["fpr95"], worst["fpr95"]], abs=1e-12)
    assert (binning["mixed_bins"], binning["pixels_in_mixed_bins"]) == (3, 13)


def test_binning_bound_precision_with_a_billion_pixels_above():
    # One anomaly pixel per bin below 1e9 inliers: distinct or tied, nothing can change (a = 1),
    # and the bound must say 0 exactly, not the rounding noise of digamma(1e9) differences.
    tps = torch.tensor([0, 1, 2, 3])
    fps = torch.tensor([10**9, 10**9, 10**9 + 5, 10**9 + 5])
    binning = binning_bounds(tps, fps, ranking_metrics(tps, fps))
    assert binning["ap_interval"][0] == ranking_metrics(tps, fps)["ap"]
    # Two anomaly pixels in one bin below 1e9 inliers: tied, each has precision 2 / (1e9 + 2);
    # distinct, the first has 1 / (1e9 + 1): AP drops by exactly the difference over P = 2.
    tps, fps = torch.tensor([0, 2]), torch.tensor([10**9, 10**9])
    values = ranking_metrics(tps, fps)
    expected = (2 / (1e9 + 2) - 1 / (1e9 + 1)) / 2
    loss = values["ap"] - binning_bounds(tps, fps, values)["ap_interval"][0]
    assert loss == pytest.approx(expected, rel=1e-6, abs=1e-18)


@pytest.mark.filterwarnings("ignore::fsbench.metrics.anomaly.BinningWarning")  # exact ties
def test_signed_zeros_are_one_tie():
    target = np.array([1, 0, 1, 0], dtype=np.uint8)
    result = _metric_of(np.array([0.0, -0.0, -0.0, 0.0], dtype=np.float32), target)
    assert result["ap"] == 0.5 and result["auroc"] == 0.5


def test_very_small_anomaly_fraction():
    rng = np.random.default_rng(5)
    target = np.zeros((4, 250, 250), dtype=np.uint8)  # 250,000 pixels, 25 anomalies (1e-4)
    target.reshape(-1)[rng.choice(target.size, 25, replace=False)] = 1
    score = rng.normal(size=target.shape) + 2.5 * target
    reference = sklearn_reference(score.reshape(-1), target.reshape(-1))
    assert_matches(_metric_of(score, target), reference, BINNED)


def test_images_without_anomalies_and_mostly_void_images_count_like_the_pooled_reference():
    rng = np.random.default_rng(6)
    clean = _labels(rng, (1, 40, 40), 0.0)  # no anomaly pixel
    void = np.full((1, 40, 40), 255, dtype=np.uint8)
    void[0, :3, :5] = _labels(rng, (3, 5), 0.5)  # 15 valid pixels
    normal = _labels(rng, (1, 40, 40), 0.1)
    batches = [(rng.normal(size=t.shape) + t * (t == 1), t) for t in (clean, void, normal)]
    reference = sklearn_reference(*pooled_valid_pixels(batches))
    assert_matches(update_all(batches), reference, BINNED)


def test_histogram_bins_preserve_the_order_of_float32_scores():
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [rng.normal(size=1000) * 10.0 ** rng.integers(-30, 30, 1000), [0.0, -0.0, 1e-45, -1e-45]]
    ).astype(np.float32)
    values.sort()
    bins = score_bins(torch.from_numpy(values))
    assert bool((torch.diff(bins) >= 0).all())
    edges = bin_lower_edges(bins)
    assert bool((edges <= torch.from_numpy(values)).all())
    assert torch.equal(score_bins(edges), bins)  # each edge falls in its own bin


def numpy_histogram(score: np.ndarray, target: np.ndarray, bits: int) -> np.ndarray:
    """The [2, 2**bits] counts AnomalyMetrics must hold, from the float32 bit patterns in numpy.

    Written independently of fsbench: -0.0 becomes +0.0, a negative float's pattern is
    inverted and a positive one gets its sign bit set (an unsigned integer of the floats' order),
    its top ``bits`` bits are the bin; rows are counted with numpy.bincount.
    """
    pattern = np.ascontiguousarray(score, dtype=np.float32).reshape(-1).view(np.uint32)
    pattern = np.where(pattern == 0x80000000, np.uint32(0), pattern)
    negative = pattern >> np.uint32(31) == 1
    key = np.where(negative, ~pattern, pattern | np.uint32(0x80000000))
    bins = (key >> np.uint32(32 - bits)).astype(np.int64)
    target = np.asarray(target).reshape(-1)
    return np.stack([np.bincount(bins[target == row], minlength=2**bits) for row in (0, 1)])


def binning_cases(rng) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores [3, 50, 60] hitting the binning's corners, labels 0 / 1 / 255."""
    target = (rng.random((3, 50, 60)) < 0.3).astype(np.uint8)
    target[rng.random(target.shape) < 0.2] = 255
    score = (rng.normal(size=target.shape) * 10.0 ** rng.integers(-40, 37, target.shape)).astype(
        np.float32
    )
    flat = score.reshape(-1)
    n = flat.size // 8
    # lower edges of finite 10-bit bins (edges at every width tested) and their float32
    # neighbours, both signs; the outermost 2 bins of 10 bits hold the non-finite floats
    edges = bin_lower_edges(torch.from_numpy(rng.integers(2, 2**10 - 2, n)), 10).numpy()
    flat[:n] = edges * np.where(rng.random(n) < 0.5, -1, 1).astype(np.float32)
    with np.errstate(over="ignore"):  # the neighbours of +-3.4e38 beyond it are inf
        flat[n : 2 * n] = np.nextafter(flat[:n], np.float32(np.inf))
        flat[2 * n : 3 * n] = np.nextafter(flat[:n], np.float32(-np.inf))
    flat[~np.isfinite(flat)] = 0.0
    special = [0.0, -0.0, 1e-45, -1e-45, 1.2e-38, -1.2e-38, 3.4e38, -3.4e38, 1.0, -1.0]
    flat[3 * n : 3 * n + len(special)] = special
    flat[3 * n + 20 : 4 * n] = np.round(flat[3 * n + 20 : 4 * n], 1)  # ties
    # non-finite scores on void pixels are allowed (and must not be counted)
    void = np.flatnonzero(target.reshape(-1) == 255)[:5]
    flat[void] = [np.nan, np.inf, -np.inf, -np.nan, np.nan]
    return score, target


@pytest.mark.parametrize("chunk", [None, 997])  # 997: pixels split into uneven CPU chunks
@pytest.mark.parametrize("bits", [10, 16, 22])
@pytest.mark.parametrize("deferred", [False, True])
def test_update_counts_equal_a_numpy_histogram_of_the_float32_bit_patterns(
    deferred, bits, chunk, monkeypatch
):
    if chunk is not None:
        monkeypatch.setattr(anomaly_module, "CPU_CHUNK_PIXELS", chunk)
    rng = np.random.default_rng(bits)
    score, target = binning_cases(rng)
    if deferred:  # counted at compute(): meanwhile other labels must add nothing
        target[rng.random(target.shape) < 0.05] = rng.choice([2, 7, 254])
    metric = AnomalyMetrics(bin_bits=bits, deferred_checks=deferred)
    for s, t in zip(score, target, strict=True):  # three updates
        metric.update(torch.from_numpy(s), torch.from_numpy(t))
    expected = numpy_histogram(score, target, bits)
    assert metric.counts.dtype == torch.int64
    np.testing.assert_array_equal(metric.counts.numpy(), expected)
    # the same binning on torch tensors, as a GPU runs it
    slots, weight = histogram_slots(torch.from_numpy(score), torch.from_numpy(target), bits)
    on_tensors = torch.zeros(2 * 2**bits, dtype=torch.int64).index_add_(0, slots, weight)
    np.testing.assert_array_equal(on_tensors.view(2, -1).numpy(), expected)
    # score_bins is the binning the histogram uses
    valid = target <= 1
    bins = score_bins(torch.from_numpy(score[valid]), bits).numpy()
    rows = target[valid].astype(np.int64)
    np.testing.assert_array_equal(
        np.stack([np.bincount(bins[rows == r], minlength=2**bits) for r in (0, 1)]), expected
    )


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize(
    "score_dtype, target_dtype",
    [
        (torch.float64, torch.int64),
        (torch.float16, torch.int32),
        (torch.bfloat16, torch.uint8),
        (torch.float32, torch.bool),
        (torch.float32, torch.float32),  # labels numpy does not read: the torch passes
    ],
)
def test_update_counts_any_score_and_label_dtype_like_float32(deferred, score_dtype, target_dtype):
    rng = np.random.default_rng(1)
    target = rng.random((2, 30, 40)) < 0.4
    score = rng.normal(size=target.shape) * 10.0 ** rng.integers(-3, 4, target.shape)
    score_t = torch.from_numpy(score).to(score_dtype)
    target_np = target.astype(np.uint8)
    if target_dtype != torch.bool:
        target_np[rng.random(target.shape) < 0.2] = 255
    metric = AnomalyMetrics(deferred_checks=deferred)
    metric.update(score_t[:, ::2], torch.from_numpy(target_np).to(target_dtype)[:, ::2])
    expected = numpy_histogram(score_t[:, ::2].float().numpy(), target_np[:, ::2], 22)
    np.testing.assert_array_equal(metric.counts.numpy(), expected)


def test_non_finite_scores_fill_only_the_outermost_bins():
    bits = 16
    width = 2 ** (bits - 9)
    non_finite = torch.tensor([np.inf, -np.inf, np.nan, -np.nan], dtype=torch.float32)
    finite = torch.tensor([3.4028235e38, -3.4028235e38, 0.0, 1e-45], dtype=torch.float32)
    bins = score_bins(torch.cat([non_finite, finite]), bits)
    outer = (bins < width) | (bins >= 2**bits - width)
    assert outer.tolist() == [True] * 4 + [False] * 4


@pytest.mark.parametrize(
    "score, target, match",
    [
        ([0.5, float("nan"), 0.1], [0, 1, 0], "non-finite"),
        ([0.5, float("inf"), 0.1], [0, 0, 255], "non-finite"),
        ([0.5, 0.2, 0.1], [0, 2, 1], r"unexpected values \[2\]"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int64])
def test_a_refused_batch_leaves_the_histogram_as_it_was(score, target, match, dtype):
    metric = AnomalyMetrics(bin_bits=12, deferred_checks=False)
    metric.update(torch.tensor([0.3, -0.7, 0.3]), torch.tensor([1, 0, 255], dtype=dtype))
    before = metric.counts.clone()
    with pytest.raises(ValueError, match=match):
        metric.update(torch.tensor(score), torch.tensor(target, dtype=dtype))
    assert torch.equal(metric.counts, before)
    metric.update(torch.tensor([0.3]), torch.tensor([0]))  # and it goes on counting
    assert int(metric.counts.sum()) == 3


# (uint8 labels compare with an ignore_index wrapped to uint8, as torch's == does: -1 is 255)
@pytest.mark.parametrize(
    "dtype, ignore_index",
    [(torch.uint8, v) for v in (255, 100, 2)]
    + [(d, v) for d in (torch.int16, torch.int64) for v in (255, 2, -1)],
)
def test_only_the_void_label_is_dropped_and_any_other_is_refused(dtype, ignore_index):
    rng = np.random.default_rng(abs(ignore_index))
    target = (rng.random((2, 20, 30)) < 0.3).astype(np.int64)
    target[rng.random(target.shape) < 0.2] = ignore_index
    score = rng.normal(size=target.shape).astype(np.float32)
    metric = AnomalyMetrics(ignore_index=ignore_index, bin_bits=12, deferred_checks=False)
    metric.update(torch.from_numpy(score), torch.from_numpy(target).to(dtype))
    np.testing.assert_array_equal(metric.counts.numpy(), numpy_histogram(score, target, 12))
    before = metric.counts.clone()
    for other in (2, 3, 128, 254, 255):
        if other == ignore_index:
            continue
        bad = target.copy()
        bad[1, 5, 7] = other
        with pytest.raises(ValueError, match=rf"unexpected values \[{other}\]"):
            metric.update(torch.from_numpy(score), torch.from_numpy(bad).to(dtype))
        assert torch.equal(metric.counts, before)


def test_copied_and_pickled_metrics_count_into_their_own_histogram():
    rng = np.random.default_rng(12)
    target = (rng.random((2, 2, 40, 40)) < 0.3).astype(np.uint8)
    score = rng.normal(size=target.shape).astype(np.float32)
    metric = AnomalyMetrics(bin_bits=12)
    metric.update(torch.from_numpy(score[0]), torch.from_numpy(target[0]))  # work arrays made
    for copy in (metric.clone(), pickle.loads(pickle.dumps(metric))):
        copy.update(torch.from_numpy(score[1]), torch.from_numpy(target[1]))
        np.testing.assert_array_equal(copy.counts.numpy(), numpy_histogram(score, target, 12))
    np.testing.assert_array_equal(metric.counts.numpy(), numpy_histogram(score[0], target[0], 12))


@pytest.mark.filterwarnings("ignore::fsbench.metrics.anomaly.BinningWarning")
def test_compute_reads_the_bins_between_the_lowest_and_highest_reached():
    rng = np.random.default_rng(5)
    metric = AnomalyMetrics(bin_bits=14)
    scores = [rng.normal(size=300) * 1e-30, rng.normal(size=300) * 1e30]  # far apart
    for score in scores:
        target = (rng.random(score.shape) < 0.3).astype(np.uint8)
        metric.update(torch.from_numpy(score), torch.from_numpy(target))
    bins = score_bins(torch.from_numpy(np.concatenate(scores)), 14)
    assert metric.bin_range.tolist() == [int(bins.min()), int(bins.max())]
    result = metric.compute()
    assert result["n_anomaly"] + result["n_inlier"] == 600
    metric.reset()
    assert metric.bin_range.tolist() == [2**14, -1] and int(metric.counts.sum()) == 0
    metric.update(torch.tensor([0.5, 2.0]), torch.tensor([0, 1]))
    assert metric.compute()["auroc"] == 1.0


def test_state_size_does_not_grow_with_the_data():
    metric = AnomalyMetrics()
    size = metric.counts.numel() * metric.counts.element_size()
    assert size == 2 * 2**22 * 8 <= 64 * 2**20  # 64 MiB
    for _ in range(3):
        metric.update(torch.rand(2, 64, 64), torch.randint(0, 2, (2, 64, 64)))
    assert metric.counts.numel() * metric.counts.element_size() == size
    assert int(metric.counts.sum()) == 3 * 2 * 64 * 64


def test_curves_keep_exact_end_points_and_at_most_max_points():
    rng = np.random.default_rng(8)
    target = _labels(rng, (2, 80, 80), 0.1)
    metric = AnomalyMetrics()
    metric.update(
        torch.from_numpy(rng.normal(size=target.shape) + target), torch.from_numpy(target)
    )
    curves = metric.curves(max_points=50)
    assert 2 <= len(curves["tpr"]) <= 50
    assert curves["tpr"][-1] == 1.0 and curves["fpr"][-1] == 1.0
    n_top = (metric.counts[:, -1].sum(), metric.counts[1, -1])
    assert curves["precision"][0] == pytest.approx(float(n_top[1] / max(n_top[0], 1)))
    assert curves["threshold"] == sorted(curves["threshold"], reverse=True)


def test_per_image_ap_and_fraction_on_request():
    rng = np.random.default_rng(9)
    target = _labels(rng, (3, 30, 30), 0.1)
    target[1] = 0  # an image without anomaly: AP undefined, NaN
    score = rng.normal(size=target.shape) + target
    result = _metric_of(score, target, per_image=True)
    per_image = result["per_image"]
    assert per_image["ap"][0] == pytest.approx(
        average_precision_score(target[0].reshape(-1), score[0].astype(np.float32).reshape(-1))
    )
    assert math.isnan(per_image["ap"][1])
    assert per_image["anomaly_fraction"] == pytest.approx([t.mean() for t in target])


def test_per_image_ap_with_ties_and_void_equals_scikit_learn_per_image():
    rng = np.random.default_rng(21)
    target = _labels(rng, (5, 40, 50), 0.15)
    target[rng.random(target.shape) < 0.2] = 255
    target[3] = 255  # all void: AP and fraction undefined
    target[4][target[4] != 255] = 1  # only anomaly: AP undefined, fraction 1
    # Scores rounded to one decimal: many ties across both classes.
    score = np.round(rng.normal(size=target.shape) + (target == 1), 1)
    values = per_image_metrics(torch.from_numpy(score), torch.from_numpy(target))
    ap, fraction = values["ap"], values["anomaly_fraction"]
    for index in range(3):
        valid = target[index] != 255
        expected = average_precision_score(target[index][valid], score[index][valid])
        assert ap[index].item() == pytest.approx(expected, abs=1e-12)
        assert fraction[index].item() == pytest.approx(target[index][valid].mean(), abs=1e-12)
    assert math.isnan(ap[3]) and math.isnan(fraction[3])
    assert math.isnan(ap[4]) and fraction[4].item() == 1.0


def test_per_image_stride_scores_every_s_th_pixel_of_each_row_and_column():
    rng = np.random.default_rng(22)
    target = _labels(rng, (2, 30, 40), 0.2)
    score = rng.normal(size=target.shape) + target
    result = _metric_of(score, target, per_image=True, per_image_stride=3)
    for index in range(2):
        sub_t, sub_s = target[index, ::3, ::3], score[index, ::3, ::3].astype(np.float32)
        expected = average_precision_score(sub_t.reshape(-1), sub_s.reshape(-1))
        assert result["per_image"]["ap"][index] == pytest.approx(expected, abs=1e-12)
    exact = _metric_of(score, target)
    assert result["ap"] == pytest.approx(exact["ap"], abs=1e-15)  # pooled metrics use every pixel
    with pytest.raises(ValueError, match="per_image_stride"):
        AnomalyMetrics(per_image=True, per_image_stride=0)


# --------------------------------------------------------------------------- segmentation


def test_confusion_matrix_and_iou_match_scikit_learn_over_several_updates():
    rng = np.random.default_rng(0)
    metric = SegmentationMetrics(num_classes=4)
    gts, preds = [], []
    for _ in range(3):
        target = rng.integers(0, 4, size=(2, 8, 8))
        target[rng.random(target.shape) < 0.1] = 255
        pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape))
        pred[target == 255] = rng.integers(0, 4, size=int((target == 255).sum()))
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
        valid = target != 255
        gts.append(target[valid])
        preds.append(pred[valid])
    gt, pred = np.concatenate(gts), np.concatenate(preds)
    assert np.array_equal(metric.confmat.numpy(), confusion_matrix(gt, pred, labels=range(4)))
    reference_iou = jaccard_score(gt, pred, labels=range(4), average=None)
    result = metric.compute()
    assert result["iou"] == pytest.approx(reference_iou.tolist(), abs=1e-12)
    assert result["miou"] == pytest.approx(reference_iou.mean(), abs=1e-12)
    assert result["pixel_accuracy"] == pytest.approx((gt == pred).mean(), abs=1e-12)


def test_hand_computed_miou_leaves_out_a_class_absent_everywhere():
    # gt   0 0 1 1      Class 0: TP 2, FP 1, FN 0 -> 2/3.  Class 1: TP 1, FP 0, FN 1 -> 1/2.
    # pred 0 0 0 1      Class 2: in neither -> NaN, left out: mIoU = (2/3 + 1/2) / 2 = 7/12.
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1]))
    result = metric.compute()
    assert result["iou"][:2] == pytest.approx([2 / 3, 1 / 2], abs=1e-12)
    assert math.isnan(result["iou"][2])
    assert result["miou"] == pytest.approx(7 / 12, abs=1e-12)
    assert result["pixel_accuracy"] == pytest.approx(3 / 4, abs=1e-12)


def test_a_class_only_predicted_scores_zero_and_counts_in_the_mean():
    # gt 0 0 ; pred 0 2: class 0 -> 1/2, class 1 -> NaN, class 2 -> 0 / 1 = 0.
    iou = iou_from_confmat(torch.tensor([[1, 0, 1], [0, 0, 0], [0, 0, 0]]))
    assert iou[0] == 0.5 and math.isnan(iou[1]) and iou[2] == 0.0
    assert torch.nanmean(iou) == 0.25


def test_logits_and_integer_predictions_agree():
    logits = torch.randn(2, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 5, (2, 6, 7), generator=torch.Generator().manual_seed(1))
    from_logits, from_ids = SegmentationMetrics(5), SegmentationMetrics(5)
    from_logits.update(logits, target)
    from_ids.update(logits.argmax(1), target)
    assert torch.equal(from_logits.confmat, from_ids.confmat)
    assert int(from_logits.confmat.sum()) == target.numel()


def test_ignore_pixels_are_excluded_from_the_confusion_matrix():
    target = torch.tensor([[0, 1, 255, 255]])
    first, changed = SegmentationMetrics(2), SegmentationMetrics(2)
    first.update(torch.tensor([[0, 1, 0, 0]]), target)
    changed.update(torch.tensor([[0, 1, 1, 1]]), target)
    assert torch.equal(first.confmat, changed.confmat)
    assert int(first.confmat.sum()) == 2


def test_label_ids_instead_of_train_ids_are_refused_naming_the_values():
    with pytest.raises(ValueError, match=r"unexpected values \[19, 26\]"):
        SegmentationMetrics(19).update(
            torch.zeros(1, 3, dtype=torch.long), torch.tensor([[26, 0, 19]])
        )


def test_predictions_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match=r"predictions hold values \[3\]"):
        SegmentationMetrics(3).update(torch.tensor([[0, 3]]), torch.tensor([[0, 1]]))


def test_logits_with_the_wrong_number_of_classes_are_refused():
    with pytest.raises(ValueError, match="5 channels .* num_classes = 19"):
        SegmentationMetrics(19).update(torch.randn(1, 5, 4, 4), torch.zeros(1, 4, 4, dtype=int))


def test_segmentation_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*\(1, 8, 8\)"):
        SegmentationMetrics(3).update(
            torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long)
        )


def test_segmentation_reset_forgets_earlier_updates():
    metric = SegmentationMetrics(2)
    metric.update(torch.tensor([1, 0]), torch.tensor([0, 1]))
    metric.reset()
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert metric.compute()["miou"] == 1.0
