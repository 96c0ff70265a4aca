"""The fast SMIYC per-frame counts and component labelling against the numpy / scipy they replace.

``smiyc_frame_counts`` reads the toolkit's quantiles and histograms from one count per float16
bit pattern; these tests hold it to ``numpy.quantile`` / ``numpy.histogram`` on the pixels bit for
bit (up to the sign of a zero, which numpy's partition leaves to the pixel order), on seeded
random and adversarial float16 data. The component pass labels by runs; it is held to
``scipy.ndimage.label`` and to the per-pixel implementation it replaced.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from fsbench.metrics import components as comp
from fsbench.metrics import protocols as prot
from fsbench.metrics.protocols import SMIYC_COMMITS, SmiycPixelCurve, smiyc_frame_counts

F16_FINITE = prot._F16_VALUES  # every finite float16 value once, increasing


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bits, with -0.0 read as +0.0 and any NaN equal to any NaN."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    nan = np.isnan(a)
    if not np.array_equal(nan, np.isnan(b)):
        return False
    a, b = a[~nan] + a.dtype.type(0), b[~nan] + b.dtype.type(0)  # -0.0 + 0.0 = +0.0
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(unsigned), b.view(unsigned)))


def _counts(values: np.ndarray) -> np.ndarray:
    """Cumulative counts of float16 ``values`` in the order of ``_F16_VALUES``."""
    ordered, nonfinite = prot._float16_counts(np.asarray(values, np.float16).view(np.uint16))
    assert nonfinite == 0
    return np.cumsum(ordered)


def _float16_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(20240607)
    half = np.float16
    cases = [
        np.array([0.5], half),
        np.array([-3.0, 7.0], half),
        np.array([1.0, 1.0], half),
        np.full(1000, 0.25, half),  # all equal
        np.array([-0.0, 0.0, -0.0, 0.0, 1.0], half),  # signed zeros
        np.array([-0.0] * 7, half),
        np.array([6e-8, -6e-8, 0.0, 1e-7, 5.9e-5, 6.1e-5], half),  # subnormals
        np.array([-65504, 65504], half),  # b - a overflows float16 (inf * 0 = nan)
        np.array([-65504, -65504, 65504, 65504, 65504], half),
        np.array([65504, 65504, 65504], half),
        F16_FINITE.copy(),  # every finite value once
        rng.choice(np.array([0.0, 0.5, 1.0], half), 5000),  # heavy ties
        rng.integers(-4, 5, 777).astype(half) / half(8),
        (rng.standard_normal(3000) * 1e-5).astype(half),  # subnormal-rich
        (rng.standard_normal(4096) * 20000).clip(-65504, 65504).astype(half),
        rng.random(200_000).astype(half),  # large n, many ties
        rng.random(300_001).astype(half) * half(2) - half(1),
    ]
    for n in (2, 3, 5, 383, 384, 385, 1000):
        cases.append((rng.standard_normal(n) * rng.choice([1e-3, 1, 300])).astype(half))
    for _ in range(40):
        n = int(rng.integers(1, 3000))
        pool = F16_FINITE[rng.integers(0, F16_FINITE.size, int(rng.integers(1, 30)))]
        cases.append(rng.choice(pool, n))  # few distinct values, anywhere in the range
    return cases


CASES = _float16_cases()


def _quantiles(n: int) -> list[np.ndarray]:
    return [
        np.linspace(0, 1, min(384, n)),
        np.linspace(0, 1, min(5, n)),
        np.array([0.0, 1.0]),
        np.array([0.5]),
        np.random.default_rng(n).random(50),
    ]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_quantile_from_counts_is_numpys_quantile(index):
    values = CASES[index]
    cumulative = _counts(values)
    for q in _quantiles(values.size):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 65504 - -65504 overflows
            want = np.quantile(values, q)
            got = prot._quantile_from_counts(cumulative, q)
        assert _same(got, want), (values[:10], q[:5], got[:5], want[:5])


def _edge_cases(values: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    finite = values.astype(np.float64)
    lo, hi = float(finite.min()), float(finite.max())
    picks = rng.choice(finite, min(50, finite.size))
    return [
        np.unique(np.r_[lo - 0.5, picks, hi + 0.5]),  # edges on values, all inside
        np.unique(picks),  # values below the first and above the last edge
        np.array([0.0, 1.0]),  # the 05552386 edges: values outside are not counted
        np.array([-0.0, 0.0, 1.0]) if lo < 0 else np.array([lo, hi]),
        np.unique(np.r_[picks, np.nextafter(picks, np.inf), np.nextafter(picks, -np.inf)]),
        np.array([-np.inf, lo, hi, np.inf]),
        np.array([lo, hi, np.nan]),  # a NaN edge (unique puts it last)
        np.array([hi, hi + 1.0]),  # only the maximum in the closed last bin
        np.array([lo - 2.0, lo - 1.0]),  # nothing counted
    ]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_histogram_from_counts_is_numpys_histogram(index):
    values = CASES[index]
    rng = np.random.default_rng(index)
    cumulative0 = np.r_[0, _counts(values)]
    for edges in _edge_cases(values, rng):
        want = np.histogram(values, bins=edges)[0]
        got = prot._histogram_from_counts(cumulative0, edges)
        assert _same(got, want), (edges, got, want)


def test_counts_merge_the_zeros_and_count_non_finite_values():
    bits = np.array([0.0, -0.0, -0.0, 1.0, np.inf, -np.inf, np.nan], np.float16).view(np.uint16)
    ordered, nonfinite = prot._float16_counts(bits)
    assert nonfinite == 3
    assert ordered[prot._F16_ZERO] == 3 and ordered.sum() == 4
    assert F16_FINITE.size == 63487 and np.all(F16_FINITE[1:] > F16_FINITE[:-1])


def test_float32_to_float16_is_numpys_cast():
    """torch's conversion of float32 (used for speed) gives numpy's bits; checked here on a
    sample of every region of the float32 patterns (it was checked on all 2**32 once)."""
    rng = np.random.default_rng(7)
    patterns = [rng.integers(0, 2**32, 2**20, dtype=np.uint64)]
    halves = F16_FINITE.astype(np.float32).view(np.uint32).astype(np.int64)
    subnormal_midpoints = ((np.arange(1025) + 0.5) * 2.0**-24).astype(np.float32)
    halves = np.concatenate([halves, subnormal_midpoints.view(np.uint32).astype(np.int64)])
    for delta in (-2, -1, 0, 1, 2, 0x1000, 0xFFF, 0x1001):  # float16 values and midpoints
        patterns.append(((halves + delta) & 0xFFFFFFFF).astype(np.uint64))
    patterns.append(np.arange(0x477FE000, 0x47800100, dtype=np.uint64))  # around 65504 / 65520
    patterns.append(np.arange(0x33000000 - 4096, 0x33800000 + 4096, 64, dtype=np.uint64))
    patterns.append(np.arange(0x7F7FF000, 0x7F800010, dtype=np.uint64))  # to inf and NaN
    bits = np.concatenate(patterns).astype(np.uint32)
    values = np.concatenate([bits, bits | np.uint32(0x80000000)]).view(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = values.astype(np.float16).view(np.uint16)
    got = prot.float16_scores(values).view(np.uint16)
    nan = np.isnan(values)
    assert np.array_equal(got[~nan], want[~nan])
    assert np.all((got[nan] & 0x7FFF) > 0x7C00)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for other in (values[:1000].astype(np.float64), values[:1000].astype(np.float16)):
            assert _same(prot.float16_scores(other), other.astype(np.float16))


# -- smiyc_frame_counts against the toolkit's steps, written out with numpy ----------------------


def _reference_counts(score, label, num_bins=768, commit="1c7804e", ignore_index=255):
    """The toolkit's binary_confusion_matrix as the docstring states it, on the pixels."""
    score16 = np.asarray(score).astype(np.float16)
    label = np.asarray(label)
    valid = (label < 255) & (label != ignore_index)
    values = score16[valid]
    if not np.isfinite(values).all():
        raise ValueError(f"{int((~np.isfinite(values)).sum())} valid pixels are not finite")
    if values.size == 0:
        return None
    positive = label[valid].astype(bool)
    at_true, at_false = values[positive], values[~positive]
    if commit == "05552386":
        outer = [0.0, 1.0]
    else:
        vmin, vmax = values.min(), values.max()
        eps = max(float(vmax - vmin) * 1e-2, 1e-2)
        outer = [float(vmin) - eps, float(vmax) + eps]
    edges = [np.array(outer)]
    for part in (at_true, at_false):
        if part.size:
            edges.append(np.quantile(part, np.linspace(0, 1, min(num_bins // 2, part.size))))
    bins = np.unique(np.concatenate(edges))
    tp = np.histogram(at_true, bins=bins)[0][::-1]
    fp = np.histogram(at_false, bins=bins)[0][::-1]
    return bins[::-1][1:], tp, fp, int(at_true.size), int(at_false.size)


def _frames() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    frames = []
    for i in range(60):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        kind = i % 6
        if kind == 0:
            score = rng.random((h, w), dtype=np.float32)
        elif kind == 1:
            score = rng.integers(-3, 4, (h, w)).astype(np.float32) / 2  # ties, +-0
        elif kind == 2:
            score = (rng.standard_normal((h, w)) * 1e-6).astype(np.float32)  # subnormals
        elif kind == 3:
            score = np.where(rng.random((h, w)) < 0.5, -0.0, 0.0).astype(np.float32)
        elif kind == 4:
            score = (rng.standard_normal((h, w)) * 3e4).clip(-65504, 65504)  # float64
        else:
            score = (rng.random((h, w)) * 2 - 0.5).astype(np.float16)  # outside [0, 1]
        label = rng.choice(np.array([0, 1, 255, 7], np.uint8), (h, w), p=[0.5, 0.3, 0.15, 0.05])
        frames.append((score, label))
    score = rng.random((300, 400), dtype=np.float32)
    label = (rng.random((300, 400)) < 0.1).astype(np.uint8)
    label[:40] = 255
    frames += [(score, label), (score, np.zeros_like(label)), (score, np.ones_like(label))]
    frames.append((score, np.full_like(label, 255)))  # no valid pixel
    return frames


FRAMES = _frames()


def _check_counts(got, want) -> None:
    if want is None:
        assert got is None
        return
    assert got is not None
    assert _same(got[0], want[0])
    assert got[1].dtype == got[2].dtype == np.int64
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[2], want[2])
    assert got[3:] == want[3:] and all(type(v) is int for v in got[3:])


@pytest.mark.parametrize("commit", sorted(SMIYC_COMMITS))
def test_frame_counts_equal_the_numpy_reference(commit):
    for score, label in FRAMES:
        for num_bins in (768, 4, 11):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                want = _reference_counts(score, label, num_bins, commit)
                got = smiyc_frame_counts(score, label, num_bins, commit)
            _check_counts(got, want)


def test_frame_counts_ignore_index_and_other_label_types():
    rng = np.random.default_rng(3)
    score = rng.random((40, 50), dtype=np.float32)
    label = rng.choice(np.array([0, 1, 2, 9, 255], np.uint8), (40, 50))
    for ignore_index in (255, 9, 0, 300):
        want = _reference_counts(score, label, ignore_index=ignore_index)
        _check_counts(smiyc_frame_counts(score, label, ignore_index=ignore_index), want)
    for dtype in (np.int64, np.uint16, np.int16):
        _check_counts(
            smiyc_frame_counts(score, label.astype(dtype)), _reference_counts(score, label)
        )


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_frame_counts_reject_non_finite_valid_pixels_only():
    score = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    label = np.zeros((5, 6), np.uint8)
    label[0] = 255
    score[0, :3] = [np.nan, np.inf, 1e6]  # on void: ignored
    _check_counts(smiyc_frame_counts(score, label), _reference_counts(score, label))
    score[1, :2] = [np.nan, 7e4]  # 7e4 is inf in float16
    with pytest.raises(ValueError, match="^2 valid pixels are not finite in float16"):
        smiyc_frame_counts(score, label)
    with pytest.raises(ValueError, match="num_bins"):
        smiyc_frame_counts(score, label, num_bins=2)
    with pytest.raises(ValueError, match="unknown SegmentMeIfYouCan toolkit commit"):
        smiyc_frame_counts(score, label, commit="abc")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("commit", sorted(SMIYC_COMMITS))
def test_curve_update_is_the_frame_counts(commit):
    curve, by_counts = SmiycPixelCurve(commit=commit), SmiycPixelCurve(commit=commit)
    for score, label in FRAMES:
        if commit == "05552386" and np.asarray(score).dtype == np.float64:
            continue  # scores far outside [0, 1] leave that commit's curve without counts
        curve.update(score, label)
        counts = smiyc_frame_counts(score, label, commit=commit)
        if counts is not None:
            by_counts.add_counts(*counts)
    assert curve.frames_without_valid_pixels == 1
    got, want = curve.compute(), by_counts.compute()
    assert got == want
    for key, values in curve.curve().items():
        assert _same(values, by_counts.curve()[key]), key


# -- the component pass ------------------------------------------------------------------------


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    masks = [
        np.zeros((4, 5), bool),
        np.ones((4, 5), bool),
        np.ones((1, 7), bool),
        np.ones((7, 1), bool),
        np.eye(6, dtype=bool),  # a diagonal chain is one component
        np.eye(6, dtype=bool)[::-1].copy(),
        np.kron(np.eye(4, dtype=bool), np.ones((2, 3), bool)),  # corners touch
    ]
    edges = np.zeros((5, 8), bool)
    edges[:, 0] = edges[:, -1] = True  # runs at both borders, never joined across rows
    masks.append(edges)
    for i in range(300):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        masks.append(rng.random((h, w)) < (0.05, 0.3, 0.45, 0.6, 0.9)[i % 5])
    return masks


def _painted(runs, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    grid = np.zeros(height * (width + 1), np.int64)
    for start, end, component in zip(runs.starts, runs.ends, runs.component, strict=True):
        grid[start:end] = component
    return grid.reshape(height, width + 1)[:, :width]


def test_run_labelling_equals_ndimage_label():
    for mask in _masks():
        want, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
        padded, inner = comp._padded(mask.shape)
        inner[...] = mask
        runs = comp._label_runs(padded)
        assert runs.count == count
        assert np.array_equal(_painted(runs, mask.shape), want)
        assert np.array_equal(
            runs.sizes(),
            np.bincount(want.ravel(), minlength=count + 1) * (np.arange(count + 1) > 0),
        )


def _reference_frame_components(prediction, label, min_predicted_size, min_gt_size, ignore=255):
    """The per-pixel implementation (ndimage.label and bincounts) that the runs replaced."""
    structure = np.ones((3, 3), bool)
    void = label == ignore
    gt_ids, n_gt = ndimage.label(label == 1, structure=structure)
    pred_ids, n_pred = ndimage.label(prediction & ~void, structure=structure)
    gt_ids, pred_ids = gt_ids.astype(np.int64), pred_ids.astype(np.int64)
    pred_sizes = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)
    keep_pred = pred_sizes >= min_predicted_size
    keep_pred[0] = False
    pred_ids = np.where(keep_pred[pred_ids], pred_ids, 0)
    gt_sizes = np.bincount(gt_ids.ravel(), minlength=n_gt + 1)
    keep_gt = gt_sizes >= min_gt_size
    keep_gt[0] = False
    region = ~void & ~((gt_ids > 0) & ~keep_gt[gt_ids])
    g, p = gt_ids[region], pred_ids[region]
    on_gt = g > 0
    pred_in_region = np.bincount(p, minlength=n_pred + 1)
    pred_on_gt = np.bincount(p[on_gt], minlength=n_pred + 1)
    present = pred_in_region > 0
    present[0] = False
    precisions = pred_on_gt[present] / pred_in_region[present]
    both = on_gt & (p > 0)
    intersection = np.bincount(g[both], minlength=n_gt + 1)
    pairs = np.unique(g[both] * (n_pred + 1) + p[both])
    pair_gt, pair_pred = np.divmod(pairs, n_pred + 1)
    off = pred_in_region - pred_on_gt
    outside = np.bincount(pair_gt, weights=off[pair_pred], minlength=n_gt + 1)
    kept = np.flatnonzero(keep_gt)
    return intersection[kept] / (gt_sizes[kept] + outside[kept]), precisions


def test_frame_components_equal_the_per_pixel_implementation():
    rng = np.random.default_rng(9)
    for i in range(400):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        prediction = rng.random((h, w)) < (0.05, 0.2, 0.45, 0.6, 0.9)[i % 5]
        if i % 4 == 0:  # blocky objects
            cells = rng.random((h // 4 + 1, w // 4 + 1)) < 0.4
            label = np.kron(cells, np.ones((4, 4), bool))[:h, :w].astype(np.uint8)
        else:
            label = (rng.random((h, w)) < (0.1, 0.4, 0.7)[i % 3]).astype(np.uint8)
        if i % 3 == 0:
            label[rng.random((h, w)) < 0.15] = 255
        sizes = tuple(int(v) for v in rng.integers(0, 8, 2))
        got = comp.frame_components(
            prediction, label, min_predicted_size=sizes[0], min_gt_size=sizes[1]
        )
        sious, precisions = _reference_frame_components(prediction, label, *sizes)
        assert _same(got.sious, sious) and _same(got.precisions, precisions), i


def test_greater_is_binarize():
    """The float16 / float32 comparison with the threshold equals float64(score) > threshold."""
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    scores = patterns[~np.isnan(patterns)]  # NaN is rejected before the comparison
    rng = np.random.default_rng(1)
    picked = F16_FINITE[rng.integers(0, F16_FINITE.size, 300)].astype(np.float64)
    special = [0.0, -0.0, 65504.0, -65504.0, 65519.0, 65520.0, 1e6, -1e6, 6e-8, -6e-8, 1e-300]
    near = (np.nextafter(picked, np.inf), np.nextafter(picked, -np.inf))
    thresholds = np.concatenate([picked, *near, special, np.negative(special)])
    for threshold in thresholds:
        assert np.array_equal(comp._greater(scores, threshold), comp.binarize(scores, threshold))
    floats = (rng.standard_normal(10000) * 10.0 ** rng.integers(-40, 38, 10000)).astype(np.float32)
    for threshold in np.concatenate([floats[:200].astype(np.float64) * (1 + 1e-12), [0.0, 1e39]]):
        assert np.array_equal(comp._greater(floats, threshold), comp.binarize(floats, threshold))


def test_nan_mask_of_float16_is_isnan():
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    assert np.array_equal(comp._nan_mask(patterns), np.isnan(patterns))
    finite = patterns[np.isfinite(patterns)]
    assert comp._nan_mask(finite) is None
    assert comp._nan_mask(np.array([np.inf, -np.inf], np.float16)) is None
    for nan in (0x7C01, 0x7E00, 0x7FFF, 0xFC01, 0xFE00, 0xFFFF):
        scores = finite.copy()
        scores[123] = np.array(nan, np.uint16).view(np.float16)
        assert np.flatnonzero(comp._nan_mask(scores)).tolist() == [123]
    with pytest.raises(ValueError, match="^1 scores are NaN, the first at index"):
        comp.ComponentMetrics(0.5).update(
            scores.reshape(1, -1), np.zeros((1, scores.size), np.uint8)
        )
