"""A dataset file before its tensors are loaded: what it is, and a torch file's checks.

Nothing here imports torch, so a caller that has not loaded it yet (`recovery recover`)
can check its dataset first: the limited child is then forked from that small process
(milliseconds), not served by a second interpreter that imports torch beside it (about a
whole `import torch` of CPU, BENCHMARKS.md 8b). The child reads the file with the
metadata reader only; a file that needs torch's own unpickler (a pickled TensorDataset,
the legacy format) is left to `data.load_dataset`, which checks it as it always did.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recovery_core.errors import DataError, RecoveryError
from recovery_core.io.container import open_regular
from recovery_core.io.limits import LoadLimits
from recovery_core.io.sandbox import run_isolated
from recovery_core.io.torch_file import load_torch_legacy, load_torch_zip

# Bound the work on untrusted files (zip members).
MAX_ZIP_MEMBERS = 10_000
# A compressed member may inflate more than 100x only below this size (a compression bomb).
MAX_INFLATED_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class CheckedFile:
    """A dataset file that passed its checks before torch was loaded, and which file that
    was (device, inode, size, modification time): `load_dataset` skips the checks only
    while the path still names that file. A safetensors or .npz file has nothing to check
    ahead: it is read, under its own checks, where it is loaded."""

    path: str
    format: str  # "torch", "safetensors" or "npz", as sniffed from the bytes
    identity: tuple[int, int, int, int]

    def still_names(self, path: str) -> bool:
        """Is `path` the file that was checked, unchanged?"""
        return path == self.path and file_identity(path) == self.identity


def file_identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def file_format(path: str, display: str) -> str:
    """The dataset's format, sniffed from its content, once it is known to be a regular
    file within the size limit; DataError otherwise."""
    try:  # a regular file of bounded size, never a FIFO, device or /proc entry
        with open_regular(Path(path), f"The dataset {display}") as (_, size):
            pass
    except RecoveryError as e:
        raise DataError(str(e)) from None
    if size > LoadLimits().max_file_bytes:
        raise DataError(f"The dataset {display} is {size} bytes, above this tool's limit.")
    return sniff(path, display)


def sniff(path: str, display: str) -> str:
    """The format ("npz", "safetensors" or "torch") from the first bytes, never the name."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise DataError(f"The dataset {display} is empty.")
    if head.startswith(b"PK\x03\x04"):
        members = zip_members(path, display)
        if members and all(m.endswith(".npy") for m in members):
            return "npz"
        return "torch"
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # a pickle protocol marker: torch's legacy format
        return "torch"
    raise DataError(
        f"{display} is not a dataset we can read; save it with torch.save (a dict of "
        "tensors), safetensors or numpy.savez."
    )


def zip_members(path: str, display: str) -> list[str]:
    """Member names, after bounding what the archive declares it would unpack to."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as e:  # noqa: BLE001 - zipfile raises many types on damaged archives
        raise DataError(f"{display} is a damaged zip archive ({type(e).__name__}).") from None
    names = [i.filename for i in infos]
    if len(infos) > MAX_ZIP_MEMBERS or len(set(names)) != len(names):
        raise DataError(f"{display} has too many or duplicate archive members; it was refused.")
    if sum(i.file_size for i in infos) > LoadLimits().max_file_bytes:
        raise DataError(f"{display} would unpack to more than this loader allows; it was refused.")
    for info in infos:  # numpy.savez_compressed deflates; zeros shrink ~1000x, data ~2x
        inflated = info.file_size > MAX_INFLATED_BYTES and info.file_size > 100 * max(
            info.compress_size, 1
        )
        if info.compress_type != zipfile.ZIP_STORED and inflated:
            raise DataError(
                f"{display}: member {info.filename!r} would inflate {info.compress_size} bytes "
                f"to {info.file_size}; a compression bomb is refused (save it uncompressed "
                "with numpy.savez)."
            )
    return names


# ---------------------------------------------------------------- in the parsing child


class _NeedsTorch(BaseException):
    """The file needs torch's unpickler (not an Exception: no reader's handler takes it)."""


class _RefuseTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "torch" or fullname.startswith("torch."):
            raise _NeedsTorch
        return None


@contextlib.contextmanager
def _torch_refused() -> Iterator[None]:
    finder = _RefuseTorch()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def check_without_torch(
    path: str, display: str, limits: LoadLimits
) -> tuple[dict[str, bool], list[bytes]]:
    """In a parsing child that has not loaded torch: a torch file's checks as far as the
    metadata reader vouches for them, answering {"needs_torch": True} where torch's own
    unpickler would be needed, instead of importing it (`data.check_torch_dataset` runs
    them all, in the full reader)."""
    if "torch" in sys.modules:  # a child of the full reader: it has them all
        return {"needs_torch": True}, []
    try:
        with _torch_refused():
            check_records(path, display, limits)
    except _NeedsTorch:
        return {"needs_torch": True}, []
    return {"needs_torch": False}, []


def check_records(path: str, display: str, limits: LoadLimits) -> None:
    """A torch file's records, its pickle scan and its parse (on the meta device when it
    takes torch's unpickler), whatever the format: zip or legacy."""
    if zipfile.is_zipfile(path):
        load_torch_zip(Path(path), display, limits)
    else:
        load_torch_legacy(Path(path), display, limits, read_values=False)


# ---------------------------------------------------------------- in the caller


def check_in_child(target: Callable[..., tuple[Any, list[bytes]]], path: str, display: str) -> Any:
    """`target(path, display, limits)` in the limited child; its value. A refusal is a
    DataError."""
    try:
        value, _ = run_isolated(
            target,
            (path, display, LoadLimits()),
            display=display,
            seconds=LoadLimits().time_budget_seconds,
            memory_bytes=LoadLimits().parse_memory_bytes,
        )
    except RecoveryError as e:
        raise DataError(f"The dataset could not be loaded safely: {e}") from None
    return value


def check_before_torch(path: str, *, name: str | None = None) -> CheckedFile | None:
    """The dataset's checks, from a caller that has not loaded torch: its child is forked
    from here and imports no torch. None when the file needs torch's unpickler, or when
    torch is loaded already: `load_dataset` checks it then, in the full reader."""
    display = name or os.path.basename(path)
    if "torch" in sys.modules:
        return None
    before = file_identity(path)
    fmt = file_format(path, display)
    if fmt == "torch" and check_in_child(check_without_torch, path, display)["needs_torch"]:
        return None
    if before is None or file_identity(path) != before:
        return None  # it changed while it was checked: checked again where it is loaded
    return CheckedFile(path, fmt, before)


__all__ = [
    "CheckedFile",
    "check_before_torch",
    "check_in_child",
    "check_records",
    "check_without_torch",
    "file_format",
    "sniff",
    "zip_members",
]
