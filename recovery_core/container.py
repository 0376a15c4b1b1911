"""Sniff a checkpoint's format from its bytes and check its container before anything loads it.

Everything here reads only directory structures (zip central directory and local headers,
the safetensors JSON header, a shard index); no tensor data and no pickle is touched.
`display` is the name used in messages, never a server path.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from recovery_core.errors import CheckpointFormatError, UnsafeCheckpointError
from recovery_core.limits import LoadLimits

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


def sniff_format(path: Path, display: str) -> str:
    """ "torch-zip", "torch-legacy", "safetensors" or "sharded", from content, not the extension."""
    if path.is_dir():
        return "sharded"
    size = path.stat().st_size
    if size == 0:
        raise CheckpointFormatError(f"{display} is empty (0 bytes): not a checkpoint.")
    with path.open("rb") as f:
        head = f.read(64)
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
    if head.lstrip()[:1] == b"{" and _is_shard_index(path):
        return "sharded"
    raise CheckpointFormatError(
        f"{display} is not a checkpoint: it looks like {_describe(head)}. "
        "Expected a torch.save file (.pt/.pth/.bin/.ckpt), a .safetensors file or a sharded index."
    )


def _is_shard_index(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_bytes()).get("weight_map"), dict)
    except (ValueError, AttributeError, OSError):
        return False


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


@dataclass(frozen=True)
class ZipRecord:
    name: str  # member name inside the archive, e.g. "archive/data/0"
    data_offset: int  # absolute file offset of the first data byte
    size: int


@dataclass(frozen=True)
class TorchZipLayout:
    root: str  # the archive's top folder ("archive/")
    records: tuple[ZipRecord, ...]
    byteorder: str = ""  # "little" / "big" from the archive's byteorder record, "" if absent

    def record_at(self, offset: int) -> ZipRecord | None:
        return self._by_offset.get(offset)

    @cached_property
    def _by_offset(self) -> dict[int, ZipRecord]:
        return {r.data_offset: r for r in self.records}


def check_torch_zip(path: Path, display: str, limits: LoadLimits) -> TorchZipLayout:
    """Refuse compressed, duplicated or out-of-file members and code archives.

    This must pass before torch.load(mmap=True): a storage is then a window on the
    mapped file, so every record must be stored raw and lie inside the file.
    """
    file_size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise CheckpointFormatError(
            f"{display} is a truncated or damaged zip archive ({exc}); download or save it again."
        ) from None
    if len(infos) > 2 * limits.max_keys + 16:
        raise UnsafeCheckpointError(
            f"{display} has {len(infos)} zip members, more than this loader allows "
            f"({2 * limits.max_keys + 16}); it was refused."
        )
    names = [i.filename for i in infos]
    _refuse_code_archives(names, display)
    seen: set[str] = set()
    total = 0
    records = []
    with path.open("rb") as f:
        for info in infos:
            if info.filename in seen:
                raise UnsafeCheckpointError(
                    f"{display} has a duplicate zip member {info.filename!r}; a checkpoint "
                    "never does, so it was refused."
                )
            seen.add(info.filename)
            if info.compress_type != zipfile.ZIP_STORED:
                raise UnsafeCheckpointError(
                    f"{display} has a compressed member {info.filename!r}; torch.save stores "
                    "members uncompressed, and compressed ones could inflate without bound, "
                    "so it was refused."
                )
            total += info.file_size
            if total > limits.max_file_bytes:
                raise UnsafeCheckpointError(
                    f"{display} declares more than {limits.max_file_bytes} bytes of content, "
                    "above this loader's limit; it was refused."
                )
            data_offset = _local_data_offset(f, info, display)
            if data_offset + info.file_size > file_size:
                raise CheckpointFormatError(
                    f"{display} is truncated: member {info.filename!r} ends past the end of "
                    "the file; download or save it again."
                )
            records.append(ZipRecord(info.filename, data_offset, info.file_size))
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
    byteorder = ""
    order_record = next((r for r in records if r.name == root + "byteorder"), None)
    if order_record is not None and order_record.size <= 16:
        with path.open("rb") as f:
            f.seek(order_record.data_offset)
            byteorder = f.read(order_record.size).decode("ascii", "replace").strip()
    return TorchZipLayout(root=root, records=tuple(records), byteorder=byteorder)


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


def _local_data_offset(f: Any, info: zipfile.ZipInfo, display: str) -> int:
    """The first data byte of a member: its local header is 30 bytes + name + extra field."""
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
) -> tuple[list[SafetensorsEntry], dict[str, str]]:
    """Parse and validate the header so safetensors' own errors never reach the user."""
    file_size = path.stat().st_size
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise CheckpointFormatError(f"{display} is truncated: no safetensors header.")
        header_len = struct.unpack("<Q", raw_len)[0]
        if header_len > limits.max_header_bytes:
            raise UnsafeCheckpointError(
                f"{display} declares a {header_len}-byte safetensors header, above the "
                f"{limits.max_header_bytes}-byte limit; it was refused."
            )
        if 8 + header_len > file_size:
            raise CheckpointFormatError(
                f"{display} is truncated: its safetensors header needs {header_len} bytes but "
                f"the file has {file_size - 8}; download or save it again."
            )
        raw_header = f.read(header_len)
    try:
        header = json.loads(raw_header)
    except (ValueError, UnicodeDecodeError):
        raise CheckpointFormatError(
            f"{display} has a damaged safetensors header (not valid JSON)."
        ) from None
    if not isinstance(header, dict):
        raise CheckpointFormatError(f"{display} has a damaged safetensors header (not an object).")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointFormatError(f"{display} has a damaged safetensors __metadata__ entry.")
    if len(header) > limits.max_keys:
        raise UnsafeCheckpointError(
            f"{display} holds {len(header)} tensors, more than this loader's limit of "
            f"{limits.max_keys}; it was refused."
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
    return entries, {str(k): str(v) for k, v in metadata.items()}


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
    if index_path.stat().st_size > limits.max_header_bytes:
        raise UnsafeCheckpointError(
            f"{display}: the shard index is larger than {limits.max_header_bytes} bytes; refused."
        )
    try:
        index = json.loads(index_path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise CheckpointFormatError(f"{display}: the shard index is not valid JSON.") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointFormatError(f"{display}: the shard index has no weight_map.")
    if len(weight_map) > limits.max_keys:
        raise UnsafeCheckpointError(
            f"{display}: the shard index lists {len(weight_map)} keys, more than this "
            f"loader's limit of {limits.max_keys}; it was refused."
        )
    folder = index_path.parent.resolve()
    shards: dict[str, Path] = {}
    for key, shard in weight_map.items():
        shards[str(key)] = _shard_path(folder, shard, display)
    metadata = index.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    return shards, {str(k): str(v) for k, v in metadata.items()}


def _shard_path(folder: Path, shard: Any, display: str) -> Path:
    plain = (
        isinstance(shard, str)
        and shard not in ("", ".", "..")
        and "/" not in shard
        and "\\" not in shard
        and "\x00" not in shard
    )
    candidate = folder / shard if plain else None
    # resolve() also catches a shard that is a symlink leading out of the folder.
    if candidate is None or candidate.resolve().parent != folder:
        raise UnsafeCheckpointError(
            f"{display}: the shard index names {shard!r}, which is not a plain file name inside "
            "the checkpoint's folder; it was refused."
        )
    if not candidate.is_file():
        raise CheckpointFormatError(
            f"{display}: the shard index names {shard!r}, but no such file is in the folder."
        )
    return candidate
