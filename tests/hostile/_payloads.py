"""Builders of hostile checkpoint files, made fresh in each test (nothing stored).

Code-running payloads only touch a canary file: if the canary exists after a load,
code from the file ran.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import struct
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch


class RunsShell:
    """Unpickling it would run `touch CANARY` through os.system."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


class OpensFile:
    """Unpickling it would create CANARY through builtins.open."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (builtins.open, (str(self.canary), "w"))


class StartsProcess:
    """Unpickling it would start `touch CANARY` through subprocess.Popen (an obscure global)."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.canary)],))


class LoadsUnsafely:
    """Unpickling it would call torch.serialization.load on another file (an obscure global)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (torch.load, (str(self.target),))


def small_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(torch.nn.Linear(3, 4).state_dict())


def torch_zip(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def torch_legacy(path: Path, obj: object) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


def raw_pickle(path: Path, obj: object, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


Edit = Callable[[str, bytes], list[tuple[str, bytes, int]]]


def rewrite_zip(src: Path, dst: Path, edit: Edit) -> Path:
    """Copy a zip member by member; `edit(name, data)` returns the members to write instead."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            for name, data, compression in edit(info.filename, zin.read(info.filename)):
                zout.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return dst


def keep(name: str, data: bytes) -> list[tuple[str, bytes, int]]:
    return [(name, data, zipfile.ZIP_STORED)]


def duplicate_data_pkl(path: Path) -> Path:
    src = torch_zip(path.with_suffix(".src"), small_state_dict())

    def edit(name: str, data: bytes):
        twice = name.endswith("/data.pkl")
        return keep(name, data) * (2 if twice else 1)

    return rewrite_zip(src, path, edit)


def deflate_bomb(path: Path, megabytes: int = 32) -> Path:
    """A valid checkpoint whose big zero tensor is DEFLATE-compressed to a few KB."""
    src = torch_zip(path.with_suffix(".src"), {"w": torch.zeros(megabytes * 2**18)})

    def edit(name: str, data: bytes):
        compression = zipfile.ZIP_DEFLATED if "/data/" in name else zipfile.ZIP_STORED
        return [(name, data, compression)]

    out = rewrite_zip(src, path, edit)
    src.unlink()
    return out


def short_record(path: Path) -> Path:
    """data/0 holds half the bytes its storage declares: mmap would read the next member."""
    src = torch_zip(path.with_suffix(".src"), {"w": torch.arange(12.0).reshape(3, 4)})

    def edit(name: str, data: bytes):
        return keep(name, data[: len(data) // 2] if name.endswith("/data/0") else data)

    return rewrite_zip(src, path, edit)


def oversized_shape(path: Path, numel: int = 10**6) -> Path:
    """The pickle says the 4-element tensor has `numel` elements."""
    src = torch_zip(path.with_suffix(".src"), {"w": torch.arange(4.0)})
    # In the pickle: storage_offset 0 (BININT1), then the size tuple (4,) (BININT1, TUPLE1).
    pattern = b"K\x00K\x04\x85"

    def edit(name: str, data: bytes):
        if name.endswith("/data.pkl"):
            assert data.count(pattern) == 1
            data = data.replace(pattern, b"K\x00J" + struct.pack("<i", numel) + b"\x85")
        return keep(name, data)

    return rewrite_zip(src, path, edit)


def truncated(src: Path, dst: Path, keep_fraction: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def safetensors_file(
    path: Path, header: dict, data: bytes = b"", *, declared_header_len: int | None = None
) -> Path:
    """A hand-made safetensors file (header JSON as given, no validation)."""
    raw = json.dumps(header).encode()
    length = len(raw) if declared_header_len is None else declared_header_len
    path.write_bytes(struct.pack("<Q", length) + raw + data)
    return path


def nested(depth: int, leaf: object) -> object:
    obj = leaf
    for _ in range(depth):
        obj = {"inner": obj}
    return obj


# --- round two: archive records, uninitialised storage, budgets ------------------------


def with_record(path: Path, record: str, value: bytes, obj: object | None = None) -> Path:
    """A torch zip (two storages) whose `<root>/<record>` holds `value`."""
    src = torch_zip(path.with_suffix(".src"), obj or {"w": torch.ones(3), "b": torch.ones(2)})

    def edit(name: str, data: bytes):
        return keep(name, value if name.split("/", 1)[-1] == record else data)

    return rewrite_zip(src, path, edit)


class Calls:
    """Pickles as `func(*args)` (GLOBAL + REDUCE)."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def uninitialised_tensors(numel: int = 1 << 16) -> dict[str, object]:
    """Values that ask the weights-only unpickler for memory no record holds."""
    return {
        "FloatTensor(N)": Calls(torch.FloatTensor, numel),
        "DoubleTensor(N)": Calls(torch.DoubleTensor, numel),
        "Tensor(N)": Calls(torch.Tensor, numel),
        "UntypedStorage(N)": Calls(torch.UntypedStorage, numel),
        "bytearray(N)": Calls(bytearray, numel),
        "rebuild_from_type": Calls(
            torch._tensor._rebuild_from_type_v2, torch.FloatTensor, torch.Tensor, (numel,), {}
        ),
    }


def uninitialised_pickles(numel: int = 1 << 16) -> dict[str, bytes]:
    """data.pkl bodies `{"w": <uninitialised tensor>}`, including forms pickle never writes
    for these classes: NEWOBJ, and a class memoized once and fetched again to be called."""
    made = {k: pickle.dumps({"w": v}, protocol=2) for k, v in uninitialised_tensors(numel).items()}
    n = b"J" + struct.pack("<i", numel)
    made["NEWOBJ Tensor"] = b"\x80\x02}X\x01\x00\x00\x00wctorch\nTensor\n" + n + b"\x85\x81s."
    made["memoized FloatTensor"] = (
        b"\x80\x02}X\x01\x00\x00\x00wctorch\nFloatTensor\nq\x050h\x05" + n + b"\x85Rs."
    )
    return made


def raw_data_pkl(path: Path, pickle_bytes: bytes) -> Path:
    """A torch zip whose data.pkl is exactly `pickle_bytes` (no storages)."""
    src = torch_zip(path.with_suffix(".src"), {"w": torch.ones(1)})

    def edit(name: str, data: bytes):
        if name.endswith("/data.pkl"):
            return keep(name, pickle_bytes)
        return [] if "/data/" in name else keep(name, data)

    return rewrite_zip(src, path, edit)


def crash_with_sigfpe(*_: object) -> None:
    """A parse target that dies as the alignment bug made torch die."""
    import signal

    os.kill(os.getpid(), signal.SIGFPE)


def class_in_a_module_persistent_id(path: Path, numel: int = 1 << 16) -> Path:
    """A legacy file whose persistent id is ('module', torch.FloatTensor, None, None): the
    legacy loader hands data[0] back, a class the pickle could then call."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip
    main = (
        b"\x80\x02}X\x01\x00\x00\x00w(X\x06\x00\x00\x00modulectorch\nFloatTensor\nNNtQ"
        + b"J" + struct.pack("<i", numel) + b"\x85Rs."
    )
    parts = [pickle.dumps(v, protocol=2) for v in (MAGIC_NUMBER, PROTOCOL_VERSION, info)]
    path.write_bytes(b"".join(parts) + main + pickle.dumps([], protocol=2))
    return path
