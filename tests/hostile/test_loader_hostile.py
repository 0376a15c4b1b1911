"""Hostile inputs to `load_checkpoint`: each is refused with a typed, actionable error (or
loads correctly where it is legitimate), no code from the file runs (the canary file is
never created) and the input file is never modified."""

from __future__ import annotations

import argparse
import hashlib
import pickle
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from recovery_core.errors import CheckpointFormatError, LimitExceededError, UnsafeCheckpointError
from recovery_core.io.checkpoint import LoadLimits, load_checkpoint
from tests.hostile import _payloads as p


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def fingerprint(path: Path) -> dict[str, str]:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def refused(path: Path, error: type[Exception], phrase: str, canary: Path, **kwargs) -> str:
    """Load, expect `error` whose message contains `phrase`; no code ran, nothing changed."""
    before = fingerprint(path)
    with pytest.raises(error) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert phrase.lower() in message.lower(), message
    assert "weights_only" not in message  # never advise the unsafe loader
    assert not canary.exists(), "code from the file ran"
    assert fingerprint(path) == before, "the input file was modified"
    return message


def loads(path: Path, canary: Path, **kwargs):
    before = fingerprint(path)
    checkpoint = load_checkpoint(path, **kwargs)
    assert not canary.exists()
    assert fingerprint(path) == before
    return checkpoint


def test_payloads_really_run_code_when_unpickled_plainly(canary: Path) -> None:
    # Guards the suite itself: a canary that could never appear would prove nothing.
    pickle.loads(pickle.dumps(p.OpensFile(canary)))
    assert canary.exists()


# --- code in pickles ---------------------------------------------------------------

CODE_PAYLOADS = [
    (p.RunsShell, "posix.system"),
    (p.OpensFile, "io.open"),
    (p.StartsProcess, "Popen"),  # protocol 2 spells it commands.Popen
]


@pytest.mark.parametrize(("payload", "global_name"), CODE_PAYLOADS)
@pytest.mark.parametrize("writer", [p.torch_zip, p.torch_legacy], ids=["zip", "legacy"])
def test_code_executing_pickle_is_refused_naming_the_global(
    tmp_path, canary, writer, payload, global_name
) -> None:
    path = writer(tmp_path / "evil.pt", {**p.small_state_dict(), "x": payload(canary)})
    message = refused(path, UnsafeCheckpointError, global_name, canary)
    assert "refused" in message


@pytest.mark.parametrize("protocol", [2, 4])
def test_raw_pickle_renamed_pth_is_refused_before_unpickling(tmp_path, canary, protocol) -> None:
    path = p.raw_pickle(tmp_path / "weights.pth", {"x": p.RunsShell(canary)}, protocol)
    refused(path, UnsafeCheckpointError, "plain Python pickle", canary)


def test_obscure_global_is_refused_by_name(tmp_path, canary) -> None:
    inner = p.torch_zip(tmp_path / "inner.pt", {"x": p.OpensFile(canary)})
    path = p.torch_zip(tmp_path / "outer.pt", {"w": torch.ones(2), "x": p.LoadsUnsafely(inner)})
    refused(path, UnsafeCheckpointError, "torch.serialization.load", canary)


@pytest.mark.parametrize(
    ("obj", "phrase"),
    [
        (argparse.Namespace(lr=0.1, nhead=4), "argparse.Namespace"),
        (np.zeros(3), "NumPy arrays"),
        (torch.nn.Linear(2, 2), "whole nn.Module object (torch.nn.modules.linear.Linear)"),
    ],
    ids=["namespace", "numpy", "module"],
)
def test_non_weight_objects_are_named(tmp_path, canary, obj, phrase) -> None:
    path = p.torch_zip(tmp_path / "ckpt.pt", {"state_dict": p.small_state_dict(), "x": obj})
    refused(path, UnsafeCheckpointError, phrase, canary)


def test_whole_module_saved_directly_suggests_state_dict(tmp_path, canary) -> None:
    path = p.torch_zip(tmp_path / "model.pt", torch.nn.Sequential(torch.nn.Linear(2, 2)))
    message = refused(path, UnsafeCheckpointError, "nn.Module", canary)
    assert "state_dict()" in message


# --- zip containers ----------------------------------------------------------------


def test_two_data_pkl_members_are_refused(tmp_path, canary) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it writes
        path = p.duplicate_data_pkl(tmp_path / "dup.pt")
    refused(path, UnsafeCheckpointError, "duplicate zip member", canary)


def test_deflate_bomb_is_refused_before_inflating(tmp_path, canary) -> None:
    path = p.deflate_bomb(tmp_path / "bomb.pt", megabytes=32)
    assert path.stat().st_size < 1_000_000  # 32 MB of zeros in a small file
    refused(path, UnsafeCheckpointError, "compressed member", canary)


def test_truncated_zip(tmp_path, canary) -> None:
    src = p.torch_zip(tmp_path / "ok.pt", p.small_state_dict())
    path = p.truncated(src, tmp_path / "cut.pt")
    refused(path, CheckpointFormatError, "truncated", canary)


def test_storage_record_shorter_than_declared_is_refused_before_mmap(tmp_path, canary) -> None:
    path = p.short_record(tmp_path / "short.pt")
    # Unchecked, torch's mmap load hands out the neighbouring bytes as weights.
    leaked = torch.load(path, mmap=True, weights_only=True)["w"]
    assert leaked.shape == (3, 4)
    refused(path, UnsafeCheckpointError, "holds 24 bytes but the pickle declares 48", canary)


def test_declared_shape_far_larger_than_storage_is_refused(tmp_path, canary) -> None:
    path = p.oversized_shape(tmp_path / "big.pt")
    message = refused(path, UnsafeCheckpointError, "refused", canary)
    assert "'w'" in message


def test_torchscript_archive_is_refused_as_code(tmp_path, canary) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    refused(path, UnsafeCheckpointError, "TorchScript archive, which contains code", canary)


@pytest.mark.slow  # torch.export itself takes seconds
def test_torch_export_archive_is_refused_as_code(tmp_path, canary) -> None:
    path = tmp_path / "exported.pt2"
    program = torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),))
    torch.export.save(program, path)
    refused(path, UnsafeCheckpointError, "torch.export (.pt2) archive", canary)


# --- not checkpoints at all ----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "empty"),
        (bytes(range(7, 256)) * 8, "random or unknown binary"),
        (b"epoch,loss\n1,0.5\n2,0.4\n", "plain text"),
    ],
    ids=["empty", "random", "text"],
)
def test_non_checkpoints_say_what_they_look_like(tmp_path, canary, content, phrase) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    message = refused(path, CheckpointFormatError, phrase, canary)
    assert "model.pt" in message


# --- safetensors -------------------------------------------------------------------


def test_truncated_safetensors(tmp_path, canary) -> None:
    src = tmp_path / "ok.safetensors"
    save_file({"w": torch.randn(64, 64)}, src)
    for fraction in (0.5, 0.001):  # data cut short; header cut short
        path = p.truncated(src, tmp_path / f"cut{fraction}.safetensors", fraction)
        refused(path, CheckpointFormatError, "truncated", canary)


def test_safetensors_oversized_header_is_refused_unread(tmp_path, canary) -> None:
    path = p.safetensors_file(tmp_path / "h.safetensors", {}, declared_header_len=200 * 2**20)
    refused(path, UnsafeCheckpointError, "header", canary)


def test_safetensors_overlapping_offsets_are_refused(tmp_path, canary) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    path = p.safetensors_file(tmp_path / "o.safetensors", header, bytes(24))
    refused(path, UnsafeCheckpointError, "overlapping tensors 'a' and 'b'", canary)


def test_safetensors_unknown_dtype_is_refused(tmp_path, canary) -> None:
    header = {"a": {"dtype": "X9", "shape": [4], "data_offsets": [0, 16]}}
    path = p.safetensors_file(tmp_path / "d.safetensors", header, bytes(16))
    refused(path, CheckpointFormatError, "dtype 'X9'", canary)


def test_format_is_sniffed_not_taken_from_the_extension(tmp_path, canary) -> None:
    sd = p.small_state_dict()
    st_named_pt = tmp_path / "weights.pt"
    save_file(sd, st_named_pt)
    zip_named_st = p.torch_zip(tmp_path / "weights.safetensors", sd)
    for path, fmt in ((st_named_pt, "safetensors"), (zip_named_st, "torch-zip")):
        checkpoint = loads(path, canary)
        assert checkpoint.format == fmt
        for key, value in sd.items():
            assert torch.equal(checkpoint.tensor(key), value)


# --- sharded checkpoints -------------------------------------------------------------


@pytest.mark.parametrize("shard", ["../x.safetensors", "/tmp/x.safetensors", "sub/x.safetensors"])
def test_index_pointing_outside_its_folder_is_refused(tmp_path, canary, shard) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, tmp_path / "x.safetensors")  # a real file out there
    index = folder / "model.safetensors.index.json"
    index.write_text(f'{{"weight_map": {{"w": "{shard}"}}}}')
    refused(folder, UnsafeCheckpointError, "not a plain file name inside", canary)
    refused(index, UnsafeCheckpointError, "not a plain file name inside", canary)


def test_shard_symlink_leading_out_of_the_folder_is_refused(tmp_path, canary) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, tmp_path / "outside.safetensors")
    (folder / "x.safetensors").symlink_to(tmp_path / "outside.safetensors")
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"w": "x.safetensors"}}')
    refused(folder, UnsafeCheckpointError, "not a plain file name inside", canary)


# --- uploads -------------------------------------------------------------------------


def test_upload_named_like_a_path_is_never_used_as_one(tmp_path, canary, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = (p.torch_zip(tmp_path / "src.pt", p.small_state_dict())).read_bytes()
    checkpoint = load_checkpoint(data, name="../../x.pt")
    assert checkpoint.source_name == "../../x.pt"
    assert checkpoint.tensor("weight").shape == (4, 3)
    assert not (tmp_path / "../../x.pt").exists()


def test_bad_upload_message_names_the_upload_not_a_server_path(canary) -> None:
    with pytest.raises(CheckpointFormatError) as info:
        load_checkpoint(b"hello, this is not a checkpoint", name="mine.pt")
    message = str(info.value)
    assert "mine.pt" in message
    assert tempfile.gettempdir() not in message and "upload.bin" not in message


def test_upload_above_the_size_limit_is_refused(canary) -> None:
    with pytest.raises(UnsafeCheckpointError, match="limit"):
        load_checkpoint(bytes(2048), name="big.pt", limits=LoadLimits(max_file_bytes=1024))


# --- bounds --------------------------------------------------------------------------


def _many_keys_safetensors(path: Path, count: int) -> Path:
    header = {
        f"layers.{i}.w": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
        for i in range(count)
    }
    return p.safetensors_file(path, header, bytes(4 * count))


@pytest.mark.slow
def test_100k_keys_load_within_bounds(tmp_path, canary) -> None:
    path = _many_keys_safetensors(tmp_path / "many.safetensors", 100_000)
    start = time.perf_counter()
    checkpoint = loads(path, canary)
    assert len(checkpoint.tensors) == 100_000
    assert checkpoint.info("layers.99999.w").shape == (1,)
    assert time.perf_counter() - start < LoadLimits().time_budget_seconds


def test_more_keys_than_the_limit_are_refused(tmp_path, canary) -> None:
    limits = LoadLimits(max_keys=1000)
    st = _many_keys_safetensors(tmp_path / "many.safetensors", 1001)
    refused(
        st, UnsafeCheckpointError, "more than this loader's limit of 1000", canary, limits=limits
    )
    zipped = p.torch_zip(tmp_path / "many.pt", {f"k{i}": torch.zeros(1) for i in range(1001)})
    refused(zipped, UnsafeCheckpointError, "limit of 1000", canary, limits=limits)


def test_deep_nesting_is_refused(tmp_path, canary) -> None:
    path = p.torch_zip(tmp_path / "deep.pt", p.nested(30, p.small_state_dict()))
    refused(path, UnsafeCheckpointError, "deeper than 8 levels", canary)


def test_nesting_within_the_limit_still_loads(tmp_path, canary) -> None:
    path = p.torch_zip(
        tmp_path / "ok.pt", {"state_dict": p.small_state_dict(), "o": p.nested(6, 1)}
    )
    assert loads(path, canary).names == ("weight", "bias")


def test_shared_reference_bomb_is_refused_not_walked_forever(tmp_path, canary) -> None:
    # Pickle memo references make 10**6 leaves out of a few hundred bytes.
    bomb: object = [0]
    for _ in range(6):
        bomb = [bomb] * 10
    path = p.torch_zip(tmp_path / "laughs.pt", {"w": torch.ones(2), "x": bomb})
    assert path.stat().st_size < 10_000
    refused(path, UnsafeCheckpointError, "objects", canary, limits=LoadLimits(max_keys=100))


def test_load_past_the_time_budget_is_stopped(tmp_path, canary) -> None:
    path = p.torch_zip(tmp_path / "slow.pt", {f"k{i}": torch.zeros(1) for i in range(2000)})
    refused(
        path,
        LimitExceededError,
        "took longer than",
        canary,
        limits=LoadLimits(time_budget_seconds=0.001),
    )


# --- unusual tensors -------------------------------------------------------------------


def test_nan_and_inf_weights_load_and_are_counted(tmp_path, canary) -> None:
    w = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 3.0])
    checkpoint = loads(p.torch_zip(tmp_path / "nan.pt", {"w": w}), canary)
    stats = checkpoint.stats("w")
    assert (stats.nan_count, stats.inf_count) == (1, 2)
    assert (stats.min, stats.max, stats.mean) == (1.0, 3.0, 2.0)


def test_meta_float8_and_non_contiguous_tensors_load(tmp_path, canary) -> None:
    torch.manual_seed(0)
    f8 = torch.randn(4).to(torch.float8_e4m3fn)
    strided = torch.randn(4, 3).t()
    sd = {"meta": torch.empty(3, 4, device="meta"), "f8": f8, "t": strided}
    checkpoint = loads(p.torch_zip(tmp_path / "odd.pt", sd), canary)
    assert checkpoint.info("meta").shape == (3, 4) and checkpoint.info("meta").nbytes == 48
    assert checkpoint.tensor("meta").device.type == "meta"
    assert checkpoint.info("f8").dtype == "float8_e4m3fn" and checkpoint.info("f8").nbytes == 4
    assert torch.equal(checkpoint.tensor("f8").view(torch.uint8), f8.view(torch.uint8))
    assert torch.equal(checkpoint.tensor("t"), strided)
    assert checkpoint.tensor("t").stride() == strided.stride()


def test_sparse_tensor_is_refused_by_name(tmp_path, canary) -> None:
    path = p.torch_zip(
        tmp_path / "sparse.pt", {"w": torch.ones(2), "adj": torch.eye(3).to_sparse()}
    )
    refused(path, CheckpointFormatError, "tensor 'adj' is a sparse_coo tensor", canary)


def test_quantized_tensor_is_refused_by_name(tmp_path, canary) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_per_tensor is deprecated
        q = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)
    path = p.torch_zip(tmp_path / "q.pt", {"w": torch.ones(2), "qw": q})
    refused(path, CheckpointFormatError, "quantized tensors ('qw')", canary)


def test_tied_weights_keep_sharing_one_storage(tmp_path, canary) -> None:
    emb = torch.randn(5, 3)
    checkpoint = loads(
        p.torch_zip(tmp_path / "tied.pt", {"emb.weight": emb, "head.weight": emb}), canary
    )
    assert checkpoint.names == ("emb.weight", "head.weight")
    assert checkpoint.tied == {"head.weight": "emb.weight"}
    a, b = checkpoint.tensor("emb.weight"), checkpoint.tensor("head.weight")
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    assert any("tied" in w for w in checkpoint.warnings)


def test_writing_to_a_loaded_tensor_never_reaches_the_file(tmp_path, canary) -> None:
    path = p.torch_zip(tmp_path / "w.pt", {"w": torch.zeros(8)})
    before = fingerprint(path)
    load_checkpoint(path).tensor("w").add_(1.0)  # mapped copy-on-write
    assert fingerprint(path) == before
    assert torch.equal(load_checkpoint(path).tensor("w"), torch.zeros(8))


def test_big_endian_archive_is_refused(tmp_path, canary) -> None:
    src = p.torch_zip(tmp_path / "le.pt", p.small_state_dict())

    def edit(name: str, data: bytes):
        return p.keep(name, b"big" if name.endswith("/byteorder") else data)

    path = p.rewrite_zip(src, tmp_path / "be.pt", edit)
    refused(path, CheckpointFormatError, "big-endian", canary)
