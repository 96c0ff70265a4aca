"""fsbench's compiled CPU kernels: ``native.c``, built with the system's C compiler on first use.

The loops of the scoring protocols, each one pass where numpy needs several (or a sort):

* :func:`fold_u8`: :class:`~fsbench.metrics.anomaly.AnomalyMetrics`' histogram fold
  (:func:`~fsbench.metrics.anomaly.add_to_histogram`) of float32 scores and uint8 labels;
* :func:`sorted_classes_u8`: a frame's inlier and anomaly scores as sorted order-preserving
  keys (a radix sort), for the exact per-image metrics
  (:func:`~fsbench.metrics.per_image.per_image_metrics`);
  :func:`ranks_u32` then merges each distinct anomaly score into the inlier scores;
* :func:`count_f16_u8`: the SegmentMeIfYouCan protocol's per-frame count of each float16 score
  (:func:`~fsbench.metrics.protocols.smiyc_frame_counts`), and :func:`nonfinite_f16`, its check
  of the stored maps.

The library is compiled once per source, compiler and machine type (``cc -O3 -shared``, no
``-march``) into ``$FSBENCH_CACHE`` (default ``~/.cache/fsbench``) under a name holding the
source's hash, written through a temporary name and a rename so that concurrent processes (DDP)
never load a half-written file, and loaded with ctypes (which releases the GIL during each
call). Where no compiler is found, the build fails, or ``FSBENCH_NATIVE=0`` is set,
:func:`library` is ``None`` (:func:`status` says why) and every caller runs its numpy path,
which gives the same numbers: ``tests/test_native.py`` checks each kernel against it.
``benchmarks/README.md`` ("The referee") measures what each kernel buys.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

__all__ = [
    "count_f16_u8",
    "fold_u8",
    "library",
    "nonfinite_f16",
    "ranks_u32",
    "sorted_classes_u8",
    "status",
]

SOURCE = Path(__file__).with_name("native.c")
_LOCK = threading.Lock()
_LOADED: dict[str, object] = {}
_POINTER, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
_SIGNATURES = {
    "fsb_fold_u8": ([_POINTER, _POINTER, _I64, _POINTER, _I32, _I32, _I64, _POINTER], _I64),
    "fsb_sorted_classes_u8": ([_POINTER] * 2 + [_I64] + [_POINTER] * 4, None),
    "fsb_count_f16_u8": ([_POINTER, _POINTER, _I64, _POINTER], None),
    "fsb_ranks_u32": ([_POINTER, _I64, _POINTER, _I64, _POINTER, _POINTER], None),
    "fsb_nonfinite_f16": ([_POINTER, _I64], _I64),
}


def _disabled() -> bool:
    return os.environ.get("FSBENCH_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dirs() -> list[Path]:
    root = os.environ.get("FSBENCH_CACHE") or Path.home() / ".cache" / "fsbench"
    user = getattr(os, "getuid", lambda: "user")()  # no getuid on Windows
    return [Path(root) / "native", Path(tempfile.gettempdir()) / f"fsbench-native-{user}"]


def _build() -> tuple[ctypes.CDLL | None, str]:
    if _disabled():
        return None, "disabled by FSBENCH_NATIVE=0"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (cc, gcc, clang or $CC); numpy paths in use"
    if not SOURCE.is_file():
        return None, f"{SOURCE} is missing from this installation; numpy paths in use"
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(source + compiler.encode() + platform.machine().encode()).hexdigest()
    name = f"fsbench_native_{tag[:16]}.so"
    problems = []
    for folder in _cache_dirs():
        path = folder / name
        try:
            if not path.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                handle, temporary = tempfile.mkstemp(suffix=".so", dir=folder)
                os.close(handle)
                command = [compiler, "-O3", "-std=c99", "-shared", "-fPIC", "-o", temporary]
                done = subprocess.run(
                    [*command, str(SOURCE)], capture_output=True, text=True, timeout=120
                )
                if done.returncode != 0:
                    os.unlink(temporary)
                    return None, f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}"
                os.replace(temporary, path)
            library = ctypes.CDLL(str(path))
        except (OSError, subprocess.SubprocessError) as error:
            problems.append(f"{folder}: {error}")
            continue
        for function, (arguments, result) in _SIGNATURES.items():
            getattr(library, function).argtypes = arguments
            getattr(library, function).restype = result
        return library, f"compiled {path}"
    return None, "; ".join(problems)


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first call; ``None`` where they are not available."""
    with _LOCK:
        if "library" not in _LOADED:
            _LOADED["library"], _LOADED["status"] = _build()
    return _LOADED["library"]  # type: ignore[return-value]


def status() -> str:
    """Where the kernels come from, or why they are not in use."""
    library()
    return str(_LOADED["status"])


def _pointer(array: np.ndarray) -> int:
    return array.ctypes.data


def _checked(arrays: dict[str, tuple[np.ndarray, type]], size: int | None = None) -> ctypes.CDLL:
    """The library, once every array has its dtype, is C-contiguous and holds ``size`` items
    (a kernel reads exactly that many: a wrong array would be read out of bounds)."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"fsbench's compiled kernels are not available: {status()}")
    for name, (array, dtype) in arrays.items():
        if array.dtype != dtype or not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous {np.dtype(dtype)}, got {array.dtype}")
        if size is not None and array.size != size:
            raise ValueError(f"{name} holds {array.size} values, expected {size}")
    return lib


def fold_u8(
    score: np.ndarray,
    label: np.ndarray,
    counts: np.ndarray,
    void: int,
    sign: int,
    bin_range: np.ndarray,
) -> int:
    """Add ``sign`` to ``counts`` [2, 2**bits] (int64) at each pixel labelled 0 or 1.

    ``score`` float32 and ``label`` uint8, flat and C-contiguous; the bin is
    :func:`~fsbench.metrics.anomaly.score_bins`' and the row the label. ``bin_range`` (int64
    [2]) is widened to the lowest and highest bin written. Returns how many labels are neither
    0, 1 nor ``void`` (-1: every other label counts).
    """
    lib = _checked({"score": (score, np.float32), "label": (label, np.uint8)}, score.size)
    _checked({"counts": (counts, np.int64), "bin_range": (bin_range, np.int64)})
    if counts.ndim != 2 or counts.shape[0] != 2 or bin_range.size != 2:
        raise ValueError("counts must be [2, 2**bits] and bin_range [2]")
    bits = counts.shape[1].bit_length() - 1
    if counts.shape[1] != 1 << bits or not 1 <= bits <= 31:
        raise ValueError(f"counts must have 2**bits columns, got {counts.shape[1]}")
    return int(
        lib.fsb_fold_u8(
            _pointer(score), _pointer(label), score.size, _pointer(counts), bits, void, sign,
            _pointer(bin_range),
        )
    )  # fmt: skip


def sorted_classes_u8(
    score: np.ndarray,
    label: np.ndarray,
    buffers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The order-preserving uint32 keys of the inlier (label 0) and the anomaly (label 1)
    scores, each ascending (a radix sort; one pass over the pixels selects both).

    ``score`` float32 and ``label`` uint8, flat and C-contiguous. The key is the score's bit
    pattern read as unsigned after -0.0 is made +0.0, negative floats with every bit flipped
    and the others with their sign bit: equal exactly for equal float32 values and in their
    order (the histogram bins of :func:`~fsbench.metrics.anomaly.score_bins` are its top bits).
    ``buffers``: three uint32 arrays at least as long as ``score`` (inlier, anomaly, work),
    used instead of new ones where given (fresh memory costs its page faults); the results are
    views of the first two.
    """
    lib = _checked({"score": (score, np.float32), "label": (label, np.uint8)}, score.size)
    if buffers is None:
        buffers = tuple(np.empty(score.size, dtype=np.uint32) for _ in range(3))  # type: ignore[assignment]
    for array in buffers:
        _checked({"buffers": (array, np.uint32)})
        if array.size < score.size:
            raise ValueError(f"each buffer needs room for {score.size} keys")
    found = np.zeros(2, dtype=np.int64)
    inlier, anomaly, work = buffers
    lib.fsb_sorted_classes_u8(
        _pointer(score), _pointer(label), score.size, _pointer(inlier), _pointer(anomaly),
        _pointer(work), _pointer(found),
    )  # fmt: skip
    return inlier[: found[0]], anomaly[: found[1]]


def ranks_u32(sorted_keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(below, equal)``, int64 like ``values``: how many of ``sorted_keys`` are smaller than,
    and equal to, each of ``values``; both uint32, ascending, C-contiguous, ``values`` without
    repeats. ``numpy.searchsorted`` left and right (minus left), as one merge."""
    lib = _checked({"sorted_keys": (sorted_keys, np.uint32), "values": (values, np.uint32)})
    below = np.empty(values.size, dtype=np.int64)
    equal = np.empty(values.size, dtype=np.int64)
    lib.fsb_ranks_u32(
        _pointer(sorted_keys), sorted_keys.size, _pointer(values), values.size, _pointer(below),
        _pointer(equal),
    )  # fmt: skip
    return below, equal


def count_f16_u8(bits: np.ndarray, label: np.ndarray) -> np.ndarray:
    """int64 [2, 65536]: row 0 counts the inliers (label 0), row 1 the anomalies (1..254), of
    each float16 bit pattern in ``bits`` (uint16); label 255 is void. Flat, C-contiguous."""
    lib = _checked({"bits": (bits, np.uint16), "label": (label, np.uint8)}, bits.size)
    counts = np.zeros((2, 0x10000), dtype=np.int64)
    lib.fsb_count_f16_u8(_pointer(bits), _pointer(label), bits.size, _pointer(counts))
    return counts


def nonfinite_f16(bits: np.ndarray) -> int:
    """How many of the float16 bit patterns ``bits`` (uint16, C-contiguous) are inf or NaN."""
    lib = _checked({"bits": (bits, np.uint16)})
    return int(lib.fsb_nonfinite_f16(_pointer(bits), bits.size))
