"""Run untrusted parsing in a child process that a budget can really stop.

A thread cannot be cancelled: past its budget it kept a core busy and the process alive
(a FIFO never returned), and a crash inside torch (SIGFPE) took the whole server down.
Here the parse runs in a process forked from a clean, single-threaded server (multiprocessing's
"forkserver", with torch imported once), under resource limits:
- address space: what it has plus `memory_bytes` (MemoryError instead of the host swapping),
- CPU seconds: the wall-clock budget plus a margin (a backstop for the kill below),
- no files written, no core dumps.
Past the wall-clock budget the child is killed. A child that dies on a signal becomes a
`ReaderCrashedError`; the caller's process is never affected.

Only bytes come back: one JSON document and raw blobs, never a pickle, so a child taken
over by a hostile file still cannot make the parent run anything.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from recovery_core import errors
from recovery_core.errors import LimitExceededError, ReaderCrashedError, RecoveryError

# The child imports this module (and torch) once, in the fork server, not per file.
PRELOAD = ["recovery_core.checkpoint"]
_MAX_REPLY_BYTES = 1 << 31


def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    # A setting of the fork server this module starts; nothing else in the process uses it.
    context.set_forkserver_preload(PRELOAD)
    return context


def run_isolated(
    target: Callable[..., tuple[Any, list[bytes]]],
    args: tuple[Any, ...],
    *,
    display: str,
    seconds: float,
    memory_bytes: int,
) -> tuple[Any, list[bytes]]:
    """`target(*args)` in a limited child; returns its (JSON value, blobs) or raises the
    `RecoveryError` it raised (same class, same message)."""
    context = _context()
    multiprocessing.forkserver.ensure_running()  # its start-up is not the file's time
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_child,
        args=(writer, target, args, display, memory_bytes, seconds),
        name="recovery-parse",
        daemon=True,
    )
    deadline = time.monotonic() + seconds
    process.start()
    writer.close()
    try:
        head = _receive(reader, process, deadline, display, seconds)
        kind, payload = head[:2], json.loads(head[2:])
        if kind == b"er":
            raise _rebuild_error(payload)
        blobs = [
            _receive(reader, process, deadline, display, seconds) for _ in range(payload["blobs"])
        ]
        return payload["value"], blobs
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        reader.close()


def _receive(
    reader: multiprocessing.connection.Connection,
    process: Any,
    deadline: float,
    display: str,
    seconds: float,
) -> bytes:
    if reader.poll(max(0.0, deadline - time.monotonic())):
        try:
            return reader.recv_bytes(_MAX_REPLY_BYTES)
        except (EOFError, OSError):
            pass  # the child ended without answering: see how below
    else:
        if process.is_alive():
            process.kill()
            raise LimitExceededError(
                f"loading {display} took longer than {seconds:g} seconds, this tool's limit "
                "(time_budget_seconds); the work was stopped. The file is too large or too "
                "complex to inspect here.",
                limit="time_budget_seconds",
            )
    process.join()
    code = process.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        raise ReaderCrashedError(
            f"{display} made the file reader crash ({name}); it is damaged or hostile and "
            "was refused. Nothing else was affected."
        )
    raise ReaderCrashedError(
        f"{display} stopped the file reader (exit code {code}); it was refused."
    )


def _rebuild_error(payload: dict[str, Any]) -> RecoveryError:
    cls = getattr(errors, str(payload.get("type")), None)
    message = str(payload.get("message"))
    if isinstance(cls, type) and issubclass(cls, LimitExceededError):
        return cls(message, limit=str(payload.get("limit")))
    if isinstance(cls, type) and issubclass(cls, RecoveryError):
        return cls(message)
    return errors.CheckpointFormatError(message)


# --- in the child ------------------------------------------------------------------


def _child(
    writer: multiprocessing.connection.Connection,
    target: Callable[..., tuple[Any, list[bytes]]],
    args: tuple[Any, ...],
    display: str,
    memory_bytes: int,
    seconds: float,
) -> None:
    _limit_resources(memory_bytes, seconds)
    try:
        value, blobs = target(*args)
        reply = b"ok" + json.dumps({"value": value, "blobs": len(blobs)}).encode()
    except RecoveryError as exc:
        reply = _error(type(exc).__name__, str(exc), getattr(exc, "limit", None))
        blobs = []
    except MemoryError:
        blobs = []
        reply = _error(
            "LimitExceededError",
            f"{display} needs more than {memory_bytes // 2**20} MiB to read "
            "(parse_memory_bytes); it was refused.",
            "parse_memory_bytes",
        )
    except RecursionError:
        blobs = []
        reply = _error(
            "LimitExceededError",
            f"{display} nests its content too deeply to read (max_depth); it was refused.",
            "max_depth",
        )
    except BaseException as exc:  # noqa: BLE001 - any failure on a bad file is the file's
        blobs = []
        reply = _error(
            "CheckpointFormatError",
            f"{display} could not be read: the reader failed with {type(exc).__name__}; the "
            "file is damaged or not a checkpoint.",
            None,
        )
    try:
        writer.send_bytes(reply)
        for blob in blobs:
            writer.send_bytes(blob)
    finally:
        writer.close()


def _error(kind: str, message: str, limit: str | None) -> bytes:
    return b"er" + json.dumps({"type": kind, "message": message, "limit": limit}).encode()


def _limit_resources(memory_bytes: int, seconds: float) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * page
    resource.setrlimit(resource.RLIMIT_AS, (current + memory_bytes, current + memory_bytes))
    cpu = int(seconds) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
