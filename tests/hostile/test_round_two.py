"""Hostile input, round two (issue 11): files that crashed the process, leaked another
session's memory, grew a few KB into gigabytes, outlived their budget or escaped the
typed-error contract. Each is refused with a typed error that names what it broke (a
`LimitExceededError` names the `LoadLimits` field), fast, and without touching the file."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import threading
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from recovery_core.errors import (
    CheckpointFormatError,
    LimitExceededError,
    ReaderCrashedError,
    RecoveryError,
    UnsafeCheckpointError,
)
from recovery_core.io.checkpoint import LoadLimits, load_checkpoint
from tests.hostile import _payloads as p
from tests.hostile.test_loader_hostile import fingerprint, refused


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def over_limit(path, limit: str, canary: Path, **kwargs) -> LimitExceededError:
    before = fingerprint(path)
    with pytest.raises(LimitExceededError) as info:
        load_checkpoint(path, **kwargs)
    assert info.value.limit == limit, info.value
    assert f"({limit}" in str(info.value)  # the message names the field to raise
    assert not canary.exists()
    assert fingerprint(path) == before
    return info.value


def within(seconds: float, call):
    """Run `call`; fail (not hang) if it has not returned after `seconds`."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


# --- 1. archive records torch acts on ----------------------------------------------------


@pytest.mark.parametrize(
    ("record", "value", "phrase"),
    [
        (".storage_alignment", b"0", "storage alignment of 0"),  # SIGFPE in torch's reader
        (".storage_alignment", b"48", "storage alignment of 48"),
        (".storage_alignment", b"-64", "invalid '.storage_alignment'"),
        ("byteorder", b"middle", "invalid 'byteorder'"),
        (".format_version", b"one", "invalid '.format_version'"),
        ("version", b"999\n", "archive version 999"),
    ],
)
def test_archive_records_are_validated_before_torch_reads_them(
    tmp_path, canary, record, value, phrase
) -> None:
    path = p.with_record(tmp_path / "records.pt", record, value)
    refused(path, UnsafeCheckpointError, phrase, canary)


def test_a_crash_while_parsing_is_contained_in_the_reader(tmp_path) -> None:
    from recovery_core.io.sandbox import run_isolated

    with pytest.raises(ReaderCrashedError, match="SIGFPE"):
        run_isolated(p.crash_with_sigfpe, (), display="crash.pt", seconds=30, memory_bytes=2**30)
    # This process carries on: the next file loads.
    path = p.torch_zip(tmp_path / "fine.pt", p.small_state_dict())
    assert load_checkpoint(path).names == ("weight", "bias")


def parse_servers() -> set[int]:
    """This process's children that run the file reader (found the way `ps` would)."""
    children = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children |= {int(pid) for pid in (task / "children").read_text().split()}
    return {
        pid for pid in children
        if b"sandbox import serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }  # fmt: skip


@pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
    reason="finds the reader among this process's children in /proc (Linux)",
)
def test_a_parse_server_that_died_is_started_again(tmp_path) -> None:
    path = p.torch_zip(tmp_path / "fine.pt", p.small_state_dict())
    load_checkpoint(path)
    (server,) = parse_servers()
    os.kill(server, 9)  # SIGKILL, as the out-of-memory killer would
    stat = Path(f"/proc/{server}/stat")
    deadline = time.monotonic() + 30
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # dead, not yet reaped
        assert time.monotonic() < deadline, "the killed reader did not stop"
        time.sleep(0.01)  # a poll interval: the loop waits on the condition above
    assert load_checkpoint(path).names == ("weight", "bias")
    assert server not in parse_servers() and len(parse_servers()) == 1


# --- 2. every tensor's bytes come from a checked record ----------------------------------


@pytest.mark.parametrize("how", sorted(p.uninitialised_pickles()))
def test_constructors_of_uninitialised_memory_are_refused_in_zip_files(tmp_path, canary, how):
    path = p.raw_data_pkl(tmp_path / "uninit.pt", p.uninitialised_pickles()[how])
    refused(path, UnsafeCheckpointError, "uninitialised memory", canary)


@pytest.mark.parametrize("how", ["FloatTensor(N)", "Tensor(N)", "UntypedStorage(N)"])
def test_constructors_of_uninitialised_memory_are_refused_in_legacy_files(
    tmp_path, canary, how
) -> None:
    value = p.uninitialised_tensors()[how]
    path = p.torch_legacy(tmp_path / "uninit.pt", {"w": value, "b": torch.ones(2)})
    refused(path, UnsafeCheckpointError, "uninitialised memory", canary)


def test_a_class_may_only_name_a_storage_type_in_a_persistent_id(tmp_path, canary) -> None:
    path = p.class_in_a_module_persistent_id(tmp_path / "module-pid.pt")
    refused(path, UnsafeCheckpointError, "torch.FloatTensor outside a storage record", canary)


def test_attributes_shadowing_tensor_methods_do_not_break_loading(tmp_path, canary) -> None:
    shadowed = p.Calls(
        torch._utils._rebuild_parameter_with_state,
        torch.arange(6.0).reshape(2, 3),
        False,
        OrderedDict(),
        {"numel": 7, "stride": "x", "storage_offset": None, "element_size": 0},
    )
    path = p.torch_zip(tmp_path / "shadow.pt", {"w": shadowed, "b": torch.ones(2)})
    checkpoint = load_checkpoint(path)
    assert checkpoint.info("w").numel == 6
    assert torch.equal(checkpoint.tensor("w"), torch.arange(6.0).reshape(2, 3))


# --- 3. budgets on what a file controls --------------------------------------------------


def test_a_pile_of_empty_sets_is_refused_before_unpickling(tmp_path, canary) -> None:
    body = b"\x80\x02" + b"\x8f" * 300_000 + b"."  # EMPTY_SET x 300k: ~70 MB once built
    path = p.raw_data_pkl(tmp_path / "sets.pt", body)
    over_limit(path, "max_container_items", canary)


def test_pickle_instruction_count_is_bounded(tmp_path, canary) -> None:
    path = p.torch_zip(tmp_path / "many.pt", {f"k{i}": torch.zeros(1) for i in range(50)})
    over_limit(path, "max_pickle_opcodes", canary, limits=LoadLimits(max_pickle_opcodes=500))


def test_repeated_references_to_one_big_string_are_counted_each_time(tmp_path, canary) -> None:
    big = "x" * 2**20
    hparams = {"names": [big] * 1000}  # 1 MB on disk, 1 GB as text
    path = p.torch_zip(
        tmp_path / "laughs.pt", {"state_dict": p.small_state_dict(), "hparams": hparams}
    )
    assert path.stat().st_size < 2 * 2**20
    over_limit(path, "max_text_chars", canary)


def test_dict_keys_with_chosen_hashes_are_refused(tmp_path, canary) -> None:
    colliding = {k * (2**61 - 1): 0 for k in range(1, 200)}  # all hash to 0
    path = p.torch_zip(tmp_path / "hash.pt", {**p.small_state_dict(), "opt": colliding})
    refused(path, UnsafeCheckpointError, "hashes collide", canary)


@pytest.mark.parametrize(
    ("key", "limit_or_phrase", "limits"),
    [
        ("a." * 500 + "w", "max_key_parts", LoadLimits()),
        ("layer." * 600 + "weight", "max_key_parts", LoadLimits(max_key_chars=10_000)),
        ("x" * 5000, "max_key_chars", LoadLimits()),
        ("..bias", "empty part", LoadLimits()),
    ],
    ids=["500-dots", "600-levels", "long", "empty-part"],
)
def test_key_length_and_depth_are_bounded(tmp_path, canary, key, limit_or_phrase, limits):
    path = tmp_path / "keys.safetensors"
    save_file({key: torch.ones(1), "ok.weight": torch.ones(1)}, path)
    if limit_or_phrase.startswith("max_"):
        over_limit(path, limit_or_phrase, canary, limits=limits)
    else:
        refused(path, CheckpointFormatError, limit_or_phrase, canary, limits=limits)


def test_safetensors_header_of_empty_objects_is_refused_before_parsing(tmp_path, canary) -> None:
    raw = b'{"a":[' + b"{}," * 700_000 + b"{}]}"  # 2 MB; json.loads would build 700k dicts
    path = tmp_path / "objects.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    over_limit(path, "max_json_containers", canary)


@pytest.mark.parametrize("where", ["safetensors", "index"])
def test_deeply_nested_json_is_refused(tmp_path, canary, where) -> None:
    deep = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    if where == "safetensors":
        path = tmp_path / "deep.safetensors"
        path.write_bytes(struct.pack("<Q", len(deep)) + deep)
    else:
        path = tmp_path / "model.safetensors.index.json"
        path.write_bytes(b'{"weight_map": {"w": "x.safetensors"}, "metadata": ' + deep + b"}")
    over_limit(path, "max_json_depth", canary)


def test_zero_stride_statistics_read_the_stored_bytes_once(tmp_path, canary) -> None:
    n = 2**27  # 512 MiB as float32 if materialised; 4 bytes stored
    path = p.torch_zip(tmp_path / "broadcast.pt", {"w": torch.full((1,), 3.0).expand(n)})
    checkpoint = load_checkpoint(path)
    start = time.perf_counter()
    stats = checkpoint.stats("w")
    counts, _ = checkpoint.histogram("w", bins=4)
    assert time.perf_counter() - start < 2.0
    assert (stats.mean, stats.std, stats.min, stats.max) == (3.0, 0.0, 3.0, 3.0)
    assert int(counts.sum()) == n


def test_zero_stride_statistics_weight_each_value_by_its_repeat(tmp_path) -> None:
    base = torch.tensor([[1.0], [2.0], [float("nan")]])
    path = p.torch_zip(tmp_path / "b.pt", {"w": base.expand(3, 5)})
    stats = load_checkpoint(path).stats("w")
    finite = base.expand(3, 5)[:2].reshape(-1).double()
    assert stats.nan_count == 5
    assert math.isclose(stats.mean, finite.mean().item())
    assert math.isclose(stats.std, finite.std().item())


def test_statistics_stop_at_their_time_budget(tmp_path) -> None:
    # Overlapping strides (not zero): 4096 x 4096 values over 8191 stored ones.
    stored = torch.arange(8191.0)
    w = stored.as_strided((4096, 4096), (1, 1))
    path = p.torch_zip(tmp_path / "overlap.pt", {"w": w})
    checkpoint = load_checkpoint(path, limits=LoadLimits(stats_time_seconds=0.0))
    with pytest.raises(LimitExceededError) as info:
        checkpoint.stats("w")
    assert info.value.limit == "stats_time_seconds"


# --- 4. bounded work: regular files only, budgets that stop the work ---------------------


def test_fifo_index_is_refused_at_once(tmp_path, canary) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    fifo = folder / "model.safetensors.index.json"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeCheckpointError, match="not a regular file"):
        within(20, lambda: load_checkpoint(folder))
    with pytest.raises(UnsafeCheckpointError, match="not a regular file"):
        within(20, lambda: load_checkpoint(fifo))


def test_index_linked_to_a_device_is_refused(tmp_path, canary) -> None:
    link = tmp_path / "model.safetensors.index.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(UnsafeCheckpointError, match="device entry"):
        within(20, lambda: load_checkpoint(link))


def test_proc_entries_are_never_read(canary) -> None:
    with pytest.raises(UnsafeCheckpointError, match="not a file"):
        within(20, lambda: load_checkpoint("/proc/self/environ"))


def test_index_that_is_a_folder_is_refused(tmp_path, canary) -> None:
    (tmp_path / "model.safetensors.index.json").mkdir()
    with pytest.raises(UnsafeCheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path)


def test_a_spent_time_budget_stops_the_work_itself(tmp_path, canary) -> None:
    path = p.torch_zip(tmp_path / "slow.pt", {f"k{i}": torch.zeros(1) for i in range(20_000)})
    threads = threading.active_count()
    start = time.perf_counter()
    # Reading 20,000 keys takes 0.35-0.5 s here (quiet); 0.3 s was sometimes enough.
    over_limit(path, "time_budget_seconds", canary, limits=LoadLimits(time_budget_seconds=0.05))
    assert time.perf_counter() - start < 5.0
    assert threading.active_count() == threads  # nothing left running in this process


def test_the_parse_has_a_memory_budget(tmp_path, canary) -> None:
    hparams = {f"h{i}": "y" * 100 for i in range(200_000)}  # ~60 MB once unpickled
    path = p.torch_zip(tmp_path / "mem.pt", {"state_dict": p.small_state_dict(), "cfg": hparams})
    over_limit(path, "parse_memory_bytes", canary, limits=LoadLimits(parse_memory_bytes=8 * 2**20))


# --- 5. one error contract ---------------------------------------------------------------


def _damaged_zips(tmp_path: Path) -> dict[str, Path]:
    good = p.torch_zip(tmp_path / "good.pt", p.small_state_dict()).read_bytes()
    out = {}
    # The central directory's header offset pushed below 0 (zipfile seeks there).
    cd = good.rfind(b"PK\x01\x02")
    bad = bytearray(good)
    bad[cd + 42 : cd + 46] = struct.pack("<I", 0xFFFFFFF0)
    out["negative-seek"] = bytearray(bad)
    # A name flagged UTF-8 that is not UTF-8.
    bad = bytearray(good)
    bad[cd + 8 : cd + 10] = struct.pack("<H", 0x800)
    bad[cd + 46] = 0xFF
    out["bad-utf8-name"] = bad
    # A member compressed with a method zipfile does not implement.
    bad = bytearray(good)
    bad[cd + 10 : cd + 12] = struct.pack("<H", 99)
    out["unknown-method"] = bad
    paths = {}
    for name, data in out.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(bytes(data))
    return paths


def test_damaged_zips_give_typed_errors(tmp_path, canary) -> None:
    for name, path in _damaged_zips(tmp_path).items():
        with pytest.raises(RecoveryError):
            load_checkpoint(path)
        assert not canary.exists(), name


def test_cli_prints_one_escaped_line_and_exits_2(tmp_path, capsys) -> None:
    from recovery_core.cli import main

    path = tmp_path / "evil\x1b[31m.safetensors"
    path.write_bytes(struct.pack("<Q", 12) + b'{"a\x1b[2J": 1}')
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\\x1b" in err


def test_cli_inspect_escapes_control_characters_in_key_names(tmp_path, capsys) -> None:
    from recovery_core.cli import main

    header = {
        "head\x1b]0;pwned\x07.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "ok\udcff.bias": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
    }
    path = p.safetensors_file(tmp_path / "keys.safetensors", header, bytes(16))
    code = main(["inspect", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "head\\x1b]0;pwned\\x07.weight" in out  # shown, as a visible escape
    out.encode("utf-8")  # a lone surrogate never reaches the terminal raw


@pytest.mark.parametrize(
    "builder",
    [
        lambda d: p.with_record(d / "a.pt", ".storage_alignment", b"0"),
        lambda d: p.raw_data_pkl(d / "b.pt", p.uninitialised_pickles()["FloatTensor(N)"]),
        lambda d: p.safetensors_file(d / "c.safetensors", {"a": {"dtype": "F32"}}),
    ],
    ids=["alignment", "uninitialised", "header"],
)
def test_cli_exits_2_for_every_bad_input(tmp_path, capsys, builder) -> None:
    from recovery_core.cli import main

    assert main(["inspect", str(builder(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_every_new_limit_is_a_load_limits_field() -> None:
    fields = set(LoadLimits.__dataclass_fields__)
    for name in (
        "max_pickle_opcodes",
        "max_container_items",
        "max_text_chars",
        "max_key_chars",
        "max_key_parts",
        "max_json_containers",
        "max_json_depth",
        "stats_time_seconds",
        "parse_memory_bytes",
        "time_budget_seconds",
    ):
        assert name in fields


def test_files_are_not_unpickled_in_this_process(tmp_path, monkeypatch) -> None:
    # The caller's process never runs torch.load: a hostile file meets only the child.
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load ran in the caller's process")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    path = p.torch_zip(tmp_path / "m.pt", p.small_state_dict())
    legacy = p.torch_legacy(tmp_path / "l.pt", p.small_state_dict())
    assert load_checkpoint(path).names == load_checkpoint(legacy).names == ("weight", "bias")
    json.dumps(load_checkpoint(path).hyper_parameters)


# --- datasets go through the same checks -------------------------------------------------


def test_dataset_files_get_the_checkpoint_checks(tmp_path) -> None:
    from recovery_core.errors import DataError
    from recovery_core.io.data import load_dataset

    crash = p.with_record(
        tmp_path / "a.pt", ".storage_alignment", b"0", {"x": torch.ones(4, 2), "y": torch.ones(4)}
    )
    with pytest.raises(DataError, match="storage alignment of 0"):
        load_dataset(crash)
    uninit = p.torch_zip(
        tmp_path / "b.pt", {"x": p.uninitialised_tensors()["FloatTensor(N)"], "y": torch.ones(4)}
    )
    with pytest.raises(DataError, match="uninitialised memory"):
        load_dataset(uninit)
    fifo = tmp_path / "data.pt"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        within(20, lambda: load_dataset(fifo))
    good = p.torch_zip(tmp_path / "c.pt", {"x": torch.ones(4, 2), "y": torch.ones(4)})
    assert load_dataset(good).n_samples == 4


def test_dataset_compression_bomb_and_damaged_archives_are_typed(tmp_path) -> None:
    import numpy as np

    from recovery_core.errors import DataError
    from recovery_core.io.data import load_dataset

    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros((96 * 2**20,), dtype=np.uint8), y=np.zeros(1))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(DataError, match="compression bomb"):
        load_dataset(bomb)
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((4, 2)), y=np.ones(4))
    damaged = bytearray(good.read_bytes())
    cd = damaged.rfind(b"PK\x01\x02")
    damaged[cd + 10 : cd + 12] = struct.pack("<H", 99)  # a method zipfile does not know
    (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
    with pytest.raises(DataError):
        load_dataset(tmp_path / "damaged.npz")
    deep = tmp_path / "deep.safetensors"
    raw = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    deep.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(DataError, match="max_json_depth"):
        load_dataset(deep)
    assert load_dataset(good).n_samples == 4


def test_recover_prints_names_from_the_files_escaped(tmp_path, capsys) -> None:
    from recovery_core.cli import main

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    data = tmp_path / "d.pt"
    x = torch.randn(32, 4)
    torch.save({"in\x1b[2Jputs": x, "y\x07": model(x).detach()}, data)
    main(["recover", str(weights), "--data", str(data), "--out", str(tmp_path / "o" / "m.pt"),
          "--epochs", "1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert "in\\x1b[2Jputs" in err  # the guessed mapping names the entry, escaped
    assert "\x1b" not in out + err and "\x07" not in out + err
