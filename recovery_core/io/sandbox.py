"""Run untrusted parsing in a child process that a budget can really stop.

A thread cannot be cancelled: past its budget it kept a core busy and the process alive
(a FIFO never returned), and a crash inside torch (SIGFPE) took the whole server down.
Here every parse runs in a process forked from a small, single-threaded parse server (a
fresh interpreter started once per process, with torch already imported, so a fork costs
milliseconds), under resource limits:
- address space: what it has plus `memory_bytes` (MemoryError instead of the host swapping),
- CPU seconds: the wall-clock budget plus a margin (a backstop for the kill below),
- no files written, no core dumps.
Past the wall-clock budget the caller kills the child. A child that dies on a signal
becomes a `ReaderCrashedError`; the caller's process is never affected.
A caller that has not imported torch and runs a single thread (`recovery inspect`) is
as small and single-threaded as the server: it forks the same limited child itself.

The server is our own rather than multiprocessing's: multiprocessing re-imports the
caller's main script in each child (a script without an `if __name__ == "__main__"` guard
would run again) and returns results as pickles. Here the request is a pickle from the
trusted caller to the child; everything coming back is bytes: JSON and raw blobs, never a
pickle, so a child taken over by a hostile file still cannot make the caller run anything.

Frames on a per-request socket: kind (1 byte), length (8 bytes), payload. The child sends
`p` (its pid) first, then `o` (JSON value and blob count) and `b` blobs, or `e` (an error);
the server adds `x` (the exit status) once the child has ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import pickle
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recovery_core import errors
from recovery_core.errors import LimitExceededError, ReaderCrashedError, RecoveryError

# Imported once by the server, so each forked child starts with torch loaded; by the
# server of a process that has not imported torch itself (`recovery inspect` lists names
# and shapes without it), only what listing needs: a child imports torch if it must.
PRELOAD = ("recovery_core.io.checkpoint", "recovery_core.io.data")  # data: datasets are checked too
LIGHT_PRELOAD = ("recovery_core.io.checkpoint",)
_STARTUP_SECONDS = 180.0  # importing torch on a busy machine; not charged to any file
_HEADER = struct.Struct("<cQ")


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
    request = pickle.dumps(
        (target.__module__, target.__qualname__, args, display, memory_bytes, seconds)
    )
    if _fork_here():
        return _run_forked(request, display, seconds)
    mine, theirs = socket.socketpair()
    with mine:
        try:
            _submit(request, theirs)
        finally:
            theirs.close()
        return _collect(mine, display, seconds)


def _fork_here() -> bool:
    """A caller that has not imported torch and runs one thread (`recovery inspect`) is
    what the parse server is: small and single-threaded. It forks the limited child itself
    (milliseconds) instead of starting a server (a fresh interpreter: ~0.3 s, most of a
    small file's whole inspect). A threaded caller (the app) must not fork: it uses the
    server."""
    return (
        "torch" not in sys.modules
        and threading.active_count() == 1
        and threading.current_thread() is threading.main_thread()
    )


def _run_forked(request: bytes, display: str, seconds: float) -> tuple[Any, list[bytes]]:
    """The same child as the server forks (same limits, same frames), forked from here;
    its exit status is read here, where the server would have sent it as `x`."""
    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        mine.close()
        _quiet_stdio()
        _child(theirs, request)
    theirs.close()
    reaped = False

    def exit_status() -> int:
        nonlocal reaped
        _, status = os.waitpid(pid, 0)
        reaped = True
        return os.waitstatus_to_exitcode(status)

    try:
        with mine:
            return _collect(mine, display, seconds, exit_status=exit_status)
    finally:
        if not reaped:
            _kill(pid)  # done sending (or past its budget): it has nothing left to do
            os.waitpid(pid, 0)


def _quiet_stdio() -> None:
    """Like the server's: a child's output (torch's warnings) never reaches our terminal."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _submit(request: bytes, reply: socket.socket) -> None:
    """Hand the request to the parse server, starting a new one if it has gone away."""
    for attempt in range(2):
        try:
            _server(fresh=attempt > 0).submit(request, reply)
            return
        except OSError:
            continue
    raise ReaderCrashedError("the file reader could not be reached; try again.")


def _collect(
    sock: socket.socket,
    display: str,
    seconds: float,
    *,
    exit_status: Callable[[], int] | None = None,
) -> tuple[Any, list[bytes]]:
    """The child's frames until its result; `exit_status` (a child forked here) waits for
    the child's status when its socket closes early, where the server sends `x`."""
    deadline = time.monotonic() + seconds
    pid = None
    value: Any = None
    blobs: list[bytes] = []
    expected = -1
    while True:
        try:
            kind, payload = _read_frame(sock, deadline)
        except TimeoutError:
            if pid is not None:
                _kill(pid)
            raise LimitExceededError(
                f"loading {display} took longer than {seconds:g} seconds, this tool's limit "
                "(time_budget_seconds); the work was stopped. The file is too large or too "
                "complex to inspect here.",
                limit="time_budget_seconds",
            ) from None
        except EOFError:
            status = exit_status() if exit_status is not None else 0
            if status:
                raise _crashed(display, status) from None
            raise ReaderCrashedError(
                f"{display} stopped the file reader; it was refused."
            ) from None
        if kind == b"p":
            pid = int(payload)
        elif kind == b"e":
            raise _rebuild_error(json.loads(payload))
        elif kind == b"o":
            reply = json.loads(payload)
            value, expected = reply["value"], reply["blobs"]
        elif kind == b"b":
            blobs.append(payload)
        elif kind == b"x":
            raise _crashed(display, json.loads(payload)["status"])
        if expected >= 0 and len(blobs) == expected:
            return value, blobs


def _crashed(display: str, status: int) -> ReaderCrashedError:
    name = signal.Signals(-status).name if status < 0 else f"exit code {status}"
    return ReaderCrashedError(
        f"{display} made the file reader crash ({name}); it is damaged or hostile and "
        "was refused. Nothing else was affected."
    )


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended meanwhile


def _read_frame(sock: socket.socket, deadline: float) -> tuple[bytes, bytes]:
    header = _read_exactly(sock, _HEADER.size, deadline)
    kind, length = _HEADER.unpack(header)
    return kind, _read_exactly(sock, length, deadline)


def _read_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    chunks, got = [], 0
    while got < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(min(left, 86_400.0))
        try:
            chunk = sock.recv(min(size - got, 1 << 20))
        except TimeoutError:
            raise TimeoutError from None
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _rebuild_error(payload: dict[str, Any]) -> RecoveryError:
    cls = getattr(errors, str(payload.get("type")), None)
    message = str(payload.get("message"))
    if isinstance(cls, type) and issubclass(cls, LimitExceededError):
        return cls(message, limit=str(payload.get("limit")))
    if isinstance(cls, type) and issubclass(cls, RecoveryError):
        return cls(message)
    return errors.CheckpointFormatError(message)


# --- the parse server, as the caller sees it -----------------------------------------------


class _ServerHandle:
    def __init__(self, light: bool | None = None) -> None:
        light = "torch" not in sys.modules if light is None else light
        control, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from recovery_core.io.sandbox import serve; "
                f"serve({theirs.fileno()}, light={light})",
            ],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # torch's warnings in a child must not reach our stderr
            env=env,
            close_fds=True,
        )
        theirs.close()
        self.control = control
        self.owner = os.getpid()
        self._send = threading.Lock()
        control.settimeout(_STARTUP_SECONDS)
        try:
            ready = control.recv(1)
        except TimeoutError:
            ready = b""
        control.settimeout(None)
        if ready != b"R":
            self.process.kill()
            raise ReaderCrashedError("the file reader could not start; try again.")

    def alive(self) -> bool:
        # A forked copy of the caller must not share its server (nor wait on its process).
        return self.owner == os.getpid() and self.process.poll() is None

    def submit(self, request: bytes, reply: socket.socket) -> None:
        with self._send:
            socket.send_fds(self.control, [request], [reply.fileno()])


_lock = threading.Lock()
_handle: _ServerHandle | None = None


def _server(*, fresh: bool = False, light: bool | None = None) -> _ServerHandle:
    global _handle
    with _lock:
        if fresh or _handle is None or not _handle.alive():
            _handle = _ServerHandle(light)
        return _handle


def prestart() -> None:
    """Start the parse server now, in the background, with torch preloaded: for a caller
    about to import torch itself (`recovery recover`), so that the two imports overlap
    instead of following each other. The first request waits for it (or, if it could not
    start, starts one and says what fails)."""
    threading.Thread(target=_prestarted, name="parse-server-start", daemon=True).start()


def _prestarted() -> None:
    with contextlib.suppress(RecoveryError, OSError):
        _server(light=False)


# --- the parse server itself (a separate, single-threaded interpreter) ----------------------


def serve(control_fd: int, light: bool = False) -> None:
    """Fork one limited child per request until the caller closes the control socket."""
    for module in LIGHT_PRELOAD if light else PRELOAD:
        importlib.import_module(module)
    control = socket.socket(fileno=control_fd)
    replies: dict[int, socket.socket] = {}  # child pid -> its reply socket (for `x`)

    def reap(_signum: int, _stack: Any) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            reply = replies.pop(pid, None)
            if reply is not None:
                code = os.waitstatus_to_exitcode(status)
                try:
                    reply.setblocking(False)
                    reply.sendall(_frame(b"x", json.dumps({"status": code}).encode()))
                except OSError:
                    pass  # the caller has gone (or stopped reading): nothing to tell
                reply.close()

    signal.signal(signal.SIGCHLD, reap)
    control.sendall(b"R")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 20, 1)
        except OSError:
            return
        if not message or not fds:
            return  # the caller closed the control socket: it has exited
        reply = socket.socket(fileno=fds[0])
        _import_once(message)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                _child(reply, message)  # never returns
            replies[pid] = reply
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def _import_once(message: bytes) -> None:
    """A light server imports a request's module itself, once (datasets need torch), so
    that every later child starts with it instead of importing it again."""
    try:
        module = pickle.loads(message)[0]  # our own caller's request, not a file's bytes
        if module not in sys.modules and module.startswith("recovery_core."):
            importlib.import_module(module)
    except Exception:  # noqa: BLE001 - the child imports it, and reports what fails
        return


def _child(reply: socket.socket, message: bytes) -> None:
    code = 0
    try:
        reply.sendall(_frame(b"p", str(os.getpid()).encode()))
        module, qualname, args, display, memory_bytes, seconds = pickle.loads(message)
        _limit_resources(memory_bytes, seconds)
        # The server's objects (torch's modules) never become garbage in this short life:
        # frozen, collections stop walking them; fewer collections for the file's objects
        # (a 100,000-key pickle spent ~2 s of 5.5 s in the collector). Cycles are still
        # collected, so garbage stays bounded.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        gc.enable()  # whatever its parent had paused: a file's garbage is always collected
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        for frame in _outcome(target, args, display, memory_bytes):
            reply.sendall(frame)
    except BaseException:  # noqa: BLE001 - the caller only needs to know it failed
        code = 1
    finally:
        os._exit(code)


def _outcome(target: Callable, args: tuple, display: str, memory_bytes: int) -> list[bytes]:
    try:
        value, blobs = target(*args)
        head = json.dumps({"value": value, "blobs": len(blobs)}).encode()
        return [_frame(b"o", head), *(_frame(b"b", blob) for blob in blobs)]
    except RecoveryError as exc:
        return [_error(type(exc).__name__, str(exc), getattr(exc, "limit", None))]
    except MemoryError:
        return [
            _error(
                "LimitExceededError",
                f"{display} needs more than {memory_bytes // 2**20} MiB to read "
                "(parse_memory_bytes); it was refused.",
                "parse_memory_bytes",
            )
        ]
    except RecursionError:
        return [
            _error(
                "LimitExceededError",
                f"{display} nests its content too deeply to read (max_depth); it was refused.",
                "max_depth",
            )
        ]
    except BaseException as exc:  # noqa: BLE001 - any failure on a bad file is the file's
        return [
            _error(
                "CheckpointFormatError",
                f"{display} could not be read: the reader failed with {type(exc).__name__}; "
                "the file is damaged or not a checkpoint.",
                None,
            )
        ]


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def _error(kind: str, message: str, limit: str | None) -> bytes:
    return _frame(b"e", json.dumps({"type": kind, "message": message, "limit": limit}).encode())


def _one_malloc_arena() -> None:
    """glibc answers a failed allocation by reserving a new 128 MiB arena, which the
    address-space limit refuses too; under that limit a child was seen spinning through
    such failures until its time budget instead of raising MemoryError (the memory
    refusal). With one arena a failed allocation fails at once."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to set
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX = 1


def _limit_resources(memory_bytes: int, seconds: float) -> None:
    _one_malloc_arena()
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * page
    resource.setrlimit(resource.RLIMIT_AS, (current + memory_bytes, current + memory_bytes))
    cpu = int(min(seconds, 10**6)) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
