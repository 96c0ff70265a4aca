"""``python -m fsbench.score PRED ROOT --data NAME``: score anyone's saved anomaly score maps.

A referee for score maps written by any method, ours or another project's. ``PRED`` is a folder
with one score map per frame, named after the frame (``<name>.npy``; ``<name>_anomaly.npy`` and
the Fishyscapes submission's ``DDDD_anomaly.npy`` are matched too):

* ``.npy``: a real [H, W] array (``[1, H, W]`` is squeezed); integer maps are cast to float32;
* ``.npz``: its only array, or the one named by ``--key``;
* ``.png``: 16-bit grey (mode ``I;16``), read as value / 65535 (a probability in [0, 1]);
* ``.hdf5`` / ``.h5``: the SegmentMeIfYouCan toolkit's files, dataset ``value`` (float16), as its
  ``Evaluation.save_output`` writes them (``road_anomaly_benchmark/evaluation.py``). Needs h5py.

Higher = more anomalous, at the label's resolution. Frames are streamed one at a time (memory
does not grow with the number of frames), checked (size, NaN / inf on valid pixels, integer maps
that look like labels, AUROC < 0.5) and scored under a named protocol (``--protocol``):
``fishyscapes`` (default; the code path of ``evaluate.py``, :class:`AnomalyMetrics`), ``smiyc``
(the SegmentMeIfYouCan toolkit's binned pixel metrics and component metrics) or ``per_image``.
``--explain`` adds every convention in circulation side by side (``docs/scoring.md``).
Writes ``results.json`` and ``results.md`` into ``--out``.

Examples::

    python -m fsbench.score preds/ /data/smiyc --data smiyc_obstacle --protocol smiyc
    python -m fsbench.score preds/ /data/fishyscapes/fishyscapes_lostandfound \\
        --data fs_lost_and_found --laf-root /data/lostandfound --explain
    python -m fsbench.score preds/ --data synthetic --explain
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fsbench.data.anomaly_sets import anomaly_set
from fsbench.data.check import VOID, DatasetError, listing
from fsbench.data.synthetic import SyntheticScenes
from fsbench.metrics.anomaly import DEFAULT_BIN_BITS, AnomalyMetrics
from fsbench.metrics.components import (
    ROAD_ANOMALY_21_SIZES,
    ROAD_OBSTACLE_21_SIZES,
    ComponentMetrics,
)
from fsbench.metrics.protocols import (
    DEFAULT_SMIYC_COMMIT,
    FPR_RULES,
    PROTOCOLS,
    SMIYC_COMMITS,
    PerImageMetrics,
    SmiycPixelCurve,
    fpr_at_tpr_rules,
    trapezoid_aupr,
)
from fsbench.report import write_json_atomic

SCORE_SUFFIXES = (".npy", ".npz", ".png", ".hdf5", ".h5")
HDF5_KEY = "value"
DATASETS: dict[str, str] = {
    "fs_lost_and_found": "Fishyscapes Lost & Found (ROOT: the labels; --laf-root)",
    "fs_static": "Fishyscapes Static (ROOT holds fs_val_v3/; --cityscapes-root)",
    "road_anomaly": "Road Anomaly (ROOT is RoadAnomaly_jpg/)",
    "smiyc_anomaly": "SegmentMeIfYouCan RoadAnomaly21 (ROOT holds dataset_AnomalyTrack/)",
    "smiyc_obstacle": "SegmentMeIfYouCan RoadObstacle21 (ROOT holds dataset_ObstacleTrack/)",
    "synthetic": "fsbench's procedural anomaly split (no ROOT; --length, --size, --seed)",
}


class ScoreError(ValueError):
    """Score maps that cannot be scored as they are: missing, surplus, malformed or suspicious."""


# -- reading score maps ---------------------------------------------------------------------


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise ScoreError(
                f"{path} is a mode {image.mode!r} PNG; score PNGs must be 16-bit grey (mode "
                "'I;16', value / 65535 = score). An 8-bit or colour PNG is a label or a "
                "visualisation: save the scores as .npy or a 16-bit PNG"
            )
        values = np.asarray(image)
    if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
        raise ScoreError(f"{path} holds values outside 0..65535; save it as a 16-bit PNG")
    return values.astype(np.uint16)


def _pick(keys: Sequence[str], wanted: str | None, default: str | None, path: Path) -> str:
    """The array to read from a container file with arrays ``keys``."""
    if wanted is not None:
        if wanted not in keys:
            raise ScoreError(f"{path} has no array {wanted!r}; it holds {list(keys)}")
        return wanted
    if default is not None and default in keys:
        return default
    if len(keys) == 1:
        return keys[0]
    raise ScoreError(f"{path} holds arrays {list(keys)}; name the score map with --key NAME")


def read_score_file(path: str | Path, key: str | None = None) -> np.ndarray:
    """The raw array of a score file: any dtype, [H, W] or with leading singleton axes.

    16-bit PNGs come back as uint16 (``as_scores`` divides them by 65535).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return archive[_pick(archive.files, key, None, path)]
    if suffix == ".png":
        return _read_png(path)
    if suffix in (".hdf5", ".h5"):
        import h5py  # a core dependency, imported where it is used

        with h5py.File(path, "r") as handle:
            names = [name for name, item in handle.items() if isinstance(item, h5py.Dataset)]
            return handle[_pick(names, key, HDF5_KEY, path)][()]
    raise ScoreError(f"{path}: unknown score file type; use one of {', '.join(SCORE_SUFFIXES)}")


def as_scores(raw: np.ndarray, path: Path, label: np.ndarray) -> np.ndarray:
    """Check one raw score map against its label and return it as real [H, W] (float16/32/64).

    Raises:
        ScoreError: on a size other than the label's, a boolean map, an integer map holding only
            label-like values (0, 1, 2, 255), or NaN / inf on a valid (non-void) pixel.
    """
    score = np.asarray(raw)
    while score.ndim > 2 and score.shape[0] == 1:
        score = score[0]
    if score.shape != label.shape:
        raise ScoreError(
            f"{path}: the score map is {'x'.join(map(str, score.shape))} (HxW) but the frame's "
            f"label is {label.shape[0]}x{label.shape[1]}; save scores at the label's "
            "resolution (fsbench score never resizes them)"
        )
    if score.dtype == np.bool_:
        raise ScoreError(f"{path} is a boolean mask, not scores; save the continuous score map")
    if np.issubdtype(score.dtype, np.integer):
        values = np.unique(score)
        if values.size <= 3 and set(values.tolist()) <= {0, 1, 2, 255}:
            raise ScoreError(
                f"{path} is an integer map holding only {values.tolist()}: that looks like a "
                "label or a thresholded mask, not anomaly scores; save the continuous score"
            )
        scale = 65535.0 if path.suffix.lower() == ".png" else 1.0
        return (score.astype(np.float64) / scale).astype(np.float32)
    if not np.issubdtype(score.dtype, np.floating):
        raise ScoreError(f"{path} holds dtype {score.dtype}; scores must be real numbers")
    finite = np.isfinite(score)
    if not finite.all():
        bad = ~finite & (label != VOID)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ScoreError(
                f"{path}: {int(bad.sum())} valid (non-void) pixels are NaN or inf, the first "
                f"at (row, col) {first}; scores are never dropped silently, fix the map"
            )
        score = np.where(finite, score, 0).astype(score.dtype)  # void pixels never count
    return score


# -- matching files to frames ---------------------------------------------------------------


def index_score_files(folder: str | Path) -> dict[str, Path]:
    """``<stem> -> path`` for the score files directly in ``folder``.

    Only the known suffix is removed, so names with dots (SegmentMeIfYouCan ids) survive.
    ``*_segmentation.npy`` files (the Fishyscapes submission's class maps) are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ScoreError(f"the score folder {folder} does not exist or is not a folder")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if suffix not in SCORE_SUFFIXES or not path.is_file():
            continue
        stem = path.name[: -len(suffix)]
        if not stem.endswith("_segmentation"):
            found.setdefault(stem, []).append(path)
    clashes = [paths for paths in found.values() if len(paths) > 1]
    if clashes:
        raise ScoreError(
            f"{len(clashes)} frame(s) have several score files, e.g. {listing(clashes[0])}; "
            "keep one file per frame"
        )
    return {stem: paths[0] for stem, paths in found.items()}


def _candidates(name: str) -> list[str]:
    """File stems accepted for frame ``name``: itself, ``<name>_anomaly``, ``DDDD_anomaly``."""
    stems = [name, f"{name}_anomaly"]
    fishyscapes_id = re.match(r"^(\d+)_", name)
    if fishyscapes_id:
        stems.append(f"{fishyscapes_id.group(1)}_anomaly")
    return stems


def match_frames(
    names: Sequence[str], files: dict[str, Path], allow_surplus: bool = False
) -> list[Path]:
    """The score file of each frame, in frame order.

    Raises:
        ScoreError: listing the frames without a score file and, unless ``allow_surplus``, the
            score files that match no frame.
    """
    matched: list[Path] = []
    missing: list[str] = []
    used: set[str] = set()
    for name in names:
        stem = next((s for s in _candidates(name) if s in files and s not in used), None)
        if stem is None:
            missing.append(name)
        else:
            used.add(stem)
            matched.append(files[stem])
    surplus = sorted(set(files) - used)
    problems = []
    if missing:
        problems.append(f"{len(missing)} frame(s) have no score file: {listing(missing)}")
    if surplus and not allow_surplus:
        problems.append(
            f"{len(surplus)} score file(s) match no frame of the dataset: {listing(surplus)} "
            "(a different dataset or track? --allow-surplus ignores them)"
        )
    if problems:
        raise ScoreError(
            f"{len(names)} frames, {len(files)} score files: "
            + "; ".join(problems)
            + ". Name each file after its frame: <name>.npy (.npz, .png, .hdf5)"
        )
    return matched


# -- datasets ---------------------------------------------------------------------------------


def build_dataset(name: str, root: str | None, args: argparse.Namespace) -> Any:
    """The reader of dataset ``name`` (a key of ``DATASETS``) with the public constructors."""
    if name == "synthetic":
        height, width = args.size
        return SyntheticScenes("anomaly", args.length, height, width, seed=args.seed)
    if root is None:
        raise ScoreError(f"--data {name} needs ROOT, the dataset's folder")
    roots = {"laf_root": args.laf_root, "cityscapes_root": args.cityscapes_root}
    return anomaly_set(name, root, version=args.version, **roots)


def frame_names(dataset: Any) -> list[str]:
    """Every frame's name, without decoding any image when the reader keeps an index."""
    if hasattr(dataset, "samples"):
        return [sample.name for sample in dataset.samples]
    return [dataset[index]["name"] for index in range(len(dataset))]


def frame_label(dataset: Any, index: int) -> np.ndarray:
    """Frame ``index``'s anomaly label, uint8 [H, W] (0 / 1 / 255), images left unread."""
    if hasattr(dataset, "samples") and hasattr(dataset, "load_label"):
        return dataset.load_label(dataset.samples[index])
    return np.asarray(dataset[index]["anomaly"], dtype=np.uint8)


def stream(
    dataset: Any, files: Sequence[Path], key: str | None, negate: bool, desc: str, progress: bool
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(index, score, label)`` for each frame, checked by :func:`as_scores`, one at a time."""
    for index in tqdm(range(len(files)), desc=desc, disable=not progress, file=sys.stderr):
        label = frame_label(dataset, index)
        score = as_scores(read_score_file(files[index], key), files[index], label)
        yield index, (-score if negate else score), label


# -- scoring ----------------------------------------------------------------------------------


def _pixel_values(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("ap", "auroc", "fpr95", "n_anomaly", "n_inlier", "binning")
    return {key: metrics[key] for key in keys if key in metrics}


class _Accumulators:
    """What one pass over the frames feeds, by protocol (and everything for ``explain``)."""

    def __init__(
        self, protocol: str, explain: bool, bin_bits: int, smiyc_commit: str = DEFAULT_SMIYC_COMMIT
    ) -> None:
        wants = {protocol} | ({"fishyscapes", "smiyc", "per_image"} if explain else set())
        self.explain = explain
        self.pooled = AnomalyMetrics(bin_bits=bin_bits) if "fishyscapes" in wants else None
        self.with_anomaly = AnomalyMetrics(bin_bits=bin_bits) if explain else None
        # --explain shows the binned curve of every toolkit commit side by side; the protocol's
        # own curve is then one of them
        self.binned = {c: SmiycPixelCurve(commit=c) for c in SMIYC_COMMITS} if explain else {}
        self.smiyc = None
        if protocol == "smiyc":
            self.smiyc = self.binned.get(smiyc_commit) or SmiycPixelCurve(commit=smiyc_commit)
        self._curves = list(self.binned.values()) or ([self.smiyc] if self.smiyc else [])
        self.per_image = PerImageMetrics() if "per_image" in wants else None
        self.anomaly_free: list[str] = []

    def update(self, name: str, score: np.ndarray, label: np.ndarray) -> None:
        score_t, label_t = torch.from_numpy(score), torch.from_numpy(label)
        if self.pooled is not None:
            self.pooled.update(score_t, label_t)
        if not bool((label == 1).any()):
            self.anomaly_free.append(name)
        elif self.with_anomaly is not None:
            self.with_anomaly.update(score_t, label_t)
        for curve in self._curves:
            curve.update(score, label)
        if self.per_image is not None:
            self.per_image.update(name, score_t, label_t)


def _explain(acc: _Accumulators, per_image: dict[str, Any], n_frames: int) -> dict[str, Any]:
    """Every convention of ``FPR_RULES``, AP beside trapezoid AUPR, per-image, anomaly-free."""
    assert acc.pooled is not None and acc.with_anomaly is not None
    tps, fps = acc.pooled.cumulative_counts()
    pooled = _pixel_values(acc.pooled.compute())
    binned = {commit: _safe(curve.compute) for commit, curve in acc.binned.items()}
    fpr95 = fpr_at_tpr_rules(tps, fps)
    fpr95["binned"] = binned[DEFAULT_SMIYC_COMMIT].get("fpr95", float("nan"))
    return {
        "fpr95": fpr95,
        "precision_recall": {
            "ap": pooled["ap"],
            "aupr_trapezoid": trapezoid_aupr(tps, fps),
            **{f"smiyc_ap_{c}": binned[c].get("ap", float("nan")) for c in SMIYC_COMMITS},
        },
        "pooled": pooled,
        "per_image_mean": {key: per_image.get(key) for key in ("ap", "fpr95", "auroc")},
        "per_image_frames": per_image.get("n_frames", 0),
        "anomaly_free_frames": list(acc.anomaly_free),
        "without_anomaly_free": _pixel_values(acc.with_anomaly.compute()),
        "n_frames": n_frames,
    }


def _safe(compute, *args) -> dict[str, Any]:
    try:
        return compute(*args)
    except ValueError as error:
        return {"error": str(error)}


def _components(
    dataset: Any, files: Sequence[Path], threshold: float, track: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Second pass of ``smiyc``: the toolkit's component metrics at its pixel threshold."""
    sizes = ROAD_OBSTACLE_21_SIZES if track == "obstacle" else ROAD_ANOMALY_21_SIZES
    components = ComponentMetrics(SmiycPixelCurve.component_threshold(threshold), *sizes)
    # the toolkit scores the float16 maps it stored (Evaluation.save_output)
    for _, score, label in stream(dataset, files, args.key, args.negate, "components", args.bar):
        components.update(score.astype(np.float16), label)
    result = _safe(components.compute)
    result.update(threshold=components.threshold, track=track, sizes=list(sizes))
    return result


def score_maps(pred: str | Path, dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Score the maps in ``pred`` against ``dataset`` under ``args.protocol``; the payload.

    ``args`` holds ``protocol, explain, smiyc_commit, track, key, negate, allow_surplus, bar, worst,
    bin_bits`` (see :func:`main`).
    """
    names = frame_names(dataset)
    files = match_frames(names, index_score_files(pred), args.allow_surplus)
    started = time.perf_counter()
    acc = _Accumulators(args.protocol, args.explain, args.bin_bits, args.smiyc_commit)
    for index, score, label in stream(dataset, files, args.key, args.negate, "scoring", args.bar):
        try:
            acc.update(names[index], score, label)
        except ValueError as error:
            raise ScoreError(f"{files[index]}: {error}") from error
    results: dict[str, Any] = {}
    per_image = acc.per_image.compute(args.worst) if acc.per_image is not None else {}
    if args.protocol == "fishyscapes":
        assert acc.pooled is not None
        results = _pixel_values(acc.pooled.compute())
        results["anomaly_fraction"] = results["n_anomaly"] / (
            results["n_anomaly"] + results["n_inlier"]
        )
    elif args.protocol == "smiyc":
        assert acc.smiyc is not None
        results = acc.smiyc.compute()
        track = args.track or ("obstacle" if "obstacle" in args.data else "anomaly")
        results["components"] = _components(
            dataset, files, results["best_f1_threshold"], track, args
        )
    else:
        results = per_image
    payload: dict[str, Any] = {
        "protocol": args.protocol,
        "protocol_description": PROTOCOLS[args.protocol].format(commit=args.smiyc_commit),
        "data": args.data,
        "predictions": str(Path(pred).resolve()),
        "n_frames": len(names),
        "anomaly_free_frames": len(acc.anomaly_free),
        "results": results,
        "warnings": _warnings(results, args),
    }
    if args.explain:
        payload["explain"] = _explain(acc, per_image, len(names))
    payload["seconds"] = round(time.perf_counter() - started, 3)
    payload["frames_per_second"] = round(len(names) / max(payload["seconds"], 1e-9), 3)
    return payload


def _warnings(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    auroc = results.get("auroc")
    if auroc is None or auroc >= 0.5:
        return []
    flip = "drop --negate" if args.negate else "rerun with --negate"
    return [
        f"AUROC {auroc:.4f} < 0.5: the scores rank inliers above anomalies. fsbench expects "
        f"higher = more anomalous; if these maps use lower = more anomalous (a confidence, a "
        f"max-softmax probability), {flip}"
    ]


# -- reports ----------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    if not isinstance(value, (int, float)) or value != value:
        return "–"
    return f"{100 * value:.2f}"


def results_table(payload: dict[str, Any]) -> str:
    """A Markdown table whose header names the protocol."""
    protocol, results, data = payload["protocol"], payload["results"], payload["data"]
    head = [f"data ({payload['n_frames']} frames)"]
    if protocol == "per_image":
        cols = ["mean AP ↑", "median AP ↑", "mean FPR95 ↓", "mean AUROC ↑", "frames scored"]
        row = [results["ap"], results["ap_quantiles"]["50"], results["fpr95"], results["auroc"]]
        cells = [_pct(v) for v in row] + [str(results["n_frames"])]
    else:
        cols = ["AP ↑", "FPR95 ↓", "AUROC ↑"]
        cells = [_pct(results[k]) for k in ("ap", "fpr95", "auroc")]
    if protocol == "smiyc":
        comp = results["components"]
        cols += ["sIoU gt ↑", "PPV ↑", "mean F1 ↑", "threshold"]
        cells += [_pct(comp.get(k)) for k in ("siou_gt", "ppv", "mean_f1")]
        cells.append(f"{comp['threshold']:.6g}")
    lines = [
        f"| protocol `{protocol}`: " + " | ".join(head + cols) + " |",
        "|" + "---|" * (len(cols) + 1),
        f"| {data} | " + " | ".join(cells) + " |",
        "",
        f"Protocol `{protocol}`: {payload['protocol_description']}. Values in %.",
    ]
    if protocol == "per_image":
        lines += ["", "Worst frames by AP:", "", "| frame | AP | FPR95 | AUROC | anomaly % |"]
        lines.append("|---|---|---|---|---|")
        for frame in results["worst"]:
            values = [frame[k] for k in ("ap", "fpr95", "auroc", "anomaly_fraction")]
            lines.append(f"| {frame['name']} | " + " | ".join(_pct(v) for v in values) + " |")
    if protocol == "smiyc" and "error" in results["components"]:
        lines.append(f"Component metrics: {results['components']['error']}")
    if protocol == "smiyc":
        for message in results["components"].get("undefined", []):
            lines.append(f"Component metrics: {message}")
    return "\n".join(lines)


def explain_text(explain: dict[str, Any]) -> str:
    """The ``--explain`` report: one line per convention, with where it is used."""
    lines = ["FPR95 under each rule in circulation (same score maps, pooled, void dropped):"]
    for rule, (_, where) in FPR_RULES.items():
        lines.append(f"  {rule:<22} {_pct(explain['fpr95'][rule]):>7}  {where}")
    pr = explain["precision_recall"]
    lines += [
        "Area under precision-recall:",
        f"  AP (step sum)          {_pct(pr['ap']):>7}  Fishyscapes, scikit-learn, fsbench",
        f"  AUPR (trapezoid)       {_pct(pr['aupr_trapezoid']):>7}  sklearn auc(recall, precision)",
        f"  SMIYC AP @1c7804e      {_pct(pr['smiyc_ap_1c7804e']):>7}  toolkit, Aug 2023 (step)",
        f"  SMIYC AP @05552386     {_pct(pr['smiyc_ap_05552386']):>7}  2021 formula (trapezoid)",
    ]
    pooled, mean = explain["pooled"], explain["per_image_mean"]
    frames = explain["per_image_frames"]
    lines.append(f"Pooled vs per-image mean ({frames} frames with both classes):")
    for key, name in (("ap", "AP"), ("fpr95", "FPR95"), ("auroc", "AUROC")):
        lines.append(f"  {name:<6} pooled {_pct(pooled[key]):>7}   per-image {_pct(mean[key]):>7}")
    free, without = explain["anomaly_free_frames"], explain["without_anomaly_free"]
    lines.append(
        f"Anomaly-free frames: {len(free)} of {explain['n_frames']} "
        + (f"({listing(free, 3)})" if free else "")
    )
    for key, name in (("ap", "AP"), ("fpr95", "FPR95"), ("auroc", "AUROC")):
        lines.append(
            f"  {name:<6} kept (benchmarks) {_pct(pooled[key]):>7}   dropped "
            f"{_pct(without.get(key)):>7}"
        )
    return "\n".join(lines)


def write_outputs(out: str | Path, payload: dict[str, Any]) -> str:
    """Write results.json and results.md into ``out``; return the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", payload)
    parts = [
        f"# fsbench score: protocol `{payload['protocol']}`",
        f"predictions: `{payload['predictions']}`",
        results_table(payload),
    ]
    if "explain" in payload:
        text = explain_text(payload["explain"])
        parts.append(f"## Why numbers differ (`--explain`)\n\n```\n{text}\n```")
    parts += [f"**Warning:** {warning}" for warning in payload["warnings"]]
    markdown = "\n\n".join(parts) + "\n"
    (out / "results.md").write_text(markdown)
    return markdown


# -- command line -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fsbench.score",
        description="Score saved anomaly score maps under a named protocol (docs/scoring.md).",
    )
    parser.add_argument("pred", metavar="PRED", help="folder of score maps, one per frame")
    parser.add_argument("root", metavar="ROOT", nargs="?", help="the dataset's folder")
    parser.add_argument("--data", required=True, choices=sorted(DATASETS), help="the dataset")
    parser.add_argument("--protocol", default="fishyscapes", choices=list(PROTOCOLS))
    parser.add_argument("--explain", action="store_true", help="show every convention")
    parser.add_argument("--out", help="output folder (default ./fsbench_score/DATA_PROTOCOL)")
    parser.add_argument(
        "--smiyc-commit",
        default=DEFAULT_SMIYC_COMMIT,
        choices=sorted(SMIYC_COMMITS),
        help=f"smiyc: the toolkit commit to reproduce (default {DEFAULT_SMIYC_COMMIT}, the "
        "reference; 05552386: the 2021 leaderboard's formula)",
    )
    parser.add_argument("--track", choices=["anomaly", "obstacle"], help="smiyc component sizes")
    parser.add_argument("--key", help="array name inside .npz / .hdf5 files")
    parser.add_argument("--negate", action="store_true", help="score = -map (lower = anomalous)")
    parser.add_argument("--allow-surplus", action="store_true", help="ignore unmatched files")
    parser.add_argument("--worst", type=int, default=10, help="per_image: frames listed")
    parser.add_argument("--bin-bits", type=int, default=DEFAULT_BIN_BITS, help="fishyscapes bins")
    parser.add_argument("--quiet", dest="bar", action="store_false", help="no progress bar")
    parser.add_argument("--laf-root", help="fs_lost_and_found: the Lost and Found root")
    parser.add_argument("--cityscapes-root", help="fs_static: the Cityscapes root")
    parser.add_argument("--version", type=int, default=3, help="fs_static: 1, 2 or 3")
    parser.add_argument("--length", type=int, default=100, help="synthetic: frames")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0, help="synthetic: seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; exit status 0 on success, 1 on an error, 2 on a usage error."""
    args = _parser().parse_args(argv)
    out = Path(args.out or Path("fsbench_score") / f"{args.data}_{args.protocol}")
    try:
        dataset = build_dataset(args.data, args.root, args)
        payload = score_maps(args.pred, dataset, args)
    except (ScoreError, DatasetError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    markdown = write_outputs(out, payload)
    print(markdown)
    for warning in payload["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
