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
- The format is sniffed from the first bytes, never from the extension.
- Zip archives are checked before torch reads them: only uncompressed (STORED) members,
  no duplicate names, one data.pkl, every member inside the file, total size bounded.
  The pickle is unpickled onto the meta device (no tensor data read); each storage it
  declares is compared with the size of its zip record and each tensor's shape with its
  storage. Only then are the tensors placed on a private memory map of the file, at
  the offsets that were checked.
- Inspecting reads no tensor data: zip files are memory-mapped, safetensors are read
  from their header. Values are read when `tensor()`, `stats()` or `histogram()` asks.
  (Measured: inspecting a 200 MB zip or safetensors file grows peak RSS by ~2 MB / ~0 MB.)
- The input file is never written (mmap is private copy-on-write). Uploaded bytes are
  written to a private temporary folder under a generated name and removed after
  loading; messages use the display name, never a server path.
- Work is bounded by `LoadLimits`: file size, key count, nesting depth, objects walked
  (shared-reference "billion laughs" pickles), safetensors header size, shard-index size,
  and a wall-clock budget (the load runs in a worker thread; past the budget the call
  raises at once while the worker finishes in the background and its result is dropped).

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
`Checkpoint.tied` maps each later key to the first key sharing its storage. Legacy (non-zip) torch files
cannot be memory-mapped: their declared storages are bounded by the file size and
then read into memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from recovery_core.container import (
    SafetensorsEntry,
    check_safetensors_header,
    find_shard_index,
    read_shard_index,
    sniff_format,
)
from recovery_core.errors import CheckpointFormatError, UnsafeCheckpointError
from recovery_core.limits import LoadLimits
from recovery_core.tensor_stats import summarize_values, value_histogram
from recovery_core.torch_file import load_torch_legacy, load_torch_zip
from recovery_core.unwrap import strip_module_paths, strip_shared_prefix, unwrap

__all__ = [
    "Checkpoint",
    "LoadLimits",
    "TensorInfo",
    "TensorStats",
    "load_checkpoint",
    "tensor_info",
]


@dataclass(frozen=True)
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
        return TensorStats(name, *summarize_values(self._read(name)))

    def stats_all(self) -> list[TensorStats]:
        return [self.stats(t.name) for t in self.tensors]

    def histogram(self, name: str, bins: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts [bins], edges [bins + 1]) of the finite values, via torch.histc."""
        return value_histogram(self._read(name), bins)

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
    limits: LoadLimits = LoadLimits(),  # noqa: B008 - frozen, so a shared default is safe
) -> Checkpoint:
    """Load a checkpoint file, sharded folder, index file or uploaded bytes. See the module doc."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        display = name or "the uploaded file"
        if len(source) > limits.max_file_bytes:
            raise UnsafeCheckpointError(
                f"{display} is {len(source)} bytes, above the {limits.max_file_bytes}-byte "
                "limit; it was refused."
            )
        # A private folder and a generated name: the client's file name is never a path.
        folder = tempfile.mkdtemp(prefix="recovery-upload-")
        path = Path(folder) / "upload.bin"
        # Memory maps and safetensors handles keep the data alive after the unlink.
        cleanup: Callable[[], None] | None = lambda: shutil.rmtree(folder, ignore_errors=True)  # noqa: E731
        try:
            path.write_bytes(source)
        except OSError:
            cleanup()
            raise CheckpointFormatError(
                f"{display} could not be stored for reading (is the server's disk full?)."
            ) from None
    else:
        path = Path(source)
        display = name or path.name or str(path)
        cleanup = None
        if not path.exists():
            raise CheckpointFormatError(f"{display} does not exist; check the path.")
    return _within_budget(lambda: _load_path(path, display, limits), display, limits, cleanup)


def _within_budget(
    load: Callable[[], Checkpoint],
    display: str,
    limits: LoadLimits,
    cleanup: Callable[[], None] | None,
) -> Checkpoint:
    """Run the load in a worker thread and stop waiting once the time budget is spent.

    A thread cannot be killed: past the budget it finishes in the background (its result
    is dropped, uploaded bytes are removed when it ends, and interpreter exit waits for it).
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["checkpoint"] = load()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc
        finally:
            if cleanup is not None:
                cleanup()
            done.set()

    # Not a daemon: killing a thread inside torch at interpreter exit aborts the process.
    threading.Thread(target=run, name="checkpoint-load").start()
    if not done.wait(limits.time_budget_seconds):
        raise CheckpointFormatError(
            f"loading {display} took longer than {limits.time_budget_seconds:g} seconds, this "
            "tool's limit; the file is too large or too complex to inspect here."
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["checkpoint"]


# --- one file or a sharded set -> Checkpoint -------------------------------------------


@dataclass
class _Part:
    """Tensors of one file before prefix stripping: key -> (info, reader of that key)."""

    infos: dict[str, TensorInfo]
    read: Callable[[str], torch.Tensor]
    tied: dict[str, str] = field(default_factory=dict)
    wrapper_key: str | None = None
    extras: dict[str, str] = field(default_factory=dict)
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    module_paths: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _load_path(path: Path, display: str, limits: LoadLimits) -> Checkpoint:
    fmt = sniff_format(path, display)
    if fmt == "sharded":
        part = _load_sharded(path, display, limits)
    else:
        part = _load_file(path, fmt, display, limits)
    return _finish(part, fmt, display)


def _load_file(path: Path, fmt: str, display: str, limits: LoadLimits) -> _Part:
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise UnsafeCheckpointError(
            f"{display} is {size} bytes, above the {limits.max_file_bytes}-byte limit; "
            "it was refused."
        )
    if fmt == "safetensors":
        return _load_safetensors(path, display, limits)
    loader = load_torch_zip if fmt == "torch-zip" else load_torch_legacy
    loaded = loader(path, display, limits)
    found = unwrap(loaded.obj, display, limits)
    sd = {k: loaded.materialize(v) for k, v in found.state_dict.items()}
    return _Part(
        infos={k: tensor_info(k, v) for k, v in sd.items()},
        read=sd.__getitem__,
        tied=find_tied(sd),
        wrapper_key=found.wrapper_key,
        extras=found.extras,
        hyper_parameters=found.hyper_parameters,
        module_paths=found.module_paths,
        warnings=found.warnings,
    )


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


def _load_safetensors(path: Path, display: str, limits: LoadLimits) -> _Part:
    from safetensors import safe_open

    entries, metadata = check_safetensors_header(path, display, limits)
    try:
        # One handle for the checkpoint's life: it maps the file, so reads stay lazy and
        # keep working after an upload's temporary copy is removed.
        handle = safe_open(str(path), framework="pt")
        keys = set(handle.keys())
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointFormatError(
            f"{display} is not a readable safetensors file ({type(exc).__name__})."
        ) from None
    if keys != {e.name for e in entries}:
        raise CheckpointFormatError(f"{display}: the safetensors header is inconsistent.")

    def read(key: str) -> torch.Tensor:
        if key not in keys:
            raise KeyError(key)
        return handle.get_tensor(key)

    return _Part(
        infos={e.name: _safetensors_info(e) for e in entries},
        read=read,
        metadata=metadata,
    )


def _safetensors_info(e: SafetensorsEntry) -> TensorInfo:
    numel = 1
    for d in e.shape:
        numel *= d
    return TensorInfo(e.name, e.shape, _SAFETENSORS_DTYPE_NAMES[e.dtype], numel, e.end - e.begin)


def _load_sharded(path: Path, display: str, limits: LoadLimits) -> _Part:
    index = find_shard_index(path, display) if path.is_dir() else path
    shard_of, index_metadata = read_shard_index(index, display, limits)
    parts: dict[Path, _Part] = {}
    for shard in dict.fromkeys(shard_of.values()):
        shard_fmt = sniff_format(shard, f"{display} shard {shard.name}")
        if shard_fmt == "sharded":
            raise CheckpointFormatError(f"{display}: shard {shard.name} is not a weights file.")
        parts[shard] = _load_file(shard, shard_fmt, f"{display} shard {shard.name}", limits)
    infos: dict[str, TensorInfo] = {}
    for key, shard in shard_of.items():
        if key not in parts[shard].infos:
            raise CheckpointFormatError(
                f"{display}: the index puts {key!r} in {shard.name}, but that shard does not "
                "hold it; the shards do not match the index."
            )
        infos[key] = parts[shard].infos[key]
    warnings = [w for p in parts.values() for w in p.warnings]
    unlisted = sum(len(set(p.infos) - set(shard_of)) for p in parts.values())
    if unlisted:
        warnings.append(f"ignored {unlisted} tensors that the shards hold but the index omits")
    return _Part(
        infos=infos,
        read=lambda key: parts[shard_of[key]].read(key),
        tied={k: v for p in parts.values() for k, v in p.tied.items() if k in infos},
        metadata={
            **{k: v for p in parts.values() for k, v in p.metadata.items()},
            **index_metadata,
        },
        warnings=tuple(warnings),
    )


def _finish(part: _Part, fmt: str, display: str) -> Checkpoint:
    prefix = strip_shared_prefix(list(part.infos))
    if prefix:
        original = {key[len(prefix) :]: key for key in part.infos}
        infos = tuple(replace(i, name=i.name[len(prefix) :]) for i in part.infos.values())
        read = part.read

        def read_stripped(name: str) -> torch.Tensor:
            return read(original[name])
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
    )
