"""The framework never imports the methods: ``fsbench`` reaches ``baselines`` only through the
``_target_`` strings of configs, so a user's method and a baseline are on the same footing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_fsbench_module_imports_baselines():
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "fsbench").rglob("*.py"))
        if any(name.split(".")[0] == "baselines" for name in _imported_modules(path))
    ]
    assert offenders == [], f"fsbench modules importing baselines: {offenders}"


def test_importing_every_fsbench_module_leaves_baselines_unloaded():
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "fsbench").rglob("*.py")
        if path.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'baselines'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
