"""A bounded mutation fuzz of the loader in every run (about 30 s); longer on demand:

RECOVERY_FUZZ_SECONDS=600 .venv/bin/python -m pytest tests/hostile/test_fuzz.py
.venv/bin/python -m tests.hostile.fuzz --count 50000
"""

from __future__ import annotations

import os
import time

from tests.hostile import fuzz


def test_corpus_has_one_seed_per_format() -> None:
    kinds = {name.rsplit(".", 1)[0].split("_")[-1] for name in fuzz.seeds()}
    assert {"zip", "legacy", "seed"} <= kinds  # seed_zip.pt, seed_legacy.pt, seed.safetensors
    assert len(fuzz.seeds()) >= 3


def test_the_seeds_load() -> None:
    for data in fuzz.seeds().values():
        assert fuzz.exercise(data, fuzz.LoadLimits())


def test_mutants_end_in_a_load_or_a_typed_error_within_budget() -> None:
    seconds = float(os.environ.get("RECOVERY_FUZZ_SECONDS", "30"))
    # A new seed per run covers new mutants; RECOVERY_FUZZ_SEED=<seed> replays a run.
    seed = int(os.environ.get("RECOVERY_FUZZ_SEED", int(time.time())))
    report = fuzz.run(count=None, seconds=seconds, seed=seed)
    said = f"seed {seed}: {report.summary()}"
    assert report.mutants >= 50, said
    assert report.refused > 0 and report.loaded > 0, said
    assert report.clean, said + "\n" + "\n".join(report.untyped + report.slow)
