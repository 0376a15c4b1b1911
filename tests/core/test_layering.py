"""The library stays UI-free (the dashboard depends on it, never the other way round) and
made of small pieces."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parents[2] / "recovery_core"
UI_PACKAGES = {"streamlit", "plotly", "pandas"}
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250


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


def test_no_core_function_over_60_lines_nor_class_over_250():
    """Lines from `def`/`class` to the last line of the body (decorators excluded,
    docstring included), nested definitions too."""
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        where = path.relative_to(CORE.parent)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_FUNCTION_LINES
            elif isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                offenders.append(f"{where}:{node.name} ({lines} lines)")
    assert offenders == [], "over the size limit: " + ", ".join(offenders)
