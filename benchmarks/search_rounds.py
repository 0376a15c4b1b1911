"""Section 8b by hand: the search screening in rounds against one round on the full set.

    python benchmarks/search_rounds.py [--rounds 3] [CASE ...]

Cases: `token` (the token seq2seq of section 8 at 2,000 sequences, every hidden value),
`demo` (the demo checkpoint and data, every hidden value but the forward) and
`demo_wiring` (the same with the forward searched too, as `recovery recover` and the
dashboard do). Each round runs, one fresh process after the other, `score_candidates` as
it ships (screening in rounds: successive halving over the screening samples, every
combination screened up to 2,048) and the same search as it was before the rounds: one
round, every combination on the full screening set (`search.SCREEN_START` set past the
screening set), and a beam above 1,024 combinations. Both see the same data, names,
budget (30 s) and threads ("auto"), so the per-round ratio compares the mechanism alone;
the table gives the median (min-max) of each and `uptime` before and after. Each run
counts its forwards by the samples they ran on, and says what it found.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
MODES = ("rounds", "one round")


def _inputs(case: str, **options: Any) -> tuple[Any, list[str]]:
    """The search of `case`, ready to run, and the names it searches."""
    from recovery_core.fit import search
    from recovery_core.session import Recovery

    if case == "token":
        import workloads

        folder = ROOT / "benchmarks" / "_work" / "forward"  # as run.py and forward_ratios.py
        folder.mkdir(parents=True, exist_ok=True)
        # The own-outputs data 8b's search figures were measured on: the search ranks by
        # the checkpoint's own head, which fits only that data (section 8's notes).
        weights, data = workloads.family_files("token", 2000, str(folder), "own_outputs")
    else:
        weights, data = (
            str(ROOT / "assets" / "demo_checkpoint.pt"),
            str(ROOT / "assets" / "demo_data.pt"),
        )
    recovery = Recovery.open(weights)
    recovery.map_data(data, (), None, None)
    names = [n for n in search.searchable_names(recovery.spec) if n not in recovery.fixed]
    if case == "demo":
        names = [n for n in names if n != "wiring"]
    options = {"budget_seconds": 30.0, "max_combinations": 10**6} | options
    return recovery.scorer(names, **options), names


def child(case: str, mode: str) -> dict[str, Any]:
    """One search in this process: seconds, forwards by samples, what it found."""
    from recovery_core.fit import search

    before = {"exhaustive_up_to": 1024} if mode == "one round" else {}  # the beam's start
    run, names = _inputs(case, **before)
    if mode == "one round":
        search.SCREEN_START = 10**9  # no round before the full screening set
    forwards: collections.Counter[int] = collections.Counter()
    score = search._score

    def counting(model: Any, values: Any, inputs: Any, target: Any, *rest: Any) -> Any:
        forwards[rest[1] if len(rest) > 1 and rest[1] is not None else len(target)] += 1
        return score(model, values, inputs, target, *rest)

    search._score = counting
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "scored": result.scored,
        "total": result.total,
        "strategy": result.strategy,
        "screening": result.screening,
        "forwards": dict(sorted(forwards.items())),
        "best": {k: repr(v) for k, v in result.best_values.items()},
        "tied": list(result.tied_names),
    }


def one(case: str, mode: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", case, mode]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rows(case: str, runs: list[dict[str, dict[str, Any]]]) -> list[str]:
    out = []
    for mode in MODES:
        seconds = [r[mode]["seconds"] for r in runs]
        ratios = [r[mode]["seconds"] / r[MODES[1]]["seconds"] for r in runs]
        last = runs[-1][mode]
        forwards = ", ".join(f"{n} on {s}" for s, n in last["forwards"].items())
        rounds = " → ".join(f"{k} on {n}" for n, k in last["screening"])
        same = "yes" if last["best"] == runs[-1][MODES[1]]["best"] else "**no**"
        out.append(
            f"| {case} | {mode} | {statistics.median(seconds):.2f} s "
            f"({min(seconds):.2f}–{max(seconds):.2f}) | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}–{max(ratios):.2f}) | {last['scored']} of {last['total']}, "
            f"{last['strategy']} | {rounds} | {forwards} | {same}; tied: "
            f"{', '.join(last['tied']) or 'none'} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=["token", "demo", "demo_wiring"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "MODE"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    load = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    table = [
        "| case | search | seconds | vs one round (per round) | combinations | screening "
        "rounds (combinations on samples) | forwards (count on samples) | same best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in args.cases:
        runs = [{mode: one(case, mode) for mode in MODES} for _ in range(args.rounds)]
        table += rows(case, runs)
    load.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("\n".join([*table, "", "load before: " + load[0], "load after: " + load[1]]))


if __name__ == "__main__":
    main()
