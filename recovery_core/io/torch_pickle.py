"""Read a torch.save zip archive's data.pkl for its metadata only, without torch.

The C unpickler (`pickle.Unpickler`) runs with `find_class` answering a handful of
globals that a plain state dict uses, with inert stand-ins:
- `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` -> a `TensorRef` (dtype,
  shape, stride, storage offset, storage): no tensor, no memory for values,
- `collections.OrderedDict` called with no arguments -> an empty OrderedDict,
- `torch.<Type>Storage` -> a marker that only a storage record (`persistent_load`) accepts;
  it cannot be called, instantiated or built,
and every other global refused. Nothing from the file is imported or called.

It is a fast path, never a second policy: the caller runs `pickle_scan.scan_pickle` first
(the same opcode, container, key and class-misuse checks as before), and anything this
reader does not recognise exactly (another global, a storage key without its record, a
shape its storage cannot hold, a memo index far beyond the opcodes...) raises
`Unsupported`, and the caller falls back to torch's weights-only unpickler, which gives
the same result or the same refusal as before. So a file accepted here is one that
torch's path accepts with the same tensors.

The stand-ins allocate nothing a file controls: a tensor is a few slots whatever its shape.
"""

from __future__ import annotations

import collections
import gc
import io
import math
import pickle
from dataclasses import dataclass
from typing import Any

__all__ = ["StorageRef", "TensorRef", "Unsupported", "read_data_pkl", "DTYPE_ITEMSIZE"]

# torch.save's storage class names (torch.storage._dtype_to_storage_type_map) -> dtype.
# Quantized storages are left out: they fall back to torch's path, which names them.
STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
}
DTYPE_ITEMSIZE = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
    "bfloat16": 2,
    "complex128": 16,
    "complex64": 8,
}
_INT64 = 1 << 63
_MAX_LOCATION_CHARS = 64


class Unsupported(Exception):
    """Not a pickle this reader vouches for: use torch's weights-only unpickler instead."""


class StorageRef:
    """One storage record the pickle refers to: `data/<key>` in the archive."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, dtype: str, key: str, numel: int) -> None:
        self.dtype, self.key, self.numel = dtype, key, numel

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_ITEMSIZE[self.dtype]


class TensorRef:
    """A tensor's metadata: where its values would be, never the values."""

    __slots__ = ("storage", "storage_offset", "shape", "stride", "type_name")

    def __init__(
        self,
        storage: StorageRef,
        storage_offset: int,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        type_name: str = "Tensor",  # what torch would build: "Tensor" or "Parameter"
    ) -> None:
        self.storage = storage
        self.storage_offset = storage_offset
        self.shape = shape
        self.stride = stride
        self.type_name = type_name

    @property
    def dtype(self) -> str:
        return self.storage.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def needed_bytes(self) -> int:
        """Bytes of storage the view reaches (0 for an empty tensor)."""
        if self.numel == 0:
            return 0
        last = self.storage_offset + sum(
            (n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)
        )
        return (last + 1) * DTYPE_ITEMSIZE[self.dtype]


class _StorageClass:
    """What `torch.FloatStorage` stands for: not callable, no __dict__, no __setstate__."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    *metadata: Any,
) -> TensorRef:
    if (
        storage.__class__ is not StorageRef
        or storage_offset.__class__ is not int
        or size.__class__ is not tuple
        or stride.__class__ is not tuple
        or requires_grad.__class__ is not bool
        or not isinstance(backward_hooks, collections.OrderedDict)
        or backward_hooks
        or metadata
    ):
        raise Unsupported("an unusual tensor record")
    numel, reach = tensor_layout(size, stride)
    if not fits(storage, storage_offset, numel, reach):
        raise Unsupported("a shape its storage does not hold")
    return TensorRef(storage, storage_offset, size, stride)


def tensor_layout(size: tuple[Any, ...], stride: tuple[Any, ...]) -> tuple[int, int]:
    """(numel, the last element's distance from the first) of a shape and its strides;
    `Unsupported` for anything but as many sizes as strides, each an int in [0, 2**63)."""
    if len(size) != len(stride):
        raise Unsupported("an unusual tensor record")
    numel, reach = 1, 0
    for n, step in zip(size, stride, strict=True):
        if n.__class__ is not int or step.__class__ is not int or not 0 <= n < _INT64:
            raise Unsupported("an unusual shape or stride")
        if not 0 <= step < _INT64:
            raise Unsupported("an unusual shape or stride")
        numel *= n
        reach += (n - 1) * step
    if numel >= _INT64:
        raise Unsupported("a shape its storage does not hold")
    return numel, reach


def fits(storage: StorageRef, storage_offset: int, numel: int, reach: int) -> bool:
    """The view lies inside its storage (torch's own checks, and ours after it, explain
    one that does not)."""
    if not 0 <= storage_offset < _INT64:
        return False
    return not numel or (storage_offset + reach + 1) * DTYPE_ITEMSIZE[storage.dtype] <= (
        storage.nbytes
    )


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> TensorRef:
    if (
        not isinstance(data, TensorRef)
        or type(requires_grad) is not bool
        or not isinstance(backward_hooks, collections.OrderedDict)
        or backward_hooks
    ):
        raise Unsupported("an unusual parameter record")
    return TensorRef(data.storage, data.storage_offset, data.shape, data.stride, "Parameter")


class _OrderedDict(collections.OrderedDict):
    """An OrderedDict whose BUILD (a state dict's `_metadata`) sets plain attributes only,
    as torch's unpickler does (`inst.__dict__.update(state)`)."""

    def __setstate__(self, state: Any) -> None:
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise Unsupported("an unusual OrderedDict state")
        self.__dict__.update(state)


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    if args:  # torch.save writes OrderedDict() and fills it with SETITEMS (scanned keys)
        raise Unsupported("an OrderedDict built from arguments")
    return _OrderedDict()


_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    **{("torch", name): _StorageClass(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise Unsupported(f"the global {module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> StorageRef:
        return storage_record(pid, self.storages)


def storage_record(pid: Any, storages: dict[str, StorageRef]) -> StorageRef:
    """`persistent_load`: the storage a record `('storage', <class>, key, location,
    numel)` names, one per key (`storages`); anything else is `Unsupported`."""
    if not (
        type(pid) is tuple
        and len(pid) == 5
        and storage_class(pid[0], pid[1], pid[3]) is not None
        and type(pid[2]) is str
    ):
        raise Unsupported("an unusual storage record")
    _, kind, key, _, numel = pid
    return storage_of(kind.dtype, key, numel, storages)


def storage_class(word: Any, kind: Any, location: Any) -> _StorageClass | None:
    """The storage class of a record `(word, kind, key, location, numel)` whose word,
    class and location are what torch.save writes; None for anything else."""
    if (
        word == "storage"
        and isinstance(kind, _StorageClass)
        and type(location) is str
        and len(location) <= _MAX_LOCATION_CHARS
        and location != "meta"
    ):
        return kind
    return None


def storage_of(dtype: str, key: str, numel: Any, storages: dict[str, StorageRef]) -> StorageRef:
    """The one storage of `key` (`Unsupported` for a numel out of range, or a key
    declared with another dtype or size)."""
    if type(numel) is not int or not 0 <= numel < _INT64 // 16:
        raise Unsupported("an unusual storage record")
    known = storages.get(key)
    if known is None:
        known = storages[key] = StorageRef(dtype, key, numel)
    elif known.dtype != dtype or known.numel != numel:
        raise Unsupported("one storage record declared two ways")
    return known


@dataclass(frozen=True)
class MetadataPickle:
    obj: Any  # dicts, lists, plain values and TensorRefs
    storages: dict[str, StorageRef]  # by record key, in the order the pickle declares them


# Instructions torch's weights-only unpickler runs the way the C unpickler does (besides
# MARK and the memo's). Others (text opcodes, STACK_GLOBAL, sets, NEWOBJ, FRAME...) go to
# torch's path, which accepts or refuses them as before.
_SAME_IN_BOTH = frozenset(
    "PROTO STOP GLOBAL REDUCE BUILD APPEND APPENDS SETITEM SETITEMS TUPLE TUPLE1 TUPLE2 "
    "TUPLE3 EMPTY_TUPLE EMPTY_LIST EMPTY_DICT NONE NEWTRUE NEWFALSE BININT BININT1 BININT2 "
    "LONG1 BINFLOAT BINUNICODE BINPERSID".split()
)


def read_data_pkl(data: bytes, facts: dict[str, Any]) -> MetadataPickle:
    """Unpickle `data` into metadata stand-ins; `facts` are what `scan_pickle` saw in it.

    The scan must have passed. The C unpickler sizes its memo table by the largest index,
    so a memo index far beyond the pickle's size (a sparse memo) goes to torch's path.
    """
    if not facts.get("instructions", {"?"}) <= _SAME_IN_BOTH:
        raise Unsupported("instructions torch's unpickler treats its own way")
    if facts.get("max_memo_index", 1 << 62) > max(1024, len(data)):
        raise Unsupported("a sparse memo")
    from recovery_core.io.plain_pickle import read_plain_state_dict  # it imports this module

    reader = _MetadataUnpickler(data)
    collecting = gc.isenabled()
    gc.disable()  # ~10 objects per tensor and no cycles: collections were 90% of the time
    try:
        plain = read_plain_state_dict(data)  # a plain state dict read without unpickling
        if plain is not None:
            return plain
        obj = reader.load()
    except (MemoryError, RecursionError):
        raise  # the sandbox turns these into parse_memory_bytes / max_depth refusals
    except Unsupported:
        raise
    except Exception as exc:  # noqa: BLE001 - any oddity goes to torch's path, which explains it
        raise Unsupported(f"{type(exc).__name__}") from None
    finally:
        if collecting:
            gc.enable()
    if isinstance(obj, _StorageClass) or isinstance(obj, StorageRef):
        raise Unsupported("a bare storage")
    return MetadataPickle(obj, reader.storages)
