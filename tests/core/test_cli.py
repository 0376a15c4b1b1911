"""The `recovery` command as a person uses it: real files in, JSON or code out, exit codes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from recovery_core.cli import main
from tests.zoo import ZOO, ZOO_BY_NAME


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(capsys, path: Path) -> dict:
    code, out, err = run_cli(capsys, "inspect", str(path), "--json")
    assert code == 0, err
    return json.loads(out)


def check_against_case(report: dict, case, keys: list[str], ordered: bool = True) -> None:
    names = [t["name"] for t in report["tensors"]]
    # safetensors headers carry no insertion order: the same keys, sorted.
    assert names == keys if ordered else sorted(names) == sorted(keys)
    types = {m["path"]: m["type"] for m in report["modules"]}
    for path, expected in case.types.items():
        assert types.get(path) == expected, f"{path}: {types.get(path)} != {expected}"
    values = {h["name"]: h for h in report["hyperparameters"]}
    for name, value in case.determined.items():
        assert values[name]["determined"] is True
        assert values[name]["value"] == (list(value) if isinstance(value, tuple) else value)
    assert report["unexplained_keys"] == []


@pytest.mark.parametrize("case", ZOO, ids=lambda c: c.name)
def test_inspect_json_explains_every_zoo_checkpoint(case, tmp_path, capsys):
    state = case.make().state_dict()
    path = tmp_path / "model.pt"
    torch.save(state, path)
    report = inspect_json(capsys, path)
    check_against_case(report, case, list(state))
    assert report["format"] == "torch-zip"
    for field in (
        "tensors",
        "modules",
        "hyperparameters",
        "stripped_prefix",
        "format",
        "unexplained_keys",
    ):
        assert field in report
    for tensor in report["tensors"]:
        assert set(tensor) >= {"name", "shape", "dtype"}
    for hp in report["hyperparameters"]:
        assert set(hp) >= {"name", "value", "determined", "candidates", "evidence"}


@pytest.mark.parametrize("case", ZOO, ids=lambda c: c.name)
def test_codegen_writes_code_that_strict_loads_the_weights(case, tmp_path, capsys):
    state = case.make().state_dict()
    weights = tmp_path / "weights.pt"
    torch.save(state, weights)
    out = tmp_path / "recovered.py"
    code, _, err = run_cli(capsys, "codegen", str(weights), "-o", str(out))
    assert code == 0, err
    spec = importlib.util.spec_from_file_location(f"recovered_{case.name}", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.RecoveredModel()
    model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


SEQ2SEQ = ZOO_BY_NAME["seq2seq_tutorial"]


@pytest.mark.parametrize(
    ("wrapper", "prefix"),
    [
        (None, "module."),
        ("state_dict", "model."),
        ("model_state_dict", "_orig_mod."),
        ("state_dict_ema", "net."),
    ],
)
def test_inspect_unwraps_training_checkpoints_and_strips_prefixes(
    wrapper, prefix, tmp_path, capsys
):
    state = SEQ2SEQ.make().state_dict()
    prefixed = {prefix + k: v for k, v in state.items()}
    payload = (
        prefixed
        if wrapper is None
        else {
            wrapper: prefixed,
            "epoch": 7,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "hyper_parameters": {"nhead": 4},
        }
    )
    path = tmp_path / "checkpoint.ckpt"
    torch.save(payload, path)
    report = inspect_json(capsys, path)
    check_against_case(report, SEQ2SEQ, list(state))
    assert report["stripped_prefix"] == prefix
    assert report["wrapper_key"] == wrapper
    if wrapper is not None:
        nhead = next(h for h in report["hyperparameters"] if h["name"] == "nhead")
        assert nhead["value"] == 4 and nhead["determined"] is True
        assert "checkpoint metadata" in nhead["source"]
        assert "epoch" in report["extras"]


def test_inspect_reads_safetensors_and_a_sharded_folder(tmp_path, capsys):
    state = SEQ2SEQ.make().state_dict()
    single = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(single))
    report = inspect_json(capsys, single)
    assert report["format"] == "safetensors"
    check_against_case(report, SEQ2SEQ, list(state), ordered=False)

    folder = tmp_path / "sharded"
    folder.mkdir()
    keys = list(state)
    halves = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    weight_map = {}
    for shard, shard_keys in halves.items():
        save_file({k: state[k].contiguous() for k in shard_keys}, str(folder / shard))
        weight_map.update({k: shard for k in shard_keys})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for source in (folder, folder / "model.safetensors.index.json"):
        report = inspect_json(capsys, source)
        assert report["format"] == "sharded"
        assert sorted(t["name"] for t in report["tensors"]) == sorted(keys)


def test_human_output_shows_table_tree_and_hidden_choices(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(SEQ2SEQ.make().state_dict(), path)
    code, out, _ = run_cli(capsys, "inspect", str(path))
    assert code == 0
    assert "TENSORS" in out and "LAYER TREE" in out
    assert "transformer: Transformer(" in out
    assert "nhead" in out and "not determined by the weights" in out


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "empty"),
        (b"hello, this is text\n", "not a checkpoint"),
        (b"PK\x03\x04trunc", "truncated or damaged zip"),
    ],
)
def test_bad_input_exits_2_with_one_line(content, phrase, tmp_path, capsys):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    code, out, err = run_cli(capsys, "inspect", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert phrase in err.lower()
    assert "weights_only=false" not in err.lower()


def test_missing_file_exits_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "nope.pt"))
    assert code == 2 and err.startswith("error: ")


def test_codegen_set_rejects_an_invalid_value(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(SEQ2SEQ.make().state_dict(), path)
    code, _, err = run_cli(
        capsys, "codegen", str(path), "-o", str(tmp_path / "m.py"), "--set", "nhead=5"
    )
    assert code == 2
    assert "nhead" in err
    assert not (tmp_path / "m.py").exists()


def test_python_dash_m_is_the_same_command(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    out = subprocess.run(
        [sys.executable, "-m", "recovery_core", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert [m["type"] for m in report["modules"] if m["path"] == ""] == ["Linear"]


def test_codegen_refuses_to_overwrite_the_checkpoint(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    before = path.read_bytes()

    code, _, err = run_cli(capsys, "codegen", str(path), "-o", str(path))

    assert code == 2 and "it is the checkpoint you loaded" in err
    assert path.read_bytes() == before


def test_torchs_note_on_a_fast_path_nothing_uses_does_not_reach_the_terminal(tmp_path):
    # Every nn.Transformer built with batch_first=False (each one the search tries, the
    # checks of codegen) made torch print "enable_nested_tensor is True, but ..." with a
    # source line, which reads as a fault in the command's output.
    import warnings

    weights = tmp_path / "tutorial.pt"
    torch.save(ZOO_BY_NAME["seq2seq_tutorial"].make().state_dict(), weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["codegen", str(weights), "-o", str(tmp_path / "m.py"), "--set", "batch_first=False"])
    assert code == 0
    assert not [w for w in caught if "enable_nested_tensor" in str(w.message)]


def test_the_command_exits_quietly_when_its_reader_leaves_and_keeps_its_exit_codes(tmp_path):
    """`recovery inspect big.pt | head`: the pipe's reader leaves early; that is no error.
    The process exits without the interpreter's teardown (`cli.run`), with main's code."""
    path = tmp_path / "wide.pt"
    torch.save({f"layer{i}.weight": torch.zeros(2, 2) for i in range(3000)}, path)
    reader = subprocess.Popen(
        [sys.executable, "-m", "recovery_core", "inspect", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline().startswith(b"wide.pt: torch-zip, 3000 tensors")
    reader.stdout.close()  # as `head -1` does
    assert reader.wait(timeout=120) == 1
    assert reader.stderr.read() == b""
    missing = subprocess.run(
        [sys.executable, "-m", "recovery_core", "inspect", str(tmp_path / "none.pt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: none.pt does not exist; check the path."
