"""Read a pickle's opcodes (never run them) and refuse what the weights-only unpickler allows
but a weights file never needs.

torch's allow-list is by name; some allowed names misbehave when a file calls them:
`torch.FloatTensor(N)`, `torch.Tensor(N)` and `torch.UntypedStorage(N)` return tensors on
fresh, uninitialised memory (another session's numbers), and `bytearray(N)` allocates N
bytes. In a real torch.save file a tensor or storage class appears only as the storage
type inside a persistent id `('storage', <class>, key, location, numel)`. This scan runs
the pickle's stack machine on tags (no objects are built) and refuses any other use of
such a class, whether called directly, through NEWOBJ, memoized and fetched again, or
passed as an argument. It also enforces the opcode, container and stack budgets before
the real unpickler spends memory, and refuses dict keys whose hashes a file can make
collide (big ints, floats, tuples: quadratic insertion).
"""

from __future__ import annotations

import functools
import io
import pickletools
import re
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from recovery_core.errors import LimitExceededError, UnsafeCheckpointError
from recovery_core.io.limits import LoadLimits

# Python 2 names that protocol-2 pickles use (torch.save writes protocol 2).
_RENAMED_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

# Tags on the abstract stack.
_PLAIN = None  # strings, small ints, containers of plain things
_MARK = "<mark>"
_PERSID = "<persistent id with a storage class>"
_UNHASHABLE_KEY = "<value whose hash a file can choose>"  # big int, float, tuple, object
_OBJECT = "<object built by a call>"
# Dict keys and set items of these kinds have string-independent hashes; all others are
# randomised per process (str, bytes) or bounded (small ints).
_CRAFTABLE_HASH = {_UNHASHABLE_KEY, _OBJECT}
_SMALL_INT = 1 << 60  # ints below this hash to themselves: no two collide

_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_FLOAT_OPS = {"FLOAT", "BINFLOAT"}
_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_PLAIN_PUSHES = {
    "BININT1",
    "BININT2",
    "EMPTY_DICT",
    "EMPTY_LIST",
    "EMPTY_SET",
    "NONE",
    "NEWTRUE",
    "NEWFALSE",
}
_NO_STACK_EFFECT = {"FRAME", "PROTO"}
_CALL_OPS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST", "BUILD"}
_TUPLE_OPS = {"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"}


# What `_from_torch` derives from torch 2.13's allow-list, kept here so the scan needs no
# torch (tests/hostile checks that torch's current list adds nothing to it).
KNOWN_MEMORY_OWNING = frozenset(
    (
        "builtins.bytearray",
        "torch.BFloat16Storage",
        "torch.BFloat16Tensor",
        "torch.BoolStorage",
        "torch.BoolTensor",
        "torch.ByteStorage",
        "torch.ByteTensor",
        "torch.CharStorage",
        "torch.CharTensor",
        "torch.ComplexDoubleStorage",
        "torch.ComplexFloatStorage",
        "torch.DoubleStorage",
        "torch.DoubleTensor",
        "torch.FloatStorage",
        "torch.FloatTensor",
        "torch.HalfStorage",
        "torch.HalfTensor",
        "torch.IntStorage",
        "torch.IntTensor",
        "torch.LongStorage",
        "torch.LongTensor",
        "torch.QInt32Storage",
        "torch.QInt8Storage",
        "torch.QUInt2x4Storage",
        "torch.QUInt4x2Storage",
        "torch.QUInt8Storage",
        "torch.ShortStorage",
        "torch.ShortTensor",
        "torch.Tensor",
        "torch.cuda.BFloat16Storage",
        "torch.cuda.BFloat16Tensor",
        "torch.cuda.BoolStorage",
        "torch.cuda.BoolTensor",
        "torch.cuda.ByteStorage",
        "torch.cuda.ByteTensor",
        "torch.cuda.CharStorage",
        "torch.cuda.CharTensor",
        "torch.cuda.ComplexDoubleStorage",
        "torch.cuda.ComplexFloatStorage",
        "torch.cuda.DoubleStorage",
        "torch.cuda.DoubleTensor",
        "torch.cuda.FloatStorage",
        "torch.cuda.FloatTensor",
        "torch.cuda.HalfStorage",
        "torch.cuda.HalfTensor",
        "torch.cuda.IntStorage",
        "torch.cuda.IntTensor",
        "torch.cuda.LongStorage",
        "torch.cuda.LongTensor",
        "torch.cuda.ShortStorage",
        "torch.cuda.ShortTensor",
        "torch.cuda.sparse.BFloat16Tensor",
        "torch.cuda.sparse.ByteTensor",
        "torch.cuda.sparse.CharTensor",
        "torch.cuda.sparse.DoubleTensor",
        "torch.cuda.sparse.FloatTensor",
        "torch.cuda.sparse.HalfTensor",
        "torch.cuda.sparse.IntTensor",
        "torch.cuda.sparse.LongTensor",
        "torch.cuda.sparse.ShortTensor",
        "torch.nn.parameter.Parameter",
        "torch.sparse.BFloat16Tensor",
        "torch.sparse.ByteTensor",
        "torch.sparse.CharTensor",
        "torch.sparse.DoubleTensor",
        "torch.sparse.FloatTensor",
        "torch.sparse.HalfTensor",
        "torch.sparse.IntTensor",
        "torch.sparse.LongTensor",
        "torch.sparse.ShortTensor",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
    )
)


@functools.lru_cache(maxsize=2)
def memory_owning_globals(with_torch: bool | None = None) -> frozenset[str]:
    """Names torch's weights-only unpickler allows that allocate memory when called:
    tensor classes (`torch.Tensor`, `torch.FloatTensor`, Parameter), storage classes and
    `bytearray`. The known list, plus what torch's own allow-list says when torch is
    loaded already (new dtypes are covered without importing torch for it)."""
    if with_torch is None:
        return memory_owning_globals("torch" in sys.modules)
    return KNOWN_MEMORY_OWNING | (_from_torch() if with_torch else frozenset())


def _from_torch() -> frozenset[str]:
    import torch
    from torch._weights_only_unpickler import _get_allowed_globals

    storage_type = torch.serialization.StorageType
    names = {"builtins.bytearray"}
    for name, value in _get_allowed_globals().items():
        owns_memory = isinstance(value, storage_type) or (
            isinstance(value, type)
            and (
                issubclass(value, (torch.Tensor, torch.UntypedStorage, torch.TypedStorage))
                or value in torch._tensor_classes
            )
        )
        if owns_memory:
            names.add(name)
    names.update(f"{t.__module__}.{t.__name__}" for t in torch._tensor_classes)
    return frozenset(names)


def scan_pickle(
    stream: IO[bytes],
    display: str,
    limits: LoadLimits,
    *,
    deadline: float | None = None,
    facts: dict[str, Any] | None = None,
) -> int:
    """Walk one pickle (up to its STOP); refuse misused classes and blown budgets.

    Returns the number of opcodes read, so a caller scanning several pickles in one file
    can charge them to one budget (pass what is left through `limits`). `facts`, when
    given, receives "max_memo_index" (the largest memo slot written; -1 for none) and
    "instructions" (the set of opcode names used besides MARK and the memo's).
    """
    try:
        return _scan(stream, display, limits, deadline, facts)
    except (ValueError, EOFError, UnicodeDecodeError, OverflowError, IndexError) as exc:
        # pickletools says what it met: unknown opcode, truncated argument, bad text.
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise UnsafeCheckpointError(
            f"{display} has a damaged or non-standard pickle ({type(exc).__name__}: "
            f"{reason!r}); it was refused before unpickling."
        ) from None


def _scan(
    stream: IO[bytes],
    display: str,
    limits: LoadLimits,
    deadline: float | None,
    facts: dict[str, Any] | None,
) -> int:
    state = _State(display, limits)
    for op, arg, _pos in pickletools.genops(stream):
        state.opcodes += 1
        if state.opcodes > limits.max_pickle_opcodes:
            raise LimitExceededError(
                f"{display} holds more than {limits.max_pickle_opcodes} pickle instructions "
                "(max_pickle_opcodes); it was refused before unpickling.",
                limit="max_pickle_opcodes",
            )
        if deadline is not None and state.opcodes % 65536 == 0 and time.monotonic() > deadline:
            raise LimitExceededError(
                f"reading {display} took longer than {limits.time_budget_seconds:g} seconds "
                "(time_budget_seconds); it was refused.",
                limit="time_budget_seconds",
            )
        name = op.name
        stack = state.stack
        # Fast paths for the instructions that make up most of a state dict's pickle.
        if name in _PLAIN_PUSHES:
            state.seen.add(name)
            stack.append(_PLAIN)
            continue
        if name == "BINUNICODE" or name == "SHORT_BINUNICODE":
            state.seen.add(name)
            stack.append(f"str:{arg}" if isinstance(arg, str) and len(arg) <= 200 else _PLAIN)
            continue
        if name == "MARK":
            state.marks.append(len(stack))
            stack.append(_MARK)
            continue
        if name == "BINPUT" or name == "LONG_BINPUT":
            if not stack:
                raise UnsafeCheckpointError(f"{display} has a malformed pickle (memo of nothing).")
            state.memo[_memo_key(arg)] = stack[-1]
            continue
        if name == "BINGET" or name == "LONG_BINGET":
            stack.append(state.memo.get(_memo_key(arg), _PLAIN))
            continue
        if state.general(op, arg):
            return state.finish(facts)
    raise UnsafeCheckpointError(f"{display} has a pickle without an end (no STOP); refused.")


class _State:
    """The scan's abstract stack machine; `general` runs one instruction on tags."""

    def __init__(self, display: str, limits: LoadLimits) -> None:
        self.display, self.limits = display, limits
        self.dangerous = memory_owning_globals()
        self.stack: list[object] = []
        self.marks: list[int] = []  # stack positions of the marks, so finding one is O(1)
        self.memo: dict[int, object] = {}
        self.seen: set[str] = set()  # instructions other than MARK and the memo's
        self.opcodes = 0
        self.max_stack = limits.max_container_items + 1024

    def general(self, op: pickletools.OpcodeInfo, arg: object) -> bool:
        """Any instruction but MARK, the memo's, strings and plain pushes; True at STOP."""
        name, display, limits = op.name, self.display, self.limits
        self.seen.add(name)
        if name in _NO_STACK_EFFECT:
            return False
        stack = self.stack
        consumed = _pop(stack, self.marks, op, display)
        if len(consumed) > limits.max_container_items:
            raise LimitExceededError(
                f"{display} builds a container of {len(consumed)} items, more than the "
                f"{limits.max_container_items} allowed (max_container_items); it was refused.",
                limit="max_container_items",
            )
        pushed = _tag_for(name, arg, consumed, self.memo, stack, self.dangerous, display)
        if name in ("SETITEM", "SETITEMS", "ADDITEMS", "FROZENSET", "DICT"):
            _check_keys(name, consumed, display)
        stack.extend(pushed)
        if len(stack) > self.max_stack:
            raise LimitExceededError(
                f"{display} piles up more than {self.max_stack} values on the pickle stack "
                "(max_container_items); it was refused before unpickling.",
                limit="max_container_items",
            )
        return name == "STOP"

    def finish(self, facts: dict[str, Any] | None) -> int:
        if facts is not None:
            facts["max_memo_index"] = max(self.memo, default=-1)
            facts["instructions"] = self.seen
        return self.opcodes


class _NotFast(Exception):
    """Something `_scan_bytes` leaves to `_scan` (which says exactly what is wrong)."""


def _put(memo: list[object], index: int, tag: object) -> None:
    """A memo write to the dense memo; an index past its end leaves the scan to `_scan`."""
    if index < len(memo):
        memo[index] = tag
    elif index == len(memo):
        memo.append(tag)
    else:
        raise _NotFast


def _get(memo: list[object], index: int) -> object:
    return memo[index] if index < len(memo) else _PLAIN


# Memo instructions `general` would run on a dict memo (text PUT and GET, protocol 4's
# MEMOIZE): the dense memo's scan leaves them to `_scan`.
_MEMO_BY_TEXT = frozenset(("PUT", "GET", "MEMOIZE"))


_BY_CODE = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
_PLAIN_PUSH_CODES = {code: op.name for code, op in _BY_CODE.items() if op.name in _PLAIN_PUSHES}
_ARG_BYTES = {"BININT1": 1, "BININT2": 2}
_C = {op.name: code for code, op in _BY_CODE.items()}
_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET = (
    _C["BINPUT"], _C["LONG_BINPUT"], _C["BINGET"], _C["LONG_BINGET"]
)  # fmt: skip
_MARK_CODE, _BINUNICODE, _SHORT_BINUNICODE = _C["MARK"], _C["BINUNICODE"], _C["SHORT_BINUNICODE"]
_TUPLE, _EMPTY_TUPLE = _C["TUPLE"], _C["EMPTY_TUPLE"]
_TUPLE_N = {_C["TUPLE1"]: ("TUPLE1", 1), _C["TUPLE2"]: ("TUPLE2", 2), _C["TUPLE3"]: ("TUPLE3", 3)}
_REDUCE, _BINPERSID = _C["REDUCE"], _C["BINPERSID"]


def scan_pickle_bytes(
    data: bytes,
    display: str,
    limits: LoadLimits,
    *,
    deadline: float | None = None,
    facts: dict[str, Any] | None = None,
) -> int:
    """`scan_pickle` of one pickle held in memory: the same checks, the same refusals.

    The instructions a state dict is made of are decoded inline (genops' generator and
    readers cost ~2 us per instruction: seconds for 100,000 keys); anything unusual
    (another instruction's argument is read by pickletools' own reader) or wrong (a
    truncated argument, bad UTF-8, a budget reached) reruns the pickletools-based scan
    from the start, which refuses it exactly as before.
    """
    try:
        return _scan_bytes(data, display, limits, deadline, facts)
    except _NotFast:
        return scan_pickle(io.BytesIO(data), display, limits, deadline=deadline, facts=facts)


def _scan_bytes(
    data: bytes,
    display: str,
    limits: LoadLimits,
    deadline: float | None,
    facts: dict[str, Any] | None,
) -> int:
    scan = _FastScan(data, display, limits)
    try:
        return _run_fast(scan, deadline, facts)
    finally:
        # Its handlers are its own bound methods (a cycle): released here, the memo of
        # tags (~70 MiB at 100,000 keys) is freed now, not at some later collection
        # (the unpickler that runs next pauses the collector: the two peaks added up).
        scan.release()


def _run_fast(scan: _FastScan, deadline: float | None, facts: dict[str, Any] | None) -> int:
    data, limits = scan.data, scan.limits
    end, budget = len(data), limits.max_pickle_opcodes
    handlers, other = scan.handlers, scan.other
    entry = _Entries(scan).entry
    stack, memo = scan.stack, scan.dense
    pos = opcodes = 0
    while True:
        if pos >= end:
            raise _NotFast
        code = data[pos]
        opcodes += 1
        if opcodes > budget:
            raise _NotFast
        if deadline is not None and opcodes % 65536 == 0 and time.monotonic() > deadline:
            raise _NotFast
        pos += 1
        if code == _BINUNICODE:  # a state dict's entry, done whole when it is torch.save's
            done = entry(pos)
            if done is not None:
                before, (pos, count) = opcodes, done
                opcodes += count - 1
                if opcodes > budget:
                    raise _NotFast
                if deadline is not None and before >> 16 != opcodes >> 16:
                    if time.monotonic() > deadline:
                        raise _NotFast
                continue
        # The two most frequent instructions (a third of a state dict's) done inline as
        # `long_memo` and `memo_get` do them: a call each would cost ~10% of the scan.
        if code == _LONG_BINPUT and pos + 4 <= end and stack:
            index = int.from_bytes(data[pos : pos + 4], "little")
            if index == len(memo):
                memo.append(stack[-1])
            else:
                _put(memo, index, stack[-1])
            pos += 4
            continue
        if code == _BINGET and pos < end:
            index = data[pos]
            stack.append(memo[index] if index < len(memo) else _PLAIN)
            pos += 1
            continue
        pos = handlers.get(code, other)(code, pos)
        if pos < 0:
            scan.opcodes = opcodes
            return scan.finish(facts)


class _FastScan(_State):
    """`_State` on a pickle held in memory, with one method per instruction kind a state
    dict is made of. Each takes the opcode and the position after it and returns the
    position after its argument (-1 at STOP); `_NotFast` when the pickletools scan must
    judge. A tuple, a call or a storage record of plain tags is done here without
    `general`'s bookkeeping; anything else goes through `other`: its argument read by
    pickletools' own reader, then `general`."""

    def __init__(self, data: bytes, display: str, limits: LoadLimits) -> None:
        super().__init__(display, limits)
        self.data, self.end, self.stream = data, len(data), io.BytesIO(data)
        # The memo of tags as a list while its indices are dense (torch.save's and
        # pickle's are 0, 1, 2 ...): ~8 bytes a slot, where a dict took ~90 (~75 MiB at
        # 100,000 keys). Any other index goes to the pickletools scan and its dict.
        self.dense: list[object] = []
        # Tags that need `general`'s rules when consumed: storage classes, storage records.
        self.special = self.dangerous | {_PERSID}
        # Below this, a shortcut's push or pop cannot reach a container or stack budget.
        self.roomy = limits.max_container_items >= 3
        self.handlers: dict[int, Callable[[int, int], int]] = {
            _BINPUT: self.memo_put,
            _BINGET: self.memo_get,
            _LONG_BINPUT: self.long_memo,
            _LONG_BINGET: self.long_memo,
            _MARK_CODE: self.mark,
            _BINUNICODE: self.unicode,
            _SHORT_BINUNICODE: self.unicode,
            _EMPTY_TUPLE: self.empty_tuple,
            _TUPLE: self.tuple_to_mark,
            _REDUCE: self.reduce,
            _BINPERSID: self.persistent_id,
            **dict.fromkeys(_PLAIN_PUSH_CODES, self.plain_push),
            **dict.fromkeys(_TUPLE_N, self.small_tuple),
        }

    def release(self) -> None:
        """Drop the stack, the memo and the handlers (what `finish` reported stays)."""
        self.handlers.clear()
        self.dense.clear()
        self.stack.clear()
        self.marks.clear()

    def finish(self, facts: dict[str, Any] | None) -> int:
        if facts is not None:
            facts["max_memo_index"] = len(self.dense) - 1
            facts["instructions"] = self.seen
        return self.opcodes

    def memo_put(self, code: int, pos: int) -> int:
        if pos >= self.end or not self.stack:
            raise _NotFast
        _put(self.dense, self.data[pos], self.stack[-1])
        return pos + 1

    def memo_get(self, code: int, pos: int) -> int:
        if pos >= self.end:
            raise _NotFast
        self.stack.append(_get(self.dense, self.data[pos]))
        return pos + 1

    def long_memo(self, code: int, pos: int) -> int:
        if pos + 4 > self.end or (code == _LONG_BINPUT and not self.stack):
            raise _NotFast
        index = int.from_bytes(self.data[pos : pos + 4], "little")
        if code == _LONG_BINPUT:
            _put(self.dense, index, self.stack[-1])
        else:
            self.stack.append(_get(self.dense, index))
        return pos + 4

    def mark(self, code: int, pos: int) -> int:
        self.marks.append(len(self.stack))
        self.stack.append(_MARK)
        return pos

    def plain_push(self, code: int, pos: int) -> int:
        name = _PLAIN_PUSH_CODES[code]
        width = _ARG_BYTES.get(name, 0)
        if pos + width > self.end:
            raise _NotFast
        self.seen.add(name)
        self.stack.append(_PLAIN)
        return pos + width

    def unicode(self, code: int, pos: int) -> int:
        width = 4 if code == _BINUNICODE else 1
        size = int.from_bytes(self.data[pos : pos + width], "little")
        start = pos + width
        pos = start + size
        if pos > self.end:
            raise _NotFast
        try:
            text = self.data[start:pos].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise _NotFast from None
        self.seen.add("BINUNICODE" if code == _BINUNICODE else "SHORT_BINUNICODE")
        self.stack.append(f"str:{text}" if len(text) <= 200 else _PLAIN)
        return pos

    def small_tuple(self, code: int, pos: int) -> int:
        name, count = _TUPLE_N[code]
        stack = self.stack
        if not (self.roomy and _above_mark(stack, self.marks, count)) or any(
            tag in self.special for tag in stack[-count:]
        ):
            return self.other(code, pos)
        del stack[len(stack) - count + 1 :]
        stack[-1] = _UNHASHABLE_KEY
        self.seen.add(name)
        return pos

    def empty_tuple(self, code: int, pos: int) -> int:
        if len(self.stack) >= self.max_stack:
            return self.other(code, pos)
        self.stack.append(_UNHASHABLE_KEY)
        self.seen.add("EMPTY_TUPLE")
        return pos

    def tuple_to_mark(self, code: int, pos: int) -> int:
        stack, marks = self.stack, self.marks
        if not marks or len(stack) - marks[-1] - 1 > self.limits.max_container_items:
            return self.other(code, pos)
        mark = marks[-1]
        if any(tag in self.special for tag in stack[mark + 1 :]):
            return self.other(code, pos)
        marks.pop()
        del stack[mark:]
        stack.append(_UNHASHABLE_KEY)
        self.seen.add("TUPLE")
        return pos

    def reduce(self, code: int, pos: int) -> int:
        stack = self.stack
        if not (self.roomy and _above_mark(stack, self.marks, 2)) or (
            stack[-1] in self.special or stack[-2] in self.special
        ):
            return self.other(code, pos)
        del stack[-1]
        stack[-1] = _OBJECT
        self.seen.add("REDUCE")
        return pos

    def persistent_id(self, code: int, pos: int) -> int:
        stack = self.stack
        if not (self.roomy and _above_mark(stack, self.marks, 1)) or stack[-1] in self.dangerous:
            return self.other(code, pos)
        stack[-1] = _OBJECT
        self.seen.add("BINPERSID")
        return pos

    def other(self, code: int, pos: int) -> int:
        """One instruction through `_State.general` (its argument read by pickletools)."""
        op = _BY_CODE.get(code)
        if op is None or op.name in _MEMO_BY_TEXT:  # the dict memo's scan does these
            raise _NotFast
        arg = None
        if op.arg is not None:
            self.stream.seek(pos)
            try:
                arg = op.arg.reader(self.stream)
            except MemoryError:
                raise  # past the parse budget: the sandbox refuses it (a rerun would only spin)
            except Exception:  # noqa: BLE001 - the slow scan names what is wrong
                raise _NotFast from None
            pos = self.stream.tell()
        return -1 if self.general(op, arg) else pos


_INT = rb"(?:K.|M..|J....)"  # BININT1, BININT2, BININT: small ints, tagged plain
_PUT = rb"(?:q(.)|r(....))"  # BINPUT, LONG_BINPUT
_GET = rb"(?:h(.)|j(....))"  # BINGET, LONG_BINGET
_SIZES = (
    rb"(\)|" + _INT + rb"\x85|" + _INT + rb"{2}\x86|" + _INT + rb"{3}\x87|\(" + _INT + rb"{4,32}t)"
)
# torch.save's tensor entry after its key's BINUNICODE, once the globals are memoized:
# key put, rebuild get, ((storage get, class get, storage key BINUNICODE header ...
_ENTRY_HEAD = re.compile(_PUT + _GET + rb"\(\(" + _GET + _GET + rb"X(....)", re.DOTALL)
# ... storage key put, location get, numel, TUPLE, put, BINPERSID, offset, shape, put,
# stride, put, requires_grad, OrderedDict get, (), REDUCE, put, TUPLE, put, REDUCE, put.
_ENTRY_TAIL = re.compile(
    _PUT + _GET + _INT + rb"t" + _PUT + rb"Q" + _INT + _SIZES + _PUT + b"?" + _SIZES + _PUT + b"?"
    + rb"[\x88\x89]" + _GET + rb"\)R" + _PUT + rb"t" + _PUT + rb"R" + _PUT,
    re.DOTALL,
)  # fmt: skip
_INT_NAMES = {ord("K"): ("BININT1", 2), ord("M"): ("BININT2", 3), ord("J"): ("BININT", 5)}
_SIZES_NAMES = {0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3", ord(")"): "EMPTY_TUPLE"}


class _Entries:
    """A state dict's tensor entry as torch.save writes it once its globals are memoized
    (~35 instructions: key, `_rebuild_tensor_v2` fetched, the storage record, offset,
    shape, stride, requires_grad, an empty OrderedDict), matched whole by two regular
    expressions and applied to the scan's tags exactly as the instructions one by one
    would (the result: the key's tag and an object pushed, the same memo slots written,
    the same instructions seen). It applies only where that holds: the fetched values
    carry the tags the one-by-one scan needs for its own fast steps (a storage class
    after 'storage', nothing special in the calls), with room on the stack and in the
    budgets; otherwise the instructions are scanned one by one. ~1.5 us per instruction
    one by one: 2.5 s for 100,000 keys."""

    def __init__(self, scan: _FastScan) -> None:
        self.scan, self.data, self.memo = scan, scan.data, scan.dense
        self.usable = scan.limits.max_container_items >= 64
        self._entry_kinds: dict[tuple[Any, ...], tuple[tuple[str, ...], int]] = {}  # `_seen`

    def entry(self, pos: int) -> tuple[int, int] | None:
        """(the position after the entry, its instruction count), or None."""
        scan, data = self.scan, self.data
        if not self.usable or len(scan.stack) + 64 > scan.max_stack:
            return None
        start = pos + 4
        key_end = start + int.from_bytes(data[pos:start], "little")
        head = _ENTRY_HEAD.match(data, key_end)
        if head is None:
            return None
        storage_start = head.end()
        tail = _ENTRY_TAIL.match(data, storage_start + int.from_bytes(head[9], "little"))
        if tail is None:
            return None
        try:
            key = data[start:key_end].decode("utf-8", "surrogatepass")
            storage_key = data[storage_start : tail.start()].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return None
        return self._apply(key, storage_key, head.groups(), tail)

    def _apply(
        self, key: str, storage_key: str, head: tuple[Any, ...], tail: re.Match[bytes]
    ) -> tuple[int, int] | None:
        memo, special = self.memo, self.scan.special
        got = [_get(memo, _index(head[i], head[i + 1])) for i in (2, 4, 6)]
        got.append(_get(memo, _index(tail[3], tail[4])))  # location
        rebuild, storage, kind, location = got
        od = _get(memo, _index(tail[13], tail[14]))
        if (
            storage != "str:storage"
            or kind not in self.scan.dangerous
            or location in special
            or location in self.scan.dangerous
            or rebuild in special
            or od in special
        ):
            return None
        key_tag = f"str:{key}" if len(key) <= 200 else _PLAIN
        storage_tag = f"str:{storage_key}" if len(storage_key) <= 200 else _PLAIN
        writes = (
            (head[0], head[1], key_tag),
            (tail[1], tail[2], storage_tag),
            (tail[5], tail[6], _PERSID),
            (tail[8], tail[9], _UNHASHABLE_KEY),  # shape
            (tail[11], tail[12], _UNHASHABLE_KEY),  # stride
            (tail[15], tail[16], _OBJECT),  # OrderedDict()
            (tail[17], tail[18], _UNHASHABLE_KEY),  # the arguments
            (tail[19], tail[20], _OBJECT),  # the tensor
        )
        for short, long, tag in writes:
            if short is not None or long is not None:  # torch.save memoizes no empty tuple
                index = short[0] if short is not None else int.from_bytes(long, "little")
                if index == len(memo):  # `_put`, inline: 8 calls an entry cost ~0.1 s
                    memo.append(tag)
                else:
                    _put(memo, index, tag)
        self.scan.stack += (key_tag, _OBJECT)
        return tail.end(), self._seen(tail)

    def _seen(self, tail: re.Match[bytes]) -> int:
        """Notes the instructions the entry used; returns how many it has. Entries of one
        kind (same integer widths, flag, shape and stride bytes) are decoded once."""
        data = self.data
        numel = tail.end(3) if tail[3] is not None else tail.end(4)  # after the location
        offset = (tail.end(5) if tail[5] is not None else tail.end(6)) + 1  # after Q
        flag = (tail.start(13) if tail[13] is not None else tail.start(14)) - 2
        # (requires_grad sits right before the OrderedDict's get: `h` or `j` and its index)
        puts = (tail[8] or tail[9]) is not None, (tail[11] or tail[12]) is not None
        kind = (data[numel], data[offset], data[flag], puts, tail[7], tail[10])
        known = self._entry_kinds.get(kind)
        if known is None:
            known = self._entry_kinds[kind] = _entry_kind(*kind)
        self.scan.seen.update(known[0])
        return known[1]


def _entry_kind(
    numel: int, offset: int, flag: int, puts: tuple[bool, bool], shape: bytes, stride: bytes
) -> tuple[tuple[str, ...], int]:
    """The instructions of an entry of this kind, and how many it has."""
    shape_names, shape_count = _size_kinds(shape)
    stride_names, stride_count = _size_kinds(stride)
    names = (
        "BINUNICODE", "TUPLE", "BINPERSID", "REDUCE", "EMPTY_TUPLE",
        _INT_NAMES[numel][0], _INT_NAMES[offset][0], "NEWTRUE" if flag == 0x88 else "NEWFALSE",
        *shape_names, *stride_names,
    )  # fmt: skip
    # 24 instructions besides the shape's, the stride's and their memo writes
    return tuple(dict.fromkeys(names)), 24 + sum(puts) + shape_count + stride_count


def _size_kinds(group: bytes) -> tuple[tuple[str, ...], int]:
    """The instructions of a shape or stride's bytes (`_SIZES`), and how many there are."""
    last = group[-1]
    if last == ord(")"):
        return ("EMPTY_TUPLE",), 1
    body, count = (group[1:-1], 2) if last == ord("t") else (group[:-1], 1)
    names = [_SIZES_NAMES.get(last, "TUPLE")]
    at = 0
    while at < len(body):
        name, width = _INT_NAMES[body[at]]
        names.append(name)
        at += width
        count += 1
    return tuple(names), count


def _index(short: bytes | None, long: bytes | None) -> int:
    return short[0] if short is not None else int.from_bytes(long or b"", "little")


def _above_mark(stack: list[object], marks: list[int], count: int) -> bool:
    """`count` values above the last mark (else `_pop` refuses: let `general` do it)."""
    return len(stack) >= count and not (marks and marks[-1] >= len(stack) - count)


def _pop(
    stack: list[object], marks: list[int], op: pickletools.OpcodeInfo, display: str
) -> list[object]:
    """Remove what `op` consumes; returns it (the slice above a mark first)."""
    before = op.stack_before
    consumed: list[object] = []
    if pickletools.markobject in before:
        if not marks:
            raise UnsafeCheckpointError(f"{display} has a malformed pickle (no mark); refused.")
        mark = marks.pop()
        consumed = stack[mark + 1 :]
        del stack[mark:]
        fixed = before.index(pickletools.markobject)
    else:
        fixed = len(before)
    if fixed:
        if len(stack) < fixed or (marks and marks[-1] >= len(stack) - fixed):
            raise UnsafeCheckpointError(f"{display} has a malformed pickle (stack underflow).")
        consumed = stack[-fixed:] + consumed
        del stack[-fixed:]
    return consumed


def _tag_for(
    name: str,
    arg: object,
    consumed: list[object],
    memo: dict[int, object],
    stack: list[object],
    dangerous: frozenset[str],
    display: str,
) -> list[object]:
    """The tags `name` pushes; refuses any consumption of a memory-owning class but one."""
    if name == "MEMOIZE":  # pops and pushes the same value
        memo[len(memo)] = consumed[0]
        return consumed
    if name in ("PUT", "BINPUT", "LONG_BINPUT"):
        if not stack:
            raise UnsafeCheckpointError(f"{display} has a malformed pickle (memo of nothing).")
        memo[_memo_key(arg)] = stack[-1]
        return []
    if name in ("GET", "BINGET", "LONG_BINGET"):
        return [memo.get(_memo_key(arg), _PLAIN)]
    if name == "DUP":
        return consumed * 2
    if name in ("GLOBAL", "INST"):
        module, _, attr = str(arg).partition(" ")
        full = f"{_RENAMED_MODULES.get(module, module)}.{attr}"
        if name == "INST" or full not in dangerous:
            _refuse_misuse(consumed, name, display, dangerous)
            return [_OBJECT if name == "INST" else _PLAIN]
        return [full]
    if name == "STACK_GLOBAL":
        module, attr = (
            c if isinstance(c, str) and c.startswith("str:") else "str:?" for c in consumed
        )
        full = f"{_RENAMED_MODULES.get(module[4:], module[4:])}.{attr[4:]}"
        return [full if full in dangerous else _PLAIN]
    _refuse_misuse(consumed, name, display, dangerous)
    if name in _TUPLE_OPS:
        # A class may sit in a tuple only as the type of a storage record:
        # ('storage', <class>, key, location, numel, ...), which BINPERSID must consume.
        classes = [i for i, c in enumerate(consumed) if c in dangerous]
        if not classes:
            return [_UNHASHABLE_KEY]
        if classes != [1] or consumed[0] != "str:storage":
            _refuse_class(str(consumed[classes[0]]), name, display)
        return [_PERSID]
    if name in _STRING_OPS and isinstance(arg, str) and len(arg) <= 200:
        return [f"str:{arg}"]  # STACK_GLOBAL reads module and name from these
    if name in _INT_OPS:
        small = isinstance(arg, int) and -_SMALL_INT < arg < _SMALL_INT
        return [_PLAIN if small else _UNHASHABLE_KEY]
    if name in _FLOAT_OPS or name == "FROZENSET":
        return [_UNHASHABLE_KEY]
    if name in _CALL_OPS or name in ("BINPERSID", "PERSID", "EXT1", "EXT2", "EXT4"):
        return [_OBJECT] * len(_after(name))
    return [_PLAIN] * len(_after(name))


def _after(name: str) -> list[object]:
    return list(_STACK_AFTER[name])


# What each opcode leaves on the stack, by name (pickletools' own table is keyed by code).
_STACK_AFTER = {op.name: op.stack_after for op in pickletools.opcodes}


def _memo_key(arg: object) -> int:
    """A memo opcode's argument, which pickletools reads as an int (its type says Any)."""
    if not isinstance(arg, int):
        raise ValueError(f"a memo index that is not a number: {arg!r}")  # refused by scan_pickle
    return arg


def _refuse_misuse(
    consumed: list[object], op: str, display: str, dangerous: frozenset[str]
) -> None:
    for tag in consumed:
        if tag == _PERSID and op != "BINPERSID" or tag in dangerous and op not in _TUPLE_OPS:
            _refuse_class(
                "a storage class inside a value" if tag == _PERSID else f"{tag}", op, display
            )


def _refuse_class(what: str, op: str, display: str) -> None:
    raise UnsafeCheckpointError(
        f"{display} uses {what} outside a storage record (pickle instruction {op}): "
        "that would make a tensor from uninitialised memory instead of the file's "
        "bytes, so it was refused."
    )


def _check_keys(op: str, consumed: list[object], display: str) -> None:
    if op in ("SETITEM", "SETITEMS", "DICT"):
        start = 1 if op != "DICT" else 0  # the dict itself comes first
        keys = consumed[start::2]
    else:
        keys = consumed[1:] if op == "ADDITEMS" else consumed
    if any(k in _CRAFTABLE_HASH for k in keys):
        raise UnsafeCheckpointError(
            f"{display} uses dict keys or set items that are large integers, floats, tuples "
            "or objects; a file can make their hashes collide and stall loading, and weights "
            "files never need them, so it was refused."
        )
