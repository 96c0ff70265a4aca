"""The compiled kernels (fsbench/metrics/native.c) against numpy and against fsbench's numpy paths.

Each kernel must give exactly what its numpy path gives (integer counts, sorted keys, ranks), and
every protocol must give the same numbers with and without the kernels.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fsbench.metrics import AnomalyMetrics, native
from fsbench.metrics.anomaly import add_to_histogram, score_bins
from fsbench.metrics.per_image import per_image_metrics
from fsbench.metrics.protocols import smiyc_frame_counts

HAS_COMPILER = any(shutil.which(name) for name in ("cc", "gcc", "clang"))
needs_kernels = pytest.mark.skipif(
    native.library() is None, reason=f"no compiled kernels: {native.status()}"
)


@pytest.fixture
def without_kernels(monkeypatch):
    """fsbench as on a machine without a C compiler: every caller takes its numpy path."""
    monkeypatch.setattr(native, "library", lambda: None)


def awkward_frame(seed: int, size: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores with ties, both zeros, negatives, huge and tiny values; 0/1/255 labels."""
    rng = np.random.default_rng(seed)
    score = rng.normal(size=size).astype(np.float32)
    score[rng.random(size) < 0.05] = np.float32(0.5)  # one heavily tied value
    specials = np.array([0.0, -0.0, 1e-38, -1e-38, 3e38, -3e38, 1.0, -1.0], np.float32)
    score[rng.integers(0, size, 400)] = rng.choice(specials, 400)
    score[rng.integers(0, size, 2000)] = np.round(rng.normal(size=2000), 2)  # ties
    label = (rng.random(size) < 0.15).astype(np.uint8)
    label[rng.random(size) < 0.1] = 255
    return score, label


def keys(values: np.ndarray) -> np.ndarray:
    """The order-preserving uint32 key of float32 values, written from its definition."""
    pattern = (values.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    negative = pattern >> 31 == 1
    return np.where(negative, ~pattern, pattern | np.uint32(0x80000000)).astype(np.uint32)


def test_the_kernels_build_wherever_a_c_compiler_is_found():
    if not HAS_COMPILER:
        pytest.skip("no C compiler on this machine: the numpy paths are in use")
    assert native.library() is not None, native.status()


def test_the_kernels_build_into_an_empty_cache(tmp_path, monkeypatch):
    if not HAS_COMPILER:
        pytest.skip("no C compiler on this machine: the numpy paths are in use")
    monkeypatch.setenv("FSBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_LOADED", {})
    assert native.library() is not None, native.status()
    (built,) = (tmp_path / "native").glob("fsbench_native_*.so")
    assert str(built) in native.status()


def test_a_failing_compiler_leaves_the_numpy_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("FSBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false") or "false")
    monkeypatch.setattr(native, "_LOADED", {})
    assert native.library() is None
    assert "failed" in native.status()
    assert not list((tmp_path / "native").glob("*.so"))  # no half-written library is left


def test_fsbench_native_0_switches_the_kernels_off(monkeypatch):
    monkeypatch.setenv("FSBENCH_NATIVE", "0")
    monkeypatch.setattr(native, "_LOADED", {})
    assert native.library() is None
    assert "FSBENCH_NATIVE=0" in native.status()


@needs_kernels
@pytest.mark.parametrize("bits", [12, 22])
@pytest.mark.parametrize("seed", [0, 1])
def test_fold_equals_the_numpy_fold(bits, seed, without_kernels, monkeypatch):
    score, label = awkward_frame(seed)
    label[:7] = [2, 7, 254, 3, 0, 1, 255]  # labels neither 0, 1 nor void
    reference = torch.zeros(2, 2**bits, dtype=torch.int64)
    found = add_to_histogram(reference, torch.from_numpy(score), torch.from_numpy(label), void=255)
    monkeypatch.undo()
    counts = np.zeros((2, 2**bits), dtype=np.int64)
    reached = np.array([2**bits, -1], dtype=np.int64)
    unexpected = native.fold_u8(score, label, counts, 255, 1, reached)
    np.testing.assert_array_equal(counts, reference.numpy())
    assert found and unexpected == 4
    written = np.flatnonzero(counts.any(0))
    assert reached.tolist() == [written[0], written[-1]]
    native.fold_u8(score, label, counts, 255, -1, reached)  # the undo of a refused batch
    assert not counts.any()


@needs_kernels
def test_fold_bins_are_score_bins():
    score, label = awkward_frame(2)
    counts = np.zeros((2, 2**16), dtype=np.int64)
    native.fold_u8(score, label, counts, 255, 1, np.array([2**16, -1], dtype=np.int64))
    bins = score_bins(torch.from_numpy(score), 16).numpy()
    for row in (0, 1):
        expected = np.bincount(bins[label == row], minlength=2**16)
        np.testing.assert_array_equal(counts[row], expected)


@needs_kernels
@pytest.mark.parametrize("seed", [0, 3])
def test_sorted_classes_are_the_sorted_keys_of_each_class(seed):
    score, label = awkward_frame(seed)
    inlier, anomaly = native.sorted_classes_u8(score, label)
    np.testing.assert_array_equal(inlier, np.sort(keys(score[label == 0])))
    np.testing.assert_array_equal(anomaly, np.sort(keys(score[label == 1])))
    # the keys order the floats: sorting the floats and keying them gives the same array
    np.testing.assert_array_equal(anomaly, keys(np.sort(score[label == 1])))


@needs_kernels
def test_ranks_are_numpy_searchsorted():
    rng = np.random.default_rng(4)
    sorted_keys = np.sort(rng.integers(0, 5000, 20_000).astype(np.uint32))
    values = np.unique(rng.integers(0, 6000, 3000).astype(np.uint32))
    below, equal = native.ranks_u32(sorted_keys, values)
    np.testing.assert_array_equal(below, np.searchsorted(sorted_keys, values, "left"))
    right = np.searchsorted(sorted_keys, values, "right")
    np.testing.assert_array_equal(equal, right - below)


@needs_kernels
def test_float16_counts_per_class():
    score, label = awkward_frame(5)
    label[:3] = [2, 100, 254]  # the toolkit counts every label 1..254 as anomaly
    with np.errstate(over="ignore"):  # 3e38 is inf in float16
        bits = score.astype(np.float16).view(np.uint16)
    counts = native.count_f16_u8(bits, label)
    np.testing.assert_array_equal(counts[0], np.bincount(bits[label == 0], minlength=65536))
    anomaly = (label > 0) & (label < 255)
    np.testing.assert_array_equal(counts[1], np.bincount(bits[anomaly], minlength=65536))


@needs_kernels
def test_wrong_arrays_are_refused_before_any_read():
    score, label = awkward_frame(0, size=100)
    with pytest.raises(ValueError, match="label holds 99 values, expected 100"):
        native.sorted_classes_u8(score, label[:99])
    with pytest.raises(ValueError, match="score must be C-contiguous float32"):
        native.sorted_classes_u8(score.astype(np.float64), label)
    with pytest.raises(ValueError, match="counts must have 2\\*\\*bits columns"):
        native.fold_u8(score, label, np.zeros((2, 100), np.int64), 255, 1, np.zeros(2, np.int64))


def _protocols(frames: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    metric = AnomalyMetrics(bin_bits=18)
    per_image = []
    smiyc = []
    for score, label in frames:
        score2, label2 = score.reshape(200, 300), label.reshape(200, 300)
        metric.update(torch.from_numpy(score2), torch.from_numpy(label2))
        values = per_image_metrics(torch.from_numpy(score2)[None], torch.from_numpy(label2)[None])
        per_image.append({key: value.tolist() for key, value in values.items()})
        counts = smiyc_frame_counts(np.tanh(score2), label2)
        smiyc.append([np.asarray(part).tolist() for part in counts])
    result = metric.compute()
    return {"fishyscapes": {k: result[k] for k in ("ap", "auroc", "fpr95")}, "per_image": per_image,
            "smiyc": smiyc}  # fmt: skip


@needs_kernels
@pytest.mark.filterwarnings("ignore::fsbench.metrics.anomaly.BinningWarning")
def test_every_protocol_gives_the_same_numbers_without_the_kernels(monkeypatch):
    frames = [awkward_frame(seed) for seed in range(3)]
    with_kernels = _protocols(frames)
    monkeypatch.setattr(native, "library", lambda: None)
    assert _protocols(frames) == with_kernels


@needs_kernels
def test_nonfinite_float16_patterns_are_counted():
    values = np.array([0, 1, -2, 65504, -65504, np.inf, -np.inf, np.nan, 6e-8], np.float16)
    assert native.nonfinite_f16(values.view(np.uint16)) == 3
    assert native.nonfinite_f16(np.zeros(0, np.uint16)) == 0
