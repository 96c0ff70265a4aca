"""Evaluation results as JSON and as a Fishyscapes-style table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

PROTOCOL = "fishyscapes"
PROTOCOL_DESCRIPTION = (
    "Fishyscapes pixel metrics: pooled over all pixels of all images, void (255) dropped, "
    "ties exact, scores binned at a relative width of 1.2e-4 (AP within ~1e-5 of the exact sort), "
    "AP as in scikit-learn (step sum), "
    "FPR at the first threshold with TPR >= 0.95"
)


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
    return "\n".join(lines + notes)


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
    table = results_table(payload["results"])
    (directory / "results.md").write_text(
        f"# fsbench results\n\ncheckpoint: `{payload.get('checkpoint')}`\n\n{table}\n"
    )
    return table
