"""AnomalyMetrics' histogram update: candidate binnings side by side, in ns per pixel.

    python benchmarks/binning.py                      # 1e7 pixels, 5 repeats (about 2 minutes)
    python benchmarks/binning.py --pixels 1e6 --repeats 3 --no-sklearn
    python benchmarks/binning.py --compile            # also torch.compile (minutes to compile)

Every candidate adds the same synthetic pixels (1024x2048 frames, 1% anomaly, 5% void, scores
from two overlapping normals, as ``benchmarks/metrics.py``) into a [2, 2**22] int64 histogram,
one frame per call, and must produce counts identical to fsbench's (checked). The candidates run
interleaved, ``--repeats`` rounds in one process, and the median round is reported: on a shared
machine only ratios measured side by side mean much. Printed per candidate: ns per pixel, the
ratio to one ``tensor.sum()`` of the same scores, and how many times faster than scikit-learn's
``average_precision_score`` on the valid pixels (timed once, 1e7 pixels take seconds).

Candidates:

* ``fsbench update``: ``AnomalyMetrics.update`` as it runs, checks included (immediate / deferred),
  with the compiled fold of :mod:`fsbench.metrics.native` for these uint8 labels, and on its
  numpy path (as without a C compiler);
* ``compiled fold alone``: :func:`fsbench.metrics.native.fold_u8`, the update's fused loop;
* ``update before``: the immediate update before this benchmark (label check, ``isfinite``,
  then the int64 scratch below);
* ``numpy fold, chunk N``: the numpy path of :func:`fsbench.metrics.anomaly.add_to_histogram`
  alone (int32 slots, one ``index_add_`` of int64 0/1 weights into the state), chunks of N
  pixels through numpy views of reused work tensors; ``fold, torch tensors``: the same passes on
  new torch tensors, whole frames (the GPU path);
* ``scratch int64 (before)``: the update before (aminmax of the bins, a zero-filled int64
  scratch of 4 slots per bin over the touched span, ``index_add_``, then a fold into the state);
* ``scratch int32``: the same with two int32 rows, a reused scratch (no fresh pages) and void
  dropped by a 0 weight;
* ``numpy bincount`` / ``numpy add.at``: the int32 slots counted by numpy;
* ``sort + run lengths``: ``numpy.sort`` of the slots, then one add per distinct slot;
* ``bin_bits B``: ``AnomalyMetrics(bin_bits=B)``: a smaller, more cache-friendly histogram,
  with its AP distance to the exact sort and its error bound.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the pixels of benchmarks/metrics.py (this folder is first on sys.path when run as a script)
from metrics import _data as data  # noqa: E402

from fsbench.metrics import anomaly, native  # noqa: E402
from fsbench.metrics.anomaly import AnomalyMetrics, add_to_histogram, histogram_slots  # noqa: E402

IMAGE = 1024 * 2048
BITS = anomaly.DEFAULT_BIN_BITS

Fold = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


# -- candidates ------------------------------------------------------------------------------


def fold_chunked(chunk: int) -> Fold:
    work = anomaly._WorkArrays()  # reused from call to call, as AnomalyMetrics keeps its own

    def fold(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
        anomaly.CPU_CHUNK_PIXELS = chunk
        add_to_histogram(counts, score, target, work=work)

    return fold


def fold_torch(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
    """The same passes on torch tensors, whole frames (as on a GPU): torch's intra-op threads."""
    slots, weight = histogram_slots(score, target, BITS)
    counts.view(-1).index_add_(0, slots, weight)


def scratch_int64_before(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
    """The CPU update before this benchmark: a zero-filled int64 scratch over the touched span."""
    pattern = (score + 0.0).view(torch.int32)
    bins = (pattern ^ ((pattern >> 31) & 0x7FFFFFFF)) >> (32 - BITS)
    low, high = (int(v) for v in torch.aminmax(bins))
    code = torch.where(target == 255, 2, target).to(torch.int32)
    slot = ((bins - low) << 2) | code
    scratch = torch.zeros(4 * (high - low + 1), dtype=torch.int64)
    scratch.index_add_(0, slot, torch.ones(1, dtype=torch.int64).expand(slot.numel()))
    offset = 1 << (BITS - 1)
    counts[:, low + offset : high + offset + 1] += scratch.view(-1, 4)[:, :2].T


def update_before(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
    """The whole CPU update before: label check, isfinite, then the int64 scratch."""
    allowed = (target == 0) | (target == 1) | (target == 255)
    if not bool(allowed.all()):
        raise ValueError("unexpected labels")
    score32 = score.to(torch.float32)
    finite = torch.isfinite(score32)
    if not bool(finite.all()):
        raise ValueError("non-finite scores")
    scratch_int64_before(counts, score32, target)


class ScratchInt32:
    """Two int32 rows over the touched span, reused between calls, folded into the int64 state."""

    def __init__(self) -> None:
        self.scratch = torch.zeros(0, dtype=torch.int32)

    def __call__(self, counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
        slots, weight = histogram_slots(score, target, BITS)
        bins = slots & ((1 << BITS) - 1)
        low, high = (int(v) for v in torch.aminmax(bins))
        span = high - low + 1
        local = bins - low + (slots >> BITS) * span  # row-major [2, span]
        if self.scratch.numel() < 2 * span:
            self.scratch = torch.zeros(2 * span, dtype=torch.int32)
        scratch = self.scratch[: 2 * span]
        scratch.index_add_(0, local, weight.to(torch.int32))
        counts[:, low : high + 1] += scratch.view(2, span)
        scratch.zero_()


def numpy_bincount(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
    slots, weight = histogram_slots(score, target, BITS)
    # numpy.bincount casts the int32 slots to intp; void pixels go to a last, dropped slot
    slots.masked_fill_(weight == 0, 2 << BITS)
    found = np.bincount(slots.numpy(), minlength=(2 << BITS) + 1)
    counts.view(-1).add_(torch.from_numpy(found[:-1]))


def numpy_add_at(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
    slots, weight = histogram_slots(score, target, BITS)
    np.add.at(counts.view(-1).numpy(), slots[weight == 1].numpy(), 1)


def sort_runs(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
    slots, weight = histogram_slots(score, target, BITS)
    ordered = np.sort(slots[weight == 1].numpy())
    if ordered.size == 0:
        return
    ends = np.flatnonzero(ordered[1:] != ordered[:-1])
    last = np.append(ends, ordered.size - 1)
    runs = np.diff(last, prepend=-1)
    flat = counts.view(-1).numpy()
    flat[ordered[last]] += runs


def native_fold(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
    """The compiled fold of fsbench.metrics.native alone (what the update runs for uint8 labels)."""
    reached = np.array([counts.shape[1], -1], dtype=np.int64)
    native.fold_u8(score.numpy(), target.numpy(), counts.numpy(), -1, 1, reached)


def numpy_path(fold: Fold) -> Fold:
    """``fold`` as on a machine without the compiled kernels (fsbench's numpy path)."""

    def without_kernels(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
        library = native.library
        native.library = lambda: None
        try:
            fold(counts, score, target)
        finally:
            native.library = library

    return without_kernels


def compiled() -> Fold:
    """torch.compile (inductor) of the slots and the weighted index_add_."""

    @torch.compile(dynamic=False)
    def fold(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
        slots, weight = histogram_slots(score, target, BITS)
        counts.view(-1).index_add_(0, slots, weight)

    return fold


def metric_update(**kwargs) -> tuple[Fold, AnomalyMetrics]:
    metric = AnomalyMetrics(**kwargs)

    def fold(counts: torch.Tensor, score: torch.Tensor, target: torch.Tensor) -> None:
        metric.update(score, target)

    return fold, metric


# -- measurement ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=float, default=1e7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sklearn", dest="sklearn", action="store_false")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pixels = int(args.pixels)
    score, target = data(pixels)
    frames = [(score[s : s + IMAGE], target[s : s + IMAGE]) for s in range(0, pixels, IMAGE)]

    reference = AnomalyMetrics()
    for frame in frames:
        reference.update(*frame)
    update, update_metric = metric_update(deferred_checks=False)
    deferred, deferred_metric = metric_update(deferred_checks=True)
    numpy_update, numpy_metric = metric_update(deferred_checks=False)
    candidates: dict[str, Fold] = {"fsbench update": update, "fsbench update, deferred": deferred}
    candidates["fsbench update, numpy path (no compiled kernels)"] = numpy_path(numpy_update)
    candidates["update before (checks + int64 scratch)"] = update_before
    if native.library() is not None:
        candidates["compiled fold alone (native.fold_u8)"] = native_fold
    chunk = anomaly.CPU_CHUNK_PIXELS
    for size in sorted({1 << 14, 1 << 15, 1 << 16, 1 << 18, IMAGE}):
        candidates[f"numpy fold, chunk {size}"] = numpy_path(fold_chunked(size))
    candidates["fold, torch tensors, whole frame"] = fold_torch
    candidates["scratch int64 (before)"] = scratch_int64_before
    candidates["scratch int32"] = ScratchInt32()
    candidates["numpy bincount"] = numpy_bincount
    candidates["numpy add.at"] = numpy_add_at
    candidates["sort + run lengths"] = sort_runs
    if args.compile:
        candidates["torch.compile"] = compiled()
    bits_metrics = {}
    for bits in (16, 18, 20):
        candidates[f"bin_bits {bits}"], bits_metrics[bits] = metric_update(bin_bits=bits)

    histograms = {name: torch.zeros(2, 1 << BITS, dtype=torch.int64) for name in candidates}
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    seconds["tensor.sum()"] = []
    for _ in range(args.repeats):
        for name, fold in candidates.items():
            histograms[name].zero_()
            started = time.perf_counter()
            for frame in frames:
                fold(histograms[name], *frame)
            seconds[name].append(time.perf_counter() - started)
            if name.startswith("numpy fold, chunk"):
                anomaly.CPU_CHUNK_PIXELS = chunk
        started = time.perf_counter()
        score.sum()
        seconds["tensor.sum()"].append(time.perf_counter() - started)
        for metric in (update_metric, deferred_metric, numpy_metric, *bits_metrics.values()):
            metric.reset()
    for frame in frames:  # the counts of the last round, once more for the metrics' states
        update(histograms["fsbench update"], *frame)
        deferred(histograms["fsbench update, deferred"], *frame)
    for name, histogram in histograms.items():
        if name.startswith(("bin_bits", "fsbench update")):
            continue
        assert torch.equal(histogram, reference.counts), f"{name}: counts differ"
    assert torch.equal(update_metric.counts, reference.counts)
    assert torch.equal(deferred_metric.counts, reference.counts)
    for frame in frames:
        numpy_update(histograms["fsbench update, numpy path (no compiled kernels)"], *frame)
    assert torch.equal(numpy_metric.counts, reference.counts)

    sklearn_s = None
    if args.sklearn:
        from sklearn.metrics import average_precision_score

        valid = target != 255
        y, s = (target[valid] == 1).numpy(), score[valid].numpy()
        started = time.perf_counter()
        average_precision_score(y, s)
        sklearn_s = time.perf_counter() - started

    exact = anomaly.anomaly_metrics(score[target != 255], target[target != 255] == 1)
    floor = statistics.median(seconds["tensor.sum()"])
    cpu = _cpu_name()
    print(f"{pixels:.0e} pixels in frames of {IMAGE}, {args.threads} threads, {cpu}")
    print(f"median of {args.repeats} interleaved rounds; tensor.sum() {floor / pixels * 1e9:.2f} ns/px")  # fmt: skip  # noqa: E501
    if sklearn_s is not None:
        per_pixel = sklearn_s / pixels * 1e9
        print(f"scikit-learn average_precision_score: {sklearn_s:.2f} s ({per_pixel:.0f} ns/px)")
    print()
    print("| candidate | ns/px | x tensor.sum() | x faster than sklearn | note |")
    print("|---|---|---|---|---|")
    for name in candidates:
        median = statistics.median(seconds[name])
        note = ""
        if name.startswith("bin_bits"):
            metric = bits_metrics[int(name.split()[1])]
            for frame in frames:
                metric.update(*frame)
            values = metric.compute()
            bound = values["binning"]["ap_error_bound"]
            note = f"AP error {abs(values['ap'] - exact['ap']):.1e}, bound {bound:.1e}"
        faster = f"{sklearn_s / median:.1f}" if sklearn_s is not None else "–"
        print(
            f"| {name} | {median / pixels * 1e9:.2f} | {median / floor:.0f} | {faster} | {note} |"
        )
    default = reference.compute()
    print(
        f"\nbin_bits {BITS} (default): AP error {abs(default['ap'] - exact['ap']):.1e}, "
        f"bound {default['binning']['ap_error_bound']:.1e}"
    )


def _cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown CPU")  # fmt: skip
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    return f"{name}, {'AVX-512' if 'avx512f' in flags.split() else 'no AVX-512'}"


if __name__ == "__main__":
    main()
