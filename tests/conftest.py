"""Suite-wide: let background work end before the interpreter does."""

from __future__ import annotations

import threading
import time

# Training and scoring run in daemon threads (the dashboard's sessions, TrainingRun). One
# still inside a torch operation when the interpreter tears down can abort the process
# (std::terminate) after every test passed; give them a moment to finish first.
SETTLE_SECONDS = 30.0


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ARG001 - pytest's hook signature
    deadline = time.monotonic() + SETTLE_SECONDS
    for thread in threading.enumerate():
        if thread is threading.current_thread() or not thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
