"""Fast paths (fsbench/fast.py) give the plain float32 numbers within stated tolerances."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from baselines.softmax import MaxLogit, MaxSoftmax
from fsbench.data import SyntheticScenes
from fsbench.fast import apply_fast_paths, autocast_dtype, segmenters_in
from fsbench.lit import AnomalyEvaluation
from fsbench.metrics import AnomalyMetrics
from fsbench.models import Segmenter

SIZE = (64, 128)


@pytest.fixture(scope="module")
def scenes() -> dict[str, torch.Tensor]:
    data = SyntheticScenes("anomaly", 6, *SIZE)
    items = [data[i] for i in range(len(data))]
    return {key: torch.stack([item[key] for item in items]) for key in ("image", "anomaly")}


def calibrated_segmenter(images: torch.Tensor) -> Segmenter:
    """A random ResNet-18 DeepLabv3+ whose BatchNorm statistics come from ``images``.

    With the default running statistics (mean 0, variance 1) a random network's activations
    grow through every residual block in eval mode; a few forward passes in train mode give it
    the activation scale of a trained network, which is what the tolerances are about.
    """
    torch.manual_seed(0)
    segmenter = Segmenter("resnet18", num_classes=19)
    for module in segmenter.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    segmenter.train()
    with torch.no_grad():
        segmenter(images)
    return segmenter.eval()


def copy_of(segmenter: Segmenter) -> Segmenter:
    twin = Segmenter("resnet18", num_classes=19)
    twin.load_state_dict(segmenter.state_dict())
    return twin.eval()


def test_channels_last_gives_the_same_logits(scenes):
    plain = calibrated_segmenter(scenes["image"])
    fast = copy_of(plain)
    assert apply_fast_paths(fast, channels_last=True) == [fast]
    assert fast.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference, logits = plain(scenes["image"]).logits, fast(scenes["image"]).logits
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4 * reference.abs().max())


def test_bf16_autocast_keeps_float32_scores_and_the_metrics(scenes):
    """bf16 features (8-bit mantissa) move the logits by < 5 % of their range and AP / AUROC
    of two heads by < 0.01, against scikit-learn on the same pixels."""
    plain = calibrated_segmenter(scenes["image"])
    fast = copy_of(plain)
    apply_fast_paths(fast, autocast="bf16")
    assert fast.autocast_dtype is torch.bfloat16
    with torch.inference_mode():
        reference, out = plain(scenes["image"]), fast(scenes["image"])
    assert out.logits.dtype == torch.float32 and out.features.dtype == torch.float32
    spread = float(reference.logits.max() - reference.logits.min())
    assert float((out.logits - reference.logits).abs().max()) < 0.05 * spread
    labels = scenes["anomaly"]
    valid = labels != 255
    for head in (MaxSoftmax.from_logits, MaxLogit.from_logits):
        values = []
        for logits in (reference.logits, out.logits):
            score = head(logits)
            assert score.dtype == torch.float32
            y, s = labels[valid].numpy(), score[valid].numpy()
            values.append((average_precision_score(y, s), roc_auc_score(y, s)))
        assert abs(values[0][0] - values[1][0]) < 0.01
        assert abs(values[0][1] - values[1][1]) < 0.01


def test_compile_keeps_logits_and_state_dict_keys(scenes):
    plain = calibrated_segmenter(scenes["image"])
    fast = copy_of(plain)
    keys = list(fast.state_dict())
    # aot_eager captures the graph like inductor does, without minutes of C++ code generation
    apply_fast_paths(fast, compile="aot_eager")
    assert list(fast.state_dict()) == keys  # checkpoints stay loadable
    with torch.inference_mode():
        reference, logits = plain(scenes["image"][:2]).logits, fast(scenes["image"][:2]).logits
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5 * reference.abs().max())


def test_channels_last_training_step_gives_the_same_loss_and_gradients(scenes):
    data = SyntheticScenes("train", 2, *SIZE)
    images = torch.stack([data[i]["image"] for i in range(2)])
    labels = torch.stack([data[i]["label"] for i in range(2)])
    plain = calibrated_segmenter(images).train()
    fast = copy_of(plain).train()
    apply_fast_paths(fast, channels_last=True)
    losses, grads = [], []
    for model in (plain, fast):
        for module in model.modules():  # smp's ASPP has its own dropout: no random masks here
            if isinstance(module, nn.Dropout):
                module.eval()
        loss = F.cross_entropy(model(images).logits, labels, ignore_index=255)
        loss.backward()
        losses.append(loss.item())
        grads.append(model.classifier.weight.grad.clone())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


def test_every_segmenter_inside_the_heads_is_switched():
    class TwoMembers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList([Segmenter("resnet18"), Segmenter("resnet18")])

    main, head = Segmenter("resnet18"), TwoMembers()
    changed = apply_fast_paths(main, [head, head], autocast="bf16")
    assert len(changed) == 3 == len(segmenters_in(main, head, head))
    assert all(s.autocast_dtype is torch.bfloat16 for s in changed)


def test_bad_fast_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="choose one of bf16, fp16 or null"):
        autocast_dtype("int8")
    assert autocast_dtype(None) is None and autocast_dtype("fp32") is None
    assert autocast_dtype("fp16") is torch.float16
    with pytest.raises(TypeError, match="run your network under torch.autocast yourself"):
        apply_fast_paths(nn.Conv2d(3, 3, 1), autocast="bf16")


def _evaluate(segmenter, batch_size: int) -> dict:
    data = SyntheticScenes("anomaly", 6, *SIZE)
    module = AnomalyEvaluation(
        segmenter, {"msp": MaxSoftmax(), "max_logit": MaxLogit()}, ["a"], ["a"]
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.test(module, dataloaders=[DataLoader(data, batch_size=batch_size)], verbose=False)
    return {head: module.results[head]["datasets"]["a"] for head in module.results}


def test_batch_size_does_not_change_the_evaluation(scenes):
    segmenter = calibrated_segmenter(scenes["image"])
    one, four = _evaluate(segmenter, 1), _evaluate(segmenter, 4)
    for head in one:
        assert one[head]["n_anomaly"] == four[head]["n_anomaly"] > 0
        for key in ("ap", "auroc", "fpr95"):
            assert four[head][key] == pytest.approx(one[head][key], abs=1e-4)


# ------------------------------------------------------- metric update without synchronisation


def _batches(seed: int, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        score = torch.randn(2, 16, 16, generator=generator).round(decimals=1)  # ties
        target = (torch.rand(2, 16, 16, generator=generator) < 0.2).to(dtype)
        target[:, :2] = 255
        score[:, 0, 0] = float("nan")  # on void: allowed
        yield score, target


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_deferred_checks_count_exactly_like_the_synchronous_update(dtype):
    eager, deferred = AnomalyMetrics(deferred_checks=False), AnomalyMetrics(deferred_checks=True)
    scores, targets = [], []
    for score, target in _batches(0, dtype):
        eager.update(score, target)
        deferred.update(score, target)
        scores.append(score), targets.append(target)
    assert torch.equal(eager.counts, deferred.counts)
    assert eager.compute() == deferred.compute()
    score, target = torch.cat(scores), torch.cat(targets)
    valid = target != 255
    y, s = target[valid].numpy(), score[valid].numpy()
    assert deferred.compute()["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)


def test_deferred_checks_raise_at_compute_with_the_values_found():
    metric = AnomalyMetrics(deferred_checks=True)
    target = torch.tensor([[0, 1, 2, 255]], dtype=torch.uint8)
    metric.update(torch.rand(1, 4), target)  # no synchronisation, no error yet
    with pytest.raises(ValueError, match=r"unexpected values \[2\].*Is void stored as 2"):
        metric.compute()
    metric = AnomalyMetrics(deferred_checks=True)
    score = torch.tensor([[0.1, float("inf"), float("nan"), 0.3]])
    metric.update(score, torch.tensor([[0, 1, 255, 0]]))
    with pytest.raises(ValueError, match="1 non-void pixels had non-finite scores"):
        metric.compute()
