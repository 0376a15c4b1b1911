"""Where an export writes, and how: torch-free, so a caller can refuse a bad output path
(or an unknown format) before it loads torch and reads anything.

Every file is written atomically (a temporary file in the same folder, fsync,
`os.replace`), and never over a file the recovery read (the checkpoint, its shards and
index, the dataset).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from recovery_core.errors import ExportError


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`.

    The temporary name is random and created with O_EXCL (mkstemp) in the target's own
    folder, so a planted file or symlink is never written through; a `path` that is a
    symlink is refused rather than replaced or followed. Disk errors become ExportError.
    """
    with staged_write(path, data):
        pass


@contextlib.contextmanager
def staged_write(path: str | os.PathLike[str], data: bytes) -> Iterator[str]:
    """`write_atomic` with the wait for the disk overlapped: yields the temporary file's
    path, its bytes written and their fsync running in a thread, for the caller to read
    back meanwhile; on leaving, the fsync is waited for, then the file is renamed over
    `path` (the file the caller read: a rename keeps it). Under other processes' writes
    an fsync took 0.2-2.9 s; now only what the reading does not hide."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if os.path.islink(path):
        raise ExportError(
            f"Refusing to write {name}: it is a symbolic link; choose a plain file name."
        )
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                synced = _fsync_started(os.dup(f.fileno()))
        except OSError as e:
            raise _not_written(name, e) from None
        try:
            yield tmp
        finally:
            try:
                synced()
                os.replace(tmp, path)
            except OSError as e:
                raise _not_written(name, e) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


def _fsync_started(fd: int) -> Callable[[], None]:
    """fsync(fd) in a thread; the call returned waits for it, closes fd, raises its error."""
    failed: list[OSError] = []

    def run() -> None:
        try:
            os.fsync(fd)
        except OSError as e:
            failed.append(e)

    worker = threading.Thread(target=run, name="fsync", daemon=True)
    worker.start()

    def wait() -> None:
        worker.join()
        os.close(fd)
        if failed:
            raise failed[0]

    return wait


def _not_written(name: str, e: OSError) -> ExportError:
    return ExportError(
        f"Could not write {name}: {e.strerror or type(e).__name__}; choose another folder."
    )


# The files a recovery read (checkpoint, shards, index, dataset): one path or several.
InputPaths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None


def refuse_input(path: str, input_path: InputPaths) -> None:
    """ExportError when `path` is one of the files read (by real path or samefile)."""
    for each in input_list(input_path):
        same = os.path.realpath(path) == os.path.realpath(each)
        if not same and os.path.exists(path) and os.path.exists(each):
            same = os.path.samefile(path, each)
        if same:
            raise ExportError(
                f"Refusing to write {os.path.basename(path)}: it is the checkpoint you loaded, "
                "or a file read with it (a shard, its index or the dataset); choose another "
                "output name."
            )


def input_list(inputs: Any) -> list[str]:
    """`InputPaths` as a list of path strings."""
    if inputs is None:
        return []
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    return [os.fspath(i) for i in inputs if i is not None]


def export_paths(out_dir: str | os.PathLike[str], stem: str, *, with_code: bool) -> dict[str, str]:
    """Where `export_all` writes each kind of file."""
    out = os.fspath(out_dir)
    paths = {
        "torchscript": os.path.join(out, f"{stem}.pt"),
        "torch.export": os.path.join(out, f"{stem}.pt2"),
        "state_dict": os.path.join(out, f"{stem}_state_dict.pt"),
        "safetensors": os.path.join(out, f"{stem}.safetensors"),
        "report": os.path.join(out, "report.json" if stem == "model" else f"{stem}_report.json"),
    }
    if with_code:
        paths["code"] = os.path.join(out, f"{stem}.py")
    return paths


def refuse_overwriting_input(
    paths: Iterable[str],
    input_path: InputPaths,
) -> None:
    """ExportError when any of `paths` is a file that was read: `input_path` is one path
    or all of them (checkpoint, shards, index, dataset). Compared by real path and by
    samefile, so links and other spellings of the same file are caught."""
    for path in paths:
        refuse_input(path, input_path)


# What export_all can write besides the report; the TorchScript file is always written.
FORMATS = ("torchscript", "torch.export", "state_dict", "safetensors", "code")


def formats_to_write(formats: Collection[str] | None) -> set[str]:
    """The formats export_all writes for `formats` (None: all); ExportError for unknown ones."""
    if formats is None:
        return set(FORMATS)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(
            f"unknown export format {', '.join(unknown)}; choose from {', '.join(FORMATS)}"
        )
    wanted = {"torchscript", *formats}
    if wanted & {"state_dict", "safetensors"}:
        wanted |= {"state_dict", "safetensors"}  # one reload serves both: written together
    return wanted


__all__ = [
    "FORMATS",
    "InputPaths",
    "export_paths",
    "formats_to_write",
    "input_list",
    "refuse_input",
    "refuse_overwriting_input",
    "staged_write",
    "write_atomic",
]
