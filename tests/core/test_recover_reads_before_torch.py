"""`recovery recover` reads its checkpoint and dataset before it imports torch.

Each file is parsed in a limited child forked from the still-small process, so no second
interpreter (the file reader that imports torch) runs beside it; a dataset that needs
torch's unpickler still gets that reader. A check made before torch was loaded is trusted
only while the file is the one checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from recovery_core.errors import DataError
from recovery_core.io import data_file
from recovery_core.io.data import load_dataset
from tests.hostile import _payloads as hostile
from tests.zoo import ZOO_BY_NAME

REPO = Path(__file__).resolve().parents[2]
KNOWN = {"1": "ReLU", "2": "Dropout", "4": "Tanh"}  # mlp_sequential's activations

# Runs `recovery recover` in a fresh process (torch not loaded, as from a shell) and
# prints what it started: the interpreters (subprocess.Popen), whether torch was loaded
# when each file reader's child was forked, and how many objects the collector has
# frozen (torch's and the library's: no full collection walks them) against the rest.
RUN_CLI = """
import gc, json, os, subprocess, sys
started, forked = [], []
popen_init = subprocess.Popen.__init__
def counting_init(self, *args, **kwargs):
    started.append(args[0] if args else kwargs.get("args"))
    popen_init(self, *args, **kwargs)
subprocess.Popen.__init__ = counting_init
real_fork = os.fork
def counting_fork():
    forked.append("torch" in sys.modules)
    return real_fork()
os.fork = counting_fork
from recovery_core.cli import main
code = main(sys.argv[1:])
frozen, live = gc.get_freeze_count(), len(gc.get_objects())
print("RESULT " + json.dumps(
    {"code": code, "interpreters": len(started), "forks": forked, "frozen": frozen, "live": live}
))
"""


def mlp_files(tmp_path: Path, save_data) -> tuple[Path, Path]:
    torch.manual_seed(2)
    model = ZOO_BY_NAME["mlp_sequential"].make()
    x = torch.randn(64, 16)
    with torch.no_grad():
        target = 1.5 * model(x) + 0.3
    weights, data = tmp_path / "mlp.pt", tmp_path / "mlp_data.pt"
    torch.save(model.state_dict(), weights)
    save_data(x, target, data)
    return weights, data


def run_recover(weights: Path, data: Path, out: Path) -> tuple[dict, str]:
    known = [arg for name, value in KNOWN.items() for arg in ("--set", f"{name}={value}")]
    args = ["recover", str(weights), "--data", str(data), "--out", str(out), "--formats", ""]
    run = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args, *known],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), run.stderr


def test_a_dict_dataset_and_the_checkpoint_are_read_without_a_second_interpreter(tmp_path):
    weights, data = mlp_files(tmp_path, lambda x, y, path: torch.save({"x": x, "y": y}, path))

    result, log = run_recover(weights, data, tmp_path / "out.pt")

    assert result["code"] == 0, log
    assert result["interpreters"] == 0  # no file reader importing torch beside it
    assert result["forks"][:2] == [False, False]  # checkpoint, then dataset: before torch
    assert (tmp_path / "out.pt").exists()


def test_the_modules_loaded_for_a_recovery_are_left_out_of_garbage_collection(tmp_path):
    weights, data = mlp_files(tmp_path, lambda x, y, path: torch.save({"x": x, "y": y}, path))

    result, log = run_recover(weights, data, tmp_path / "out.pt")

    assert result["code"] == 0, log
    # torch's and the library's objects, frozen once imported, outnumber everything the
    # run made and still holds: a full collection walks only the latter.
    assert result["frozen"] > result["live"] > 0


def test_a_pickled_tensor_dataset_still_gets_torchs_unpickler(tmp_path):
    weights, data = mlp_files(tmp_path, lambda x, y, path: torch.save(TensorDataset(x, y), path))

    result, log = run_recover(weights, data, tmp_path / "out.pt")

    assert result["code"] == 0, log
    assert result["interpreters"] == 1  # the full file reader, for this dataset's checks
    assert "inputs input_0; target target" in log


def test_a_legacy_format_checkpoint_still_gets_torchs_unpickler(tmp_path):
    weights, data = mlp_files(tmp_path, lambda x, y, path: torch.save({"x": x, "y": y}, path))
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(weights), legacy, _use_new_zipfile_serialization=False)

    result, log = run_recover(legacy, data, tmp_path / "out.pt")

    assert result["code"] == 0, log
    # The full file reader, started before torch's import so that the two overlap; both
    # files are read through it then (no child forked from this process).
    assert result["interpreters"] == 1
    assert result["forks"] == []


def test_a_dataset_that_would_run_code_is_refused_before_anything_is_written(tmp_path):
    canary = tmp_path / "canary"
    weights, data = mlp_files(
        tmp_path,
        lambda x, y, path: torch.save({"x": x, "y": y, "n": hostile.RunsShell(canary)}, path),
    )

    result, log = run_recover(weights, data, tmp_path / "out.pt")

    assert result["code"] == 2
    assert "could not be loaded safely" in log
    assert not canary.exists()
    assert not (tmp_path / "out.pt").exists()


@pytest.fixture
def children(monkeypatch) -> list[str]:
    """The checks run in a limited child, by their target's name."""
    ran: list[str] = []
    real = data_file.run_isolated

    def counting(target, *args, **kwargs):
        ran.append(target.__name__)
        return real(target, *args, **kwargs)

    monkeypatch.setattr(data_file, "run_isolated", counting)
    return ran


def test_a_check_made_before_the_file_changed_is_made_again(tmp_path, children):
    path = tmp_path / "data.pt"
    torch.save({"x": torch.zeros(4, 2), "y": torch.zeros(4)}, path)
    checked = data_file.CheckedFile(str(path), "torch", data_file.file_identity(str(path)))

    assert load_dataset(path, checked=checked).n_samples == 4
    assert children == []  # the check before torch stands for this very file

    torch.save({"x": torch.zeros(6, 2), "y": torch.zeros(6)}, path)  # replaced since
    assert load_dataset(path, checked=checked).n_samples == 6
    assert children == ["check_torch_dataset"]


HOSTILE = {
    "a storage record shorter than it declares": lambda path: hostile.short_record(path),
    "a shape its storage cannot hold": lambda path: hostile.oversized_shape(path),
    "a storage alignment of 0": lambda path: hostile.with_record(
        path, ".storage_alignment", b"0", {"x": torch.ones(4, 2), "y": torch.ones(4)}
    ),
    "a tensor of uninitialised memory": lambda path: hostile.torch_zip(
        path, {"x": hostile.uninitialised_tensors()["FloatTensor(N)"], "y": torch.ones(4)}
    ),
    "code run on unpickling": lambda path: hostile.torch_zip(
        path, {"x": torch.ones(4), "y": hostile.RunsShell(path.with_name("canary"))}
    ),
}

# Prints what the check before torch made of each file: refused (its message), left to
# the full check (None), or passed.
CHECK_BEFORE_TORCH = """
import sys
from recovery_core.errors import DataError
from recovery_core.io.data_file import check_before_torch
for path in sys.argv[1:]:
    try:
        verdict = "full check" if check_before_torch(path) is None else "passed"
    except DataError as error:
        verdict = "refused: " + str(error)
    print(verdict)
assert "torch" not in sys.modules
"""


def test_the_check_before_torch_passes_no_file_the_full_check_refuses(tmp_path):
    paths = [build(tmp_path / f"{n}.pt") for n, build in enumerate(HOSTILE.values())]
    run = subprocess.run(
        [sys.executable, "-c", CHECK_BEFORE_TORCH, *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    verdicts = dict(zip(HOSTILE, run.stdout.splitlines(), strict=True))
    for what, path in zip(HOSTILE, paths, strict=True):
        with pytest.raises(DataError) as refused:
            load_dataset(path)
        assert verdicts[what] in ("full check", f"refused: {refused.value}"), what
    assert not (tmp_path / "canary").exists()
