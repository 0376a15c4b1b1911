"""Load a torch.save file with the weights-only unpickler, after checking what it declares.

Zip files are unpickled once onto the meta device: no tensor data is read, and torch
records each storage's file offset. That lets us compare every storage the pickle
declares with the zip record behind it, and every shape with its storage, before any
byte of tensor data is mapped. The checked tensors are then placed on a private
(copy-on-write) memory map of the file, exactly where the checks said they are.
Legacy files cannot be memory-mapped: their declared storages are bounded by the file
size before a second, real load reads them into memory.
"""

from __future__ import annotations

import math
import pickle
import pickletools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from recovery_core.errors import CheckpointFormatError, RecoveryError, UnsafeCheckpointError
from recovery_core.io.container import (
    TorchZipLayout,
    check_torch_zip_file,
    open_regular,
    read_exactly,
)
from recovery_core.io.limits import LoadLimits
from recovery_core.io.pickle_scan import scan_pickle, scan_pickle_bytes
from recovery_core.io.torch_pickle import (
    MetadataPickle,
    StorageRef,
    TensorRef,
    Unsupported,
    read_data_pkl,
)
from recovery_core.io.unwrap import walk

if TYPE_CHECKING:
    import torch

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


@dataclass(frozen=True)
class Placement:
    """Where one tensor's values are: a window on a storage, which is a range of the file
    (zip) or a block of bytes read in the parsing process (legacy). Plain data only, so it
    can leave the isolated parsing process as JSON."""

    dtype: str  # "float32"
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int  # in elements
    storage: int  # index into the file's storages; -1 for a meta tensor (no values)


@dataclass(frozen=True)
class LoadedPickle:
    """The unpickled object (meta placeholders for zip files) and where each tensor's
    checked storage lies."""

    obj: Any
    # Each storage's (file offset, nbytes) for zip, (-1, nbytes) for legacy, one flat list
    # (a pair a storage: 100,000 tuples were ~6 MiB of the reader's peak).
    storages: list[int]
    blobs: list[bytes]  # legacy only: each storage's bytes, in `storages` order
    # `_storage_key` (or a record's key, a str, for a stand-in) -> the storage's index
    _index: dict[tuple[str, Any] | str, int]

    def plan_rows(self, tensors: dict[str, Any], file_index: int) -> dict[str, list]:
        """key -> [file, dtype, shape, stride, storage offset, storage index]: the plan's
        row per tensor (`checkpoint._plan_torch`), read straight from a stand-in (no
        `Placement` per tensor: 100,000 of them cost ~0.5 s)."""
        rows = {}
        index = self._index
        for key, t in tensors.items():
            if t.__class__ is TensorRef:
                storage = index[t.storage.key]
                rows[key] = [
                    file_index,
                    t.storage.dtype,
                    t.shape,
                    t.stride,
                    t.storage_offset,
                    storage,
                ]
            else:
                at = self.placement(t)
                rows[key] = [
                    file_index,
                    at.dtype,
                    at.shape,
                    at.stride,
                    at.storage_offset,
                    at.storage,
                ]
        return rows

    def placement(self, t: torch.Tensor | TensorRef) -> Placement:
        if isinstance(t, TensorRef):
            return Placement(
                dtype=t.dtype,
                shape=t.shape,
                stride=t.stride,
                storage_offset=t.storage_offset,
                storage=self._index[t.storage.key],
            )
        import torch  # a tensor from torch's path: torch is loaded

        key = _storage_key(torch.Tensor.untyped_storage(t))
        return Placement(
            dtype=str(t.dtype).removeprefix("torch."),
            shape=tuple(torch.Tensor.size(t)),
            stride=tuple(torch.Tensor.stride(t)),
            storage_offset=int(torch.Tensor.storage_offset(t)),
            storage=-1 if key is None else self._index[key],
        )


def _offset(storage: torch.UntypedStorage) -> int | None:
    return getattr(storage, "_checkpoint_offset", None)


def _storage_key(storage: torch.UntypedStorage) -> tuple[str, int] | None:
    """Zip: the record's file offset; legacy: the memory address; meta: None (no values)."""
    offset = _offset(storage)
    if offset is not None:
        return ("offset", offset)
    if storage.device.type == "meta":
        return None
    return ("address", storage.data_ptr())


def load_torch_zip(path: Path, display: str, limits: LoadLimits) -> LoadedPickle:
    with open_regular(path, display) as (f, size):
        layout = check_torch_zip_file(f, size, display, limits)
        if layout.byteorder not in ("", sys.byteorder):
            raise CheckpointFormatError(
                f"{display} was saved on a {layout.byteorder}-endian machine; load and save it "
                "again on a little-endian one."
            )
        pkl = layout.record(layout.root + "data.pkl")
        assert pkl is not None  # the layout's root is the folder holding it
        data = read_exactly(f, pkl.data_offset, pkl.size, display)
        facts: dict[str, Any] = {}
        scan_pickle_bytes(data, display, limits, facts=facts)
        try:
            found = read_data_pkl(data, facts)
            data = b""  # read: not held through the checks (~10 MB at 100,000 keys)
            return _metadata_load(found, layout, display, limits)
        except Unsupported:
            pass  # torch's weights-only unpickler decides, as it always did
        data = b""
        f.seek(0)
        skeleton = _weights_only_load(f, path, display, layout=layout, map_location="meta")
    declared = _check_tensors(skeleton, display, limits, layout=layout)
    storages: list[int] = []
    index: dict[tuple[str, Any] | str, int] = {}
    for storage in declared:  # one per record: tied tensors get the very same storage
        key = _storage_key(storage)
        if key is not None:
            index[key] = len(storages) // 2
            storages += (key[1], storage.nbytes())
    return LoadedPickle(skeleton, storages, [], index)


def _metadata_load(
    found: MetadataPickle, layout: TorchZipLayout, display: str, limits: LoadLimits
) -> LoadedPickle:
    """The fast path (`torch_pickle`): metadata stand-ins (`read_data_pkl`), no torch,
    no tensor built.

    Accepts only what torch's path would accept with the same tensors (every check of
    `_check_tensors` passes); anything else raises `Unsupported` for torch's path to judge.
    """
    position, offsets, sizes = _data_member_finder(layout), layout.offsets, layout.sizes
    storages: list[int] = []
    index: dict[tuple[str, Any] | str, int] = {}
    for _, value in walk(found.obj, limits, display):
        if isinstance(value, StorageRef) or type(value).__name__ == "_StorageClass":
            raise Unsupported("a storage outside a tensor")
        if not isinstance(value, TensorRef):
            continue
        at = position(value.storage.key)
        if at is None or value.storage.nbytes > sizes[at]:
            raise Unsupported("a storage its record does not hold")
        key = value.storage.key  # one StorageRef per key (persistent_load)
        if key not in index:
            index[key] = len(storages) // 2
            storages += (offsets[at], value.storage.nbytes)
    return LoadedPickle(found.obj, storages, [], index)


def _data_member_finder(layout: TorchZipLayout) -> Callable[[str], int | None]:
    """The position of storage `key`'s member (`<root>data/<key>`) among the archive's.
    torch.save writes storages "0", "1", "2" ... in that order, so the first try is the
    position of "0" plus the key; the name found there is compared, and any miss makes the
    name -> position dict once (a dict of 100,000 names was ~8 MiB at the reader's peak)."""
    names, prefix = layout.names, f"{layout.root}data/"
    try:
        zero = names.index(f"{prefix}0")
    except ValueError:
        zero = -1
    every: dict[str, int] | None = None

    def position(key: str) -> int | None:
        nonlocal every
        if zero >= 0 and key.isascii() and key.isdigit() and len(key) < 19:
            at = zero + int(key)
            if at < len(names) and names[at] == prefix + key:
                return at
        if every is None:
            every = layout.positions()
        return every.get(prefix + key)

    return position


def load_torch_legacy(
    path: Path, display: str, limits: LoadLimits, *, read_values: bool = True
) -> LoadedPickle:
    with open_regular(path, display) as (f, size):
        # magic number, protocol, system info, the object, the storage keys
        opcodes = 0
        for _ in range(5):
            left = replace(limits, max_pickle_opcodes=limits.max_pickle_opcodes - opcodes)
            opcodes += scan_pickle(f, display, left)
        f.seek(0)
        skeleton = _weights_only_load(f, path, display, map_location="meta")
        declared = _check_tensors(skeleton, display, limits, layout=None)
        total = sum(s.nbytes() for s in declared)
        if total > size:
            raise UnsafeCheckpointError(
                f"{display} declares {total} bytes of tensor data but the file has only "
                f"{size}; it was refused."
            )
        if not read_values:  # the checks alone (a dataset, loaded by its own reader)
            return LoadedPickle(skeleton, [], [], {})
        f.seek(0)
        loaded = _weights_only_load(f, path, display, map_location="cpu")
    storages: list[int] = []
    blobs: list[bytes] = []
    index: dict[tuple[str, Any] | str, int] = {}
    for storage in _check_tensors(loaded, display, limits, layout=None):
        key = _storage_key(storage)
        if key is not None and key not in index:
            index[key] = len(storages) // 2
            storages += (-1, storage.nbytes())
            import torch

            as_bytes = torch.empty(0, dtype=torch.uint8).set_(storage)
            blobs.append(as_bytes.numpy().tobytes())
    return LoadedPickle(loaded, storages, blobs, index)


def _weights_only_load(
    f: IO[bytes], path: Path, display: str, *, layout: TorchZipLayout | None = None, **kwargs: Any
) -> Any:
    """torch.load(weights_only=True) with torch's errors turned into ours.

    torch's own message suggests weights_only=False; it is never passed through. The file
    object (already checked to be a regular file) is read, never the path: torch.load
    would treat a path ending in ".safetensors" as safetensors whatever its content.
    """
    import torch  # only here and for what it returns: the metadata reader needs none

    try:
        return torch.load(f, weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        raise _refused_global(str(exc), display) from None
    except NotImplementedError as exc:
        if "Quantized" in str(exc):
            keys = _quantized_keys(f, layout) if layout is not None else []
            which = f" ({', '.join(repr(k) for k in keys[:5])})" if keys else ""
            raise CheckpointFormatError(
                f"{display} holds quantized tensors{which}, which this tool does not read; "
                "save tensor.dequantize() values instead."
            ) from None
        raise _unreadable(exc, path, display) from None
    except (RecoveryError, MemoryError):
        raise  # MemoryError: the sandbox turns it into the parse_memory_bytes refusal
    except Exception as exc:  # noqa: BLE001 - anything torch raises on a bad file
        raise _unreadable(exc, path, display) from None


def _unreadable(exc: BaseException, path: Path, display: str) -> CheckpointFormatError:
    text = str(exc).replace(str(path), display).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    if "weights_only" in reason:
        reason = type(exc).__name__
    if any(s in reason for s in ("central directory", "EOF", "unexpected end", "truncated")):
        return CheckpointFormatError(
            f"{display} is truncated or damaged ({reason}); download or save it again."
        )
    return CheckpointFormatError(f"{display} could not be read as a torch checkpoint: {reason}.")


def _refused_global(message: str, display: str) -> UnsafeCheckpointError:
    """A sentence naming what the pickle wanted to import and why that was refused."""
    match = _GLOBAL_IN_MESSAGE.search(message)
    name = match.group(1) if match else None
    if name is None:
        return UnsafeCheckpointError(
            f"{display} uses pickle instructions the safe (weights-only) loader does not allow; "
            "the file needs code to load and was refused."
        )
    if name.startswith("torch.nn.modules.") or name.startswith("torch.nn.parallel."):
        what = f"a whole nn.Module object ({name})"
        fix = "save model.state_dict() instead of the model"
    elif name == "argparse.Namespace":
        what = "an argparse.Namespace (the training script's arguments)"
        fix = "store vars(args) (a plain dict) instead"
    elif name.startswith("numpy."):
        what = f"NumPy arrays or values ({name})"
        fix = "convert them with torch.from_numpy() or .tolist() before saving"
    else:
        what = f"an object that needs the Python global {name}"
        fix = "save only tensors and plain values (model.state_dict())"
    return UnsafeCheckpointError(
        f"{display} holds {what}; loading it would need code to run ({name}), so it was "
        f"refused. Ask for the weights alone: {fix}."
    )


def _quantized_keys(f: IO[bytes], layout: TorchZipLayout) -> list[str]:
    """Best-effort names for the message: the string pushed just before each qtensor rebuild.

    pickletools only parses opcodes; it never imports or calls anything.
    """
    try:
        pkl = layout.record(layout.root + "data.pkl")
        assert pkl is not None  # the layout's root is the folder holding it
        f.seek(pkl.data_offset)
        data = f.read(pkl.size)
        keys: list[str] = []
        recent: list[Any] = []
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8"):
                recent = [*recent[-3:], arg]
            elif op.name == "GLOBAL" and str(arg).endswith("_rebuild_qtensor") and recent:
                keys.append(recent[-1])
        return keys
    except Exception:  # noqa: BLE001 - the names only decorate a message
        return []


def _check_tensors(
    skeleton: Any, display: str, limits: LoadLimits, *, layout: TorchZipLayout | None
) -> list[torch.UntypedStorage]:
    """Refuse unsupported tensor kinds and storages that exceed their records.

    Returns the distinct storages declared (tied tensors share one). Methods are called
    through torch.Tensor, never the instance: an allowed global could have put an
    attribute named `numel` or `stride` on a tensor.
    """
    import torch

    declared: dict[tuple[str, int], torch.UntypedStorage] = {}
    for name, value in walk(skeleton, limits, display):
        if not isinstance(value, torch.Tensor):
            continue
        label = name or "the top-level tensor"
        _check_dense(value, label, display)
        storage = torch.Tensor.untyped_storage(value)
        _check_storage_record(value, storage, label, display, layout)
        _check_extent(value, storage, label, display)
        # Tied tensors share one storage: count it once.
        key = _storage_key(storage) or ("meta", id(storage))
        if key not in declared or declared[key].nbytes() < storage.nbytes():
            declared[key] = storage
    return list(declared.values())


def _check_dense(value: torch.Tensor, label: str, display: str) -> None:
    """Refuse tensors that are not strided (sparse, ...) or are nested: dense weights only."""
    import torch

    # Class descriptors at run time; torch's stubs declare them as plain values.
    layout_kind = cast(Any, torch.Tensor.layout).__get__(value)
    if layout_kind != torch.strided or cast(Any, torch.Tensor.is_nested).__get__(value):
        raise CheckpointFormatError(
            f"{display}: tensor {label!r} is a {str(layout_kind).removeprefix('torch.')} "
            "tensor; this tool reads dense weights only. Save tensor.to_dense() instead."
        )


def _check_storage_record(
    value: torch.Tensor,
    storage: torch.UntypedStorage,
    label: str,
    display: str,
    layout: TorchZipLayout | None,
) -> None:
    """Zip files: the storage starts at a record of the file and fits inside it, and a
    tensor with values has a record."""
    import torch

    offset = _offset(storage)
    if layout is not None and offset is not None:
        record = layout.record_at(offset)
        if record is None:
            raise UnsafeCheckpointError(
                f"{display}: the storage of tensor {label!r} does not start at any zip "
                "record; it was refused."
            )
        if storage.nbytes() > record.size:
            raise UnsafeCheckpointError(
                f"{display}: record {record.name!r} holds {record.size} bytes but the "
                f"pickle declares {storage.nbytes()} for tensor {label!r}; it was refused "
                "(a short record would let the tensor read neighbouring bytes)."
            )
    elif layout is not None and torch.Tensor.device.__get__(value).type != "meta":
        raise UnsafeCheckpointError(
            f"{display}: tensor {label!r} has values that no storage record of the file "
            "holds; it was refused."
        )


def _check_extent(
    value: torch.Tensor, storage: torch.UntypedStorage, label: str, display: str
) -> None:
    """The tensor's shape, strides and offset stay inside its storage (no negative strides)."""
    import torch

    shape = tuple(torch.Tensor.size(value))
    strides = tuple(torch.Tensor.stride(value))
    if math.prod(shape) > 0:
        last = torch.Tensor.storage_offset(value) + sum(
            (size - 1) * stride for size, stride in zip(shape, strides, strict=True)
        )
        needed = (last + 1) * torch.Tensor.element_size(value)
        if needed > storage.nbytes() or min(strides, default=0) < 0:
            raise UnsafeCheckpointError(
                f"{display}: tensor {label!r} declares shape {shape} "
                f"({needed} bytes) but its storage holds {storage.nbytes()} bytes; it was "
                "refused."
            )
