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


def test_a_rerun_of_any_section_keeps_its_hand_measured_subsections_after_its_table() -> None:
    # Section 7 places none itself: a partial re-run must not drop 7b.
    report = run.Report()
    report.section("7. Scaling", "intro", ["a"], [["new"]], [])

    updated = run.updated_report(WRITTEN, report)

    seven = updated.split("## 7. Scaling")[1].split("## 8.")[0]
    assert "| new |" in seven and seven.count("### 7b. Metadata (issue 14, by hand)") == 1
    assert seven.index("| new |") < seven.index("seven b")


def test_a_full_run_keeps_the_hand_measured_subsections_and_sections() -> None:
    written = WRITTEN.replace("## Goals", "## 9. Measured apart (by hand)\n\nnine\n\n## Goals")
    report = run.Report()
    report.section("7. Scaling", "intro", ["a"], [["new"]], [])
    report.section("8. Forward recovery", "intro", ["run"], [["new"]], [])

    full = run.full_report("# Benchmarks", report, written)

    assert full.count("seven b") == 1 and full.count("eight b") == 1 and "nine" in full
    assert "8a. Written by the run" not in full and "old table" not in full
    assert full.index("## 7.") < full.index("## 8.") < full.index("## 9.") < full.index("## Goals")
