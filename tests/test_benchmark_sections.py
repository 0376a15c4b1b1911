"""A re-run of a benchmark section keeps what was measured by hand under it."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks")]

import run  # noqa: E402  (benchmarks/run.py)

WRITTEN = """# Benchmarks

## 7. Scaling

| a |
|---|

### 7b. Metadata (issue 14, by hand)

seven b

## 8. Forward recovery

| old table |
|---|

### 8a. Written by the run

generated

### 8b. Fixed costs (issue 14, by hand)

eight b

#### The search in rounds

rounds

## Goals

- 8. x: met
"""


def test_a_rerun_of_section_8_keeps_its_hand_measured_subsections(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(WRITTEN)
    report = run.Report()
    report.section("8. Forward recovery", "intro", ["run"], [["new"]], ["note"])
    report.sections[-1] += run.hand_written("8", path)

    updated = run.updated_report(path.read_text(), report)

    eight = updated.split("## 8. Forward recovery")[1].split("## Goals")[0]
    assert "| new |" in eight and "old table" not in eight
    assert (
        "### 8b. Fixed costs (issue 14, by hand)\n\neight b\n\n#### The search in rounds" in eight
    )
    assert "8a. Written by the run" not in eight  # what the run writes, it writes anew
    assert updated.count("### 7b. Metadata") == 1 and "seven b" not in eight
    assert run.hand_written("8", tmp_path / "missing.md") == ""
