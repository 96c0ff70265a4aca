"""The fast SML smoothing and kNN scoring against plain NumPy references from definitions.

SML (Jung et al., ICCV 2021): dilated Gaussian smoothing is computed here pixel by pixel from its
definition, with clipped indices standing for the replicated border; the boundaries and boundary
suppression are checked against the official code's output in tests/test_sml_golden.py. kNN (Sun
et al., ICML 2022): brute-force float64 distances to every bank row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from baselines import softmax
from baselines.knn import KNNDensity, smallest_k
from baselines.softmax import (
    MaxSoftmax,
    SoftmaxEntropy,
    dilated_gaussian_smoothing,
)
from fsbench.heads import entropy_from_logits, softmax_and_entropy
from fsbench.models import SegOutput

CONF = Path(__file__).resolve().parents[1] / "conf"


def _shifted(x: np.ndarray, down: int, right: int) -> np.ndarray:
    """x [..., H, W] read at (i + down, j + right), indices clipped to the image."""
    rows = np.clip(np.arange(x.shape[-2]) + down, 0, x.shape[-2] - 1)
    cols = np.clip(np.arange(x.shape[-1]) + right, 0, x.shape[-1] - 1)
    return x[..., rows, :][..., cols]


def _smoothing_reference(score: np.ndarray, kernel: int, sigma: float, dilation: int):
    """SML §3.3 in float64: a normalised 2-D Gaussian, taps ``dilation`` apart, border replicated
    by dilation * (kernel - 1) // 2 (so the output loses a row and column when that is odd)."""
    gauss = np.exp(-((np.arange(kernel) - (kernel - 1) / 2) ** 2) / (2 * sigma**2))
    weights = np.outer(gauss, gauss) / np.outer(gauss, gauss).sum()
    pad = dilation * (kernel - 1) // 2
    lost = dilation * (kernel - 1) - 2 * pad
    height, width = score.shape[-2] - lost, score.shape[-1] - lost
    out = np.zeros(score.shape[:-2] + (height, width))
    for a in range(kernel):
        for b in range(kernel):
            moved = _shifted(score, a * dilation - pad, b * dilation - pad)
            out += weights[a, b] * moved[..., :height, :width]
    return out


@pytest.mark.parametrize(
    ("kernel", "sigma", "dilation"),
    # The paper's 7 / 1 / 6 (wider than the small images), an even kernel with an odd dilation
    # (the output loses a row and a column), no dilation, and a single tap.
    [(7, 1.0, 6), (3, 1.0, 2), (4, 0.7, 3), (5, 2.0, 1), (1, 1.0, 4)],
)
def test_dilated_smoothing_matches_a_numpy_reference(kernel, sigma, dilation):
    generator = torch.Generator().manual_seed(kernel)
    for shape in [(2, 1, 19, 27), (1, 1, 2, 9), (1, 1, 7, 2), (1, 1, 40, 33)]:
        score = torch.randn(*shape, generator=generator)
        expected = _smoothing_reference(score.double().numpy(), kernel, sigma, dilation)
        found = dilated_gaussian_smoothing(score, kernel, sigma, dilation)
        assert found.shape == expected.shape and found.dtype == torch.float32
        np.testing.assert_allclose(found.numpy(), expected, rtol=1e-5, atol=1e-5)


class _FeatureImages(nn.Module):
    """A stand-in segmenter whose 'images' are decoder features [N, D, h, w]."""

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return images


def _fitted_knn(k: int, bank_rows: int, dims: int, **options) -> KNNDensity:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, dims, 1, bank_rows, generator=generator)
    head = KNNDensity(k=k, bank_size=bank_rows, **options)
    head.fit(_FeatureImages(), [{"image": features}])
    return head


def _kth_distance_reference(bank: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    distances = np.sqrt(((queries[:, None, :] - bank[None, :, :]) ** 2).sum(axis=2))
    return np.sort(distances, axis=1)[:, k - 1]


@pytest.mark.parametrize("normalize", [True, False])
def test_knn_auto_chunks_match_a_float64_reference(monkeypatch, normalize):
    # A budget of 7 bank-sized rows: 23 x 5 query pixels make 17 chunks, the last one short.
    monkeypatch.setattr(KNNDensity, "CPU_DISTANCE_BUDGET", 7 * 300 + 5)
    head = _fitted_knn(k=6, bank_rows=300, dims=16, normalize=normalize)
    assert head.chunk_size is None and head.auto_chunk_size(300, torch.device("cpu")) == 7
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(1, 16, 23, 5, generator=generator)
    score = head.score(SegOutput(logits=torch.zeros(1, 3, 23, 5), features=features))
    assert score.shape == (1, 23, 5) and score.dtype == torch.float32
    queries = features[0].permute(1, 2, 0).reshape(-1, 16).double().numpy()
    if normalize:
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = _kth_distance_reference(head.bank.double().numpy(), queries, 6)
    np.testing.assert_allclose(score.reshape(-1).numpy(), expected, rtol=1e-5)

    head.chunk_size = 10**6  # an explicit chunk size overrides the budget: one chunk here
    one_chunk = head.score(SegOutput(logits=torch.zeros(1, 3, 23, 5), features=features))
    # One matmul instead of 17: other blocking, other summation order. The expanded distance
    # moves by ulps of |q|^2 (the scale), not of each distance: atol 1e-5 of the scale beside
    # rtol (atol 0 demanded 1e-6 relative even of the smallest distance; measured 4.8e-7).
    scale = float(score.abs().max())
    np.testing.assert_allclose(one_chunk.numpy(), score.numpy(), rtol=1e-6, atol=1e-5 * scale)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_knn_low_precision_shortlist_reranked_in_float32_matches_the_exact_score(dtype):
    head = _fitted_knn(k=5, bank_rows=400, dims=32, normalize=True, chunk_size=50)
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 32, 9, 11, generator=generator)
    output = SegOutput(logits=torch.zeros(2, 3, 9, 11), features=features)
    exact = head.score(output)
    head.distance_dtype = dtype
    shortlisted = head.score(output)
    assert shortlisted.dtype == torch.float32
    np.testing.assert_allclose(shortlisted.numpy(), exact.numpy(), rtol=1e-5)
    # Without the float32 re-ranking the k-th distance itself is off by the rounding error.
    low = head.bank.to(getattr(torch, dtype))
    assert float((low.float() - head.bank).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="distance_dtype must be one of"):
        KNNDensity(distance_dtype="int8")
    with pytest.raises(ValueError, match="needs normalize=true"):
        KNNDensity(distance_dtype="float16", normalize=False)


@pytest.mark.parametrize(
    ("rows", "columns", "k"), [(7, 1000, 10), (5, 997, 3), (4, 50, 20), (3, 12, 12), (6, 301, 1)]
)
def test_smallest_k_equals_topk_also_with_ties(rows, columns, k):
    generator = torch.Generator().manual_seed(columns)
    continuous = torch.randn(rows, columns, generator=generator)
    tied = torch.randint(0, 6, (rows, columns), generator=generator).float()  # many ties
    for distances in (continuous, tied, continuous.half()):
        values, columns_of = smallest_k(distances, k)
        expected = distances.topk(k, dim=1, largest=False).values
        assert torch.equal(values.sort(dim=1).values, expected.sort(dim=1).values)
        assert torch.equal(distances.gather(1, columns_of), values)  # columns name the values
        assert all(len(set(row.tolist())) == k for row in columns_of)  # k distinct columns


def test_knn_auto_chunk_size_spends_the_device_budget():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert KNNDensity.auto_chunk_size(20000, cpu) == 2**24 // 20000 == 838
    assert KNNDensity.auto_chunk_size(20000, cuda) == 2**28 // 20000 == 13421
    assert KNNDensity.auto_chunk_size(2**30, cuda) == 1  # never zero rows


def test_knn_chunk_size_is_auto_by_default_and_checked_when_given():
    assert KNNDensity().chunk_size is None
    assert OmegaConf.load(CONF / "head" / "knn.yaml").chunk_size is None
    assert KNNDensity(chunk_size=256).chunk_size == 256
    for bad in (0, 2.5, True):
        with pytest.raises(
            ValueError, match=f"KNNDensity chunk_size must be an integer >= 1, got {bad}"
        ):
            KNNDensity(chunk_size=bad)


def test_dilated_smoothing_names_a_bad_kernel():
    score = torch.zeros(1, 1, 8, 8)
    for kernel, sigma, dilation in [(0, 1.0, 6), (7, 0.0, 6), (7, 1.0, 0)]:
        with pytest.raises(
            ValueError, match=f"kernel={kernel}, sigma={sigma}, dilation={dilation}"
        ):
            dilated_gaussian_smoothing(score, kernel, sigma, dilation)


def test_knn_scores_features_that_require_grad():
    head = _fitted_knn(k=2, bank_rows=50, dims=4, normalize=False)
    features = torch.randn(1, 4, 3, 3, requires_grad=True)
    score = head.score(SegOutput(logits=torch.zeros(1, 2, 3, 3), features=features))
    with torch.no_grad():
        expected = head.score(SegOutput(logits=torch.zeros(1, 2, 3, 3), features=features))
    assert score.requires_grad
    torch.testing.assert_close(score.detach(), expected, rtol=1e-6, atol=1e-6)


def _softmax_family_references(logits: torch.Tensor) -> dict[str, np.ndarray]:
    """float64 NumPy max softmax (1 - p, from the non-maximal terms), entropy and energy."""
    x = logits.double().numpy()
    shifted = x - x.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    first_max = np.zeros_like(exp, dtype=bool)
    np.put_along_axis(first_max, shifted.argmax(axis=1)[:, None], True, axis=1)
    rest = np.where(first_max, 0.0, exp).sum(axis=1)
    total = exp.sum(axis=1)
    probs = exp / total[:, None]
    return {
        "max_softmax": rest / (1 + rest),
        "entropy": -(probs * np.log(np.maximum(probs, 1e-300))).sum(axis=1),
        "energy": -2.0
        * (x.max(axis=1) / 2.0 + np.log(np.exp((x - x.max(1, keepdims=True)) / 2.0).sum(axis=1))),
    }


def test_softmax_family_cpu_by_class_and_vectorised_forms_match_float64():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 19, 12, 16, generator=generator) * 3
    logits[:, 4] += 40  # confident pixels: 1 - p as small as 1e-17, kept by the rest-sum form
    logits[0, 7, :3] = logits[0, 4, :3]  # exact ties of the maximal class
    expected = _softmax_family_references(logits)
    forms = {
        "max_softmax": (softmax._max_softmax_by_class, softmax._max_softmax_vectorised),
        # fsbench's one entropy: class planes on the CPU, the whole tensor (GPUs' form) otherwise
        "entropy": (entropy_from_logits, lambda x: softmax_and_entropy(x)[1]),
        "energy": (
            lambda x: softmax._energy_by_class(x, 2.0),
            lambda x: softmax._energy_vectorised(x, 2.0),
        ),
    }
    for name, (by_class, vectorised) in forms.items():
        for form in (by_class, vectorised):
            got = form(logits)
            assert got.dtype == torch.float32 and got.shape == (2, 12, 16)
            np.testing.assert_allclose(got.numpy(), expected[name], rtol=2e-5, atol=1e-6)
    # The ties: two maximal classes give 1 - p >= 1/2 (both forms).
    assert (softmax._max_softmax_by_class(logits)[0, :3] >= 0.5).all()
    # Relative accuracy where 1 - p is tiny (the reason for the rest-sum form).
    tiny = expected["max_softmax"] < 1e-10
    assert tiny.any()
    by_class = softmax._max_softmax_by_class(logits).double().numpy()
    np.testing.assert_allclose(by_class[tiny], expected["max_softmax"][tiny], rtol=1e-5)
    # CPU inputs take the by-class form.
    assert torch.equal(MaxSoftmax.from_logits(logits), softmax._max_softmax_by_class(logits))
    assert torch.equal(SoftmaxEntropy.from_logits(logits), entropy_from_logits(logits))
