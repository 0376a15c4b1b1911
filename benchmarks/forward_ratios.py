"""Section 8 by hand, quickly: `recover` against the careful script, interleaved.

    python benchmarks/forward_ratios.py [--rounds 3] [--sequences 2000] [--target T] FAMILY ...

Each round runs, one whole process after the other, the careful script
(benchmarks/careful_seq2seq.py), `recover` with the hidden values fixed and `recover` with
everything found (both writing the TorchScript file only, `--formats ''`: the careful
script's output), so every round has its own baseline on a shared machine: the table gives
each run's median (min-max) seconds and the median of the per-round ratios to the careful
script, and `uptime` before and after. The naive loop and the other sizes are the full
benchmark's (`benchmarks/run.py --only forward`).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
import workloads  # noqa: E402

RUNS = ("careful script (least squares)", "recover, values fixed", "recover, everything found")


def one_round(family: str, weights: str, data: str, folder: str) -> dict[str, dict]:
    return {
        RUNS[0]: workloads.hand_script("careful_seq2seq.py", family, weights, data, folder),
        RUNS[1]: workloads.recover_family(family, weights, data, folder, True),
        RUNS[2]: workloads.recover_family(family, weights, data, folder, False, formats=""),
    }


def rows(family: str, sequences: int, rounds: list[dict[str, dict]]) -> list[str]:
    out = []
    for run in RUNS:
        seconds = [r[run]["seconds"] for r in rounds]
        ratios = [r[run]["seconds"] / r[RUNS[0]]["seconds"] for r in rounds]
        loss = f"{rounds[-1][run]['baseline']:.4g} → {rounds[-1][run]['final']:.4g}"
        out.append(
            f"| {family} | {sequences:,} | {run} | {statistics.median(seconds):.2f} s "
            f"({min(seconds):.2f}–{max(seconds):.2f}) | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}–{max(ratios):.2f}) | {loss} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument(
        "--target",
        choices=("new_head", "own_outputs"),
        default=workloads.FORWARD_TARGET,
        help="the data's targets (benchmarks/workloads.py FORWARD_TARGET)",
    )
    args = parser.parse_args()
    folder = workloads.cases.ROOT / "benchmarks" / "_work" / "forward"  # as run.py
    folder.mkdir(parents=True, exist_ok=True)
    load = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    table = ["| family | sequences | run | whole process | vs careful (per round) | loss |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for family in args.families:
        weights, data = workloads.family_files(family, args.sequences, str(folder), args.target)
        rounds = [one_round(family, weights, data, str(folder)) for _ in range(args.rounds)]
        table += rows(family, args.sequences, rounds)
    load.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("\n".join([*table, "", "load before: " + load[0], "load after: " + load[1]]))


if __name__ == "__main__":
    main()
