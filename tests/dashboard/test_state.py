"""Per-session state: what happens when a session ends."""

from __future__ import annotations

import gc
import os
import threading

import recovery_core as rc
from dashboard import state


class _FakeRun:
    """Stands in for a TrainingRun: a thread that runs until stopped."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.stopped.wait, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()


def _record(run: _FakeRun) -> state.RunRecord:
    """A run record around a fake run (no spec or plan: these tests never read them)."""
    return state.RunRecord(
        number=1,
        run=run,  # type: ignore[arg-type]
        spec=None,  # type: ignore[arg-type]
        plan=None,  # type: ignore[arg-type]
        config=rc.TrainingConfig(method="adam", lr=1e-3, epochs=1, batch_size=1),
        baseline=1.0,
    )


def test_a_dropped_session_stops_its_training_and_deletes_its_exports():
    studio = state.Studio()
    run = _FakeRun()
    studio.runs.append(_record(run))
    workdir = studio.workdir
    open(os.path.join(workdir, "model.pt"), "wb").close()
    del studio
    gc.collect()
    run.thread.join(timeout=5)
    assert not run.thread.is_alive()
    assert not os.path.exists(workdir)


def test_opening_another_checkpoint_stops_the_running_training():
    studio = state.Studio()
    run = _FakeRun()
    run.status = "running"
    studio.runs.append(_record(run))
    other = state.Opened(state.Source("upload", "upload:0", "other.pt"), None, None, None)
    studio.use(other)
    assert run.stopped.is_set()
    assert studio.runs == [] and studio.opened is other
