"""fsbench installs as a package: the wheel carries the configs (``fsbench.conf``), and its console
scripts train and evaluate the synthetic default from an empty folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from setuptools import find_packages

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "outputs", "multirun", "__pycache__",
              "lightning_logs", ".pytest_cache", ".ruff_cache", "deploy")  # fmt: skip
CONF = ROOT / "conf"
TINY = [
    "data.shared.height=32",
    "data.shared.width=64",
    "data.val.length=2",
    "data.anomaly.synthetic_anomaly.length=2",
]


def test_pyproject_lists_every_package_and_every_config_folder():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    code = set(find_packages(str(ROOT), include=["fsbench*", "baselines*"]))
    folders = {
        ".".join(("fsbench.conf", *path.relative_to(CONF).parts))
        for path in [CONF, *CONF.rglob("*")]
        if path.is_dir() and path.name != "__pycache__"
    }
    assert listed == code | folders


def test_every_console_script_is_a_command_line_of_fsbench_cli():
    import importlib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {"train", "evaluate", "score", "submit", "export", "report", "data"}
    assert set(scripts) == {f"fsbench-{command}" for command in commands}
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module.split(".")[:2] == ["fsbench", "cli"], f"{name} = {target}"
        assert callable(getattr(importlib.import_module(module), function)), f"{name} = {target}"


def test_the_registry_reads_the_packaged_config_tree():
    from fsbench.registry import conf_dir, options

    assert conf_dir().resolve() == CONF.resolve()  # the checkout's conf/, installed editable
    assert "max_softmax" in options("head") and "nvidia_wrn38" in options("model")


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{' '.join(command)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def test_an_installed_wheel_trains_and_evaluates_from_an_empty_folder(tmp_path):
    """Wheel built from the checkout, installed into a fresh venv that reuses the test venv's
    packages (but not its editable fsbench), run from a folder holding nothing."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    # built from a copy: a checkout's build/ may hold files of older versions
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    _run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(tmp_path / "dist")],
        tmp_path, env,
    )  # fmt: skip
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
            env,
        ).strip()
    )  # noqa: E501
    (site / "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((tmp_path / "dist").glob("fsbench-*.whl"))
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)],
        tmp_path, env,
    )  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run(
        [str(python), "-c", "import fsbench.conf, fsbench.submit as s; "
         "from fsbench.metrics import native; "
         "print(fsbench.conf.__file__); print(','.join(s.available_heads())); "
         "print(native.SOURCE)"],
        empty, env,
    ).splitlines()  # fmt: skip
    assert Path(where[0]).is_relative_to(site), where[0]  # the installed copy, not the checkout
    assert "max_softmax" in where[1].split(",")
    # the compiled kernels' source ships, so an installed fsbench can build them
    assert Path(where[2]).is_relative_to(site) and Path(where[2]).is_file(), where[2]
    bin_dir = venv / "bin"
    _run(
        [str(bin_dir / "fsbench-train"), "trainer.max_steps=2", "data.train.length=4", *TINY],
        empty,
        env,
    )
    checkpoints = list((empty / "outputs" / "train").glob("*/checkpoints/last.ckpt"))
    assert len(checkpoints) == 1
    # a user's own config folder goes on Hydra's search path, beside the packaged tree
    mine = tmp_path / "my_conf" / "data"
    mine.mkdir(parents=True)
    (mine / "tiny.yaml").write_text(
        "defaults:\n  - synthetic\n  - _self_\n"
        "shared: {height: 32, width: 64}\nval: {length: 2}\n"
        "anomaly: {synthetic_anomaly: {length: 2}}\n"
    )
    out = _run(
        [str(bin_dir / "fsbench-evaluate"), "report_images=0", "head=[max_softmax]",
         f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "data=tiny"],
        empty, env,
    )  # fmt: skip
    assert "max_softmax" in out
    results = list((empty / "outputs" / "evaluate").glob("*/results.json"))
    assert len(results) == 1
    datasets = json.loads(results[0].read_text())["datasets"]
    assert datasets == {"synthetic_anomaly": 2, "inlier_val": 2}
