"""The pickle scan's memo kept as a list (dense indices) and the reader of plain state
dicts that runs no unpickler: each held to the path it shortcuts.
"""

from __future__ import annotations

import io
import pickle
import random
import re
import zipfile

import pytest
import torch

from recovery_core.io import plain_pickle, torch_pickle
from recovery_core.io.checkpoint import LoadLimits
from tests.hostile import fuzz
from tests.hostile.test_metadata_reader import scan_both


@pytest.mark.parametrize(
    "data",
    [
        # a memo index far past the next one, then fetched: the memo is not dense
        b"\x80\x02}r\x40\x42\x0f\x00X\x01\x00\x00\x00aj\x40\x42\x0f\x00s.",
        # an index rewritten (below the next one) and a string key fetched back
        b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01q\x00h\x01K\x01s.",
        # a storage class memoized at a sparse index, then misused through the memo
        b"\x80\x02ctorch\nFloatStorage\nr\x00\x00\x01\x00j\x00\x00\x01\x00K\x05\x85R.",
        pickle.dumps({"a": [1, 2], "b": "a"}, protocol=4),  # MEMOIZE, not PUT
        pickle.dumps({"a": [1, 2], "b": ("a",)}, protocol=0),  # text PUT and GET
    ],
    ids=["sparse", "rewritten", "misused class", "memoize", "text memo"],
)
def test_memo_of_any_shape_is_scanned_as_the_pickletools_scan_does(data: bytes) -> None:
    fast, slow = scan_both(data, LoadLimits())
    assert fast == slow


def _seed_pickles() -> dict[str, bytes]:
    """torch.save pickles with every form the reader takes: entries past the 256th memo
    slot (read whole), the first of each dtype (its globals inline), Parameters, slices
    of one storage, a tensor saved twice, 0-dim and empty tensors, and a module's state
    dict (an OrderedDict with its `_metadata`)."""
    torch.manual_seed(0)
    base, shared = torch.zeros(400), torch.ones(3, 2)
    flat: dict[str, object] = {}
    for i in range(60):
        flat[f"layers.{i}.weight"] = torch.zeros(
            3, 2, dtype=torch.float16 if i % 7 else torch.float32
        )
        flat[f"layers.{i}.scalar"] = torch.tensor(i, dtype=torch.int64)
        flat[f"layers.{i}.five"] = torch.zeros(1, 2, 1, 2, 1)
        flat[f"layers.{i}.slice"] = base[5 * i : 5 * i + 4]
        flat[f"layers.{i}.empty"] = torch.empty(0, 3)
    flat["p"] = torch.nn.Parameter(torch.ones(2))
    flat["tied.a"], flat["tied.b"] = shared, shared
    model = torch.nn.Sequential(
        *(torch.nn.Linear(2, 2) for _ in range(70)), torch.nn.BatchNorm1d(2)
    )
    seeds = {}
    for name, obj in {"flat": flat, "module": model.state_dict()}.items():
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        archive = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
        seeds[name] = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return seeds


def _value(x: object) -> object:
    """A metadata object as comparable plain values (types, dtypes, records, layouts)."""
    if isinstance(x, torch_pickle.TensorRef):
        s = x.storage
        return ("tensor", s.dtype, s.key, s.numel, x.storage_offset, x.shape, x.stride, x.type_name)
    if isinstance(x, dict):
        own = getattr(x, "__dict__", None)
        items = tuple((k, _value(v)) for k, v in x.items())
        return (type(x).__name__, items, None if own is None else _value(own))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(_value(v) for v in x))
    return (type(x).__name__, x)


def _unpickled(data: bytes) -> object:
    """What the C unpickler with the stand-ins reads, or the exception's type."""
    reader = torch_pickle._MetadataUnpickler(data)
    try:
        obj = reader.load()
    except Exception as exc:  # noqa: BLE001 - any failure is an outcome to compare
        return type(exc).__name__
    return _value(obj), [(k, s.dtype, s.numel) for k, s in reader.storages.items()]


def _read_directly(data: bytes) -> object:
    found = plain_pickle.read_plain_state_dict(data)
    if found is None:
        return None
    return _value(found.obj), [(k, s.dtype, s.numel) for k, s in found.storages.items()]


def test_plain_state_dicts_are_read_as_the_unpickler_reads_them() -> None:
    for name, data in _seed_pickles().items():
        direct = _read_directly(data)
        assert direct is not None, f"{name}: a plain state dict was not read directly"
        assert direct == _unpickled(data), name


def _edit_memo_index(data: bytearray, rng: random.Random) -> None:
    """A memo write's or fetch's index moved a little (the record's claims and fetches)."""
    at = [m.start() for m in re.finditer(rb"[qrhj]", data) if m.start() < len(data) - 5]
    if not at:
        return
    where = rng.choice(at)
    width = 1 if data[where] in b"qh" else 4
    index = int.from_bytes(data[where + 1 : where + 1 + width], "little")
    index = max(0, index + rng.choice((-3, -2, -1, 1, 2, 300, 70000)))
    data[where + 1 : where + 1 + width] = (index % (1 << (8 * width))).to_bytes(width, "little")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pickletools on mutated text
def test_the_direct_reader_reads_mutants_as_the_unpickler_or_declines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over 3,000 mutants of the seeds (random byte edits, and memo indices moved): the
    direct reader declines (None) or gives exactly what the C unpickler with the same
    stand-ins gives; it never accepts what the unpickler refuses. Enough mutants are read
    directly, entries whole among them, for the comparison to mean something."""
    seeds = list(_seed_pickles().values())
    rng = random.Random(3)
    read, whole = 0, []
    entry = plain_pickle._Reader.entry

    def spy(self: plain_pickle._Reader, pos: int) -> int:
        end = entry(self, pos)
        whole.append(bool(end))
        return end

    monkeypatch.setattr(plain_pickle._Reader, "entry", spy)
    for i in range(3000):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(rng.choice((1, 1, 2, 3))):
            if rng.random() < 0.5:
                _edit_memo_index(data, rng)
            else:
                fuzz._byte_edit(data, rng, seeds)
        direct = _read_directly(bytes(data))
        if direct is not None:
            read += 1
            assert direct == _unpickled(bytes(data)), bytes(data)
    assert read >= 50, f"only {read} mutants read directly"  # 91 with this seed
    assert sum(whole) > 100_000, "entries were not read whole"
