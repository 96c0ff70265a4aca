"""``fsbench-score PRED ROOT --data NAME`` (``python -m fsbench.score``): score saved score maps.

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
    python -m fsbench.score preds/ --data synthetic_anomaly --explain
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor
from tqdm import tqdm

from fsbench.data.check import DatasetError, listing
from fsbench.data.score_maps import SavedScores, ScoreError
from fsbench.metrics.anomaly import DEFAULT_BIN_BITS
from fsbench.metrics.protocols import (
    DEFAULT_SMIYC_COMMIT,
    FPR_RULES,
    PROTOCOLS,
    SMIYC_COMMITS,
    fpr_at_tpr_rules,
    trapezoid_aupr,
)
from fsbench.metrics.suite import (
    describe,
    protocol_config,
    protocol_metric,
    protocol_values,
    update_metric,
)
from fsbench.registry import anomaly_sets, build_anomaly_set
from fsbench.report import write_json_atomic

# -- datasets ---------------------------------------------------------------------------------


def build_dataset(name: str, root: str | None, args: argparse.Namespace) -> Any:
    """The dataset of ``--data NAME``: :func:`fsbench.registry.build_anomaly_set` (the sets of
    ``conf/data/*.yaml``), with this command line's roots and options."""
    height, width = args.size if args.size is not None else (None, None)
    roots = {key: getattr(args, key, None) for key in _second_roots()}
    return build_anomaly_set(
        name,
        root,
        **roots,
        version=args.version,
        length=args.length,
        height=height,
        width=width,
        seed=args.seed,
    )


def _second_roots() -> dict[str, str]:
    """``root argument -> the sets that take it``, over every set (``--laf-root`` ...)."""
    found: dict[str, list[str]] = {}
    for name, entry in anomaly_sets().items():
        for key in entry.roots:
            found.setdefault(key, []).append(name)
    return {key: ", ".join(names) for key, names in found.items()}


def _data_help() -> str:
    parts = []
    for name, entry in anomaly_sets().items():
        needs = "ROOT" if entry.reads_files else "no ROOT"
        extra = ", ".join(f"--{root.replace('_', '-')}" for root in entry.roots)
        parts.append(f"{name}: {entry.title} ({needs}{'; ' + extra if extra else ''})")
    return "the dataset, a set of conf/data/*.yaml: " + "; ".join(parts)


# -- scoring ----------------------------------------------------------------------------------


def _pixel_values(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("ap", "auroc", "fpr95", "n_anomaly", "n_inlier", "binning")
    return {key: metrics[key] for key in keys if key in metrics}


def protocol_node(args: argparse.Namespace, protocol: str | None = None) -> Any:
    """The packaged ``conf/protocol/<protocol>.yaml`` with this command line's options."""
    protocol = protocol or args.protocol
    overrides: dict[str, Any] = {}
    if protocol == "fishyscapes":
        overrides["bin_bits"] = args.bin_bits
    elif protocol == "smiyc":
        overrides.update(commit=args.smiyc_commit, track=args.track)
    elif protocol == "per_image":
        overrides["worst"] = args.worst
    return protocol_config(protocol, overrides)


class _Explain:
    """What ``--explain`` adds beside the protocol's metric: every convention, one pass."""

    def __init__(self, protocol: str, metric: Any, args: argparse.Namespace) -> None:
        def own(name: str, node: Any = None) -> Any:
            node = node if node is not None else protocol_node(args, name)
            return metric if name == protocol else protocol_metric(name, node, args.data)

        self.pooled = own("fishyscapes")
        self.with_anomaly = protocol_metric("fishyscapes", protocol_node(args, "fishyscapes"), "")
        smiyc = protocol_node(args, "smiyc")
        self.binned = {}
        for commit in SMIYC_COMMITS:
            if protocol == "smiyc" and commit == args.smiyc_commit:
                self.binned[commit] = metric  # the protocol's own curve is one of them
            else:
                node = OmegaConf.merge(smiyc, {"commit": commit, "components": False})
                self.binned[commit] = protocol_metric("smiyc", node, args.data)
        self.per_image = own("per_image")
        self.metrics = [self.pooled, self.per_image, *self.binned.values()]

    def update(self, score: Tensor, label: Tensor, name: str, has_anomaly: bool) -> None:
        for metric in {id(m): m for m in self.metrics}.values():
            update_metric(metric, score, label, [name])
        if has_anomaly:
            self.with_anomaly.update(score, label)


def _explain(
    acc: _Explain, anomaly_free: list[str], per_image: dict[str, Any], n_frames: int
) -> dict[str, Any]:
    """Every convention of ``FPR_RULES``, AP beside trapezoid AUPR, per-image, anomaly-free."""
    tps, fps = acc.pooled.cumulative_counts()
    pooled = _pixel_values(acc.pooled.compute())
    binned = {}
    for commit, metric in acc.binned.items():
        values = _safe(metric.compute)
        binned[commit] = {k: v for k, v in values.items() if k != "components"}
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
        "anomaly_free_frames": list(anomaly_free),
        "without_anomaly_free": _pixel_values(_safe(acc.with_anomaly.compute)),
        "n_frames": n_frames,
    }


def _safe(compute, *args) -> dict[str, Any]:
    try:
        return compute(*args)
    except ValueError as error:
        return {"error": str(error)}


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch's CPU operations on one thread inside, restoring the count after.

    The scorer's own work is one thread's (numpy passes, one histogram fold, reductions over
    the occupied bins) while :class:`SavedScores` reads ahead on another; torch's intra-op
    threads would only make each reduction a parallel region that waits for a thread busy
    reading (benchmarks/README.md, "The referee").
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def score_maps(pred: str | Path, dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Score the maps in ``pred`` against ``dataset`` under ``args.protocol``; the payload.

    The protocol's metric is the one ``evaluate.py protocol=[...]`` builds
    (:mod:`fsbench.metrics.suite`), fed the saved maps instead of a head's output: the two give
    the same numbers on the same maps. ``args`` holds ``data, protocol, explain, smiyc_commit,
    track, key, negate, allow_surplus, bar, worst, bin_bits`` (see :func:`main`).
    """
    with one_torch_thread():
        return _score_maps(pred, dataset, args)


def _score_maps(pred: str | Path, dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    frames = SavedScores(pred, dataset, args.key, args.negate, args.allow_surplus)
    started = time.perf_counter()
    node = protocol_node(args)
    metric = protocol_metric(args.protocol, node, args.data)
    explain = _Explain(args.protocol, metric, args) if args.explain else None
    anomaly_free: list[str] = []
    progress = tqdm(frames, desc="scoring", disable=not args.bar, file=sys.stderr)
    for index, frame in enumerate(progress):
        score, label, name = frame["score"], frame["anomaly"], frame["name"]
        score_t, label_t = torch.from_numpy(score)[None], torch.from_numpy(label)[None]
        has_anomaly = bool((label == 1).any())
        if not has_anomaly:
            anomaly_free.append(name)
        try:
            if explain is not None:
                explain.update(score_t, label_t, name, has_anomaly)
            else:
                update_metric(metric, score_t, label_t, [name])
        except ValueError as error:
            raise ScoreError(f"{frames.files[index]}: {error}") from error
    results = protocol_values(args.protocol, metric)
    if args.protocol == "fishyscapes":
        results = {**_pixel_values(results), "anomaly_fraction": results["anomaly_fraction"]}
    payload: dict[str, Any] = {
        "protocol": args.protocol,
        "protocol_description": describe(args.protocol, node),
        "data": args.data,
        "predictions": str(Path(pred).resolve()),
        "n_frames": len(frames),
        "anomaly_free_frames": len(anomaly_free),
        "results": results,
        "warnings": _warnings(results, args),
    }
    if explain is not None:
        per_image = results if args.protocol == "per_image" else _safe(explain.per_image.compute)
        payload["explain"] = _explain(explain, anomaly_free, per_image, len(frames))
    payload["seconds"] = round(time.perf_counter() - started, 3)
    payload["frames_per_second"] = round(len(frames) / max(payload["seconds"], 1e-9), 3)
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
    parser.add_argument("--data", required=True, choices=sorted(anomaly_sets()), help=_data_help())
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
    for key, users in _second_roots().items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, help=f"{users}: its {key}")
    parser.add_argument("--version", type=int, help="fs_static: 1, 2 or 3 (default: the config's)")
    parser.add_argument("--length", type=int, help="synthetic_anomaly: frames (default 100)")
    parser.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), help="synthetic_anomaly: 128 256"
    )
    parser.add_argument("--seed", type=int, help="synthetic_anomaly: seed (default 0)")
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
