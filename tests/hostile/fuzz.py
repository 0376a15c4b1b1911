"""Mutation fuzzing of the loader over zip, legacy and safetensors seeds.

Each mutant of a seed in `tests/hostile/corpus/` is loaded from bytes (as an upload is);
a loaded one also has its statistics and histograms computed. The contract checked:
- every failure is a `RecoveryError` (anything else is a finding),
- no call outlives the time budget by more than 5 s,
- the parsing child stays under its memory budget (enforced by the child's rlimit: above
  it the load fails with a typed error) and this process's peak RSS stays under 1 GiB
  (its own VmHWM: ru_maxrss would include the peak of the process that started it,
  see `_memory.py`).

Mutations: byte flips, "interesting" values (0, 0xff, 2**31...) written over the data,
insertions, deletions, truncations, copies of one range over another, splices between
seeds, and structure-aware edits that keep the container valid: a zip rewritten with a
mutated member (data.pkl, a setting record or a storage) and a safetensors file with a
mutated header, so mutants get past the first checks into the pickle and torch.

    .venv/bin/python -m tests.hostile.fuzz --count 50000      # a long run
    .venv/bin/python -m tests.hostile.fuzz --count 64 --seed 11   # what the suite runs
"""

from __future__ import annotations

import argparse
import io
import random
import struct
import sys
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from recovery_core.errors import RecoveryError
from recovery_core.io.checkpoint import LoadLimits, load_checkpoint
from tests.hostile._memory import peak_rss_mib

CORPUS = Path(__file__).resolve().parent / "corpus"
BUDGET_SECONDS = 10.0
GRACE_SECONDS = 5.0
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1]


@dataclass
class Report:
    mutants: int = 0
    loaded: int = 0
    refused: int = 0
    untyped: list[str] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)
    slowest_seconds: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.untyped and not self.slow and self.peak_rss_mib < 1024

    def summary(self) -> str:
        return (
            f"{self.mutants} mutants: {self.loaded} loaded, {self.refused} refused with a typed "
            f"error, {len(self.untyped)} untyped exceptions, {len(self.slow)} past the budget + "
            f"{GRACE_SECONDS:g} s; slowest {self.slowest_seconds:.2f} s; peak RSS of this "
            f"process {self.peak_rss_mib:.0f} MiB"
        )


def seeds() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file()}


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """One mutant of `data`: structure-aware half the time when the format allows it."""
    if data.startswith(b"PK") and rng.random() < 0.5:
        try:
            return _mutate_zip_member(data, rng)
        except (zipfile.BadZipFile, ValueError):
            pass
    if data[8:9] == b"{" and rng.random() < 0.5:
        return _mutate_safetensors_header(data, rng)
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        _byte_edit(out, rng, others)
    return bytes(out)


def _byte_edit(out: bytearray, rng: random.Random, others: list[bytes]) -> None:
    if not out:
        out.extend(rng.randbytes(rng.randint(1, 64)))
        return
    at = rng.randrange(len(out))
    kind = rng.randrange(8)
    if kind == 0:
        out[at] ^= 1 << rng.randrange(8)
    elif kind == 1:
        out[at] = rng.randrange(256)
    elif kind == 2:
        value = rng.choice(INTERESTING)
        width = rng.choice((1, 2, 4, 8))
        packed = (value % (1 << (8 * width))).to_bytes(width, "little")
        out[at : at + width] = packed
    elif kind == 3:
        out[at:at] = rng.randbytes(rng.randint(1, 32))
    elif kind == 4:
        del out[at : at + rng.randint(1, 64)]
    elif kind == 5:
        del out[rng.randrange(len(out)) :]  # truncate
    elif kind == 6:
        start = rng.randrange(len(out))
        chunk = out[start : start + rng.randint(1, 64)]
        out[at : at + len(chunk)] = chunk
    else:
        other = rng.choice(others)
        if other:
            start = rng.randrange(len(other))
            out[at:] = other[start : start + rng.randint(1, 256)] + out[at:]


def _mutate_zip_member(data: bytes, rng: random.Random) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    infos = source.infolist()
    target = rng.choice(infos).filename
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for info in infos:
            content = bytearray(source.read(info.filename))
            if info.filename == target:
                for _ in range(rng.choice((1, 2, 3))):
                    _byte_edit(content, rng, [bytes(content)])
            out.writestr(zipfile.ZipInfo(info.filename), bytes(content))
    return buffer.getvalue()


def _mutate_safetensors_header(data: bytes, rng: random.Random) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    header = bytearray(data[8 : 8 + length])
    body = data[8 + length :]
    if header:
        at = rng.randrange(len(header))
        header[at : at + 1] = rng.choice(
            [b"9", b"0", b"-1", b"99999999999", b"[", b"{", b"]", b"}", b'"', b",", b"\\u0000"]
        )
    declared = len(header) if rng.random() < 0.8 else rng.choice(INTERESTING)
    return struct.pack("<Q", declared % 2**64) + bytes(header) + body


def exercise(data: bytes, limits: LoadLimits) -> bool:
    """Load like an upload; on success read every tensor's statistics and histogram."""
    checkpoint = load_checkpoint(data, name="mutant.pt", limits=limits)
    for info in checkpoint.tensors:
        checkpoint.stats(info.name)
        checkpoint.histogram(info.name, bins=8)
    return True


def run(count: int | None, seconds: float | None, seed: int = 0, log=None) -> Report:
    rng = random.Random(seed)
    corpus = list(seeds().values())
    limits = LoadLimits(time_budget_seconds=BUDGET_SECONDS, stats_time_seconds=BUDGET_SECONDS)
    report = Report()
    start = time.monotonic()
    while (count is None or report.mutants < count) and (
        seconds is None or time.monotonic() - start < seconds
    ):
        data = mutate(rng.choice(corpus), rng, corpus)
        report.mutants += 1
        began = time.monotonic()
        try:
            exercise(data, limits)
            report.loaded += 1
        except RecoveryError:
            report.refused += 1
        except Exception:  # noqa: BLE001 - the finding this fuzzer looks for
            report.untyped.append(_save_finding(data, traceback.format_exc(limit=4)))
        took = time.monotonic() - began
        report.slowest_seconds = max(report.slowest_seconds, took)
        if took > BUDGET_SECONDS + GRACE_SECONDS:
            report.slow.append(_save_finding(data, f"took {took:.1f} s"))
        if log is not None and report.mutants % 1000 == 0:
            report.peak_rss_mib = peak_rss_mib()
            log(report.summary())
    report.peak_rss_mib = peak_rss_mib()
    return report


def _save_finding(data: bytes, what: str) -> str:
    """Keep the input that broke the contract next to the corpus, for a regression test."""
    folder = CORPUS.parent / "findings"
    folder.mkdir(exist_ok=True)
    name = f"finding-{len(list(folder.iterdir())):04d}.bin"
    (folder / name).write_bytes(data)
    return f"{name}: {what.strip().splitlines()[-1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None, help="stop after this many mutants")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count is None and args.seconds is None:
        args.seconds = 60.0
    report = run(args.count, args.seconds, args.seed, log=lambda s: print(s, flush=True))
    print(report.summary())
    for finding in report.untyped + report.slow:
        print("  " + finding)
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
