"""The benchmark scripts: importable helpers, and no name that shadows a package."""

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_no_benchmark_script_shadows_a_package():
    # `python benchmarks/x.py` puts benchmarks/ first on sys.path: a benchmarks/baselines.py
    # would hide the baselines package from every script there.
    stems = {path.stem for path in BENCHMARKS.glob("*.py")}
    assert not stems & {"fsbench", "baselines", "torch", "hydra"}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_baseline_table_puts_published_numbers_beside_ours():
    table = _load("baseline_table").table
    results = {
        "max_softmax": {
            "miou": 0.7302,
            "datasets": {"synthetic_anomaly": {"ap": 0.088, "fpr95": 0.4962, "auroc": 0.8672}},
        },
        "my_head": {"datasets": {"synthetic_anomaly": {"ap": 0.5, "fpr95": 0.1, "auroc": 0.99}}},
    }
    lines = table(results).splitlines()
    assert lines[2] == (
        "| max_softmax | softmax max-prob | 1.77 / 44.85 | 12.88 / 39.83 | 27.97 / 72.05 "
        "| **8.80 / 49.62** | 86.72 | 73.02 |"
    )
    assert lines[3] == "| my_head | my_head | – | – | – | **50.00 / 10.00** | 99.00 | – |"
