"""SegmentMeIfYouCan component metrics (sIoU_gt, PPV, mean F1) on hand-computed frames.

Every frame is a small 20x20 label (0 inlier, 1 anomaly, 255 void) drawn with rectangles, and
every expected value is worked out by hand in a comment from the definition in
``fsbench/metrics/components.py`` (BENCHMARKS.md section 2):

    sIoU(k)      = |k ∩ P| / (|k| + |P outside all ground truth|),  P = predicted comps touching k
    precision(c) = |c on ground truth| / |c in the evaluation region|
    TP(τ) = #{sIoU >= τ}, FN(τ) = #{sIoU < τ}, FP(τ) = #{precision < τ}
    F1(τ) = 2TP / (2TP + FN + FP),  τ in linspace(0.25, 0.75, 11)

τ = 0.25 0.30 0.35 0.40 0.45 0.50 | 0.55 0.6000000000000001 0.65 0.70 0.75  (6 levels <= 0.5)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsbench.metrics.components import (
    DEFAULT_F1_THRESHOLDS,
    ComponentMetrics,
    FrameComponents,
    binarize,
    component_metrics,
    frame_components,
)

VOID = 255


# --------------------------------------------------------------------------- helpers


def blank() -> np.ndarray:
    """A 20x20 label of inliers (0)."""
    return np.zeros((20, 20), dtype=np.uint8)


def no_pred() -> np.ndarray:
    return np.zeros((20, 20), dtype=bool)


def frame(pred: np.ndarray, label: np.ndarray, min_pred: int = 1, min_gt: int = 1):
    """frame_components with small size filters (1 = keep everything) for hand computation."""
    return frame_components(pred, label, min_predicted_size=min_pred, min_gt_size=min_gt)


def assert_metrics(got: dict, expected: dict) -> None:
    """Same keys; floats equal to 1e-12; the F1 list element-wise."""
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def assert_frame(fc: FrameComponents, sious: list[float], precisions: list[float]) -> None:
    np.testing.assert_allclose(fc.sious, sious, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fc.precisions, precisions, rtol=0, atol=1e-12)
    assert fc.sious.dtype == np.float64 and fc.precisions.dtype == np.float64


# --------------------------------------------------------------------------- the definition


def test_the_f1_levels_are_the_toolkits_linspace():
    # numpy.linspace(0.25, 0.75, 11) in float64; τ[7] is not exactly 0.6.
    assert DEFAULT_F1_THRESHOLDS.shape == (11,)
    assert DEFAULT_F1_THRESHOLDS[0] == 0.25 and DEFAULT_F1_THRESHOLDS[-1] == 0.75
    assert DEFAULT_F1_THRESHOLDS[5] == 0.5
    assert DEFAULT_F1_THRESHOLDS[7] == 0.6000000000000001


def test_perfect_prediction_scores_one_everywhere():
    # Two separate objects A (3x3 = 9 px) and B (2x4 = 8 px), predicted exactly.
    # sIoU(A) = 9 / (9 + 0) = 1, sIoU(B) = 8 / (8 + 0) = 1; each prediction lies on ground truth
    # only: precision 1, 1. TP = 2, FN = FP = 0 at every τ: F1 = 4 / 4 = 1.
    label = blank()
    label[2:5, 2:5] = 1
    label[10:12, 10:14] = 1
    fc = frame(label == 1, label)
    assert_frame(fc, [1.0, 1.0], [1.0, 1.0])
    m = component_metrics([fc])
    assert m == {
        "siou_gt": 1.0,
        "ppv": 1.0,
        "mean_f1": 1.0,
        "f1_per_threshold": [1.0] * 11,
        "n_gt_components": 2,
        "n_predicted_components": 2,
        "undefined": [],
    }


def test_touching_objects_form_one_ground_truth_component():
    # Two 2x2 objects side by side (cols 2-3 and 4-5) touch: one component k of 8 px.
    # Only the left square is predicted: |k ∩ P| = 4, nothing outside ground truth:
    # sIoU(k) = 4 / (8 + 0) = 0.5 (not 1 for the left object and 0 for the right one).
    # Precision = 4 / 4 = 1.
    label = blank()
    label[2:4, 2:4] = 1
    label[2:4, 4:6] = 1
    pred = no_pred()
    pred[2:4, 2:4] = True
    fc = frame(pred, label)
    assert_frame(fc, [0.5], [1.0])
    assert component_metrics([fc])["n_gt_components"] == 1


def test_one_blob_over_two_objects_is_penalised_only_by_its_part_off_ground_truth():
    # A = rows 2-3, cols 2-3 (4 px); B = rows 2-3, cols 6-7 (4 px); cols 4-5 are inliers, so A and
    # B are separate components. One predicted blob covers rows 2-3, cols 2-7: 12 px =
    # 4 on A + 4 on B + 4 on inliers (cols 4-5).
    # P for A is the blob. |A ∩ P| = 4, |P outside all ground truth| = 4 (B's 4 px are on ground
    # truth, so they do not enlarge the union): sIoU(A) = 4 / (4 + 4) = 0.5; same for B.
    # (Counting B's pixels against A would give 4 / 12 = 1/3: that is not the definition.)
    # Precision(blob) = 8 / 12 = 2/3.
    label = blank()
    label[2:4, 2:4] = 1
    label[2:4, 6:8] = 1
    pred = no_pred()
    pred[2:4, 2:8] = True
    fc = frame(pred, label)
    assert_frame(fc, [0.5, 0.5], [2 / 3])
    # τ <= 0.5 (6 levels): TP 2, FN 0, FP 0 -> F1 = 4/4 = 1.
    # τ in 0.55 .. 0.65 (3): TP 0, FN 2, FP 0 (2/3 >= τ) -> 0.
    # τ in 0.70, 0.75 (2): TP 0, FN 2, FP 1 (2/3 < τ) -> 0.     mean F1 = 6/11.
    m = component_metrics([fc])
    assert m["f1_per_threshold"] == [1.0] * 6 + [0.0] * 5
    assert m["mean_f1"] == pytest.approx(6 / 11, abs=1e-12)
    assert m["siou_gt"] == pytest.approx(0.5) and m["ppv"] == pytest.approx(2 / 3)


def test_false_positive_blob_far_from_any_object():
    # Object 2x2 at rows 2-3, cols 2-3, predicted exactly (precision 1, sIoU 1). A 3x3 blob at
    # rows 14-16, cols 14-16 touches no object: precision 0 / 9 = 0, and it does not change the
    # object's sIoU (it is not in the object's P). PPV = (1 + 0) / 2 = 0.5.
    # Every τ > 0: TP 1, FN 0, FP 1 -> F1 = 2 / (2 + 0 + 1) = 2/3; mean F1 = 2/3.
    label = blank()
    label[2:4, 2:4] = 1
    pred = label == 1
    pred[14:17, 14:17] = True
    fc = frame(pred, label)
    assert_frame(fc, [1.0], [1.0, 0.0])
    m = component_metrics([fc])
    assert m["ppv"] == 0.5 and m["siou_gt"] == 1.0
    assert m["f1_per_threshold"] == pytest.approx([2 / 3] * 11, abs=1e-12)
    assert m["mean_f1"] == pytest.approx(2 / 3, abs=1e-12)


def test_eight_connectivity_joins_diagonal_pixels():
    # Ground truth: pixels (2,2) and (3,3) touch only by a corner -> one component of 2 px.
    # Prediction: (2,2), (3,3) and the diagonal chain (4,4), (5,5) -> one blob of 4 px.
    # sIoU = 2 / (2 + 2) = 0.5 (the chain's 2 px are off ground truth); precision = 2/4 = 0.5.
    # With 4-connectivity there would be 2 gt components and 4 predicted ones.
    label = blank()
    label[2, 2] = label[3, 3] = 1
    pred = no_pred()
    for i in range(2, 6):
        pred[i, i] = True
    fc = frame(pred, label)
    assert_frame(fc, [0.5], [0.5])


# --------------------------------------------------------------------------- void and sizes


def test_prediction_on_void_pixels_is_ignored():
    # Object rows 2-3, cols 2-3 (4 px); void at rows 2-3, cols 4-5 right next to it, and a void
    # patch rows 10-12, cols 10-12. The prediction covers object + adjacent void (8 px) and the
    # whole far void patch. Void is set to "not predicted" before labelling, so the first blob is
    # the object only and the far patch disappears: sIoU = 4 / 4 = 1, one precision 4 / 4 = 1.
    # (If void counted as inliers: sIoU 4 / 8 and a second component of precision 0.)
    label = blank()
    label[2:4, 2:4] = 1
    label[2:4, 4:6] = VOID
    label[10:13, 10:13] = VOID
    pred = no_pred()
    pred[2:4, 2:6] = True
    pred[10:13, 10:13] = True
    assert_frame(frame(pred, label), [1.0], [1.0])


def test_void_pixels_do_not_bridge_predicted_components():
    # Void column rows 2-3, col 6; prediction rows 2-3, cols 5-7 (on inliers, void, inliers).
    # After void removal cols 5 and 7 are two components of 2 px each, precision 0 each.
    # An object elsewhere (rows 10-11, cols 10-11, predicted exactly) keeps PPV defined.
    label = blank()
    label[2:4, 6] = VOID
    label[10:12, 10:12] = 1
    pred = label == 1
    pred[2:4, 5:8] = True
    # Precisions are in raster order of the components: the two at row 2 first, then the object.
    assert_frame(frame(pred, label), [1.0], [0.0, 0.0, 1.0])


def test_small_ground_truth_becomes_void_and_a_prediction_on_it_counts_nowhere():
    # min_gt_size = 5. Large object L = 3x3 (9 px) at rows 2-4, cols 2-4, predicted exactly.
    # Small object S = 2x2 (4 px) at rows 10-11, cols 10-11 < 5 px -> void, out of the region.
    # A blob exactly on S has no pixel left in the region: it is neither TP nor FP (no precision),
    # and S has no sIoU (not an FN). Result: sIoU [1], precisions [1], F1 = 1 everywhere.
    label = blank()
    label[2:5, 2:5] = 1
    label[10:12, 10:12] = 1
    pred = label == 1  # predicts L and S exactly
    fc = frame(pred, label, min_gt=5)
    assert_frame(fc, [1.0], [1.0])
    assert component_metrics([fc])["mean_f1"] == 1.0
    # With min_gt_size = 4, S (4 px) is kept: two components, both perfect.
    assert_frame(frame(pred, label, min_gt=4), [1.0, 1.0], [1.0, 1.0])


def test_voided_ground_truth_leaves_both_numerator_and_denominator():
    # min_gt_size = 5. L = rows 2-4, cols 2-4 (9 px); S = rows 2-3, cols 6-7 (4 px -> void);
    # col 5 is inlier. One blob: L (9) + rows 2-3 of col 5 (2 inlier px) + S (4) = 15 px.
    # In the evaluation region the blob has 9 + 2 = 11 px, 9 of them on ground truth:
    #   precision = 9 / 11,  sIoU(L) = 9 / (9 + 2) = 9 / 11.
    # (With S counted as inlier instead: precision 9 / 15 and sIoU 9 / 15.)
    label = blank()
    label[2:5, 2:5] = 1
    label[2:4, 6:8] = 1
    pred = no_pred()
    pred[2:5, 2:5] = True
    pred[2:4, 5:8] = True
    assert_frame(frame(pred, label, min_gt=5), [9 / 11], [9 / 11])


def test_predicted_size_filter_runs_before_ground_truth_is_voided():
    # min_predicted_size = 6, min_gt_size = 5. S = rows 2-3, cols 6-7 (4 px -> void). A blob on
    # S plus rows 2-3 of col 5 has 6 px in the whole image, so it passes the size filter (run
    # first); then only its 2 inlier px remain in the region: precision 0 / 2 = 0 (an FP).
    # Object L (rows 10-12, cols 10-12, 9 px, predicted exactly) gives sIoU 1, precision 1.
    label = blank()
    label[2:4, 6:8] = 1
    label[10:13, 10:13] = 1
    pred = no_pred()
    pred[2:4, 5:8] = True
    pred[10:13, 10:13] = True
    assert_frame(frame(pred, label, min_pred=6, min_gt=5), [1.0], [0.0, 1.0])  # raster order
    # With min_predicted_size = 7 the 6-px blob is dropped: precisions [1] only.
    assert_frame(frame(pred, label, min_pred=7, min_gt=5), [1.0], [1.0])


def test_predicted_component_bridged_through_voided_ground_truth_stays_one():
    # min_gt_size = 5. S = rows 2-3, cols 6-7 (4 px -> void). Prediction rows 2-3, cols 5-8:
    # one 8-px component labelled before voiding (S is ground truth then, not void). In the region
    # it keeps cols 5 and 8 (4 inlier px): ONE precision, 0 / 4 = 0. Contrast with label 255,
    # which splits (test_void_pixels_do_not_bridge_predicted_components). L as above.
    label = blank()
    label[2:4, 6:8] = 1
    label[10:13, 10:13] = 1
    pred = no_pred()
    pred[2:4, 5:9] = True
    pred[10:13, 10:13] = True
    assert_frame(frame(pred, label, min_gt=5), [1.0], [0.0, 1.0])


def test_small_predicted_components_are_dropped():
    # min_predicted_size = 5. Object 3x3 (9 px) at rows 2-4, cols 2-4 predicted exactly (kept).
    # A 2x2 blob (4 px < 5) at rows 10-11, cols 10-11: dropped, no FP.
    # A 1x5 blob (5 px, not fewer than 5) at row 15, cols 10-14: kept, precision 0.
    label = blank()
    label[2:5, 2:5] = 1
    pred = label == 1
    pred[10:12, 10:12] = True
    pred[15, 10:15] = True
    assert_frame(frame(pred, label, min_pred=5), [1.0], [1.0, 0.0])
    # A too-small prediction on an object is dropped too: the object gets sIoU 0 (an FN).
    pred = no_pred()
    pred[2:4, 2:4] = True  # 4 px of the 9-px object
    assert_frame(frame(pred, label, min_pred=5), [0.0], [])
    assert_frame(frame(pred, label, min_pred=4), [4 / 9], [1.0])


# --------------------------------------------------------------------------- thresholds


def test_binarize_is_strict():
    score = np.array([0.4, 0.5, np.nextafter(0.5, 1.0), 0.6])
    np.testing.assert_array_equal(binarize(score, 0.5), [False, False, True, True])
    assert binarize(score, 0.5).dtype == np.bool_


def test_score_equal_to_the_threshold_is_not_predicted():
    # Object 2x2 with score exactly 0.5, everything else 0. At threshold 0.5 nothing is predicted
    # (no predicted component: PPV undefined, F1 0); at 0.49 the object is predicted exactly.
    label = blank()
    label[2:4, 2:4] = 1
    score = np.where(label == 1, 0.5, 0.0).astype(np.float32)
    at = ComponentMetrics(0.5, min_predicted_size=1, min_gt_size=1)
    at.update(score, label)
    assert_frame(at.frames[0], [0.0], [])
    result = at.compute()
    assert result["ppv"] is None and result["mean_f1"] == 0.0
    assert "no predicted component" in result["undefined"][0]
    below = ComponentMetrics(0.49, min_predicted_size=1, min_gt_size=1)
    below.update(score, label)
    assert below.compute()["mean_f1"] == 1.0


def test_siou_exactly_on_tau_counts_as_true_positive():
    # Object 1x2 at row 2, cols 2-3; blob row 2, cols 2-5 (4 px: 2 on the object, 2 inliers).
    # sIoU = 2 / (2 + 2) = 0.5 exactly, precision = 2 / 4 = 0.5 exactly.
    # τ = 0.5: sIoU >= τ -> TP 1, FN 0; precision < τ is false -> FP 0: F1 = 2/2 = 1.
    # τ <= 0.5 likewise (6 levels); τ >= 0.55: TP 0, FN 1, FP 1 -> F1 = 0. mean F1 = 6/11.
    label = blank()
    label[2, 2:4] = 1
    pred = no_pred()
    pred[2, 2:6] = True
    fc = frame(pred, label)
    assert_frame(fc, [0.5], [0.5])
    m = component_metrics([fc])
    assert m["f1_per_threshold"] == [1.0] * 6 + [0.0] * 5
    assert m["mean_f1"] == pytest.approx(6 / 11, abs=1e-12)


def test_siou_of_three_fifths_misses_the_float_tau_0_6():
    # Object 1x5 at row 2, cols 2-6; prediction covers 3 of its px (cols 2-4) only.
    # sIoU = 3 / 5 = 0.6 (float64 0.59999999999999998), precision 3/3 = 1.
    # τ[7] = 0.6000000000000001 > 0.6, so it is an FN there, as in the toolkit:
    # F1 = 1 for τ <= 0.55 (7 levels), 0 for τ >= 0.6000000000000001 (4 levels); mean = 7/11.
    label = blank()
    label[2, 2:7] = 1
    pred = no_pred()
    pred[2, 2:5] = True
    fc = frame(pred, label)
    assert_frame(fc, [0.6], [1.0])
    m = component_metrics([fc])
    assert m["f1_per_threshold"] == [1.0] * 7 + [0.0] * 4
    assert m["mean_f1"] == pytest.approx(7 / 11, abs=1e-12)


# --------------------------------------------------------------------------- pooling


def test_pooling_over_frames_averages_components_not_frames():
    # Frame 1: one object (rows 2-3, cols 2-3) predicted exactly: sIoU [1], precision [1].
    # Frame 2: three 2x2 objects, none predicted (sIoU 0, 0, 0), and two 2x2 blobs on inliers
    #          (precision 0, 0).
    # Pooled: sIoU_gt = (1 + 0 + 0 + 0) / 4 = 0.25 (per-frame mean would be 0.5);
    #         PPV = (1 + 0 + 0) / 3 = 1/3 (per-frame mean would be 0.5);
    #         every τ: TP 1, FN 3, FP 2 -> F1 = 2 / (2 + 3 + 2) = 2/7 (per-frame mean 0.5).
    label1 = blank()
    label1[2:4, 2:4] = 1
    label2 = blank()
    label2[2:4, 2:4] = 1
    label2[2:4, 8:10] = 1
    label2[8:10, 2:4] = 1
    score1 = (label1 == 1).astype(np.float32)
    score2 = np.zeros((20, 20), dtype=np.float32)
    score2[14:16, 14:16] = 1.0
    score2[14:16, 2:4] = 1.0
    expected = {
        "siou_gt": 0.25,
        "ppv": 1 / 3,
        "mean_f1": 2 / 7,
        "f1_per_threshold": [2 / 7] * 11,
        "n_gt_components": 4,
        "n_predicted_components": 3,
        "undefined": [],
    }

    acc = ComponentMetrics(0.5, min_predicted_size=1, min_gt_size=1)
    acc.update(torch.from_numpy(score1), torch.from_numpy(label1))  # [H, W] torch
    acc.update(score2[None], label2[None])  # [1, H, W] numpy
    assert len(acc.frames) == 2
    assert_metrics(acc.compute(), expected)

    batched = ComponentMetrics(0.5, min_predicted_size=1, min_gt_size=1)
    batched.update(torch.from_numpy(np.stack([score1, score2])), np.stack([label1, label2]))
    assert_metrics(batched.compute(), expected)
    assert_metrics(component_metrics(acc.frames), expected)

    acc.reset()
    assert acc.frames == ()


def test_presets_carry_the_track_sizes():
    default = ComponentMetrics(0.5)
    sizes = (default.min_predicted_size, default.min_gt_size, default.ignore_index)
    assert sizes == (500, 100, 255)
    anomaly = ComponentMetrics.road_anomaly_21(0.5)
    assert (anomaly.min_predicted_size, anomaly.min_gt_size) == (500, 100)
    obstacle = ComponentMetrics.road_obstacle_21(0.5)
    assert (obstacle.min_predicted_size, obstacle.min_gt_size) == (50, 10)
    # Obstacle sizes on a frame: a 7x7 = 49 px blob on inliers is dropped (< 50); a 4x3 = 12 px
    # object is kept (>= 10) and predicted by a 10x5 = 50 px blob around it (38 px off ground
    # truth): sIoU = 12 / (12 + 38) = 0.24, precision = 12 / 50 = 0.24.
    label = blank()
    label[2:6, 2:5] = 1
    score = np.zeros((20, 20))
    score[1:11, 1:6] = 1.0
    score[12:19, 12:19] = 1.0
    obstacle.update(score, label)
    assert_frame(obstacle.frames[0], [0.24], [0.24])


def test_frame_components_matches_a_literal_reading_of_the_definition():
    # Random 20x20 frames against a direct, one-set-at-a-time evaluation of steps 2-7.
    from scipy import ndimage

    def literal(pred, label, min_pred, min_gt):
        ones = np.ones((3, 3))
        pred = pred & (label != VOID)
        gt_ids, n_gt = ndimage.label(label == 1, ones)
        pr_ids, n_pr = ndimage.label(pred, ones)
        comps = [pr_ids == j for j in range(1, n_pr + 1) if (pr_ids == j).sum() >= min_pred]
        gts = [gt_ids == i for i in range(1, n_gt + 1)]
        region = label != VOID
        for k in gts:
            if k.sum() < min_gt:
                region &= ~k
        kept = [k for k in gts if k.sum() >= min_gt]
        all_gt = np.any(kept, axis=0) if kept else np.zeros_like(region)
        sious = []
        for k in kept:
            touching = [c for c in comps if (c & k).any()]
            p = np.any(touching, axis=0) & region if touching else np.zeros_like(region)
            sious.append((k & p).sum() / (k.sum() + (p & ~all_gt).sum()))
        precs = [(c & all_gt).sum() / (c & region).sum() for c in comps if (c & region).any()]
        return sious, precs

    rng = np.random.default_rng(0)
    for _ in range(20):
        label = (rng.random((20, 20)) < 0.25).astype(np.uint8)
        label[rng.random((20, 20)) < 0.1] = VOID
        pred = rng.random((20, 20)) < 0.3
        for min_pred, min_gt in ((1, 1), (3, 4)):
            sious, precs = literal(pred, label, min_pred, min_gt)
            assert_frame(frame(pred, label, min_pred, min_gt), sious, precs)


# --------------------------------------------------------------------------- errors


def test_no_ground_truth_component_leaves_siou_undefined():
    # Only inliers and a false-positive blob: sIoU_gt undefined (the toolkit gives NaN), every
    # predicted component a false positive (F1 0, PPV 0); no component at all is an error.
    pred = no_pred()
    pred[2:4, 2:4] = True
    fc = frame(pred, blank())
    assert_frame(fc, [], [0.0])
    result = component_metrics([fc])
    assert result["siou_gt"] is None and result["ppv"] == 0.0 and result["mean_f1"] == 0.0
    assert len(result["undefined"]) == 1 and "no ground-truth component" in result["undefined"][0]
    with pytest.raises(ValueError, match="no ground-truth component.*no predicted component"):
        component_metrics([])


def test_no_predicted_component_leaves_ppv_undefined():
    label = blank()
    label[2:4, 2:4] = 1
    fc = frame(no_pred(), label)
    assert_frame(fc, [0.0], [])
    result = component_metrics([fc])
    assert result["ppv"] is None and result["siou_gt"] == 0.0 and result["mean_f1"] == 0.0
    assert "no predicted component" in result["undefined"][0]
    metrics = ComponentMetrics(0.5, min_predicted_size=1, min_gt_size=1)
    metrics.update(np.zeros(label.shape, np.float32), label)
    assert "threshold=0.5" in metrics.compute()["undefined"][0]


def test_unexpected_label_values_are_listed():
    label = blank()
    label[2:4, 2:4] = 2  # e.g. Road Anomaly's raw anomaly value
    label[5, 5] = 7
    with pytest.raises(ValueError, match=r"unexpected values \[2, 7\] in 5 pixels"):
        frame(no_pred(), label)
    acc = ComponentMetrics(0.5, min_predicted_size=1, min_gt_size=1)
    with pytest.raises(ValueError, match=r"unexpected values \[2, 7\]"):
        acc.update(np.zeros((20, 20)), label)
    assert acc.frames == ()  # nothing stored on error


def test_bad_inputs_are_rejected():
    label = blank()
    acc = ComponentMetrics(0.5)
    with pytest.raises(ValueError, match="same shape"):
        acc.update(np.zeros((20, 20)), np.zeros((20, 21), dtype=np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        acc.update(np.zeros((1, 1, 20, 20)), np.zeros((1, 1, 20, 20), dtype=np.uint8))
    score = np.zeros((20, 20))
    score[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN, the first at index \(0, 3, 4\)"):
        acc.update(score, label)
    with pytest.raises(TypeError, match="boolean"):
        frame_components(np.zeros((20, 20)), label)
    with pytest.raises(ValueError, match="ignore_index"):
        ComponentMetrics(0.5, ignore_index=1)
    with pytest.raises(ValueError, match="min_gt_size"):
        ComponentMetrics(0.5, min_gt_size=-1)
