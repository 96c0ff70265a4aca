"""Evaluation results as JSON and as a Fishyscapes-style table, and leaderboards over runs.

:func:`write_results` writes an evaluation's ``results.json`` and ``results.md`` (the evaluate
pipeline calls it); :func:`gather` and :func:`write_leaderboard` collect every result under a
folder. The command line ``fsbench-report`` is :mod:`fsbench.cli.report`.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path
from typing import Any

PROTOCOL = "fishyscapes"
# The one text of each protocol (torch-free: fsbench-report's leaderboard imports it).
#: Protocol name -> one line saying what it computes (printed in every result file).
PROTOCOLS: dict[str, str] = {
    "fishyscapes": (
        "Fishyscapes pixel metrics: pooled over all valid pixels of all frames, void (255) "
        "dropped, anomaly-free frames kept, scores cast to float32, ties exact, scores binned at "
        "a relative width of 1.2e-4 (AP within ~1e-5 of the exact sort on continuous scores; each "
        "result's bound is in results.json under `binning`), AP as in scikit-learn (step sum), "
        "FPR at the first threshold with TPR >= 0.95"
    ),
    "smiyc": (
        "SegmentMeIfYouCan toolkit: float16 scores, per-frame histograms on quantile edges "
        "(384 of the anomaly + 384 of the inlier scores), merged, as at toolkit commit {commit}; "
        "component metrics (sIoU_gt, PPV, mean F1) at the toolkit's best-F1 threshold"
    ),
    "per_image": (
        "per-frame exact AP / FPR95 / AUROC (float32, void dropped), then their mean and "
        "distribution over the frames that hold both classes"
    ),
}

PROTOCOL_DESCRIPTION = PROTOCOLS[PROTOCOL]


def _percent(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.2f}"


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: a row per head; AP, FPR95, AUROC per anomaly dataset; inlier mIoU (all %)."""
    datasets: list[str] = []
    for entry in results.values():
        datasets += [name for name in entry["datasets"] if name not in datasets]
    has_miou = any("miou" in entry for entry in results.values())
    header = ["head"] + [f"{name} {m}" for name in datasets for m in ("AP ↑", "FPR95 ↓", "AUROC ↑")]
    header += ["mIoU ↑"] if has_miou else []
    rows = []
    for head, entry in results.items():
        row = [head]
        for name in datasets:
            values = entry["datasets"].get(name, {})
            row += [_percent(values.get(key)) for key in ("ap", "fpr95", "auroc")]
        if has_miou:
            row.append(_percent(entry.get("miou")))
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    fractions = {}
    for entry in results.values():
        for name, values in entry["datasets"].items():
            fractions.setdefault(name, values.get("anomaly_fraction"))
    prevalence = [f"{name}: {_percent(fraction)}%" for name, fraction in fractions.items()]
    notes = [
        "",
        f"Protocol `{PROTOCOL}`: {PROTOCOL_DESCRIPTION}. Values in %.",
    ]
    if prevalence:
        notes.append("Anomaly pixel fraction (the AP of a random scorer): " + ", ".join(prevalence))
    notes += binning_notes(results)
    return "\n".join(lines + notes)


#: protocol -> the columns of its table: (header, how to read the cell from a result).
PROTOCOL_COLUMNS: dict[str, list[tuple[str, Any]]] = {
    "fishyscapes": [
        ("AP ↑", lambda v: v.get("ap")),
        ("FPR95 ↓", lambda v: v.get("fpr95")),
        ("AUROC ↑", lambda v: v.get("auroc")),
    ],
    "smiyc": [
        ("AP ↑", lambda v: v.get("ap")),
        ("FPR95 ↓", lambda v: v.get("fpr95")),
        ("AUROC ↑", lambda v: v.get("auroc")),
        ("sIoU gt ↑", lambda v: (v.get("components") or {}).get("siou_gt")),
        ("PPV ↑", lambda v: (v.get("components") or {}).get("ppv")),
        ("mean F1 ↑", lambda v: (v.get("components") or {}).get("mean_f1")),
    ],
    "per_image": [
        ("mean AP ↑", lambda v: v.get("ap")),
        ("median AP ↑", lambda v: (v.get("ap_quantiles") or {}).get("50")),
        ("mean FPR95 ↓", lambda v: v.get("fpr95")),
        ("mean AUROC ↑", lambda v: v.get("auroc")),
    ],
}


def protocol_table(
    protocol: str, rows: list[tuple[str, dict[str, Any]]], description: str, label: str = "head"
) -> str:
    """A Markdown table of one protocol: a row per (label, result), the protocol in the header.

    ``fsbench score`` (one row: the dataset) and ``evaluate.py`` (a row per head and dataset)
    both print their non-Fishyscapes protocols with it. Undefined results (``{"error": ...}``)
    show dashes and their message below the table.
    """
    columns = PROTOCOL_COLUMNS[protocol]
    header = [f"protocol `{protocol}`: {label}"] + [name for name, _ in columns]
    extra = {"smiyc": "threshold", "per_image": "frames scored"}.get(protocol)
    header += [extra] if extra else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for name, values in rows:
        cells = [name] + [_percent(read(values)) for _, read in columns]
        if protocol == "smiyc":
            threshold = (values.get("components") or {}).get("threshold")
            cells.append("–" if threshold is None else f"{threshold:.6g}")
        elif protocol == "per_image":
            cells.append(str(values.get("n_frames", "–")))
        lines.append("| " + " | ".join(cells) + " |")
        if "error" in values:
            notes.append(f"{name}: {values['error']}")
        components = values.get("components") or {}
        if "error" in components:
            notes.append(f"{name}, component metrics: {components['error']}")
        notes += [f"{name}, component metrics: {m}" for m in components.get("undefined", [])]
    lines += ["", f"Protocol `{protocol}`: {description}. Values in %."]
    return "\n".join(lines + [f"- {note}" for note in notes])


def protocol_tables(payload: dict[str, Any]) -> list[str]:
    """The tables of every protocol besides ``fishyscapes`` in an evaluation's results."""
    tables = []
    for protocol, description in (payload.get("protocols") or {}).items():
        if protocol == PROTOCOL:
            continue
        rows = [
            (f"{head} / {dataset}", values)
            for head, entry in payload["results"].items()
            for dataset, values in (entry.get("protocols") or {}).get(protocol, {}).items()
        ]
        tables.append(protocol_table(protocol, rows, description, "head / dataset"))
    return tables


def binning_notes(results: dict[str, dict[str, Any]]) -> list[str]:
    """Lines naming each head / dataset whose histogram error bound exceeds 1e-4, if any.

    Reads the ``binning`` entry :class:`fsbench.metrics.AnomalyMetrics` adds to each result: the
    interval that holds the exact (sorted) value of each metric (see
    :func:`fsbench.metrics.anomaly.binning_bounds`). Results without it (older files) are skipped.
    """
    # AnomalyMetrics' own limit (values are shown in % with two decimals, i.e. to 1e-4); imported
    # here, not at the top, so that fsbench-report's leaderboard does not load torch.
    from fsbench.metrics.anomaly import BINNING_WARN_ABOVE

    found = []
    for head, entry in results.items():
        for name, values in entry["datasets"].items():
            binning = values.get("binning") or {}
            parts = []
            for key, label in (("ap", "AP"), ("fpr95", "FPR95"), ("auroc", "AUROC")):
                bound = binning.get(f"{key}_error_bound")
                if bound is not None and bound > BINNING_WARN_ABOVE:
                    low, high = binning[f"{key}_interval"]
                    parts.append(f"{label} in [{_percent(low)}, {_percent(high)}]")
            if parts:
                found.append(f"`{head}` / `{name}`: " + ", ".join(parts))
    if not found:
        return []
    return [
        "",
        "**Approximate (score histogram)**: these scores are crowded within the histogram's "
        "resolution, and the exact values lie anywhere in (%): " + "; ".join(found) + ". "
        "Rescale or shift the scores, score in log space, raise `bin_bits`, or compute the exact "
        "`fsbench.metrics.anomaly_metrics`; exactly tied scores make the interval pessimistic.",
    ]


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n")
    os.replace(tmp, path)


def write_results(directory: str | Path, payload: dict[str, Any]) -> str:
    """Write results.json and results.md into ``directory``; return the table."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / "results.json", payload)
    tables = []
    if PROTOCOL in (payload.get("protocols") or {PROTOCOL: ""}):
        tables.append(results_table(payload["results"]))
    tables += protocol_tables(payload)
    table = "\n\n".join(tables)
    (directory / "results.md").write_text(
        f"# fsbench results\n\ncheckpoint: `{payload.get('checkpoint')}`\n\n{table}\n"
    )
    return table


def _overrides(run_dir: Path) -> dict[str, str]:
    """The command-line overrides Hydra recorded for a run (``.hydra/overrides.yaml``)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    pairs = [str(item) for item in OmegaConf.to_container(OmegaConf.load(path))]
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def gather(directory: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every (run, head, dataset) under ``directory``, best AP first; and the swept parameters.

    A parameter is "swept" when its override differs between runs (e.g.
    ``head.energy.temperature``, ``checkpoint``); those become leaderboard columns (the head has
    its own column).
    """
    directory = Path(directory)
    runs = sorted(path.parent for path in directory.rglob("results.json"))
    if not runs:
        raise FileNotFoundError(
            f"no results.json under {directory}; pass the folder of an evaluate.py run or sweep, "
            "e.g. multirun/evaluate/<time>"
        )
    overrides = {run: _overrides(run) for run in runs}
    keys = sorted({key for values in overrides.values() for key in values})
    shown = [k for k in keys if k != "head" and not k.startswith(("hydra.", "+head@"))]
    swept = [k for k in shown if len({values.get(k) for values in overrides.values()}) > 1]
    rows = []
    for run in runs:
        payload = json.loads((run / "results.json").read_text())
        for head, entry in payload["results"].items():
            for dataset, values in entry["datasets"].items():
                name = str(run.relative_to(directory)) if run != directory else "."
                rows.append(
                    {
                        "run": name,
                        "head": head,
                        "dataset": dataset,
                        **{key: overrides[run].get(key, "") for key in swept},
                        "ap": values["ap"],
                        "fpr95": values["fpr95"],
                        "auroc": values["auroc"],
                        "miou": entry.get("miou"),
                        "label": f"{name} {head} / {dataset}",
                    }
                )
    rows.sort(key=lambda row: (-row["ap"], row["fpr95"]))
    return rows, swept


def write_leaderboard(directory: str | Path, out: str | Path | None = None) -> str:
    """Write leaderboard.md, leaderboard.csv and leaderboard.png; return the Markdown table."""
    import csv

    from fsbench.plots import plot_leaderboard

    rows, swept = gather(directory)
    out = Path(out) if out is not None else Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["rank", "run", "head", "dataset", *swept, "ap", "fpr95", "auroc", "miou"]
    with open(out / "leaderboard.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for rank, row in enumerate(rows, start=1):
            writer.writerow([rank, *(row[c] for c in columns[1:])])
    header = ["#", "run", "head", "dataset", *swept, "AP ↑", "FPR95 ↓", "AUROC ↑", "mIoU ↑"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(rows, start=1):
        cells = [str(rank), row["run"], row["head"], row["dataset"], *(row[k] for k in swept)]
        cells += [_percent(row[k]) for k in ("ap", "fpr95", "auroc", "miou")]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n\nValues in %, sorted by AP. " + PROTOCOL_DESCRIPTION + ".\n"
    (out / "leaderboard.md").write_text(table)
    plot_leaderboard(rows, out / "leaderboard.png")
    return table


if __name__ == "__main__":  # python -m fsbench.report: the command line of fsbench.cli.report
    raise SystemExit(importlib.import_module("fsbench.cli.report").main())
