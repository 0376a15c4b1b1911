"""Sniff a checkpoint's format from its bytes and check its container before anything loads it.

Everything here reads only directory structures (zip central directory and local headers,
the safetensors JSON header, a shard index); no tensor data and no pickle is touched.
`display` is the name used in messages, never a server path.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import mmap
import os
import re
import stat
import struct
import zipfile
from array import array
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import IO, Any, NamedTuple

from recovery_core.errors import CheckpointFormatError, LimitExceededError, UnsafeCheckpointError
from recovery_core.io.limits import DEFAULT_LIMITS, LoadLimits

# torch.save's legacy (non-zip) format: pickle protocol 2, then the pickled magic number
# 0x1950a86a20f9469cfc6c as a 10-byte LONG1.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
ZIP_LOCAL_HEADER = b"PK\x03\x04"
ZIP_EMPTY_ARCHIVE = b"PK\x05\x06"

# safetensors dtype -> bytes per element. Sub-byte float types (F4, F6) are left out:
# we cannot hand them to torch, so they are refused by name.
SAFETENSORS_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


# Kernel and device views: never read, whatever name or link leads there.
_SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


@contextlib.contextmanager
def open_regular(path: Path, display: str) -> Iterator[tuple[IO[bytes], int]]:
    """(file, size) of a regular file; FIFOs, devices, sockets, folders and /proc are refused.

    The link is resolved first and the final open uses O_NOFOLLOW, so what is opened is
    what was checked; O_NONBLOCK keeps a FIFO from blocking the open. The size comes from
    fstat of the open file, before anything is read; callers read no more than that.
    """
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root + "/") for root in _SPECIAL_ROOTS):
        raise UnsafeCheckpointError(
            f"{display} is a system or device entry, not a file; only regular files are read."
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise CheckpointFormatError(f"{display} does not exist; check the path.") from None
    except PermissionError:
        raise CheckpointFormatError(f"{display} cannot be read (permission denied).") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeCheckpointError(
                f"{display} was replaced by a symbolic link while opening it; refused."
            ) from None
        raise CheckpointFormatError(
            f"{display} cannot be opened ({os.strerror(exc.errno or 0)})."
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeCheckpointError(
                f"{display} is not a regular file (a folder, FIFO, device or socket); only "
                "regular files are read."
            )
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            yield f, info.st_size
    finally:
        if fd >= 0:
            os.close(fd)


def read_exactly(f: IO[bytes], offset: int, size: int, display: str) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise CheckpointFormatError(f"{display} is truncated; download or save it again.")
    return data


def sniff_format(path: Path, display: str, limits: LoadLimits = DEFAULT_LIMITS) -> str:
    """ "torch-zip", "torch-legacy", "safetensors" or "sharded", from content, not the extension."""
    if path.is_dir():
        return "sharded"
    with open_regular(path, display) as (f, size):
        if size == 0:
            raise CheckpointFormatError(f"{display} is empty (0 bytes): not a checkpoint.")
        head = f.read(min(size, 64))
        if head.lstrip()[:1] == b"{" and size <= limits.max_header_bytes:
            looks_like_index = b'"weight_map"' in read_exactly(f, 0, size, display)
        else:
            looks_like_index = False
    if head.startswith((ZIP_LOCAL_HEADER, ZIP_EMPTY_ARCHIVE)):
        return "torch-zip"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise UnsafeCheckpointError(
            f"{display} is a plain Python pickle, not a torch.save checkpoint; it was refused "
            "because reading it could run code. Save the weights with torch.save(model.state_dict()) "
            "or safetensors."
        )
    if looks_like_index:
        return "sharded"
    raise CheckpointFormatError(
        f"{display} is not a checkpoint: it looks like {_describe(head)}. "
        "Expected a torch.save file (.pt/.pth/.bin/.ckpt), a .safetensors file or a sharded index."
    )


def _describe(head: bytes) -> str:
    """A short guess at what a non-checkpoint file is, for the error message."""
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras?)"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON document"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "random or unknown binary data"
    if all(c.isprintable() or c.isspace() for c in text):
        return "plain text"
    return "random or unknown binary data"


# --- torch.save zip archives ---------------------------------------------------------


class ZipRecord(NamedTuple):
    name: str  # member name inside the archive, e.g. "archive/data/0"
    data_offset: int  # absolute file offset of the first data byte
    size: int


@dataclass(frozen=True)
class TorchZipLayout:
    """Where each member's data lies, as parallel columns in archive order: a record
    object per member was ~17 MiB at 100,000 members, held through the pickle's parse."""

    root: str  # the archive's top folder ("archive/")
    names: list[str]  # member names, e.g. "archive/data/0"
    offsets: array  # absolute file offset of each member's first data byte ('q')
    sizes: array  # each member's size in bytes ('q')
    byteorder: str = ""  # "little" / "big" from the archive's byteorder record, "" if absent

    def at(self, i: int) -> ZipRecord:
        return ZipRecord(self.names[i], self.offsets[i], self.sizes[i])

    def named(self, wanted: Collection[str]) -> dict[str, ZipRecord]:
        """The records of the members named in `wanted` (one pass over the names)."""
        return {name: self.at(i) for i, name in enumerate(self.names) if name in wanted}

    def record(self, name: str) -> ZipRecord | None:
        return self.named((name,)).get(name)

    def positions(self) -> dict[str, int]:
        """Member name -> its position: made when asked (every storage looked up), not kept."""
        return {name: i for i, name in enumerate(self.names)}

    def record_at(self, offset: int) -> ZipRecord | None:
        i = self._by_offset.get(offset)
        return None if i is None else self.at(i)

    @cached_property
    def _by_offset(self) -> dict[int, int]:
        return {offset: i for i, offset in enumerate(self.offsets)}


def check_torch_zip_file(
    f: IO[bytes], file_size: int, display: str, limits: LoadLimits
) -> TorchZipLayout:
    """Refuse compressed, duplicated or out-of-file members, code archives and bad records.

    This must pass before torch.load: a storage is then a window on the mapped file, so
    every record must be stored raw and lie inside the file, and torch's own reader
    divides by, trusts or switches on the small records checked in `_archive_settings`.
    """
    infos = _zip_members(f, display, limits)
    names = [i.filename for i in infos]
    _refuse_code_archives(names, display)
    layout = _member_records(f, infos, file_size, display, limits)
    root = _archive_root(names, display)
    layout = replace(layout, root=root)
    return replace(layout, byteorder=_archive_settings(f, layout, display))


class _Member(NamedTuple):
    """What the checks need of a central directory entry (zipfile's `ZipInfo` fields)."""

    filename: str
    compress_type: int
    file_size: int
    header_offset: int


def _zip_members(f: IO[bytes], display: str, limits: LoadLimits) -> list[_Member]:
    """The central directory's entries, with their number bounded by max_keys."""
    infos = _plain_central_directory(f)
    if infos is None:
        infos = _zipfile_members(f, display)
    if len(infos) > 2 * limits.max_keys + 16:
        raise LimitExceededError(
            f"{display} has {len(infos)} zip members, more than this loader allows "
            f"({2 * limits.max_keys + 16}, from max_keys); it was refused.",
            limit="max_keys",
        )
    return infos


def _zipfile_members(f: IO[bytes], display: str) -> list[_Member]:
    try:
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise CheckpointFormatError(
            f"{display} is a truncated or damaged zip archive ({exc}); download or save it again."
        ) from None
    except Exception as exc:  # noqa: BLE001 - zipfile raises many types on damaged archives
        raise CheckpointFormatError(
            f"{display} is a damaged zip archive ({type(exc).__name__}); download or save it again."
        ) from None
    return [_Member(i.filename, i.compress_type, i.file_size, i.header_offset) for i in infos]


# The ZIP format's records, as zipfile lays them out (its own names are private).
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # a central directory entry, 46 bytes
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_END64_SIGNATURE = b"PK\x06\x06"
_END64_SIZES = 56 + 20  # the zip64 end record and its locator
_MAX_EXTRACT_VERSION = 63
_END_RECORDS: Any = vars(zipfile)["_EndRecData"]


def _plain_central_directory(f: IO[bytes]) -> list[_Member] | None:
    """The entries as `zipfile` reads them, without a `ZipInfo` each (100,000 of them cost
    ~0.6 s and ~50 MiB), for a directory whose entries have no extra field or comment
    and whose names decode: what torch.save writes. Anything else (or any doubt) is None:
    `zipfile` reads it, and names what is wrong."""
    try:
        end = _END_RECORDS(f)  # the end records, read as zipfile does
        if not end:
            return None
        signature, size, offset, location = end[0], end[5], end[6], end[9]
        concat = location - size - offset - (_END64_SIZES if signature == _END64_SIGNATURE else 0)
        if concat != 0 or offset < 0:
            return None
        f.seek(offset)
        data = f.read(size)
    except Exception:  # noqa: BLE001 - any doubt: zipfile reads it and says what is wrong
        return None
    return _central_entries(data) if len(data) == size else None


def _central_entries(data: bytes) -> list[_Member] | None:
    members = []
    at, end, fixed, unpack = 0, len(data), _CENTRAL.size, _CENTRAL.unpack_from
    while at < end:
        if at + fixed > end:
            return None
        # signature, versions, flags, compression, ..., sizes, name/extra/comment lengths
        entry = unpack(data, at)
        name_end = at + fixed + entry[12]
        if (
            entry[0] != _CENTRAL_SIGNATURE
            or entry[13]  # an extra field (zip64 sizes...)
            or entry[14]  # a comment
            or entry[3] > _MAX_EXTRACT_VERSION
            or name_end > end
        ):
            return None
        raw = data[at + fixed : name_end]
        try:  # flag 0x800: UTF-8 names; else zipfile's historical cp437
            name = raw.decode("utf-8" if entry[5] & 0x800 else "cp437")
        except UnicodeDecodeError:
            return None
        if "\x00" in name:  # zipfile's ZipInfo cuts a name at its first NUL
            return None
        # compress_type, file_size, header_offset
        members.append(_Member(name, entry[6], entry[11], entry[18]))
        at = name_end
    return members


def _member_records(
    f: IO[bytes],
    infos: list[_Member],
    file_size: int,
    display: str,
    limits: LoadLimits,
) -> TorchZipLayout:
    """Where each member's data lies (the root still to be found); refuses duplicates,
    compression, a declared total above max_file_bytes and members that end past the
    file. One tight loop: 100,000 members are common (a local header is read in place
    from a memory map)."""
    seen: set[str] = set()
    total = 0
    names, offsets, sizes = [], array("q"), array("q")
    local, last_header = _LOCAL.unpack_from, file_size - 30
    with _readable(f) as view:
        mapped = isinstance(view, mmap.mmap)
        for info in infos:
            name, size, header = info.filename, info.file_size, info.header_offset
            total += size
            if (
                name in seen
                or info.compress_type != zipfile.ZIP_STORED
                or total > limits.max_file_bytes
            ):
                _refuse_member(info, seen, total, display, limits)
            seen.add(name)
            signature, name_len, extra_len = (
                local(view, header) if mapped and 0 <= header <= last_header else (b"", 0, 0)
            )
            if signature == ZIP_LOCAL_HEADER:
                data_offset = header + 30 + name_len + extra_len
            else:  # not mapped, or no local header there: the careful reader says which
                data_offset = _local_data_offset(view, info, file_size, display)
            if data_offset + size > file_size:
                raise CheckpointFormatError(
                    f"{display} is truncated: member {name!r} ends past the end of "
                    "the file; download or save it again."
                )
            names.append(name)
            offsets.append(data_offset)
            sizes.append(size)
    return TorchZipLayout("", names, offsets, sizes)


_LOCAL = struct.Struct("<4s22xHH")  # a local header's signature, name and extra lengths


def _refuse_member(
    info: _Member, seen: set[str], total: int, display: str, limits: LoadLimits
) -> None:
    """The refusal for a duplicate, a compressed member or a declared total too large."""
    if info.filename in seen:
        raise UnsafeCheckpointError(
            f"{display} has a duplicate zip member {info.filename!r}; a checkpoint "
            "never does, so it was refused."
        )
    if info.compress_type != zipfile.ZIP_STORED:
        raise UnsafeCheckpointError(
            f"{display} has a compressed member {info.filename!r}; torch.save stores "
            "members uncompressed, and compressed ones could inflate without bound, "
            "so it was refused."
        )
    raise LimitExceededError(
        f"{display} declares more than {limits.max_file_bytes} bytes of content, "
        "above this loader's limit (max_file_bytes); it was refused.",
        limit="max_file_bytes",
    )


@contextlib.contextmanager
def _readable(f: IO[bytes]) -> Iterator[Any]:
    """The file as a read-only memory map, or the file itself when it cannot be mapped."""
    try:
        view: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, AttributeError):
        yield f
        return
    with view:
        yield view


def _archive_root(names: list[str], display: str) -> str:
    """The one folder holding data.pkl ("archive/"); every member must sit inside it."""
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pickles:
        raise CheckpointFormatError(
            f"{display} is a zip archive without a data.pkl: not a torch.save checkpoint."
        )
    if len(pickles) > 1:
        raise UnsafeCheckpointError(
            f"{display} holds {len(pickles)} data.pkl members; a checkpoint has one, so it "
            "was refused."
        )
    root = pickles[0].removesuffix("data.pkl")
    outside = next((n for n in names if not n.startswith(root)), None)
    if outside is not None:
        raise UnsafeCheckpointError(
            f"{display} has a member {outside!r} outside its {root!r} folder; torch.save "
            "never writes one, so it was refused."
        )
    return root


# The small records torch's reader acts on, with what a torch.save file holds in them.
# torch divides by the alignment (0 killed the process with SIGFPE), compares the format
# version as bytes and refuses unknown byte orders only after reading other records.
_SETTING_RECORDS = {
    ".format_version": re.compile(rb"[0-9]{1,3}"),
    ".storage_alignment": re.compile(rb"[0-9]{1,7}"),
    "byteorder": re.compile(rb"little|big"),
    "version": re.compile(rb"[0-9]{1,3}\n?"),
    ".data/version": re.compile(rb"[0-9]{1,3}\n?"),
}
_MAX_ALIGNMENT = 1 << 20  # torch writes 64


def _archive_settings(f: IO[bytes], layout: TorchZipLayout, display: str) -> str:
    """Validate the archive's setting records; returns the byte order ("" if absent)."""
    values: dict[str, bytes] = {}
    root = layout.root
    by_name = layout.named({root + name for name in _SETTING_RECORDS})
    for name, pattern in _SETTING_RECORDS.items():
        record = by_name.get(root + name)
        if record is None:
            continue
        raw = (
            read_exactly(f, record.data_offset, record.size, display) if record.size <= 16 else b""
        )
        if not pattern.fullmatch(raw):
            raise UnsafeCheckpointError(
                f"{display} has an invalid {name!r} record ({raw[:16]!r}); torch.save never "
                "writes that, so it was refused."
            )
        values[name] = raw
    alignment = int(values.get(".storage_alignment", b"64"))
    if not (1 <= alignment <= _MAX_ALIGNMENT and alignment & (alignment - 1) == 0):
        raise UnsafeCheckpointError(
            f"{display} declares a storage alignment of {alignment} bytes; torch.save writes a "
            f"power of two up to {_MAX_ALIGNMENT}, so it was refused."
        )
    for name in ("version", ".data/version"):
        if name in values and not 1 <= int(values[name]) <= 20:
            raise UnsafeCheckpointError(
                f"{display} declares archive version {int(values[name])}, which no torch.save "
                "writes; it was refused."
            )
    return values.get("byteorder", b"").decode("ascii")


def _refuse_code_archives(names: list[str], display: str) -> None:
    for n in names:
        tail = n.split("/", 1)[-1]
        if tail == "constants.pkl" or tail.startswith("code/"):
            raise UnsafeCheckpointError(
                f"{display} is a TorchScript archive, which contains code; this tool reads "
                "state dicts only. Save model.state_dict() with torch.save instead."
            )
        if tail in ("archive_format", "serialized_exported_program.json") or tail.startswith(
            ("models/", "serialized_exported_program")
        ):
            raise UnsafeCheckpointError(
                f"{display} is a torch.export (.pt2) archive, which contains code; this tool "
                "reads state dicts only. Save model.state_dict() with torch.save instead."
            )


def _local_data_offset(f: Any, info: _Member, file_size: int, display: str) -> int:
    """The first data byte of a member: its local header is 30 bytes + name + extra field."""
    if not 0 <= info.header_offset <= file_size - 30:
        raise CheckpointFormatError(
            f"{display} is a damaged zip archive: member {info.filename!r} has its header "
            "outside the file; download or save it again."
        )
    if isinstance(f, mmap.mmap):
        header = f[info.header_offset : info.header_offset + 30]
    else:
        f.seek(info.header_offset)
        header = f.read(30)
    if len(header) < 30 or not header.startswith(ZIP_LOCAL_HEADER):
        raise CheckpointFormatError(
            f"{display} is a damaged zip archive: member {info.filename!r} has no local "
            "header; download or save it again."
        )
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


# --- safetensors ---------------------------------------------------------------------


@dataclass(frozen=True)
class SafetensorsEntry:
    name: str
    dtype: str  # safetensors dtype code, "F32"
    shape: tuple[int, ...]
    begin: int  # offsets relative to the end of the header
    end: int


def check_safetensors_header(
    path: Path, display: str, limits: LoadLimits
) -> tuple[list[SafetensorsEntry], dict[str, str], int]:
    """Parse and validate the header so safetensors' own errors never reach the user.

    Returns the entries, the metadata and the file offset where the data starts.
    """
    with open_regular(path, display) as (f, file_size):
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise CheckpointFormatError(f"{display} is truncated: no safetensors header.")
        header_len = struct.unpack("<Q", raw_len)[0]
        if header_len > limits.max_header_bytes:
            raise LimitExceededError(
                f"{display} declares a {header_len}-byte safetensors header, above the "
                f"{limits.max_header_bytes}-byte limit (max_header_bytes); it was refused.",
                limit="max_header_bytes",
            )
        if 8 + header_len > file_size:
            raise CheckpointFormatError(
                f"{display} is truncated: its safetensors header needs {header_len} bytes but "
                f"the file has {file_size - 8}; download or save it again."
            )
        raw_header = read_exactly(f, 8, header_len, display)
    header = load_json(raw_header, f"{display}'s safetensors header", limits)
    if not isinstance(header, dict):
        raise CheckpointFormatError(f"{display} has a damaged safetensors header (not an object).")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointFormatError(f"{display} has a damaged safetensors __metadata__ entry.")
    if len(header) > limits.max_keys:
        raise LimitExceededError(
            f"{display} holds {len(header)} tensors, more than this loader's limit of "
            f"{limits.max_keys} (max_keys); it was refused.",
            limit="max_keys",
        )
    data_size = file_size - 8 - header_len
    entries = [_safetensors_entry(name, spec, display, data_size) for name, spec in header.items()]
    previous: SafetensorsEntry | None = None
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if previous is not None and entry.begin < previous.end:
            raise UnsafeCheckpointError(
                f"{display} has overlapping tensors {previous.name!r} and {entry.name!r} "
                "(their byte ranges intersect); it was refused."
            )
        previous = entry
    return entries, metadata, 8 + header_len


def load_json(raw: bytes, what: str, limits: LoadLimits) -> Any:
    """json.loads with its cost bounded first: objects and arrays are counted in the raw
    bytes (each costs ~100+ bytes once parsed) and the nesting is bounded."""
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > limits.max_json_containers:
        raise LimitExceededError(
            f"{what} holds {containers} JSON objects or arrays, more than the "
            f"{limits.max_json_containers} allowed (max_json_containers); it was refused.",
            limit="max_json_containers",
        )
    try:
        value = json.loads(raw)
    except RecursionError:
        value = None
        depth_exceeded = True
    except (ValueError, UnicodeDecodeError):
        raise CheckpointFormatError(f"{what} is damaged (not valid JSON).") from None
    else:
        cap = limits.max_json_depth
        # The text's bracket nesting bounds the value's (a key given twice keeps one value):
        # within the cap, the value is too; past it, the value itself is measured.
        depth = _text_depth(raw)
        depth_exceeded = (depth is None or depth > cap) and _json_depth(value, cap) > cap
    if depth_exceeded:
        raise LimitExceededError(
            f"{what} nests JSON deeper than {limits.max_json_depth} levels "
            "(max_json_depth); it was refused.",
            limit="max_json_depth",
        )
    return value


_BRACKETS_ONLY = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
_QUOTED = re.compile(rb'"[^"]*"')  # a string once its escapes are out: no quote inside
_NESTING_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _text_depth(raw: bytes) -> int | None:
    """The deepest bracket nesting of valid UTF-8 JSON text, strings left out, in C-level
    passes (walking 100,000 parsed header entries took ~0.5 s); None for UTF-16 or UTF-32
    text (json.loads reads those too), whose bytes are not read this way: the parsed value
    is walked instead."""
    if b"\x00" in raw:  # valid UTF-8 JSON has no NUL byte; UTF-16 and UTF-32 always do
        return None
    # UTF-8: no byte of a multi-byte character is a quote, a backslash or a bracket. With
    # the escaped backslashes, then the escaped quotes taken out, every quote left opens or
    # closes a string; kept with the brackets alone, nearly every string is an empty `""`.
    # (Removing the strings from the whole text built a piece per gap between them: ~100
    # MiB for a 100,000-entry safetensors header, the reader's peak.)
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    compact = text.translate(None, _NOT_QUOTES_OR_BRACKETS).replace(b'""', b"")
    return _bracket_depth(_QUOTED.sub(b"", compact))


def _bracket_depth(text: bytes) -> int:
    brackets = text.translate(None, _BRACKETS_ONLY)
    return max(itertools.accumulate(map(_NESTING_STEP.__getitem__, brackets)), default=0)


def _json_depth(value: Any, cap: int) -> int:
    """Nesting depth of parsed JSON, walked iteratively and stopped just past `cap`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > cap:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _safetensors_entry(name: str, spec: Any, display: str, data_size: int) -> SafetensorsEntry:
    if not isinstance(spec, Mapping):
        raise CheckpointFormatError(f"{display}: header entry {name!r} is not an object.")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in SAFETENSORS_ITEMSIZE:
        raise CheckpointFormatError(
            f"{display}: tensor {name!r} has dtype {dtype!r}, which this tool cannot read "
            f"(known: {', '.join(SAFETENSORS_ITEMSIZE)})."
        )
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
    ):
        raise CheckpointFormatError(
            f"{display}: tensor {name!r} has a malformed shape or data_offsets in its header."
        )
    begin, end = offsets
    if end > data_size:
        raise CheckpointFormatError(
            f"{display} is truncated: tensor {name!r} ends at byte {end} of the data but the "
            f"file holds {data_size}; download or save it again."
        )
    if end - begin != math.prod(shape) * SAFETENSORS_ITEMSIZE[dtype]:
        raise CheckpointFormatError(
            f"{display}: tensor {name!r} has shape {tuple(shape)} ({dtype}) but "
            f"{end - begin} bytes of data; the header is inconsistent."
        )
    return SafetensorsEntry(name, dtype, tuple(shape), begin, end)


# --- sharded checkpoints (Hugging Face index.json) ------------------------------------


def find_shard_index(folder: Path, display: str) -> Path:
    indexes = sorted(folder.glob("*.index.json"))
    # A folder may carry both a safetensors and a torch index of the same weights.
    preferred = [p for p in indexes if p.name.endswith(".safetensors.index.json")]
    chosen = preferred or indexes
    if not chosen:
        raise CheckpointFormatError(
            f"{display} is a folder without a *.index.json file; choose the checkpoint file "
            "itself or a sharded folder with its index."
        )
    return chosen[0]


def read_shard_index(
    index_path: Path, display: str, limits: LoadLimits
) -> tuple[dict[str, Path], dict[str, str]]:
    """key -> shard path, plus the index's metadata. Shards must sit beside the index."""
    with open_regular(index_path, f"{display}'s shard index") as (f, size):
        if size > limits.max_header_bytes:
            raise LimitExceededError(
                f"{display}: the shard index is larger than {limits.max_header_bytes} bytes "
                "(max_header_bytes); refused.",
                limit="max_header_bytes",
            )
        raw = read_exactly(f, 0, size, display)
    index = load_json(raw, f"{display}'s shard index", limits)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointFormatError(f"{display}: the shard index has no weight_map.")
    if len(weight_map) > limits.max_keys:
        raise LimitExceededError(
            f"{display}: the shard index lists {len(weight_map)} keys, more than this "
            f"loader's limit of {limits.max_keys} (max_keys); it was refused.",
            limit="max_keys",
        )
    folder = Path(os.path.realpath(index_path)).parent
    shards: dict[str, Path] = {}
    by_name: dict[object, Path] = {}
    for key, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointFormatError(f"{display}: the shard index names a non-text shard.")
        if shard not in by_name:
            by_name[shard] = _shard_path(folder, shard, display)
        shards[str(key)] = by_name[shard]
    metadata = index.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    return shards, {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def _shard_path(folder: Path, shard: Any, display: str) -> Path:
    plain = (
        isinstance(shard, str)
        and shard not in ("", ".", "..")
        and "/" not in shard
        and "\\" not in shard
        and "\x00" not in shard
    )
    candidate = folder / shard if plain else None
    # realpath also catches a shard that is a symlink leading out of the folder.
    if candidate is None or Path(os.path.realpath(candidate)).parent != folder:
        raise UnsafeCheckpointError(
            f"{display}: the shard index names {shard!r}, which is not a plain file name inside "
            "the checkpoint's folder; it was refused."
        )
    if not os.path.lexists(candidate):
        raise CheckpointFormatError(
            f"{display}: the shard index names {shard!r}, but no such file is in the folder."
        )
    return candidate  # opened later with open_regular: a FIFO or device is refused there
