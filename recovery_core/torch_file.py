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

import pickle
import pickletools
import re
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recovery_core.container import TorchZipLayout, check_torch_zip
from recovery_core.errors import CheckpointFormatError, RecoveryError, UnsafeCheckpointError
from recovery_core.limits import LoadLimits
from recovery_core.unwrap import walk

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


@dataclass(frozen=True)
class LoadedPickle:
    """The unpickled object and how to turn one of its tensors into a readable one."""

    obj: Any  # dicts, lists, plain values and tensors (meta placeholders for zip files)
    materialize: Callable[[torch.Tensor], torch.Tensor]


def load_torch_zip(path: Path, display: str, limits: LoadLimits) -> LoadedPickle:
    layout = check_torch_zip(path, display, limits)
    if layout.byteorder not in ("", sys.byteorder):
        raise CheckpointFormatError(
            f"{display} was saved on a {layout.byteorder}-endian machine; load and save it "
            "again on a little-endian one."
        )
    skeleton = _weights_only_load(path, display, layout=layout, map_location="meta")
    _check_tensors(skeleton, display, limits, layout=layout)
    return LoadedPickle(skeleton, _FileMap(path).materialize)


def load_torch_legacy(path: Path, display: str, limits: LoadLimits) -> LoadedPickle:
    skeleton = _weights_only_load(path, display, map_location="meta")
    declared = _check_tensors(skeleton, display, limits, layout=None)
    if declared > path.stat().st_size:
        raise UnsafeCheckpointError(
            f"{display} declares {declared} bytes of tensor data but the file has only "
            f"{path.stat().st_size}; it was refused."
        )
    return LoadedPickle(_weights_only_load(path, display, map_location="cpu"), lambda t: t)


class _FileMap:
    """Checked meta tensors -> tensors on a private memory map of the file (read lazily)."""

    def __init__(self, path: Path) -> None:
        size = path.stat().st_size
        # shared=False: MAP_PRIVATE, so writes to a tensor never reach the file.
        self._whole = torch.UntypedStorage.from_file(str(path), False, size) if size else None
        self._storages: dict[int, torch.UntypedStorage] = {}  # file offset -> storage

    def materialize(self, skeleton: torch.Tensor) -> torch.Tensor:
        storage = skeleton.untyped_storage()
        offset = getattr(storage, "_checkpoint_offset", None)
        if offset is None or self._whole is None:
            return skeleton  # saved as a meta tensor: there is no data to map
        if offset not in self._storages:  # tied tensors get the very same storage
            self._storages[offset] = self._whole[offset : offset + storage.nbytes()]
        return torch.empty(0, dtype=skeleton.dtype).set_(
            self._storages[offset], skeleton.storage_offset(), skeleton.shape, skeleton.stride()
        )


def _weights_only_load(
    path: Path, display: str, *, layout: TorchZipLayout | None = None, **kwargs: Any
) -> Any:
    """torch.load(weights_only=True) with torch's errors turned into ours.

    torch's own message suggests weights_only=False; it is never passed through.
    """
    try:
        # A file object, not the path: torch.load would treat a path ending in
        # ".safetensors" as safetensors whatever its content.
        with path.open("rb") as f:
            return torch.load(f, weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        raise _refused_global(str(exc), display) from None
    except NotImplementedError as exc:
        if "Quantized" in str(exc):
            keys = _quantized_keys(path, layout) if layout is not None else []
            which = f" ({', '.join(repr(k) for k in keys[:5])})" if keys else ""
            raise CheckpointFormatError(
                f"{display} holds quantized tensors{which}, which this tool does not read; "
                "save tensor.dequantize() values instead."
            ) from None
        raise _unreadable(exc, path, display) from None
    except RecoveryError:
        raise
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


def _quantized_keys(path: Path, layout: TorchZipLayout) -> list[str]:
    """Best-effort names for the message: the string pushed just before each qtensor rebuild.

    pickletools only parses opcodes; it never imports or calls anything.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(layout.root + "data.pkl")
        keys, recent = [], []
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
) -> int:
    """Refuse unsupported tensor kinds and storages that exceed their records.

    Returns the total bytes of distinct storages declared.
    """
    declared: dict[int, int] = {}
    for name, value in walk(skeleton, limits, display):
        if not isinstance(value, torch.Tensor):
            continue
        label = name or "the top-level tensor"
        if value.layout != torch.strided:
            raise CheckpointFormatError(
                f"{display}: tensor {label!r} is a {str(value.layout).removeprefix('torch.')} "
                "tensor; this tool reads dense weights only. Save tensor.to_dense() instead."
            )
        storage = value.untyped_storage()
        offset = getattr(storage, "_checkpoint_offset", None)
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
        if value.numel() > 0:
            last = value.storage_offset() + sum(
                (size - 1) * stride
                for size, stride in zip(value.shape, value.stride(), strict=True)
            )
            needed = (last + 1) * value.element_size()
            if needed > storage.nbytes() or min(value.stride(), default=0) < 0:
                raise UnsafeCheckpointError(
                    f"{display}: tensor {label!r} declares shape {tuple(value.shape)} "
                    f"({needed} bytes) but its storage holds {storage.nbytes()} bytes; it was "
                    "refused."
                )
        # Tied tensors share one storage: count it once.
        storage_id = offset if offset is not None else getattr(storage, "_cdata", id(storage))
        declared[storage_id] = max(declared.get(storage_id, 0), storage.nbytes())
    return sum(declared.values())
