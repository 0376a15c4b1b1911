"""Outputs never touch inputs: every output is compared with every file that was read
(each shard, the index), by real path and samefile; files are written under random O_EXCL
names in the target's folder and never through a symlink; disk errors are typed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from recovery_core.cli import main
from recovery_core.errors import ExportError
from recovery_core.export.exporter import refuse_overwriting_input, write_atomic
from recovery_core.io.checkpoint import load_checkpoint


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sharded(folder: Path) -> tuple[Path, list[Path]]:
    torch.manual_seed(0)
    sd = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2)).state_dict()
    first = {k: v for k, v in sd.items() if k.startswith("0.")}
    second = {k: v for k, v in sd.items() if k.startswith("1.")}
    save_file(first, folder / "part-1.safetensors")
    save_file(second, folder / "part-2.safetensors")
    weight_map = {k: "part-1.safetensors" for k in first} | {
        k: "part-2.safetensors" for k in second
    }
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    return index, [folder / "part-1.safetensors", folder / "part-2.safetensors"]


def test_a_checkpoint_lists_every_file_it_read(tmp_path) -> None:
    index, shards = sharded(tmp_path)
    read = set(load_checkpoint(tmp_path).source_files)
    assert read == {os.path.realpath(p) for p in [index, *shards]}
    assert load_checkpoint(shards[0].read_bytes()).source_files == ()  # an upload: no paths


@pytest.mark.parametrize("target", ["part-2.safetensors", "model.safetensors.index.json"])
def test_codegen_never_writes_over_a_shard_or_the_index(tmp_path, capsys, target) -> None:
    index, shards = sharded(tmp_path)
    before = {p: digest(p) for p in [index, *shards]}
    code = main(["codegen", str(tmp_path), "-o", str(tmp_path / target)])
    assert code == 2, capsys.readouterr()
    assert "checkpoint you loaded" in capsys.readouterr().err
    assert {p: digest(p) for p in before} == before


def test_a_link_to_an_input_is_caught_by_samefile(tmp_path) -> None:
    index, shards = sharded(tmp_path)
    alias = tmp_path / "alias.py"
    os.link(shards[0], alias)  # a hard link: another name for the same file
    with pytest.raises(ExportError, match="checkpoint you loaded"):
        refuse_overwriting_input([str(alias)], load_checkpoint(tmp_path).source_files)


def test_codegen_does_not_follow_a_planted_temporary_symlink(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "model.py"
    # The name the old code wrote through; this test runs the CLI in this very process.
    (tmp_path / f"model.py.tmp-{os.getpid()}").symlink_to(victim)
    assert main(["codegen", str(path), "-o", str(out)]) == 0, capsys.readouterr().err
    assert victim.read_text() == "precious"
    assert "class RecoveredModel" in out.read_text()


def test_an_output_that_is_a_symlink_is_refused(tmp_path) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    link = tmp_path / "report.json"
    link.symlink_to(victim)
    with pytest.raises(ExportError, match="symbolic link"):
        write_atomic(link, b"new")
    assert victim.read_text() == "{}"


def test_disk_errors_on_output_are_typed(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="Could not write"):
        write_atomic(blocker / "model.py", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["not-a-folder"]  # no temporary left
