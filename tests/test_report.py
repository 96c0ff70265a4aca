"""Leaderboards over sweeps and the evaluation figures."""

import csv
import json
from pathlib import Path

import pytest

from fsbench.cli.report import main
from fsbench.plots import plot_curves
from fsbench.report import gather, results_table, write_leaderboard


def _run(folder: Path, overrides: list[str], results: dict) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "results.json").write_text(json.dumps({"results": results}))


def _entry(ap, fpr95, auroc=0.9, miou=0.7, dataset="synthetic_anomaly"):
    values = {"ap": ap, "fpr95": fpr95, "auroc": auroc, "anomaly_fraction": 0.02}
    return {"miou": miou, "datasets": {dataset: values}}


@pytest.fixture
def sweep(tmp_path) -> Path:
    _run(tmp_path / "0", ["head=energy", "head.energy.temperature=1", "checkpoint=a.ckpt"],
         {"energy": _entry(0.30, 0.40)})  # fmt: skip
    _run(tmp_path / "1", ["head=energy", "head.energy.temperature=2", "checkpoint=a.ckpt"],
         {"energy": _entry(0.50, 0.20)})  # fmt: skip
    _run(tmp_path / "2", ["head=[max_softmax,energy]", "checkpoint=a.ckpt"],
         {"max_softmax": _entry(0.10, 0.60), "energy": _entry(0.50, 0.10)})  # fmt: skip
    return tmp_path


def test_leaderboard_sorts_by_ap_and_lists_swept_parameters(sweep):
    rows, swept = gather(sweep)
    # temperature differs between runs; checkpoint does not; the head has its own column
    assert swept == ["head.energy.temperature"]
    assert [(r["run"], r["head"], r["ap"]) for r in rows] == [
        ("2", "energy", 0.50),  # ties on AP broken by the lower FPR95
        ("1", "energy", 0.50),
        ("0", "energy", 0.30),
        ("2", "max_softmax", 0.10),
    ]
    assert [r["head.energy.temperature"] for r in rows] == ["", "2", "1", ""]


def test_leaderboard_files_and_cli(sweep, capsys):
    assert main([str(sweep)]) == 0
    assert (
        "| 1 | 2 | energy | synthetic_anomaly |  | 50.00 | 10.00 | 90.00 | 70.00 |"
        in (sweep / "leaderboard.md").read_text()
    )
    with open(sweep / "leaderboard.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["rank"] for row in table] == ["1", "2", "3", "4"]
    assert float(table[1]["ap"]) == 0.5 and table[1]["head.energy.temperature"] == "2"
    assert (sweep / "leaderboard.png").stat().st_size > 1000
    assert "leaderboard.md" in capsys.readouterr().out
    assert main([str(sweep / "nothing")]) == 1
    assert "no results.json" in capsys.readouterr().err


def test_write_leaderboard_to_another_folder(sweep, tmp_path):
    out = tmp_path / "elsewhere"
    table = write_leaderboard(sweep, out)
    assert table.count("\n| ") == 4  # the four rows below the header
    assert (out / "leaderboard.csv").is_file()


def test_curve_figures_one_per_dataset(tmp_path):
    curve = {"tpr": [0.0, 0.5, 1.0], "fpr": [0.0, 0.1, 1.0], "precision": [1.0, 0.6, 0.02],
             "threshold": [2.0, 1.0, 0.0]}  # fmt: skip
    curves = {"energy": {"a": curve, "b": curve}, "max_softmax": {"a": curve}}
    results = {
        "energy": _entry(0.5, 0.2, dataset="a"),
        "max_softmax": _entry(0.1, 0.6, dataset="a"),
    }
    paths = plot_curves(curves, results, tmp_path)
    assert [p.name for p in paths] == ["curves_a.png", "curves_b.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_results_table_names_the_results_the_histogram_may_have_moved():
    crowded = _entry(0.25, 0.91, dataset="a")
    crowded["datasets"]["a"]["binning"] = {
        "ap_interval": [0.20, 0.70], "ap_error_bound": 0.45,
        "fpr95_interval": [0.50, 0.91], "fpr95_error_bound": 0.41,
        "auroc_interval": [0.899995, 0.900005], "auroc_error_bound": 5e-6,
    }  # fmt: skip
    exact = _entry(0.5, 0.2, dataset="a")
    exact["datasets"]["a"]["binning"] = {
        f"{key}_{kind}": value
        for key in ("ap", "fpr95", "auroc")
        for kind, value in (("interval", [0.2, 0.2]), ("error_bound", 0.0))
    }
    table = results_table(
        {"crowded": crowded, "exact": exact, "old": _entry(0.1, 0.6, dataset="a")}
    )
    (note,) = [line for line in table.splitlines() if "Approximate" in line]
    assert "`crowded` / `a`: AP in [20.00, 70.00], FPR95 in [50.00, 91.00]" in note
    assert "AUROC in" not in note  # its bound is below 1e-4
    assert "`exact`" not in note and "`old`" not in note
    assert "Approximate" not in results_table({"exact": exact})
