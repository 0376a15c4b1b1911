"""Per-session state: what happens when a session ends."""

from __future__ import annotations

import gc
import os
import threading

from dashboard import state


class _FakeRun:
    """Stands in for a TrainingRun: a thread that runs until stopped."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.stopped.wait, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()


def test_a_dropped_session_stops_its_training_and_deletes_its_exports():
    studio = state.Studio()
    run = _FakeRun()
    studio.runs.append(state.RunRecord(1, run, None, None, "adam", 1e-3, 1, 1, 1.0))
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
    studio.runs.append(state.RunRecord(1, run, None, None, "adam", 1e-3, 1, 1, 1.0))
    other = state.Opened(state.Source("upload", "upload:0", "other.pt"), None, None, None)
    studio.use(other)
    assert run.stopped.is_set()
    assert studio.runs == [] and studio.opened is other
