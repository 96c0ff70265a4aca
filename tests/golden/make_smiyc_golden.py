"""Golden values of the SegmentMeIfYouCan toolkit, from the toolkit's own code (run by hand).

The reference is ``SegmentMeIfYouCan/road-anomaly-benchmark`` @1c7804e (BENCHMARKS.md §2); the
older commit 05552386 (Oct 2022, the code of the 2021 leaderboard's formula: ``[0, 1]`` bin
edges, trapezoid AP) is recorded too, because ``fsbench score --smiyc-commit 05552386`` keeps it
as a named option. Nothing of the toolkit is copied into fsbench: this script imports the
toolkit from a checkout outside the project and runs its classes as its own evaluation does:

1. ``MetricPixelClassification`` ("PixBinaryClass"): ``process_frame`` per frame on float16
   scores (``Evaluation.save_output`` stores ``anomaly_p.astype(np.float16)``), ``aggregate``,
   ``save`` (its HDF5 file);
2. ``MetricSegment`` ("SegEval-AnomalyTrack" / "SegEval-ObstacleTrack"):
   ``get_thresh_p_from_curve`` reads the best-F1 threshold back from that HDF5 file, then
   ``process_frame`` per frame and ``aggregate``; and the same at a few fixed thresholds.

The inputs are seeded synthetic frames (curved objects, thin lines, single pixels, touching
objects, void regions, quantized scores with many ties, scores outside [0, 1], large values,
a constant frame, an anomaly-free frame, float32 scores crowded within float16's resolution).
They are written beside the outputs, so the tests never depend on a random generator.

It needs the toolkit's environment (its ``requirements.txt`` pins numpy 1.23.3, whose
value-based casting decides how float16 scores meet float64 thresholds), e.g.::

    M=/work/.mirror/SegmentMeIfYouCan+road-anomaly-benchmark/repo   # `fetch` of the repository
    for C in 1c7804e 05552386; do
        mkdir -p /tmp/smiyc_$C
        git -C $M archive $C road_anomaly_benchmark | tar -x -C /tmp/smiyc_$C
    done
    python3.11 -m venv /tmp/smiyc-venv
    /tmp/smiyc-venv/bin/pip install numpy==1.23.3 scipy==1.9.3 easydict==1.10 h5py==3.8.0 \
        matplotlib==3.6.3 pandas==1.5.3 ipython imageio opencv-python-headless==4.6.0.66 \
        scikit-image==0.20.0
    for C in 1c7804e 05552386; do
        /tmp/smiyc-venv/bin/python tests/golden/make_smiyc_golden.py \
            --commit $C --toolkit /tmp/smiyc_$C
    done

Outputs (in this folder): ``smiyc_inputs.npz`` (the frames), ``smiyc_<commit>.npz`` (curves and
per-frame component values) and ``smiyc_<commit>.json`` (every scalar, readable).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VOID = 255


def _disk(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _smooth_noise(rng, shape, scale):
    """Smooth random field in [0, 1]: a few random low-frequency waves."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    field = np.zeros(shape)
    for _ in range(4):
        fy, fx = rng.uniform(0.5, 3.0, 2) / np.array(shape)
        field += np.sin(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
    field = (field - field.min()) / (np.ptp(field) + 1e-12)
    return scale * field


def _objects_frame(rng, shape, n_big, n_small, void_rows=0):
    """Label with curved objects (some touching, some tiny) and a void band on top."""
    label = np.zeros(shape, np.uint8)
    for _ in range(n_big):
        cy, cx = rng.uniform(0.25, 0.8) * shape[0], rng.uniform(0.15, 0.85) * shape[1]
        ry, rx = rng.uniform(0.1, 0.22) * shape[0], rng.uniform(0.08, 0.2) * shape[1]
        label[_disk(shape, cy, cx, ry, rx)] = 1
    for _ in range(n_small):
        cy, cx = rng.uniform(0.3, 0.95) * shape[0], rng.uniform(0.05, 0.95) * shape[1]
        label[_disk(shape, cy, cx, rng.uniform(1.0, 3.5), rng.uniform(1.0, 3.5))] = 1
    if void_rows:
        label[:void_rows] = VOID
    return label


def _score_from_label(rng, label, signal, noise, miss=0.15):
    """Anomaly score: signal on (most of) the objects, smooth false positives, pixel noise."""
    base = _smooth_noise(rng, label.shape, 0.6)
    hit = (label == 1) & (rng.random(label.shape) > miss)
    score = base + signal * hit + noise * rng.standard_normal(label.shape)
    return score


def build_cases(rng: np.random.Generator) -> dict[str, dict]:
    """name -> {"track", "frames": [(score, label)], "fixed": [thresholds]} (seeded)."""
    cases: dict[str, dict] = {}

    # Probabilities in [0, 1] with curved objects, touching pairs, tiny objects, void band.
    frames = []
    for _ in range(3):
        label = _objects_frame(rng, (64, 96), n_big=2, n_small=3, void_rows=8)
        raw = _score_from_label(rng, label, signal=2.5, noise=0.35)
        frames.append((1 / (1 + np.exp(-3 * (raw - 1.2))), label))
    cases["blobs_prob"] = {"track": "anomaly", "frames": frames}

    # Scores quantized to 11 levels: every frame repeats the same thresholds (many ties).
    frames = []
    for _ in range(4):
        label = _objects_frame(rng, (48, 64), n_big=2, n_small=2)
        raw = _score_from_label(rng, label, signal=0.45, noise=0.2)
        frames.append((np.clip(np.round(raw * 10) / 10, 0, 1), label))
    cases["quantized_ties"] = {"track": "obstacle", "frames": frames}

    # Negative energies, far outside [0, 1].
    frames = []
    for _ in range(3):
        label = _objects_frame(rng, (64, 96), n_big=2, n_small=1, void_rows=6)
        raw = _score_from_label(rng, label, signal=2.0, noise=0.5)
        frames.append((-12.0 + 5.0 * raw, label))
    cases["energy_range"] = {"track": "anomaly", "frames": frames}

    # Obstacle track: road in the middle, off-road void; thin lines, single pixels, 3x3 boxes,
    # diagonal contacts.
    frames = []
    for k in range(2):
        label = np.full((48, 64), VOID, np.uint8)
        label[12:, 8:56] = 0
        label[20 + k, 12:44] = 1  # a 1-pixel line (32 px)
        label[24:40, 48] = 1  # a vertical line (16 px)
        label[30, 20] = 1  # single pixels
        label[42, 30 + k] = 1
        label[34:37, 26:29] = 1  # 9 px: voided on the obstacle track (< 10)
        label[37:40, 29:32] = 1  # touches the 3x3 box diagonally: one component of 18 px
        label[14:19, 14:22] = 1  # a 40-px box
        label[16, 8:12] = 1  # an object reaching the void border
        raw = _score_from_label(rng, label, signal=1.2, noise=0.15, miss=0.05)
        frames.append((raw, label))
    cases["thin_single"] = {"track": "obstacle", "frames": frames}

    # An anomaly-free frame and a frame whose valid pixels are one constant score.
    frames = []
    label = _objects_frame(rng, (48, 64), n_big=2, n_small=0)
    frames.append((_score_from_label(rng, label, signal=1.0, noise=0.2), label))
    label = np.zeros((48, 64), np.uint8)
    frames.append((_score_from_label(rng, label, signal=1.0, noise=0.2), label))
    label = _objects_frame(rng, (48, 64), n_big=1, n_small=0)
    frames.append((np.full((48, 64), 0.3), label))
    cases["anomaly_free_constant"] = {"track": "obstacle", "frames": frames}

    # Float32 scores within float16's resolution of 0.5: float16 storage makes them ties.
    frames = []
    for _ in range(2):
        label = _objects_frame(rng, (48, 64), n_big=2, n_small=1)
        raw = _score_from_label(rng, label, signal=1.0, noise=0.3)
        frames.append(((0.5 + 2e-3 * raw).astype(np.float32), label))
    cases["float16_crowded"] = {"track": "obstacle", "frames": frames, "dtype": "float32"}

    # Large values (distances): float16's step is 2 above 2048.
    frames = []
    for _ in range(2):
        label = _objects_frame(rng, (48, 64), n_big=2, n_small=1)
        raw = _score_from_label(rng, label, signal=1.5, noise=0.3)
        frames.append((300.0 + 2500.0 * raw / 3.0, label))
    cases["large_values"] = {"track": "obstacle", "frames": frames}

    for case in cases.values():
        dtype = np.float32 if case.get("dtype") == "float32" else np.float16
        case["frames"] = [(s.astype(dtype), lab) for s, lab in case["frames"]]
        valid = np.concatenate([s[lab < VOID].astype(np.float64) for s, lab in case["frames"]])
        q = np.quantile(valid, [0.8, 0.93])
        # one threshold representable in float16, one that is not
        case["fixed"] = [float(np.float16(q[0])), float(q[1])]
    return cases


def write_inputs(cases: dict[str, dict], path: Path) -> None:
    arrays = {}
    for name, case in cases.items():
        for i, (score, label) in enumerate(case["frames"]):
            arrays[f"{name}/{i}/score"] = score
            arrays[f"{name}/{i}/label"] = label
    meta = {
        name: {"track": c["track"], "frames": len(c["frames"]), "fixed": c["fixed"]}
        for name, c in cases.items()
    }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path, **arrays)


@contextlib.contextmanager
def _stable_argsort():
    original = np.argsort
    np.argsort = lambda a, *args, **kwargs: original(a, kind="stable")
    try:
        yield
    finally:
        np.argsort = original


def _pixel_scalars(curve) -> dict:
    return {
        "area_PRC": float(curve.area_PRC),
        "area_ROC": float(curve.area_ROC),
        "tpr95_fpr": float(curve.tpr95_fpr),
        "best_f1": float(curve.best_f1),
        "best_f1_threshold": float(curve.best_f1_threshold),
    }


def run_toolkit(commit: str, cases: dict[str, dict]) -> tuple[dict, dict]:
    """Every case through the toolkit's own classes: (scalars, arrays)."""
    from road_anomaly_benchmark.metrics import MetricRegistry

    scalars: dict = {"commit": commit, "numpy": np.__version__, "cases": {}}
    arrays: dict = {}
    pixel = MetricRegistry.get("PixBinaryClass")
    for name, case in cases.items():
        frames = [(score.astype(np.float16), label) for score, label in case["frames"]]
        out: dict = {}
        with contextlib.redirect_stdout(io.StringIO()):
            results = [
                pixel.process_frame(label_pixel_gt=label, anomaly_p=score, visualize=False)
                for score, label in frames
            ]
            curve = pixel.aggregate(results, method_name=name, dataset_name="golden")
            pixel.save(curve, method_name=name, dataset_name="golden")
        out["pixel"] = {**_pixel_scalars(curve), "curve_points": int(len(curve.curve_tpr))}
        # Tied thresholds of different frames are ordered by numpy.argsort (not stable) and the
        # official evaluation feeds frames in the order its worker pool returns them
        # (imap_unordered). Where a tie decides a point that the curve keeps (index 0 at
        # 1c7804e; every point at 05552386), the result depends on that order: every frame
        # order's result is recorded, each distinct one once.
        orders = []
        for order in itertools.permutations(range(len(results))):
            with contextlib.redirect_stdout(io.StringIO()):
                again = pixel.aggregate([results[i] for i in order], name, "golden")
            values = _pixel_scalars(again)
            if values not in orders:
                orders.append(values)
        out["pixel_by_frame_order"] = orders
        # One tie order pinned: numpy.argsort made stable (a valid run of the same call) over
        # the frames in reverse, so that equal thresholds come in frame order after the
        # toolkit's [::-1]. Curves and scalars of this run are compared point by point.
        with contextlib.redirect_stdout(io.StringIO()), _stable_argsort():
            pinned = pixel.aggregate(results[::-1], method_name=name, dataset_name="golden")
        out["pixel_ties_in_frame_order"] = {
            **_pixel_scalars(pinned),
            "curve_points": int(len(pinned.curve_tpr)),
        }
        for field in ("curve_tpr", "curve_fpr", "curve_precision"):
            arrays[f"{name}/pixel_ties_in_frame_order/{field}"] = np.asarray(
                getattr(pinned, field), np.float32
            )
        arrays[f"{name}/pixel_ties_in_frame_order/thresholds"] = np.asarray(
            pinned.thresholds, np.float64
        )

        track = "SegEval-ObstacleTrack" if case["track"] == "obstacle" else "SegEval-AnomalyTrack"
        segment = MetricRegistry.get(track)
        runs = [("best_f1", None)] + [(f"fixed{i}", t) for i, t in enumerate(case["fixed"])]
        out["components"] = {}
        for run, threshold in runs:
            segment.cfg.thresh_p = threshold
            if threshold is None:
                segment.get_thresh_p_from_curve(name, "golden")  # the HDF5 round trip
            entry: dict = {
                "thresh_p": float(segment.cfg.thresh_p),
                "thresh_p_type": type(segment.cfg.thresh_p).__name__,
            }
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    per_frame = [
                        segment.process_frame(
                            label_pixel_gt=label, anomaly_p=score, visualize=False
                        )
                        for score, label in frames
                    ]
                    agg = segment.aggregate(per_frame, method_name=name, dataset_name="golden")
            except (ZeroDivisionError, ValueError, FloatingPointError) as error:
                entry["error"] = f"{type(error).__name__}: {error}"
                out["components"][run] = entry
                continue
            for key in ("sIoU_gt", "prec_pred", "f1_mean", "f1_25", "f1_50", "f1_75"):
                entry[key] = float(getattr(agg, key))
            for key in ("tp_mean", "fn_mean", "fp_mean"):
                entry[key] = float(getattr(agg, key))
            taus = segment.cfg.thresh_sIoU
            entry["counts"] = {
                kind: [int(sum(r[f"{kind}_{int(t * 100)}"] for r in per_frame)) for t in taus]
                for kind in ("tp", "fn", "fp")
            }
            for i, r in enumerate(per_frame):
                arrays[f"{name}/components/{run}/{i}/sIoU_gt"] = np.asarray(r.sIoU_gt, np.float64)
                arrays[f"{name}/components/{run}/{i}/prec_pred"] = np.asarray(
                    r.prec_pred, np.float64
                )
            out["components"][run] = entry
        scalars["cases"][name] = out
    return scalars, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", required=True, help="the toolkit commit, e.g. 1c7804e")
    parser.add_argument("--toolkit", required=True, help="folder holding road_anomaly_benchmark/")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()

    os.environ["DIR_OUTPUTS"] = tempfile.mkdtemp(prefix="smiyc_golden_")  # read at import
    sys.path.insert(0, str(Path(args.toolkit).resolve()))
    cases = build_cases(np.random.default_rng(args.seed))
    write_inputs(cases, HERE / "smiyc_inputs.npz")
    scalars, arrays = run_toolkit(args.commit, cases)
    scalars["seed"] = args.seed
    np.savez_compressed(HERE / f"smiyc_{args.commit}.npz", **arrays)
    (HERE / f"smiyc_{args.commit}.json").write_text(json.dumps(scalars, indent=1) + "\n")
    print(f"wrote {HERE}/smiyc_{args.commit}.{{npz,json}} and smiyc_inputs.npz")


if __name__ == "__main__":
    main()
