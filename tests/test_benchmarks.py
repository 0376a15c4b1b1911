"""Smoke test: `benchmarks/run.py --quick` runs every section (the timings are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = (
    "## 1. Inspect a big checkpoint",
    "## 2. Training when only the head trains",
    "## 3. Closed form",
    "## 4. Hyperparameter search",
    "## 5. Export with verification",
    "## 6. Dashboard responsiveness",
    "## 7. Scaling of inspect",
    "## 8. Forward recovery",
    "## Goals",
)


@pytest.mark.slow
def test_quick_benchmark_runs_every_section() -> None:
    # The interpreter running the tests is the venv's; the script needs no other setup.
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,  # the quick run takes about a minute; this only stops a hang
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    missing = [title for title in SECTIONS if title not in out.stdout]
    assert not missing, f"sections not printed: {missing}\n{out.stdout[-3000:]}"
