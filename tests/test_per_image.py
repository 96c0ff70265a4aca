"""Per-image metrics (both kernels) and the ``per_image`` protocol against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fsbench.metrics.per_image import PerImageMetrics, per_image_metrics


def _fpr95(labels: np.ndarray, scores: np.ndarray) -> float:
    """The official Fishyscapes rule on scikit-learn's ROC: FPR at the first TPR >= 0.95."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(fpr[np.nonzero(tpr >= 0.95)[0][0]])


def _batch(seed: int, levels: int | None, shape=(4, 9, 13)):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(shape, generator=generator) < 0.25).to(torch.uint8)
    target[torch.rand(shape, generator=generator) < 0.1] = 255
    if levels is None:  # continuous
        score = torch.randn(shape, generator=generator) + target.eq(1).float()
    else:  # quantized: ties within and across the classes
        score = torch.randint(0, levels, shape, generator=generator).float() / 3 - 1
    target[1] = torch.where(target[1] == 1, 0, target[1])  # a frame without anomaly
    target[2, 0, 0] = 1  # keep both classes in frame 2
    return score, target


@pytest.mark.parametrize("kernel", ["batched", "split"])
@pytest.mark.parametrize(("seed", "levels"), [(0, None), (1, 3), (2, 7), (3, 200)])
def test_both_kernels_equal_scikit_learn_per_frame(kernel, seed, levels):
    score, target = _batch(seed, levels)
    score[3][score[3] == 0] = -0.0  # -0.0 and +0.0 are one score
    values = per_image_metrics(score, target, kernel=kernel)
    for index in range(score.shape[0]):
        valid = target[index] != 255
        labels = (target[index][valid] == 1).numpy()
        scores = score[index][valid].numpy()
        assert values["anomaly_fraction"][index] == pytest.approx(labels.mean(), abs=1e-15)
        if labels.all() or not labels.any():
            assert all(np.isnan(float(values[k][index])) for k in ("ap", "fpr95", "auroc"))
            continue
        assert float(values["ap"][index]) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12
        )
        assert float(values["auroc"][index]) == pytest.approx(
            roc_auc_score(labels, scores), abs=1e-12
        )
        assert float(values["fpr95"][index]) == _fpr95(labels, scores)


def test_a_frame_without_valid_pixels_has_nan_everything():
    score = torch.rand(2, 3, 4)
    target = torch.full((2, 3, 4), 255, dtype=torch.uint8)
    target[0, 0] = 1
    target[0, 1] = 0
    for kernel in ("batched", "split"):
        values = per_image_metrics(score, target, kernel=kernel)
        assert np.isnan(float(values["anomaly_fraction"][1]))
        assert not np.isnan(float(values["ap"][0]))


def test_the_protocol_metric_reports_means_quantiles_worst_and_skipped_frames():
    score, target = _batch(5, None)
    metric = PerImageMetrics(worst=2)
    names = [f"frame_{i}" for i in range(4)]
    metric.update(score[:2], target[:2], names[:2])
    metric.update(score[2:], target[2:], names[2:])
    result = metric.compute()
    assert result["skipped"] == ["frame_1"] and result["n_frames"] == 3
    aps = []
    for index in (0, 2, 3):
        valid = target[index] != 255
        labels, scores = (target[index][valid] == 1).numpy(), score[index][valid].numpy()
        aps.append(average_precision_score(labels, scores))
    assert result["ap"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert result["ap_quantiles"]["50"] == pytest.approx(np.median(aps), abs=1e-12)
    worst = [frame["name"] for frame in result["worst"]]
    assert worst == [names[i] for i in np.array([0, 2, 3])[np.argsort(aps)][:2]]
    with pytest.raises(ValueError, match="no frame holds both"):
        empty = PerImageMetrics()
        empty.update(score[1:2], target[1:2], ["frame_1"])
        empty.compute()
