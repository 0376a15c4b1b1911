"""The library stays UI-free: the dashboard depends on it, never the other way round."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parents[2] / "recovery_core"
UI_PACKAGES = {"streamlit", "plotly", "pandas"}


def test_core_source_never_imports_ui_packages():
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in UI_PACKAGES]
    assert offenders == []


def test_importing_the_core_loads_no_ui_package():
    code = (
        "import sys, recovery_core, recovery_core.cli\n"
        f"print(sorted(m for m in {sorted(UI_PACKAGES)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
