"""`recovery inspect` as a whole process, side by side with the strongest usual ways (issue 14.5).

    .venv/bin/python benchmarks/inspect_whole.py            # small file and 100,000 keys, 5 rounds
    .venv/bin/python benchmarks/inspect_whole.py --rounds 3 --keys 20000

Besides the demo checkpoint, two files of `--keys` tiny tensors: a flat Sequential of
Linear layers (`{i}.weight`, `{i}.bias`), and a model's usual layout (an embedding,
repeated blocks `blocks.{i}.{mix,proj,norm}.{weight,bias}`, a head).

Every run is a fresh process (interpreter start and imports included), timed by wall clock
and measured by `/usr/bin/time` (peak RSS of the process and the children it waited for:
our forked file reader counts). The runs of one round follow each other, round after
round, so a change in the machine's load hits every side alike; each figure is the median
over the rounds, each ratio one of medians measured in the same run.

- ours: `python -m recovery_core inspect FILE` (names, shapes, layer tree, hyperparameters),
- torch.load: a script listing every shape with `torch.load(mmap=True, weights_only=True)`,
- safe_open: a script listing every shape with safetensors' `safe_open`,
- floor (zip files): read data.pkl from the zip and walk its opcodes with
  `pickletools.genops`, nothing else,
- bare: `python -c pass`, the interpreter's own time and memory.

In-process, ours (`load_checkpoint` + `describe`, imports done) and `safe_open` listing
shapes are timed apart in their own processes, best of several calls after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import cases  # noqa: E402

TORCH_LOAD = (
    "import sys, torch\n"
    "sd = torch.load(sys.argv[1], mmap=True, weights_only=True)\n"
    "print(sum(len(tuple(v.shape)) for v in sd.values()))\n"
)
SAFE_OPEN = (
    "import sys\n"
    "from safetensors import safe_open\n"
    "with safe_open(sys.argv[1], 'pt') as f:\n"
    "    print(sum(len(f.get_slice(k).get_shape()) for k in f.keys()))\n"
)
GENOPS_FLOOR = (
    "import pickletools, sys, zipfile\n"
    "archive = zipfile.ZipFile(sys.argv[1])\n"
    "data = archive.read(next(n for n in archive.namelist() if n.endswith('data.pkl')))\n"
    "print(sum(1 for _ in pickletools.genops(data)))\n"
)
IN_PROCESS = (
    "import statistics, sys, time\n"
    "path, which, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "if which == 'ours':\n"
    "    import recovery_core as rc\n"
    "    def once(): return rc.describe(rc.load_checkpoint(path))\n"
    "else:\n"
    "    from safetensors import safe_open\n"
    "    def once():\n"
    "        with safe_open(path, 'pt') as f:\n"
    "            return {k: f.get_slice(k).get_shape() for k in f.keys()}\n"
    "once()\n"
    "seconds = []\n"
    "for _ in range(calls):\n"
    "    start = time.perf_counter(); once(); seconds.append(time.perf_counter() - start)\n"
    "print(min(seconds))\n"
)


def safetensors_twin(path: Path) -> Path:
    """The same tensors as a .safetensors file (made once, beside the benchmark's inputs)."""
    twin = WORK / f"{path.stem}.safetensors"
    if not twin.exists():
        import torch
        from safetensors.torch import save_file

        state = torch.load(path, weights_only=True)
        tmp = twin.with_suffix(".tmp")
        save_file({k: v.contiguous().clone() for k, v in state.items()}, str(tmp))
        tmp.rename(twin)
    return twin


def files(keys: int, quick: bool) -> dict[str, tuple[Path, Path]]:
    """label -> (.pt, .safetensors): the demo checkpoint, and `keys` small tensors."""
    WORK.mkdir(parents=True, exist_ok=True)
    small = cases.DEMO_CHECKPOINT
    chosen = {"small (demo, 69 keys)": (small, safetensors_twin(small))}
    if not quick:
        many = cases.many_keys_checkpoint(WORK, keys)
        chosen[f"{keys:,} keys"] = (many, safetensors_twin(many))
        blocks = cases.many_blocks_checkpoint(WORK, keys)
        chosen[f"{keys:,} keys in blocks"] = (blocks, safetensors_twin(blocks))
    return chosen


def commands(pt: Path, st: Path, quick: bool) -> dict[str, list[str]]:
    """The whole-process runs; --quick (a smoke test in the suite) leaves out the ones
    that import torch (seconds each)."""
    runs = {
        "ours .pt": ["-m", "recovery_core", "inspect", str(pt)],
        "torch.load mmap .pt": ["-c", TORCH_LOAD, str(pt)],
        "floor: genops .pt": ["-c", GENOPS_FLOOR, str(pt)],
        "ours .safetensors": ["-m", "recovery_core", "inspect", str(st)],
        "safe_open .safetensors": ["-c", SAFE_OPEN, str(st)],
        "bare interpreter": ["-c", "pass"],
    }
    if quick:
        del runs["torch.load mmap .pt"], runs["safe_open .safetensors"]
    return runs


def whole_process(command: list[str]) -> dict[str, float]:
    """Wall time, CPU time (user + system, the reader it waited for included) and peak RSS
    of one process, from `/usr/bin/time` (its wait4 figures are the command's own)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        subprocess.run(
            ["/usr/bin/time", "-o", report.name, "-f", "%U %S %M", sys.executable, *command],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, check=True,
            env=cases.as_people_run_it(),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        user, system, peak_kib = report.read().split()[-3:]
    return {"seconds": seconds, "cpu": float(user) + float(system), "peak": int(peak_kib) * 1024}


def in_process(path: Path, which: str, calls: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(path), which, str(calls)],
        capture_output=True, text=True, cwd=ROOT, check=True, env=cases.as_people_run_it(),
    )  # fmt: skip
    return float(out.stdout.split()[-1])


def measure(keys: int, rounds: int, quick: bool) -> dict[str, Any]:
    """{file label: {run: {"seconds": [...], "peak": [...]}}} and the load seen."""
    results: dict[str, Any] = {"load": [os.getloadavg()[0]], "files": {}}
    for label, (pt, st) in files(keys, quick).items():
        runs: dict[str, dict[str, list[float]]] = {}
        for _ in range(rounds):
            for name, command in commands(pt, st, quick).items():
                done = whole_process(command)
                entry = runs.setdefault(name, {"seconds": [], "cpu": [], "peak": []})
                for field in entry:
                    entry[field].append(done[field])
            calls = 20 if label.startswith("small") else 1
            for which in () if quick else ("ours", "safe_open"):
                entry = runs.setdefault(f"in-process {which} .safetensors", {"seconds": []})
                entry["seconds"].append(in_process(st, which, calls))
            results["load"].append(os.getloadavg()[0])
        results["files"][label] = runs
    return results


def _s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def markdown(results: dict[str, Any], rounds: int) -> str:
    loads = results["load"]
    lines = [
        "### 1b. `recovery inspect` as a whole process (issue 14.5 and 14.3)",
        "",
        f"`benchmarks/inspect_whole.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{rounds} interleaved rounds, medians; load average {min(loads):.1f}-{max(loads):.1f} "
        "on the 2 cores while it ran). Memory is the peak RSS above the bare interpreter's (the "
        "larger of the CLI and its forked reader). Every run is a whole process; CPU time is "
        "user + system of the process and the reader it waited for, which moves less with the "
        "load than the wall clock.",
        "",
        "| file | run | wall time | its time / ours | CPU time | its CPU / ours | peak above the interpreter |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, runs in results["files"].items():
        lines += _rows(label, runs)
    lines += ["", *(f"- {name}: {'met' if met else '**not met**'}" for name, met in goals(results))]
    return "\n".join(lines)


def goals(results: dict[str, Any]) -> list[tuple[str, bool]]:
    """Issue 14's inspect goals, each a ratio of medians measured in this run."""
    return [goal for label, runs in results["files"].items() for goal in _goals(label, runs)]


def _goals(label: str, runs: dict[str, dict[str, list[float]]]) -> list[tuple[str, bool]]:
    def med(name: str, field: str = "seconds") -> float:
        return statistics.median(runs[name][field])

    found = []
    if "torch.load mmap .pt" in runs:
        ratio = med("torch.load mmap .pt") / med("ours .pt")
        found.append((
            f"1b. {label}: whole inspect ≥ 10× faster than the torch.load(mmap) script "
            f"({ratio:.1f}×)", ratio >= 10,
        ))  # fmt: skip
    if "in-process safe_open .safetensors" in runs:
        ratio = med("in-process ours .safetensors") / med("in-process safe_open .safetensors")
        found.append((f"1b. {label}: in-process within 3× of safe_open ({ratio:.0f}×)", ratio <= 3))
    if not label.startswith("small"):
        ours, floor = med("ours .pt"), med("floor: genops .pt")
        above = (med("ours .pt", "peak") - med("bare interpreter", "peak")) / 2**20
        found += [
            (f"1b. {label}: whole inspect under 2 s ({_s(ours)})", ours < 2),
            (
                f"1b. {label}: within 3× of the genops floor ({ours / floor:.1f}×)",
                ours <= 3 * floor,
            ),
            # 100 MB is 95.4 MiB: the figures are in MiB, the goal is in MB.
            (
                f"1b. {label}: under 100 MB above the interpreter ({above:.0f} MiB)",
                above < 1e8 / 2**20,
            ),
        ]
    return found


def _rows(label: str, runs: dict[str, dict[str, list[float]]]) -> list[str]:
    def med(name: str, field: str) -> float:
        return statistics.median(runs[name][field])

    bare_peak = med("bare interpreter", "peak")
    rows = []
    for name, entry in runs.items():
        mine = "ours .pt" if ".pt" in name else "ours .safetensors"
        if name.startswith("in-process"):
            mine = "in-process ours .safetensors"
        times = entry["seconds"]
        spread = f" ({_s(min(times))}-{_s(max(times))})" if len(times) > 1 else ""
        cpu, cpu_ratio, peak = "", "", ""
        if "cpu" in entry:
            cpu = _s(med(name, "cpu"))
            cpu_ratio = f"{med(name, 'cpu') / max(med(mine, 'cpu'), 1e-3):.3g}×"
            peak = f"{(med(name, 'peak') - bare_peak) / 2**20:.0f} MiB"
        rows.append(
            f"| {label} | {name} | {_s(med(name, 'seconds'))}{spread} "
            f"| {med(name, 'seconds') / med(mine, 'seconds'):.3g}× | {cpu} | {cpu_ratio} | {peak} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="the small file, one round")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    print(markdown(measure(args.keys, rounds, args.quick), rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
