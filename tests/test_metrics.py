"""AnomalyMetrics and SegmentationMetrics against scikit-learn and hand-computed cases."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from fsbench.metrics import AnomalyMetrics, SegmentationMetrics, anomaly_metrics


def _reference(scores: np.ndarray, labels: np.ndarray) -> dict:
    scores = scores.astype(np.float32)
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "ap": average_precision_score(labels, scores),
        "auroc": roc_auc_score(labels, scores),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],  # the first threshold reaching 95% TPR
    }


def _random_batches(seed: int, quantize: float | None = None, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(3):
        target = (rng.random((2, 16, 24)) < 0.1).astype(np.uint8)
        target[rng.random(target.shape) < 0.1] = 255
        score = rng.normal(size=target.shape) + 1.5 * (target == 1)
        if quantize:
            score = np.round(score * quantize) / quantize
        batches.append((score * scale, target))
    return batches


def _update_all(batches) -> dict:
    metric = AnomalyMetrics()
    for score, target in batches:
        metric.update(torch.from_numpy(score), torch.from_numpy(target))
    return metric.compute()


def _pooled_valid(batches):
    scores = np.concatenate([s[t != 255] for s, t in batches])
    labels = np.concatenate([t[t != 255] for s, t in batches])
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_continuous_scores_over_batches_match_scikit_learn(seed):
    batches = _random_batches(seed)
    result, reference = _update_all(batches), _reference(*_pooled_valid(batches))
    for key in ("ap", "auroc", "fpr95"):
        assert result[key] == pytest.approx(reference[key], abs=1e-6)


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_heavily_tied_scores_are_exact(levels):
    batches = _random_batches(7, quantize=levels)
    result, reference = _update_all(batches), _reference(*_pooled_valid(batches))
    for key in ("ap", "auroc", "fpr95"):
        assert result[key] == pytest.approx(reference[key], abs=1e-9)


def test_negative_scores_over_many_orders_of_magnitude():
    rng = np.random.default_rng(3)
    labels = rng.random(4000) < 0.2
    scores = -np.exp(rng.normal(scale=6, size=4000)) * np.where(labels, 0.1, 1.0)
    result = anomaly_metrics(torch.from_numpy(scores), torch.from_numpy(labels))
    reference = _reference(scores, labels)
    for key in ("ap", "auroc", "fpr95"):
        assert result[key] == pytest.approx(reference[key], abs=1e-6)


def test_hand_computed_case():
    # Scores 0.9 (anomaly), 0.8 (inlier), 0.7 (anomaly), 0.1 (inlier).
    # Thresholds: 0.9 -> P=1, R=1/2; 0.8 -> P=1/2, R=1/2; 0.7 -> P=2/3, R=1; 0.1 -> R=1.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # ROC points (FPR, TPR): (0,.5) (.5,.5) (.5,1) (1,1): AUROC = 3/4.
    # TPR first reaches 0.95 at threshold 0.7, where FPR = 1/2.
    result = anomaly_metrics(torch.tensor([0.9, 0.8, 0.7, 0.1]), torch.tensor([1, 0, 1, 0]))
    assert result["ap"] == pytest.approx(5 / 6)
    assert result["auroc"] == pytest.approx(0.75)
    assert result["fpr95"] == pytest.approx(0.5)
    assert (result["n_anomaly"], result["n_inlier"]) == (2, 2)


def test_constant_scorer_gets_the_prevalence_and_chance_auroc():
    labels = torch.tensor([1] * 5 + [0] * 95)
    result = anomaly_metrics(torch.zeros(100), labels)
    assert result["ap"] == pytest.approx(0.05)
    assert result["auroc"] == pytest.approx(0.5)
    assert result["fpr95"] == pytest.approx(1.0)


def test_void_pixels_do_not_count():
    score = torch.tensor([[0.9, 0.1, 0.5, 0.2]])
    target = torch.tensor([[1, 0, 255, 0]], dtype=torch.uint8)
    first = AnomalyMetrics()
    first.update(score, target)
    changed = AnomalyMetrics()
    changed.update(torch.tensor([[0.9, 0.1, 100.0, 0.2]]), target)
    assert first.compute() == changed.compute()
    assert first.compute()["n_inlier"] == 2


def test_void_stored_as_two_is_refused_with_the_values_found():
    metric = AnomalyMetrics()
    with pytest.raises(ValueError, match=r"values \[2\]"):
        metric.update(torch.rand(1, 2, 2), torch.tensor([[[0, 1], [2, 0]]]))


def test_non_finite_scores_are_refused_with_count_and_position():
    score = torch.tensor([[0.1, float("nan"), 0.3, float("inf")]])
    with pytest.raises(ValueError, match=r"2 non-void pixels .* index \(0, 1\)"):
        AnomalyMetrics().update(score, torch.tensor([[0, 1, 0, 0]]))


def test_non_finite_scores_on_void_pixels_are_fine():
    metric = AnomalyMetrics()
    metric.update(torch.tensor([0.1, float("nan"), 0.9]), torch.tensor([0, 255, 1]))
    assert metric.compute()["ap"] == 1.0


def test_no_anomaly_pixel_is_an_error_not_a_number():
    metric = AnomalyMetrics()
    metric.update(torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="0 anomaly"):
        metric.compute()


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*\(1, 8, 8\)"):
        AnomalyMetrics().update(torch.rand(1, 4, 4), torch.zeros(1, 8, 8, dtype=torch.uint8))


def test_reset_forgets_earlier_updates():
    metric = AnomalyMetrics()
    metric.update(torch.tensor([0.0, 1.0]), torch.tensor([1, 0]))
    metric.reset()
    metric.update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    assert metric.compute()["auroc"] == 1.0


def test_confusion_matrix_and_iou_match_scikit_learn():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(2, 8, 8))
    target[0, 0] = 255
    preds = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape))
    preds[target == 255] = 0
    metric = SegmentationMetrics(num_classes=4)
    metric.update(torch.from_numpy(preds), torch.from_numpy(target))
    valid = target != 255
    reference = confusion_matrix(target[valid], preds[valid], labels=range(4))
    assert np.array_equal(metric.confmat.numpy(), reference)
    tp = np.diag(reference)
    iou = tp / (reference.sum(0) + reference.sum(1) - tp)
    assert metric.compute()["miou"] == pytest.approx(iou.mean())


def test_hand_computed_miou_with_an_absent_class():
    # Class 0: TP 2, FP 1, FN 0 -> 2/3. Class 1: TP 1, FP 0, FN 1 -> 1/2. Class 2 absent -> NaN.
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1]))
    result = metric.compute()
    assert result["iou"][:2] == pytest.approx([2 / 3, 1 / 2]) and math.isnan(result["iou"][2])
    assert result["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result["pixel_accuracy"] == pytest.approx(3 / 4)


def test_logits_and_label_predictions_agree():
    logits = torch.randn(2, 5, 6, 7)
    target = torch.randint(0, 5, (2, 6, 7))
    from_logits, from_labels = SegmentationMetrics(5), SegmentationMetrics(5)
    from_logits.update(logits, target)
    from_labels.update(logits.argmax(1), target)
    assert torch.equal(from_logits.confmat, from_labels.confmat)


def test_label_ids_instead_of_train_ids_are_refused():
    with pytest.raises(ValueError, match=r"values \[26\]"):
        SegmentationMetrics(19).update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[26, 0]]))
