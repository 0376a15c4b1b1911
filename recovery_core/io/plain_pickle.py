"""Read a plain state dict's pickle straight from its bytes: no unpickler, no torch.

torch.save writes a state dict (a dict or an OrderedDict of tensors, with its
`_metadata`) with a dozen instruction kinds, and each tensor record the same way once its
globals are memoized. This reader runs exactly those instructions, building the values
`torch_pickle`'s C unpickler would build, through the same checks (`storage_record` for a
storage record, `_rebuild_tensor_v2` and `_rebuild_parameter` for a tensor,
`_OrderedDict.__setstate__` for the `_metadata`), and takes each memoized tensor record
whole with two regular expressions: the unpickler spent most of its time building memo
objects (a storage record's tuple, a call's arguments, an empty OrderedDict per tensor)
that a state dict never fetches again; here they are one shared marker.

It is a shortcut of `torch_pickle.read_data_pkl`, never a second policy: it runs after
the pickle scan passed and after read_data_pkl's own preconditions, and anything it does
not read exactly as the C unpickler would (another instruction or global, a value of
another kind where it expects one, a memo slot it did not keep fetched again, a memo
index that is not the next one, a top level that is not a dict) makes it decline (None):
the C unpickler then reads the pickle as before, and torch's path after it as before.
"""

from __future__ import annotations

import array
import re
import sys
from collections.abc import Callable
from typing import Any

from recovery_core.io.torch_pickle import (
    _GLOBALS,
    MetadataPickle,
    StorageRef,
    TensorRef,
    _ordered_dict,
    _OrderedDict,
    _rebuild_parameter,
    _rebuild_tensor_v2,
    fits,
    storage_class,
    storage_of,
    storage_record,
    tensor_layout,
)

__all__ = ["read_plain_state_dict"]


class _Decline(Exception):
    """Not read here: the C unpickler reads it (and judges it) as before."""


# What the memo keeps for a storage record's tuple, a call's arguments and its empty
# OrderedDict: torch.save never fetches them again; a pickle that does is declined.
_UNKEPT = object()
_CALLS = (_rebuild_tensor_v2, _rebuild_parameter, _ordered_dict)  # what REDUCE may call
_GLOBAL_LINES = {f"{m}\n{n}\n".encode(): value for (m, n), value in _GLOBALS.items()}

_GET = rb"(h.|j....)"  # BINGET, LONG_BINGET: whole, the key of their values' cache
_PUT = rb"r(....)"  # LONG_BINPUT (BINPUT's, the first 256 slots, go one at a time)
_INT = rb"(K.|M..|J....)"  # BININT1, BININT2, BININT
_ANY_INT = rb"(?:K.|M..|J....)"
_SIZES = (
    rb"(\)|" + _ANY_INT + rb"\x85|" + _ANY_INT + rb"{2}\x86|" + _ANY_INT + rb"{3}\x87|\("
    + _ANY_INT + rb"{4,32}t)"
)  # fmt: skip
# A tensor record after `_rebuild_tensor_v2` is fetched: MARK, MARK, 'storage' get, class
# get, the storage key (torch.save's are decimal numbers), its put, location get, numel,
# TUPLE, put, BINPERSID, offset, shape, put?, stride, put?, requires_grad, OrderedDict
# get, (), REDUCE, put, TUPLE, put, REDUCE, put.
_RECORD_BYTES = (
    rb"\(\(" + _GET + _GET + rb"X(....)([0-9]{1,19})" + _PUT + _GET + _INT + rb"t" + _PUT
    + rb"Q" + _INT + _SIZES + b"(?:" + _PUT + b")?" + _SIZES + b"(?:" + _PUT + b")?"
    + rb"[\x88\x89]" + _GET + rb"\)R" + _PUT + rb"t" + _PUT + rb"R" + _PUT
)  # fmt: skip
_RECORD = re.compile(_RECORD_BYTES, re.DOTALL)
# A state dict's entry after its key's BINUNICODE opcode: the key's size and text (up to
# 1,000 bytes), its put, `_rebuild_tensor_v2` fetched, the record.
_ENTRY = re.compile(rb"(....)(.{0,1000}?)" + _PUT + _GET + _RECORD_BYTES, re.DOTALL)
# Its memo writes (indices into its groups), in their order; None where a size was not put.
_PUTS = (4, 7, 10, 12, 14, 15, 16)


def read_plain_state_dict(data: bytes) -> MetadataPickle | None:
    """What `read_data_pkl`'s unpickler would return for `data`, or None (declined)."""
    reader = _Reader(data)
    try:
        obj = reader.run()
    except MemoryError:
        raise  # the sandbox turns it into the parse_memory_bytes refusal, as before
    except Exception:  # noqa: BLE001 - _Decline, Unsupported, a short read, a bad call
        return None  # the C unpickler reads it; its outcome stands, as before
    if type(obj) is not dict and type(obj) is not _OrderedDict:
        return None
    return MetadataPickle(obj, reader.storages)


def _dense(count: int) -> bytes:
    """The claims of `count` memo writes to slots 0, 1, 2 ...: 4 bytes little-endian each."""
    indices = array.array("I", range(count))
    if indices.itemsize != 4 or sys.byteorder != "little":
        return b"".join(i.to_bytes(4, "little") for i in range(count))
    return indices.tobytes()


def _get_index(arg: bytes) -> int:
    """A BINGET's or LONG_BINGET's index from its bytes (`_GET`)."""
    return arg[1] if arg[0] == 0x68 else int.from_bytes(arg[1:], "little")


def _small_int(arg: bytes) -> int:
    if arg[0] == 0x4A:  # BININT: signed
        return int.from_bytes(arg[1:], "little", signed=True)
    return int.from_bytes(arg[1:], "little")


def _sizes(group: bytes) -> tuple[int, ...]:
    """A shape or stride's bytes (`_SIZES`) as the tuple they build."""
    last = group[-1]
    if last == 0x29:  # EMPTY_TUPLE
        return ()
    body = group[1:-1] if last == 0x74 else group[:-1]  # MARK ... TUPLE, or TUPLE1-3
    values, at = [], 0
    while at < len(body):
        width = {0x4B: 2, 0x4D: 3, 0x4A: 5}[body[at]]
        values.append(_small_int(body[at : at + width]))
        at += width
    return tuple(values)


class _Machine:
    """The stack, the memo and the instructions that only move values, as the C
    unpickler runs them (marks kept apart from the stack, as its fences are)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: list[Any] = []  # dense: torch.save's indices are 0, 1, 2 ...
        # The index each memo write that grew the memo named (4 bytes little-endian each),
        # checked to be 0, 1, 2 ... at STOP: a whole record's writes cost one copy each.
        self.claims = bytearray()
        self.storages: dict[str, StorageRef] = {}
        # The tensor records' repeated parts: their fetches' outcome, their layouts.
        self.records: dict[tuple[bytes, ...], str] = {}
        self.layouts: dict[tuple[bytes, bytes], tuple[Any, Any, int, int]] = {}

    # --- the stack and the memo ---

    def pop(self, count: int) -> list[Any]:
        """The top `count` values, never below the last mark (the C unpickler's fence)."""
        stack = self.stack
        if len(stack) - count < (self.marks[-1] if self.marks else 0) or count > len(stack):
            raise _Decline
        values = stack[len(stack) - count :]
        del stack[len(stack) - count :]
        return values

    def put(self, index: int, value: Any) -> None:
        memo = self.memo
        if index == len(memo):
            self.claims += index.to_bytes(4, "little")
            memo.append(value)
        elif index < len(memo):
            memo[index] = value
            self.records.clear()  # a slot its fetches read may have changed
        else:
            raise _Decline  # not dense: the C unpickler's memo

    def fetch(self, index: int) -> Any:
        if index >= len(self.memo) or self.memo[index] is _UNKEPT:
            raise _Decline
        return self.memo[index]

    def put_top(self, index: int) -> None:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Decline
        self.put(index, self.stack[-1])

    # --- one instruction each: the position after the opcode in, after its argument out ---

    def proto(self, pos: int) -> int:
        if self.data[pos] != 2:  # torch.save's protocol
            raise _Decline
        return pos + 1

    def global_(self, pos: int) -> int:
        end = self.data.index(b"\n", self.data.index(b"\n", pos, pos + 64) + 1, pos + 128) + 1
        value = _GLOBAL_LINES.get(self.data[pos:end])
        if value is None:
            raise _Decline
        self.stack.append(value)
        return end

    def mark(self, pos: int) -> int:
        self.marks.append(len(self.stack))
        return pos

    def unicode(self, pos: int) -> int:
        start = pos + 4
        end = start + int.from_bytes(self.data[pos:start], "little")
        if end > len(self.data):
            raise _Decline
        self.stack.append(self.data[start:end].decode("utf-8", "surrogatepass"))
        return end

    def binput(self, pos: int) -> int:
        self.put_top(self.data[pos])
        return pos + 1

    def long_binput(self, pos: int) -> int:
        self.put_top(int.from_bytes(self.data[pos : pos + 4], "little"))
        return pos + 4

    def binint1(self, pos: int) -> int:
        self.stack.append(self.data[pos])
        return pos + 1

    def binint2(self, pos: int) -> int:
        self.stack.append(int.from_bytes(self.data[pos : pos + 2], "little"))
        return pos + 2

    def binint(self, pos: int) -> int:
        self.stack.append(int.from_bytes(self.data[pos : pos + 4], "little", signed=True))
        return pos + 4

    def long1(self, pos: int) -> int:
        end = pos + 1 + self.data[pos]
        self.stack.append(int.from_bytes(self.data[pos + 1 : end], "little", signed=True))
        return end

    def true(self, pos: int) -> int:
        self.stack.append(True)
        return pos

    def false(self, pos: int) -> int:
        self.stack.append(False)
        return pos

    def empty_dict(self, pos: int) -> int:
        self.stack.append({})
        return pos

    def empty_tuple(self, pos: int) -> int:
        self.stack.append(())
        return pos

    def tuple_to_mark(self, pos: int) -> int:
        if not self.marks:
            raise _Decline
        mark = self.marks.pop()
        values = tuple(self.stack[mark:])
        del self.stack[mark:]
        self.stack.append(values)
        return pos

    def tuple1(self, pos: int) -> int:
        self.stack.append(tuple(self.pop(1)))
        return pos

    def tuple2(self, pos: int) -> int:
        self.stack.append(tuple(self.pop(2)))
        return pos

    def tuple3(self, pos: int) -> int:
        self.stack.append(tuple(self.pop(3)))
        return pos


class _Reader(_Machine):
    """The instructions of a plain state dict that build its values: dicts filled, the
    three allowed calls, storages and tensor records (whole where they can be)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.ops: dict[int, Callable[[int], int]] = {
            0x80: self.proto, 0x63: self.global_, 0x28: self.mark, 0x58: self.unicode,
            0x71: self.binput, 0x72: self.long_binput, 0x68: self.binget, 0x6A: self.long_binget,
            0x4B: self.binint1, 0x4D: self.binint2, 0x4A: self.binint, 0x8A: self.long1,
            0x88: self.true, 0x89: self.false, 0x7D: self.empty_dict, 0x29: self.empty_tuple,
            0x74: self.tuple_to_mark, 0x85: self.tuple1, 0x86: self.tuple2, 0x87: self.tuple3,
            0x73: self.setitem, 0x75: self.setitems, 0x52: self.reduce, 0x51: self.persistent_id,
            0x62: self.build,
        }  # fmt: skip

    def run(self) -> Any:
        data, ops = self.data, self.ops
        pos = 0
        while True:
            code = data[pos]
            if code == 0x58:  # BINUNICODE: a state dict's entry, whole when it can be
                end = self.entry(pos + 1)
                if end:
                    pos = end
                    continue
            elif code == 0x2E:  # STOP
                if self.marks or len(self.stack) != 1 or self.claims != _dense(len(self.memo)):
                    raise _Decline  # a write claimed the next slot and named another
                return self.stack[0]
            op = ops.get(code)
            if op is None:
                raise _Decline
            pos = op(pos + 1)

    def binget(self, pos: int) -> int:
        return self.got(self.fetch(self.data[pos]), pos + 1)

    def long_binget(self, pos: int) -> int:
        return self.got(self.fetch(int.from_bytes(self.data[pos : pos + 4], "little")), pos + 4)

    def got(self, value: Any, pos: int) -> int:
        if value is _rebuild_tensor_v2:
            end = self.tensor(pos)
            if end:
                return end
        self.stack.append(value)
        return pos

    def setitem(self, pos: int) -> int:
        key, value = self.pop(2)
        self.fill(key, value)
        return pos

    def setitems(self, pos: int) -> int:
        if not self.marks:
            raise _Decline
        mark = self.marks.pop()
        items = self.stack[mark:]
        del self.stack[mark:]
        if len(items) % 2:
            raise _Decline
        self.fill(*items)
        return pos

    def fill(self, *items: Any) -> None:
        """SETITEM(S) on the dict below: string keys into a dict or an OrderedDict."""
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Decline
        target = self.stack[-1]
        if type(target) is not dict and type(target) is not _OrderedDict:
            raise _Decline
        keys = items[::2]
        if not all(type(k) is str for k in keys):
            raise _Decline
        target.update(zip(keys, items[1::2], strict=True))

    def reduce(self, pos: int) -> int:
        call, args = self.pop(2)
        if not any(call is known for known in _CALLS) or type(args) is not tuple:
            raise _Decline
        self.stack.append(call(*args))
        return pos

    def persistent_id(self, pos: int) -> int:
        (pid,) = self.pop(1)
        self.stack.append(storage_record(pid, self.storages))
        return pos

    def build(self, pos: int) -> int:
        (state,) = self.pop(1)
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Decline
        if type(self.stack[-1]) is not _OrderedDict:
            raise _Decline
        self.stack[-1].__setstate__(state)
        return pos

    # --- a tensor record whole ---

    def entry(self, pos: int) -> int:
        """A state dict's entry in torch.save's form, from after its key's BINUNICODE
        opcode (the key, its put, `_rebuild_tensor_v2` fetched, the tensor record): the
        key and the tensor pushed, or 0 (one instruction at a time)."""
        found = _ENTRY.match(self.data, pos)
        if found is None:
            return 0
        g = found.groups()
        memo = self.memo
        rebuild = _get_index(g[3])
        if (
            int.from_bytes(g[0], "little") != len(g[1])
            or rebuild >= len(memo)
            or memo[rebuild] is not _rebuild_tensor_v2
        ):
            return 0
        key = g[1].decode("utf-8", "surrogatepass")
        memo.append(key)  # its write: claimed the next slot, checked at STOP
        self.claims += g[2]
        self.stack.append(key)
        if not self.record(g, 4):
            memo.pop()
            del self.claims[-4:]
            self.stack.pop()
            self.records.clear()  # its fetches may have read the key's slot
            return 0
        return found.end()

    def tensor(self, pos: int) -> int:
        """A tensor record from after its `_rebuild_tensor_v2` fetch (a Parameter's, a key
        put in the first 256 slots...): the tensor pushed, or 0 (one at a time)."""
        found = _RECORD.match(self.data, pos)
        return found.end() if found is not None and self.record(found.groups(), 0) else 0

    def record(self, groups: tuple[Any, ...], at: int) -> bool:
        """A tensor record's ~30 instructions' fetches, memo writes and checks at once
        (`groups[at:]`: `_RECORD`'s), the tensor pushed. Only where that is what they do
        one at a time: every fetch reads a slot written before the record, and every write
        claims the next slot (`claims`, checked at STOP); else False, nothing changed."""
        g = groups[at:] if at else groups
        memo, claims = self.memo, self.claims
        fetches = (g[0], g[1], g[5], g[13])
        dtype = self.records.get(fetches) or self.storage_dtype(fetches)
        if not dtype or int.from_bytes(g[2], "little") != len(g[3]):
            return False
        key = g[3].decode()
        storage = storage_of(dtype, key, _small_int(g[6]), self.storages)
        shape, stride, numel, reach = self.layouts.get((g[9], g[11])) or self.layout(g[9], g[11])
        offset = _small_int(g[8])
        if not fits(storage, offset, numel, reach):
            raise _Decline  # the C unpickler's `_rebuild_tensor_v2` says Unsupported
        value = TensorRef(storage, offset, shape, stride)
        for put in _PUTS:  # each claims the next slot (checked at STOP)
            if g[put] is not None:
                claims += g[put]
        memo += (key, _UNKEPT)  # the storage key, the storage record's tuple
        if g[10] is not None:
            memo.append(shape)
        if g[12] is not None:
            memo.append(stride)
        memo += (_UNKEPT, _UNKEPT, value)  # the OrderedDict(), the call's arguments
        self.stack.append(value)
        return True

    def storage_dtype(self, fetches: tuple[bytes, ...]) -> str:
        """The dtype of a record's fetched class when its fetched word, class, location
        and hooks' function (`fetches`: their GETs' bytes) are what torch.save writes and
        were written before the record; else "". Cached (entries repeat their fetches)."""
        indices = [_get_index(arg) for arg in fetches]
        if max(indices) >= len(self.memo):
            return ""  # not cached: a later slot may make it so
        values = [self.memo[i] for i in indices]
        found = storage_class(values[0], values[1], values[2])
        ok = found is not None and values[3] is _ordered_dict
        dtype = self.records[fetches] = found.dtype if found is not None and ok else ""
        return dtype

    def layout(self, shape: bytes, stride: bytes) -> tuple[Any, Any, int, int]:
        """(shape, stride, numel, reach) of a record's size bytes, checked as
        `_rebuild_tensor_v2` checks them; one tuple each per distinct bytes."""
        size, steps = _sizes(shape), _sizes(stride)
        known = self.layouts[(shape, stride)] = (size, steps, *tensor_layout(size, steps))
        return known
