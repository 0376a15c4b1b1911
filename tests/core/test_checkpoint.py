"""load_checkpoint on every supported format, wrapper and prefix; on-demand statistics."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from recovery_core.errors import CheckpointFormatError
from recovery_core.io import tensor_stats
from recovery_core.io.checkpoint import Checkpoint, LoadLimits, load_checkpoint


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_weights(checkpoint: Checkpoint, expected: dict[str, torch.Tensor]) -> None:
    assert set(checkpoint.names) == set(expected)
    for key, value in expected.items():
        info = checkpoint.info(key)
        assert info.shape == tuple(value.shape)
        assert info.dtype == str(value.dtype).removeprefix("torch.")
        assert info.numel == value.numel() and info.nbytes == value.numel() * value.element_size()
        assert torch.equal(checkpoint.tensor(key), value)


# --- formats -------------------------------------------------------------------------


def test_torch_zip(tmp_path: Path) -> None:
    sd = make_model().state_dict()
    path = tmp_path / "model.pt"
    torch.save(sd, path)
    digest = sha256(path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.format == "torch-zip"
    assert checkpoint.names == tuple(sd)  # file order
    assert checkpoint.source_name == "model.pt"
    assert_same_weights(checkpoint, sd)
    assert sha256(path) == digest


def test_torch_legacy(tmp_path: Path) -> None:
    sd = make_model().state_dict()
    path = tmp_path / "model.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    checkpoint = load_checkpoint(path)
    assert checkpoint.format == "torch-legacy"
    assert_same_weights(checkpoint, sd)
    assert checkpoint.module_paths == ("", "0", "1", "2")


def test_safetensors_with_metadata(tmp_path: Path) -> None:
    sd = make_model().state_dict()
    path = tmp_path / "model.safetensors"
    save_file(dict(sd), path, metadata={"format": "pt", "nhead": "4"})
    digest = sha256(path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.format == "safetensors"
    assert checkpoint.metadata == {"format": "pt", "nhead": "4"}
    assert_same_weights(checkpoint, sd)
    assert sha256(path) == digest


def _write_shards(folder: Path, sd: dict[str, torch.Tensor], kind: str) -> Path:
    keys = list(sd)
    halves = {"part-1": keys[:2], "part-2": keys[2:]}
    weight_map = {}
    ext = "safetensors" if kind == "safetensors" else "bin"
    for stem, names in halves.items():
        shard = folder / f"{stem}.{ext}"
        part = {k: sd[k] for k in names}
        save_file(part, shard) if kind == "safetensors" else torch.save(part, shard)
        weight_map.update({k: shard.name for k in names})
    index = folder / f"model.{'safetensors' if kind == 'safetensors' else 'bin'}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 120}, "weight_map": weight_map}))
    return index


@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_sharded_folder_and_index_file(tmp_path: Path, kind: str) -> None:
    sd = {f"module.{k}": v for k, v in make_model().state_dict().items()}
    index = _write_shards(tmp_path, sd, kind)
    plain = {k.removeprefix("module."): v for k, v in sd.items()}
    for source in (tmp_path, index):
        checkpoint = load_checkpoint(source)
        assert checkpoint.format == "sharded"
        assert checkpoint.stripped_prefix == "module."
        assert checkpoint.metadata["total_size"] == "120"
        assert_same_weights(checkpoint, plain)


def test_shard_missing_a_key_the_index_lists(tmp_path: Path) -> None:
    save_file({"a": torch.ones(1)}, tmp_path / "s.safetensors")
    (tmp_path / "i.index.json").write_text(
        '{"weight_map": {"a": "s.safetensors", "b": "s.safetensors"}}'
    )
    with pytest.raises(CheckpointFormatError, match="'b' in s.safetensors"):
        load_checkpoint(tmp_path)


def test_folder_without_index(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFormatError, match="without a \\*.index.json"):
        load_checkpoint(tmp_path)


def test_missing_path() -> None:
    with pytest.raises(CheckpointFormatError, match="does not exist"):
        load_checkpoint("/nonexistent/model.pt")


def test_bytes_input_uses_the_display_name_and_cleans_up(tmp_path, monkeypatch) -> None:
    sd = make_model().state_dict()
    created = []
    real_mkdtemp = tempfile.mkdtemp

    def spy(*args, **kwargs):
        created.append(real_mkdtemp(*args, **kwargs))
        return created[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    for writer in ("zip", "safetensors"):
        path = tmp_path / f"m.{writer}"
        torch.save(sd, path) if writer == "zip" else save_file(dict(sd), path)
        checkpoint = load_checkpoint(path.read_bytes(), name="my upload.pt")
        assert checkpoint.source_name == "my upload.pt"
        assert not Path(created[-1]).exists()  # the private copy is gone ...
        assert_same_weights(checkpoint, sd)  # ... and values are still read on demand


# --- wrappers and prefixes -----------------------------------------------------------

WRAPPERS = [
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "module",
    "state_dict_ema",
    "model_ema",
    "ema",
    "params",
    "weights",
]


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_wrapper_keys(tmp_path: Path, wrapper: str) -> None:
    sd = make_model().state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save({wrapper: sd, "epoch": 7, "best_loss": 0.25, "tag": "run-3"}, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.wrapper_key == wrapper
    assert_same_weights(checkpoint, sd)
    assert checkpoint.extras == {"epoch": "7", "best_loss": "0.25", "tag": "'run-3'"}


def test_nested_wrappers(tmp_path: Path) -> None:
    sd = make_model().state_dict()
    torch.save({"model": {"state_dict": sd, "step": 3}}, tmp_path / "c.pt")
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint.wrapper_key == "model.state_dict"
    assert checkpoint.extras == {"model.step": "3"}
    assert_same_weights(checkpoint, sd)


def test_optimizer_state_is_summarized_not_taken_for_weights(tmp_path: Path) -> None:
    model = nn.Linear(3, 1)  # 2 weight tensors; Adam keeps 3 tensors per parameter
    # What torch.optim.Adam(...).state_dict() holds after a step (built by hand: creating
    # an optimizer costs seconds of lazy imports).
    adam_state = {
        "state": {
            i: {
                "step": torch.tensor(1.0),
                "exp_avg": p.detach().clone(),
                "exp_avg_sq": p.detach().clone(),
            }
            for i, p in enumerate(model.parameters())
        },
        "param_groups": [{"params": [0], "lr": 1e-3}, {"params": [1], "lr": 0.1}],
    }
    path = tmp_path / "c.pt"
    torch.save({"model": model.state_dict(), "optimizer": adam_state}, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.wrapper_key == "model"
    assert checkpoint.names == ("weight", "bias")
    assert checkpoint.extras["optimizer"] == "optimizer state: 2 param groups"


def test_the_wrapper_with_most_tensors_wins_and_the_other_is_reported(tmp_path: Path) -> None:
    sd = make_model().state_dict()
    small = {"0.weight": sd["0.weight"]}
    torch.save({"ema": sd, "state_dict": small}, tmp_path / "c.pt")
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint.wrapper_key == "ema"
    assert checkpoint.extras == {"state_dict": "another state dict: 1 tensors"}


def test_hyper_parameters_are_surfaced_as_plain_values(tmp_path: Path) -> None:
    hp = {"nhead": 4, "dropout": 0.1, "activation": "gelu", "sizes": [3, 4], "opt": {"lr": 0.1}}
    torch.save({"state_dict": make_model().state_dict(), "hyper_parameters": hp}, tmp_path / "c.pt")
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint.hyper_parameters == {
        "nhead": 4,
        "dropout": 0.1,
        "activation": "gelu",
        "sizes": [3, 4],
        "opt.lr": 0.1,
    }


def test_hyper_parameters_beside_top_level_weights(tmp_path: Path) -> None:
    sd = dict(make_model().state_dict())
    torch.save({**sd, "config": {"nhead": 2}}, tmp_path / "c.pt")
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint.wrapper_key is None
    assert checkpoint.hyper_parameters == {"nhead": 2}
    assert_same_weights(checkpoint, sd)


@pytest.mark.parametrize("key", ["hparams", "model_args", "args", "config"])
def test_other_hyper_parameter_entries(tmp_path: Path, key: str) -> None:
    torch.save({"model": make_model().state_dict(), key: {"n_head": 2}}, tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt").hyper_parameters == {"n_head": 2}


def test_non_tensor_entries_of_the_state_dict_are_dropped_with_a_warning(tmp_path) -> None:
    sd = dict(make_model().state_dict())
    torch.save({**sd, "version": 2}, tmp_path / "c.pt")
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert_same_weights(checkpoint, sd)
    assert any("'version' (int)" in w for w in checkpoint.warnings)


def test_dict_of_dicts_without_tensors(tmp_path: Path) -> None:
    torch.save({"a": {"b": 1}, "c": {"d": [1, 2]}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointFormatError, match="no tensors"):
        load_checkpoint(tmp_path / "c.pt")


def test_tensors_only_inside_a_list_are_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"weights": [torch.ones(2)]}, tmp_path / "c.pt")
    with pytest.raises(CheckpointFormatError, match="1 tensors only inside other entries"):
        load_checkpoint(tmp_path / "c.pt")


@pytest.mark.parametrize(
    "prefix", ["_orig_mod.", "module.", "model.", "net.", "module._orig_mod.", "model.module."]
)
def test_shared_prefixes_are_stripped_with_module_paths(tmp_path: Path, prefix: str) -> None:
    model = make_model()
    wrapped: nn.Module = model
    for part in reversed(prefix.rstrip(".").split(".")):
        outer = nn.Module()
        outer.add_module(part, wrapped)
        wrapped = outer
    sd = wrapped.state_dict()
    assert all(k.startswith(prefix) for k in sd)
    torch.save(sd, tmp_path / "c.pt")
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint.stripped_prefix == prefix
    assert_same_weights(checkpoint, model.state_dict())
    assert checkpoint.module_paths == ("", "0", "1", "2")  # the ReLU at "1" too


def test_prefix_not_shared_by_every_key_is_kept(tmp_path: Path) -> None:
    sd = {"module.a": torch.ones(1), "b": torch.ones(1)}
    torch.save(sd, tmp_path / "c.pt")
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint.stripped_prefix == ""
    assert checkpoint.names == ("module.a", "b")


def test_lightning_style_checkpoint(tmp_path: Path) -> None:
    class Lit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = make_model()

    lit = Lit()
    torch.save(
        {"state_dict": lit.state_dict(), "epoch": 2, "hyper_parameters": {"lr": 0.01}},
        tmp_path / "c.ckpt",
    )
    checkpoint = load_checkpoint(tmp_path / "c.ckpt")
    assert (checkpoint.wrapper_key, checkpoint.stripped_prefix) == ("state_dict", "model.")
    assert checkpoint.module_paths == ("", "0", "1", "2")
    assert checkpoint.hyper_parameters == {"lr": 0.01}


def test_tied_weights_from_a_real_model(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight

    torch.save(Tied().state_dict(), tmp_path / "t.pt")
    checkpoint = load_checkpoint(tmp_path / "t.pt")
    assert checkpoint.names == ("emb.weight", "head.weight")
    assert checkpoint.tied == {"head.weight": "emb.weight"}
    assert Checkpoint.from_state_dict(Tied().state_dict()).tied == {"head.weight": "emb.weight"}


def test_slices_of_one_storage_are_not_reported_as_tied(tmp_path: Path) -> None:
    fused = torch.randn(6, 2)
    q, k = fused[:3], fused[3:]
    torch.save({"q": q, "k": k}, tmp_path / "f.pt")
    checkpoint = load_checkpoint(tmp_path / "f.pt")
    assert checkpoint.tied == {}
    assert torch.equal(checkpoint.tensor("k"), k)


def test_from_state_dict_keeps_module_paths() -> None:
    sd = make_model().state_dict()
    checkpoint = Checkpoint.from_state_dict(sd)
    assert checkpoint.format == "memory"
    assert checkpoint.module_paths == ("", "0", "1", "2")
    assert_same_weights(checkpoint, sd)


def test_metadata_of_an_ordered_dict_without_metadata(tmp_path: Path) -> None:
    torch.save(OrderedDict(w=torch.ones(2)), tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt").module_paths == ()


def test_default_limits() -> None:
    limits = LoadLimits()
    assert (limits.max_keys, limits.max_depth) == (200_000, 8)
    assert limits.max_header_bytes == 100 * 2**20 and limits.max_file_bytes == 64 * 2**30


# --- statistics and histograms -------------------------------------------------------


def _checkpoint(**tensors: torch.Tensor) -> Checkpoint:
    return Checkpoint.from_state_dict(tensors)


def test_stats_match_torch() -> None:
    torch.manual_seed(0)
    w = torch.randn(40, 30)
    stats = _checkpoint(w=w).stats("w")
    w64 = w.double()
    assert stats.mean == pytest.approx(w64.mean().item(), rel=1e-12)
    assert stats.std == pytest.approx(w64.std().item(), rel=1e-12)
    assert (stats.min, stats.max) == (w.min().item(), w.max().item())
    assert (stats.nan_count, stats.inf_count) == (0, 0)


def test_stats_combine_chunks_exactly(monkeypatch) -> None:
    monkeypatch.setattr(tensor_stats, "CHUNK_ELEMENTS", 7)
    torch.manual_seed(1)
    w = torch.randn(100) * 5 + 3
    w[13] = float("nan")
    w[50] = float("-inf")
    stats = _checkpoint(w=w).stats("w")
    finite = w[torch.isfinite(w)].double()
    assert stats.mean == pytest.approx(finite.mean().item(), rel=1e-12)
    assert stats.std == pytest.approx(finite.std().item(), rel=1e-12)
    assert (stats.min, stats.max) == (finite.min().item(), finite.max().item())
    assert (stats.nan_count, stats.inf_count) == (1, 1)


def test_stats_of_int_bool_empty_single_and_meta_tensors() -> None:
    checkpoint = _checkpoint(
        ints=torch.tensor([1, 2, 3, 6]),
        flags=torch.tensor([True, False, True, True]),
        empty=torch.empty(0, 3),
        one=torch.tensor([2.5]),
        meta=torch.empty(4, device="meta"),
        all_nan=torch.full((3,), float("nan")),
    )
    ints, flags, empty, one, meta, all_nan = checkpoint.stats_all()
    assert (ints.mean, ints.min, ints.max) == (3.0, 1.0, 6.0)
    assert flags.mean == 0.75
    assert math.isnan(empty.mean) and empty.nan_count == 0
    assert (one.mean, one.std) == (2.5, 0.0)
    assert math.isnan(meta.mean) and meta.name == "meta"
    assert math.isnan(all_nan.mean) and all_nan.nan_count == 3


def test_stats_read_from_a_file(tmp_path: Path) -> None:
    w = torch.tensor([[1.0, float("inf")], [float("nan"), 3.0]]).t()
    torch.save({"w": w}, tmp_path / "w.pt")
    stats = load_checkpoint(tmp_path / "w.pt").stats("w")
    assert (stats.mean, stats.nan_count, stats.inf_count) == (2.0, 1, 1)


def test_histogram_matches_torch_histc(monkeypatch) -> None:
    monkeypatch.setattr(tensor_stats, "CHUNK_ELEMENTS", 64)
    torch.manual_seed(2)
    w = torch.randn(1000)
    w[0] = float("nan")
    counts, edges = _checkpoint(w=w).histogram("w", bins=20)
    finite = w[1:].double()
    expected = torch.histc(finite, bins=20, min=finite.min().item(), max=finite.max().item())
    assert torch.equal(counts, expected.to(torch.int64))
    assert int(counts.sum()) == 999
    assert edges.shape == (21,)
    assert (edges[0].item(), edges[-1].item()) == (finite.min().item(), finite.max().item())


def test_histogram_of_a_constant_and_of_no_finite_values() -> None:
    checkpoint = _checkpoint(c=torch.full((5,), 2.0), n=torch.full((2,), float("nan")))
    counts, edges = checkpoint.histogram("c", bins=4)
    assert int(counts.sum()) == 5 and edges[0] < 2.0 < edges[-1]
    counts, _ = checkpoint.histogram("n", bins=4)
    assert int(counts.sum()) == 0


def test_inspecting_reads_no_tensor_data_until_asked(tmp_path: Path, monkeypatch) -> None:
    sd = make_model().state_dict()
    save_file(dict(sd), tmp_path / "m.safetensors")
    torch.save(sd, tmp_path / "m.pt")
    for path in (tmp_path / "m.safetensors", tmp_path / "m.pt"):
        checkpoint = load_checkpoint(path)
        reads = []
        real = checkpoint._read
        object.__setattr__(
            checkpoint, "_read", lambda k, real=real, reads=reads: reads.append(k) or real(k)
        )
        assert checkpoint.shapes["0.weight"] == (4, 3) and reads == []
        checkpoint.stats("0.weight")
        assert reads == ["0.weight"]


# --- memory: inspecting a large file stays lazy ----------------------------------------

RSS_PROBE = """
import resource, sys
import torch  # imported before measuring: only the load itself counts
from recovery_core.io.checkpoint import load_checkpoint
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
checkpoint = load_checkpoint(sys.argv[1])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(checkpoint.tensors), (after - before) // 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zip", "safetensors"])
def test_inspecting_a_200mb_checkpoint_keeps_memory_flat(tmp_path: Path, fmt: str) -> None:
    import subprocess
    import sys

    sd = {f"layers.{i}.weight": torch.ones(1024, 1024, dtype=torch.float32) for i in range(50)}
    path = tmp_path / f"big.{fmt}"
    torch.save(sd, path) if fmt == "zip" else save_file(sd, path)
    del sd
    file_mb = path.stat().st_size // 2**20
    assert file_mb >= 195
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(path)],
        capture_output=True,
        text=True,
        cwd=repo,
        check=True,
        timeout=120,
    ).stdout.split()
    tensors, growth_mb = int(out[0]), int(out[1])
    assert tensors == 50
    assert growth_mb < file_mb / 10, f"peak RSS grew {growth_mb} MB for a {file_mb} MB file"


def test_a_malformed_reply_from_the_reader_is_a_format_error_not_a_crash():
    # The caller keeps the reader's integers in compact arrays; anything but an integer
    # where one belongs (a text, a float, a pair that is not one) is refused by name.
    from recovery_core.io import checkpoint as module

    layouts = [["float32", [2], [1], 0]]
    for rows in ([0, 0, "x"], [0, 0.5, 0], [0, 0, 2**70], [0, 1, 0]):
        with pytest.raises(CheckpointFormatError, match="reply is malformed"):
            module._expand({"names": ["a"], "rows": rows, "layouts": layouts}, "f.pt")
    for storages in ([0, "x"], [0], [[0, 3]]):
        with pytest.raises(CheckpointFormatError, match="reply is malformed"):
            module._FileStorages({"storages": storages, "size": 0, "blobs": 0}, [b""], "f.pt")
    names, _, rows = module._expand({"names": ["a"], "rows": [0, 0, 7], "layouts": layouts}, "f")
    assert names == ["a"] and list(rows) == [0, 0, 7]
