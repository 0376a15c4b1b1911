"""Read a checkpoint safely and lazily into a normalized `Checkpoint`.

`load_checkpoint(source, *, name=None, limits=LoadLimits())` takes a path (a file, a
sharded folder or a `*.index.json`) or the bytes of an upload.

What the loader guarantees
- No code from the file runs. torch files go through torch's weights-only unpickler
  (`weights_only=True`, never False); plain pickles are refused before any unpickling;
  safetensors are parsed from their JSON header. A pickle that needs a Python global
  (an nn.Module object, an argparse Namespace, NumPy arrays, `os.system`, ...) is
  refused with an `UnsafeCheckpointError` naming the global. No message suggests
  `weights_only=False`.
- Every parse happens in a limited child process (`sandbox.run_isolated`): sniffing,
  headers, the archive's setting records, the pickle scan (`pickle_scan`: no tensor or
  storage constructor outside a storage record, opcode and container budgets), torch's
  meta-device pass and the checks. The child is killed when the time budget runs out and
  cannot take this process down when it crashes; it sends back plain data (`plan_checkpoint`),
  never a pickle.
- The format is sniffed from the first bytes, never from the extension. Only regular
  files are opened (no FIFOs, devices, folders or /proc entries).
- Zip archives are checked before torch reads them: only uncompressed (STORED) members,
  no duplicate names, one data.pkl, every member inside the file, total size bounded.
  Each storage the pickle declares is compared with the size of its zip record and each
  tensor's shape with its storage. Only then are the tensors placed on a private memory
  map of the file, at the offsets that were checked.
- Inspecting reads no tensor data: zip and safetensors files are memory-mapped. Values
  are read when `tensor()`, `stats()` or `histogram()` asks; statistics follow the stored
  bytes (stride-0 dimensions once) under a time budget.
- The input file is never written (mmap is private copy-on-write). Uploaded bytes are
  written to a private temporary folder under a generated name and removed after
  loading; messages use the display name, never a server path.
- Work is bounded by `LoadLimits` (see `limits.py`); an exceeded bound raises
  `LimitExceededError` naming the field.

What it refuses (typed `RecoveryError`s with one actionable sentence)
- TorchScript archives and torch.export `.pt2` files (they contain code).
- Plain pickles, compressed/duplicated/truncated zip members, short storage records,
  shapes larger than their storage, big-endian archives, oversized or inconsistent
  safetensors headers
  (overlapping ranges, unknown dtypes), shard names that are not plain file names
  inside the index's folder, empty files, text and other non-checkpoints.
- Sparse and quantized tensors (named in the message); meta, float8, complex and
  non-contiguous tensors load as they are (meta tensors have no values: their stats
  are NaN).

Tied weights (keys that are the same view of one storage) stay separate keys;
`Checkpoint.tied` maps each later key to the first key sharing its storage. Legacy
(non-zip) torch files cannot be memory-mapped: their declared storages are bounded by the
file size, read in the child and sent back as bytes.
"""

from __future__ import annotations

import math
import mmap
import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovery_core.errors import CheckpointFormatError, LimitExceededError
from recovery_core.io.container import (
    check_safetensors_header,
    find_shard_index,
    open_regular,
    read_shard_index,
    sniff_format,
)
from recovery_core.io.limits import DEFAULT_LIMITS, LoadLimits
from recovery_core.io.sandbox import run_isolated
from recovery_core.io.torch_file import load_torch_legacy, load_torch_zip
from recovery_core.io.torch_pickle import DTYPE_ITEMSIZE
from recovery_core.io.unwrap import (
    check_key,
    strip_module_paths,
    strip_shared_prefix,
    text_chars,
    unwrap,
)

if TYPE_CHECKING:
    import torch

# Listing a checkpoint (names, shapes, dtypes, sizes) needs no torch: it is imported when
# values are read (tensor, stats, histogram, state_dict) or an unusual dtype is named.

__all__ = [
    "Checkpoint",
    "LoadLimits",
    "TensorInfo",
    "TensorStats",
    "load_checkpoint",
    "tensor_info",
]


@dataclass(frozen=True, slots=True)  # slots: 100,000 of them are common
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix: "float32"
    numel: int
    nbytes: int


@dataclass(frozen=True)
class TensorStats:
    """Over the finite values; NaN when there are none (or the tensor is meta / empty)."""

    name: str
    mean: float
    std: float  # sample standard deviation (n - 1); 0.0 for a single value
    min: float
    max: float
    nan_count: int
    inf_count: int


def tensor_info(name: str, t: torch.Tensor) -> TensorInfo:
    """Shape facts only: never touches the tensor's data."""
    return TensorInfo(
        name=name,
        shape=tuple(t.shape),
        dtype=str(t.dtype).removeprefix("torch."),
        numel=t.numel(),
        nbytes=t.numel() * t.element_size(),
    )


@dataclass(frozen=True)
class Checkpoint:
    tensors: tuple[TensorInfo, ...]
    format: str  # "torch-zip", "torch-legacy", "safetensors", "sharded", "memory"
    _read: Callable[[str], torch.Tensor] = field(repr=False, compare=False)
    source_name: str = ""  # a display name (never a server path for uploads)
    wrapper_key: str | None = None  # e.g. "state_dict" when the weights were nested
    stripped_prefix: str = ""  # e.g. "module." when every key carried it
    extras: Mapping[str, str] = field(default_factory=dict)  # other entries: name -> summary
    hyper_parameters: Mapping[str, Any] = field(default_factory=dict)  # plain values only
    metadata: Mapping[str, str] = field(default_factory=dict)  # safetensors __metadata__
    # The pickle's `_metadata` module paths (after prefix stripping): every submodule,
    # including parameter-less ones such as activations, "" being the root.
    module_paths: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # Tied weights: key -> the first key (in file order) sharing its storage.
    tied: Mapping[str, str] = field(default_factory=dict)
    # Every file read (real paths: the file, or the index and each shard); empty for
    # uploads. Outputs are compared with all of them, never only with the path given.
    source_files: tuple[str, ...] = ()
    # Bounds statistics and histograms too (their time, over the real bytes).
    limits: LoadLimits = field(default=DEFAULT_LIMITS, repr=False, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {t.name: t.shape for t in self.tensors}

    def info(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def tensor(self, name: str) -> torch.Tensor:
        """The values of one tensor, read now (and only now). Do not modify it in place."""
        return self._read(name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {t.name: self._read(t.name) for t in self.tensors}

    def stats(self, name: str) -> TensorStats:
        """mean/std/min/max over finite values and NaN/Inf counts, in float64."""
        from recovery_core.io.tensor_stats import summarize_values

        return TensorStats(
            name, *summarize_values(self._read(name), self.limits.stats_time_seconds, name)
        )

    def stats_all(self) -> list[TensorStats]:
        return [self.stats(t.name) for t in self.tensors]

    def histogram(self, name: str, bins: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts [bins], edges [bins + 1]) of the finite values, via torch.histc."""
        from recovery_core.io.tensor_stats import value_histogram

        return value_histogram(self._read(name), bins, self.limits.stats_time_seconds, name)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, source_name: str = "in memory", **kw: Any
    ) -> Checkpoint:
        sd = dict(state_dict)
        metadata = getattr(state_dict, "_metadata", None)
        if metadata is not None and "module_paths" not in kw:
            kw["module_paths"] = tuple(metadata.keys())
        kw.setdefault("tied", find_tied(sd))
        return cls(
            tensors=tuple(tensor_info(k, v) for k, v in sd.items()),
            format="memory",
            _read=sd.__getitem__,
            source_name=source_name,
            **kw,
        )


def find_tied(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """key -> first key that is the very same view of the same storage (no data is read).

    Slices of one storage at different offsets (a split fused weight) are not tied.
    """
    import torch

    first_by_storage: dict[tuple[Any, ...], str] = {}
    tied = {}
    for key, t in state_dict.items():
        if t.layout != torch.strided or t.device.type == "meta" or t.is_quantized:
            continue
        storage = t.untyped_storage()
        if storage.nbytes() == 0:
            continue
        ident = (t.device, storage.data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype)
        if ident in first_by_storage:
            tied[key] = first_by_storage[ident]
        else:
            first_by_storage[ident] = key
    return tied


def load_checkpoint(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    limits: LoadLimits = DEFAULT_LIMITS,
) -> Checkpoint:
    """Load a checkpoint file, sharded folder, index file or uploaded bytes. See the module doc."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        display = name or "the uploaded file"
        if len(source) > limits.max_file_bytes:
            raise LimitExceededError(
                f"{display} is {len(source)} bytes, above the {limits.max_file_bytes}-byte "
                "limit (max_file_bytes); it was refused.",
                limit="max_file_bytes",
            )
        # A private folder and a generated name: the client's file name is never a path.
        folder = tempfile.mkdtemp(prefix="recovery-upload-")
        path = Path(folder) / "upload.bin"
        try:
            try:
                path.write_bytes(source)
            except OSError:
                raise CheckpointFormatError(
                    f"{display} could not be stored for reading (is the server's disk full?)."
                ) from None
            # Memory maps keep the data alive after the folder is removed.
            return replace(_load_isolated(path, display, limits), source_files=())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    try:
        path = Path(os.fspath(source))
    except TypeError:
        raise CheckpointFormatError("the checkpoint must be a path or the file's bytes.") from None
    display = name or path.name or str(path)
    if not os.path.lexists(path):
        raise CheckpointFormatError(f"{display} does not exist; check the path.")
    return _load_isolated(path, display, limits)


def _load_isolated(path: Path, display: str, limits: LoadLimits) -> Checkpoint:
    """Parse and check in a limited child process; map the checked ranges here."""
    plan, blobs = run_isolated(
        plan_checkpoint,
        (str(path), display, limits),
        display=display,
        seconds=limits.time_budget_seconds,
        memory_bytes=limits.parse_memory_bytes,
    )
    return _from_plan(plan, blobs, display, limits)


# --- in the parsing child: file(s) -> a plan of plain data ---------------------------------


def plan_checkpoint(path_text: str, display: str, limits: LoadLimits) -> tuple[dict, list[bytes]]:
    """Everything the parent needs, as JSON-able data (+ legacy storages' bytes).

    Runs in the isolated child (`sandbox.run_isolated`): every untrusted parse happens here.
    """
    path = Path(path_text)
    fmt = sniff_format(path, display, limits)
    files: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    if fmt == "sharded":
        part = _plan_sharded(path, display, limits, files, blobs)
    else:
        part = _plan_file(path, fmt, display, limits, files, blobs)
    for key in part["tensors"]:
        check_key(key, limits, display)
    used = text_chars([part["metadata"], part["module_paths"]], limits.max_text_chars)
    if used > limits.max_text_chars:
        raise LimitExceededError(
            f"{display} holds more than {limits.max_text_chars} characters of metadata "
            "(max_text_chars); it was refused.",
            limit="max_text_chars",
        )
    part["tied"] = _tied(part["tensors"])
    part["tensors"] = _compact(part["tensors"])
    read = [os.path.realpath(f["path"]) for f in files] + part.pop("index", [])
    return {"format": fmt, "files": files, "read": read, **part}, blobs


def _plan_file(
    path: Path, fmt: str, display: str, limits: LoadLimits, files: list, blobs: list[bytes]
) -> dict[str, Any]:
    with open_regular(path, display) as (_, size):
        pass  # its size, checked before any parse
    if size > limits.max_file_bytes:
        raise LimitExceededError(
            f"{display} is {size} bytes, above the {limits.max_file_bytes}-byte limit "
            "(max_file_bytes); it was refused.",
            limit="max_file_bytes",
        )
    if fmt == "safetensors":
        return _plan_safetensors(path, size, display, limits, files)
    return _plan_torch(path, fmt, size, display, limits, files, blobs)


def _plan_safetensors(
    path: Path, size: int, display: str, limits: LoadLimits, files: list
) -> dict[str, Any]:
    file_index = len(files)
    entries, metadata, data_start = check_safetensors_header(path, display, limits)
    files.append(
        {
            "path": str(path),
            "size": size,
            # (offset, bytes) of each storage, one flat list (`_FileStorages`)
            "storages": [n for e in entries for n in (data_start + e.begin, e.end - e.begin)],
        }
    )
    strides: dict[tuple[int, ...], list[int]] = {}  # one per distinct shape
    tensors = {}
    for n, e in enumerate(entries):
        stride = strides.get(e.shape)
        if stride is None:
            stride = strides[e.shape] = _contiguous_strides(e.shape)
        tensors[e.name] = [file_index, _SAFETENSORS_DTYPE_NAMES[e.dtype], e.shape, stride, 0, n]
    return _part(tensors, metadata=metadata)


def _plan_torch(
    path: Path,
    fmt: str,
    size: int,
    display: str,
    limits: LoadLimits,
    files: list,
    blobs: list[bytes],
) -> dict[str, Any]:
    file_index = len(files)
    loader = load_torch_zip if fmt == "torch-zip" else load_torch_legacy
    loaded = loader(path, display, limits)
    found = unwrap(loaded.obj, display, limits)
    files.append(
        {
            "path": str(path),
            "size": size,
            "storages": loaded.storages,  # flat, as above
            "blobs": len(blobs) if loaded.blobs else None,
        }
    )
    blobs.extend(loaded.blobs)
    tensors = loaded.plan_rows(found.state_dict, file_index)
    return _part(
        tensors,
        wrapper_key=found.wrapper_key,
        extras=found.extras,
        hyper_parameters=found.hyper_parameters,
        module_paths=list(found.module_paths),
        warnings=list(found.warnings),
    )


def _part(tensors: dict[str, list], **kw: Any) -> dict[str, Any]:
    part: dict[str, Any] = {
        "tensors": tensors,
        "wrapper_key": None,
        "extras": {},
        "hyper_parameters": {},
        "metadata": {},
        "module_paths": [],
        "warnings": [],
    }
    part.update(kw)
    return part


def _contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return strides[::-1]


def _compact(tensors: dict[str, list]) -> dict[str, list]:
    """The rows as they cross to the caller: names, the distinct layouts (dtype, shape,
    stride, offset: a few for 100,000 tiny tensors) and three integers per tensor (file,
    layout, storage). A list per tensor with two lists inside cost ~0.6 s to encode and
    decode at 100,000 keys, and a shape tuple per tensor in the caller."""
    layouts: dict[tuple[Any, ...], int] = {}
    rows: list[int] = []
    for file_index, dtype, shape, stride, offset, storage in tensors.values():
        ident = (dtype, tuple(shape), tuple(stride), offset)
        at = layouts.get(ident)
        if at is None:
            at = layouts[ident] = len(layouts)
        rows += (file_index, at, storage)
    return {"names": list(tensors), "layouts": [list(layout) for layout in layouts], "rows": rows}


def _expand(compact: dict[str, list], display: str) -> tuple[list[str], list[tuple], array]:
    """`_compact`'s names, layouts (as tuples) and rows (kept for reading values: one
    array of integers, ~8 bytes a number where a list of int objects took ~36), checked
    for their form."""
    try:
        names, rows = compact["names"], _integers(compact["rows"], display)
        layouts = [
            (dtype, tuple(shape), tuple(stride), offset)
            for dtype, shape, stride, offset in compact["layouts"]
        ]
        well_formed = (
            len(rows) == 3 * len(names)
            and all(0 <= i < len(layouts) for i in rows[1::3])
            and all(_plain_layout(*layout) for layout in layouts)
        )
    except (KeyError, TypeError, ValueError):
        well_formed = False
    if not well_formed:
        raise _malformed(display)
    return names, layouts, rows


def _integers(values: Iterable[Any], display: str) -> array:
    """`values` as one array of 64-bit integers; anything else is a malformed reply."""
    try:
        return array("q", values)
    except (TypeError, OverflowError):  # a float or a text would have been an int
        raise _malformed(display) from None


def _malformed(display: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{display} could not be read: the reader's reply is malformed.")


def _plain_layout(dtype: Any, shape: tuple, stride: tuple, offset: Any) -> bool:
    sizes = (*shape, *stride, offset)
    return type(dtype) is str and all(type(n) is int and n >= 0 for n in sizes)


def _tied(tensors: dict[str, list]) -> dict[str, str]:
    """key -> first key that is the very same view of the same stored bytes.

    Slices of one storage at different offsets (a split fused weight) are not tied.
    """
    first: dict[tuple[Any, ...], str] = {}
    tied = {}
    for key, (file_index, dtype, shape, stride, offset, storage) in tensors.items():
        if storage < 0:
            continue
        # A tuple of plain values (a JSON text per key cost ~3 us: 0.3 s at 100,000 keys).
        ident = (file_index, storage, offset, tuple(shape), tuple(stride), dtype)
        if ident in first:
            tied[key] = first[ident]
        else:
            first[ident] = key
    return tied


def _plan_sharded(
    path: Path, display: str, limits: LoadLimits, files: list, blobs: list[bytes]
) -> dict[str, Any]:
    index = find_shard_index(path, display) if path.is_dir() else path
    shard_of, index_metadata = read_shard_index(index, display, limits)
    parts: dict[Path, dict[str, Any]] = {}
    for shard in dict.fromkeys(shard_of.values()):
        label = f"{display} shard {shard.name}"
        shard_fmt = sniff_format(shard, label, limits)
        if shard_fmt == "sharded":
            raise CheckpointFormatError(f"{display}: shard {shard.name} is not a weights file.")
        parts[shard] = _plan_file(shard, shard_fmt, label, limits, files, blobs)
    tensors: dict[str, list] = {}
    for key, shard in shard_of.items():
        if key not in parts[shard]["tensors"]:
            raise CheckpointFormatError(
                f"{display}: the index puts {key!r} in {shard.name}, but that shard does not "
                "hold it; the shards do not match the index."
            )
        tensors[key] = parts[shard]["tensors"][key]
    warnings = [w for p in parts.values() for w in p["warnings"]]
    unlisted = sum(len(set(p["tensors"]) - set(shard_of)) for p in parts.values())
    if unlisted:
        warnings.append(f"ignored {unlisted} tensors that the shards hold but the index omits")
    metadata = {k: v for p in parts.values() for k, v in p["metadata"].items()}
    return _part(
        tensors,
        metadata={**metadata, **index_metadata},
        warnings=warnings,
        index=[os.path.realpath(index)],
    )


# --- in the caller's process: plan -> Checkpoint ----------------------------------------


def _from_plan(plan: dict, blobs: list[bytes], display: str, limits: LoadLimits) -> Checkpoint:
    files = [_FileStorages(f, blobs, display) for f in plan["files"]]
    names, layouts, rows = _expand(plan["tensors"], display)
    sizes = [math.prod(shape) for _, shape, _, _ in layouts]
    itemsizes = [_itemsize(dtype, display) for dtype, _, _, _ in layouts]
    infos: dict[str, TensorInfo] = {}
    for key, at in zip(names, rows[1::3], strict=True):
        dtype, shape, _, _ = layouts[at]
        infos[key] = TensorInfo(key, shape, dtype, sizes[at], sizes[at] * itemsizes[at])
    row_of: dict[str, int] | None = None  # key -> its row: made on the first read (~8 MiB
    # at 100,000 keys that listing never needs), whole before it is shared between threads

    def read(key: str) -> torch.Tensor:
        import torch

        nonlocal row_of
        where = row_of
        if where is None:
            where = row_of = {name: 3 * i for i, name in enumerate(names)}
        file_index, at, storage = rows[where[key] : where[key] + 3]
        dtype, shape, stride, offset = layouts[at]
        if storage < 0:
            return torch.empty_strided(shape, stride, dtype=_dtype(dtype, display), device="meta")
        return torch.empty(0, dtype=_dtype(dtype, display)).set_(
            files[file_index].storage(storage), offset, shape, stride
        )

    part = _Part(
        infos=infos,
        read=read,
        tied=plan["tied"],
        wrapper_key=plan["wrapper_key"],
        extras=plan["extras"],
        hyper_parameters=plan["hyper_parameters"],
        metadata=plan["metadata"],
        module_paths=tuple(plan["module_paths"]),
        warnings=tuple(plan["warnings"]),
    )
    return replace(_finish(part, plan["format"], display, limits), source_files=tuple(plan["read"]))


# Bytes per element of dtype names torch.save and safetensors use (torch's itemsize).
_ITEMSIZE = {
    **DTYPE_ITEMSIZE,
    "float8_e5m2": 1,
    "float8_e4m3fn": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
}


def _itemsize(name: str, display: str) -> int:
    size = _ITEMSIZE.get(name) if isinstance(name, str) else None
    return size if size is not None else _dtype(name, display).itemsize


def _dtype(name: str, display: str) -> torch.dtype:
    import torch

    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointFormatError(f"{display} uses an unknown tensor type {name!r}.")
    return dtype


class _FileStorages:
    """The checked storages of one file: windows on a private (copy-on-write) memory map,
    or, for legacy files, the bytes the child read."""

    def __init__(self, plan: dict, blobs: list[bytes], display: str) -> None:
        # (offset, bytes) of each storage, flat, in one array: ~16 bytes a storage where
        # pairs of int objects took ~130 (100,000 storages are common, kept while open).
        self._ranges = _integers(plan["storages"], display)
        if len(self._ranges) % 2:
            raise _malformed(display)
        count = len(self._ranges) // 2
        self._cache: dict[int, torch.UntypedStorage] = {}  # tied tensors share one storage
        first_blob = plan.get("blobs")
        self._blobs = None if first_blob is None else blobs[first_blob : first_blob + count]
        self._map: mmap.mmap | None = None
        self._whole: torch.UntypedStorage | None = None
        self._size, self._display = plan["size"], display
        if self._blobs is None and plan["size"]:
            with open_regular(Path(plan["path"]), display) as (f, size):
                if size != plan["size"]:
                    raise CheckpointFormatError(f"{display} changed while it was being read.")
                # ACCESS_COPY: MAP_PRIVATE, so writes to a tensor never reach the file. Mapped
                # now (an upload's file is removed after loading), given to torch when read.
                self._map = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)

    def storage(self, index: int) -> torch.UntypedStorage:
        import torch

        if self._whole is None and self._map is not None:
            self._whole = torch.frombuffer(self._map, dtype=torch.uint8).untyped_storage()
        if index not in self._cache:
            if self._blobs is not None:
                data = bytearray(self._blobs[index])
                self._cache[index] = (
                    torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
                    if data
                    else torch.UntypedStorage(0)
                )
            else:
                offset, nbytes = self._ranges[2 * index], self._ranges[2 * index + 1]
                if not 0 <= offset <= offset + nbytes <= self._size:  # the child's word, checked
                    raise CheckpointFormatError(f"{self._display} has a storage outside the file.")
                assert self._whole is not None or nbytes == 0
                whole = self._whole if self._whole is not None else torch.UntypedStorage(0)
                self._cache[index] = whole[offset : offset + nbytes]
        return self._cache[index]


# --- one file or a sharded set -> Checkpoint -------------------------------------------


@dataclass
class _Part:
    """Tensors before prefix stripping: key -> (info, reader of that key)."""

    infos: dict[str, TensorInfo]
    read: Callable[[str], torch.Tensor]
    tied: dict[str, str] = field(default_factory=dict)
    wrapper_key: str | None = None
    extras: dict[str, str] = field(default_factory=dict)
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    module_paths: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


# safetensors dtype code -> torch dtype name (TensorInfo.dtype)
_SAFETENSORS_DTYPE_NAMES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
    "C64": "complex64",
}


def _finish(part: _Part, fmt: str, display: str, limits: LoadLimits) -> Checkpoint:
    prefix = strip_shared_prefix(list(part.infos))
    read_stripped: Callable[[str], torch.Tensor]
    if prefix:
        original = {key[len(prefix) :]: key for key in part.infos}
        infos = tuple(replace(i, name=i.name[len(prefix) :]) for i in part.infos.values())
        read = part.read

        def read_original(name: str) -> torch.Tensor:
            return read(original[name])

        read_stripped = read_original
    else:
        infos, read_stripped = tuple(part.infos.values()), part.read

    tied = {k[len(prefix) :]: v[len(prefix) :] for k, v in part.tied.items()}
    warnings = list(part.warnings)
    if tied:
        pairs = [f"{k} = {v}" for k, v in tied.items()]
        warnings.append(
            f"{len(tied)} tied weight{'s' if len(tied) > 1 else ''} (one storage, kept as separate "
            f"keys): {', '.join(pairs[:5])}{' ...' if len(pairs) > 5 else ''}"
        )
    return Checkpoint(
        tensors=infos,
        format=fmt,
        _read=read_stripped,
        source_name=display,
        wrapper_key=part.wrapper_key,
        stripped_prefix=prefix,
        extras=part.extras,
        hyper_parameters=part.hyper_parameters,
        metadata=part.metadata,
        module_paths=strip_module_paths(part.module_paths, prefix),
        warnings=tuple(warnings),
        tied=tied,
        limits=limits,
    )
