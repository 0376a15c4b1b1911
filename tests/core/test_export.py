"""Export: TorchScript and torch.export round trips, state dicts, atomic writes, the bundle."""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import threading

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from recovery_core.errors import ExportError
from recovery_core.export import exporter as export_module
from recovery_core.export import files
from recovery_core.export.exporter import (
    Exporter,
    compare_state_dicts,
    export_all,
    export_program,
    export_state_dict,
    export_torchscript,
    frozen_unchanged,
)

# torch.jit's deprecation notices: the module silences them once; pytest turns them back on.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated")


class Seq2Seq(nn.Module):
    """A tiny encoder-decoder with the recognised `forward(src, tgt)` wiring."""

    def __init__(self, vocab: int = 11, d_model: int = 8) -> None:
        super().__init__()
        self.src_tok_emb = nn.Embedding(vocab, d_model)
        self.tgt_tok_emb = nn.Embedding(vocab, d_model)
        self.transformer = nn.Transformer(
            d_model,
            nhead=2,
            num_encoder_layers=1,
            num_decoder_layers=1,
            dim_feedforward=16,
            dropout=0.1,
            batch_first=True,
        )
        self.generator = nn.Linear(d_model, vocab)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        # tgt_is_causal=True spares torch a data-dependent check of the mask's values,
        # which torch.export cannot trace.
        hidden = self.transformer(
            self.src_tok_emb(src), self.tgt_tok_emb(tgt), tgt_mask=mask, tgt_is_causal=True
        )
        return self.generator(hidden)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def seq2seq_inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 11, (batch, 5), generator=g), torch.randint(
        0, 11, (batch, 4), generator=g
    )


def test_torchscript_export_of_a_seq2seq_model_is_verified_with_forward_src_tgt(tmp_path):
    torch.manual_seed(0)
    model = Seq2Seq()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    check = export_torchscript(model, seq2seq_inputs(), tmp_path / "model.pt", original)

    assert check.passed, check.checks
    assert check.method in ("script", "trace")
    assert model.training  # the caller's mode is put back
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    src, tgt = seq2seq_inputs(3)
    model.eval()
    with torch.no_grad():
        assert (loaded(src, tgt) - model(src, tgt)).abs().max() <= 1e-5
    names = [c.name for c in check.checks]
    assert {"reloads", "outputs match", "keys and shapes", "loads the original weights"} <= set(
        names
    )


def test_torchscript_verification_fails_when_the_weights_do_not_fit_the_original(tmp_path):
    model = mlp()
    wrong = dict(model.state_dict())
    wrong["3.weight"] = torch.zeros(5, 8)  # the original had a different shape
    check = export_torchscript(model, (torch.randn(2, 4),), tmp_path / "m.pt", wrong)
    assert not check.passed
    failed = {c.name: c.detail for c in check.checks if not c.passed}
    assert "3.weight" in failed["keys and shapes"]
    assert "loads the original weights" in failed


def test_torchscript_check_runs_the_file_and_catches_a_graph_that_computes_otherwise(
    tmp_path, monkeypatch
):
    """The check runs the graph the file holds (once, without the executor's optimising
    passes, and only in the checking thread): a file that computes something else fails."""
    model = mlp().eval()
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[3].bias += 1.0
    save = torch.jit.save
    monkeypatch.setattr(torch.jit, "save", lambda _m, f: save(torch.jit.script(other), f))

    check = export_torchscript(model, (torch.randn(2, 4),), tmp_path / "m.pt", model.state_dict())

    failed = {c.name: c.detail for c in check.checks if not c.passed}
    assert list(failed) == ["outputs match"], check.checks
    assert torch._C._get_graph_executor_optimize()  # the caller's executor as it was


def test_export_refuses_to_overwrite_the_input_checkpoint(tmp_path):
    model = mlp()
    checkpoint = tmp_path / "weights.pt"
    torch.save(model.state_dict(), checkpoint)
    before = checkpoint.read_bytes()
    os.symlink(checkpoint, tmp_path / "alias.pt")
    for target in (checkpoint, tmp_path / "alias.pt", tmp_path / "sub" / ".." / "weights.pt"):
        with pytest.raises(ExportError, match="checkpoint you loaded"):
            export_torchscript(
                model, (torch.randn(2, 4),), target, model.state_dict(), input_path=checkpoint
            )
    with pytest.raises(ExportError):
        export_all(
            model,
            (torch.randn(2, 4),),
            tmp_path,
            model.state_dict(),
            report={},
            input_path=checkpoint,
            stem="weights",
        )
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.pt", "weights.pt"]


def test_an_export_killed_between_write_and_rename_leaves_no_half_file(tmp_path, monkeypatch):
    model = mlp()
    final = tmp_path / "model.pt"
    final.write_bytes(b"previous export")

    def killed(src, dst):
        raise KeyboardInterrupt  # as if the process were interrupted right here

    monkeypatch.setattr(export_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        export_torchscript(model, (torch.randn(2, 4),), final, model.state_dict())
    assert final.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind


def test_the_torchscript_file_is_checked_while_its_bytes_reach_the_disk(tmp_path, monkeypatch):
    """The reload and the checks do not wait for fsync (which took seconds while other
    processes wrote); the file appears under its name only once it is on the disk."""
    model, final = mlp(), tmp_path / "model.pt"
    reloaded = threading.Event()
    disk: list[bool] = []  # per fsync: had the file been reloaded when the disk finished?
    real_fsync, real_load = os.fsync, torch.jit.load

    def slow_disk(fd):
        disk.append(reloaded.wait(timeout=10))
        real_fsync(fd)

    def load(path, *args, **kwargs):
        assert not final.exists()  # read back from the staged file, not yet renamed
        loaded = real_load(path, *args, **kwargs)
        reloaded.set()
        return loaded

    monkeypatch.setattr(files.os, "fsync", slow_disk)
    monkeypatch.setattr(torch.jit, "load", load)
    check = export_torchscript(model, (torch.randn(2, 4),), final, model.state_dict())

    assert check.passed, check.checks
    assert disk == [True]
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # renamed, nothing left over
    x = torch.randn(3, 4)
    assert torch.equal(real_load(final).eval()(x), model.eval()(x))


def test_a_write_the_disk_refuses_leaves_nothing_under_the_name(tmp_path, monkeypatch):
    def failing_disk(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", failing_disk)
    with pytest.raises(ExportError, match="Could not write model.pt: Input/output error"):
        files.write_atomic(tmp_path / "model.pt", b"bytes")
    model = mlp()
    with pytest.raises(ExportError, match="Could not write model.pt"):
        export_torchscript(model, (torch.randn(2, 4),), tmp_path / "model.pt", model.state_dict())
    assert list(tmp_path.iterdir()) == []


def test_torch_export_round_trip_accepts_another_batch_size(tmp_path):
    model = mlp()
    check = export_program(model, (torch.randn(2, 4),), tmp_path / "model.pt2", model.state_dict())
    assert check.passed, check.checks
    assert check.optional
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    x = torch.randn(7, 4)
    model.eval()
    with torch.no_grad():
        assert (program(x) - model(x)).abs().max() <= 1e-5


class DataDependent(nn.Module):
    """Scriptable, but torch.export cannot follow a branch on tensor values."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return self.linear(x)
        return -self.linear(x)


def test_torch_export_failure_is_reported_not_raised_and_does_not_fail_the_bundle(tmp_path):
    model = DataDependent()
    bundle = export_all(
        model, (torch.randn(2, 3),), tmp_path, model.state_dict(), report={"run": 1}
    )
    program = next(e for e in bundle.exports if e.kind == "torch.export")
    assert not program.passed and program.optional
    assert bundle.passed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["run"] == 1
    assert any(
        e["kind"] == "torch.export" and not e["passed"] for e in report["verification"]["exports"]
    )


def test_state_dict_exports_reload_bit_identical_and_tied_weights_are_deduplicated(tmp_path):
    model = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 6))
    model[1].weight = model[0].weight  # tied
    pt, st = export_state_dict(model, tmp_path / "sd.pt", tmp_path / "sd.safetensors")
    assert pt.passed and st.passed
    assert "1.weight = 0.weight" in st.note
    reloaded = load_file(str(tmp_path / "sd.safetensors"))
    assert set(reloaded) == set(model.state_dict())
    assert torch.equal(reloaded["1.weight"], model[0].weight)


def test_compare_state_dicts_lists_changes_and_catches_a_moved_frozen_tensor():
    model = mlp()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[3].weight.add_(0.5)
    changes = compare_state_dicts(original, model.state_dict(), ["3.weight", "3.bias"])
    changed = {c.key: c for c in changes if c.changed}
    assert list(changed) == ["3.weight"] and changed["3.weight"].max_abs_change == pytest.approx(
        0.5
    )
    assert frozen_unchanged(changes).passed

    with torch.no_grad():
        model[1].running_mean.add_(1.0)
    check = frozen_unchanged(
        compare_state_dicts(original, model.state_dict(), ["3.weight", "3.bias"])
    )
    assert not check.passed and "1.running_mean" in check.detail


def test_export_all_writes_every_file_verified_with_a_report(tmp_path):
    model = mlp()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[3].bias.add_(0.1)  # "trained": only the head changed
    code = "import torch\n\nclass RecoveredModel(torch.nn.Module):\n    pass\n"
    bundle = export_all(
        model,
        (torch.randn(2, 4),),
        tmp_path / "out",
        original,
        code=code,
        report={"losses": {"baseline": 1.0, "final": float("nan")}},
        trainable_keys=["3.weight", "3.bias"],
    )
    assert bundle.passed, [c for c in bundle.checks if not c.passed]
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == [
        "model.pt",
        "model.pt2",
        "model.py",
        "model.safetensors",
        "model_state_dict.pt",
        "report.json",
    ]
    # Strict JSON: NaN is written as text.
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["losses"]["final"] == "nan"
    assert report["verification"]["passed"] is True
    assert [c["key"] for c in report["verification"]["changed_tensors"]] == ["3.bias"]
    assert any(c.name == "frozen tensors unchanged" and c.passed for c in bundle.checks)

    broken = export_all(
        model, (torch.randn(2, 4),), tmp_path / "b", original, code="def (:", report={}
    )
    assert not broken.passed
    assert any(c.name == "code: valid Python" and not c.passed for c in broken.checks)


class VariadicForward(nn.Module):
    """TorchScript cannot compile `*inputs`; tracing can."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs[0] + inputs[1])


def test_torchscript_falls_back_to_trace_only_when_scripting_fails_and_says_why(tmp_path):
    model = VariadicForward()
    example = (torch.randn(2, 3), torch.randn(2, 3))
    check = export_torchscript(model, example, tmp_path / "m.pt", model.state_dict())
    assert check.method == "trace" and check.passed, check.checks
    assert "scripting failed" in check.note
    assert any(c.name == "other batch size" and c.passed for c in check.checks)
    assert (
        export_torchscript(
            mlp(), (torch.randn(2, 4),), tmp_path / "s.pt", mlp().state_dict()
        ).method
        == "script"
    )


def test_torch_export_keeps_a_batch_that_a_positional_table_bounds(tmp_path):
    """A batch_first=False model fed [batch, seq, feature] takes its positions along its
    batch dimension, from a 5000-long table: the program stays dynamic up to 5000 (one
    trace), and takes another batch size."""
    from tests.forward_zoo import FORWARD_BY_NAME

    case = FORWARD_BY_NAME["vector_seq2seq_fed_as_is"]
    model = case.make()
    src, tgt = case.inputs(8)
    example = (src[:, :2], tgt[:, :2])
    check = export_program(model, example, tmp_path / "m.pt2", model.state_dict(), batch_dim=1)
    assert check.passed, check.checks
    exported = {c.name: c for c in check.checks}
    assert "dynamic batch dimension" in exported["exported"].detail
    assert "to 5000" in exported["exported"].detail
    assert exported["other batch size"].passed


def test_an_exporter_gives_torchscript_first_each_file_as_it_is_verified_and_the_report_last(
    tmp_path,
):
    model = mlp()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    exporter = Exporter(
        model, (torch.randn(2, 4),), tmp_path, original, code="x = 1\n", report={"run": 7},
        trainable_keys=["3.weight", "3.bias"],
    )  # fmt: skip
    assert exporter.steps == ("torchscript", "torch.export", "state_dict", "code")
    seen = []
    for check in exporter:
        seen.append(check.kind)
        assert check.passed and os.path.isfile(check.path)  # ready before the next starts
        assert not (tmp_path / "report.json").exists()  # written once, complete, at the end
    assert seen == ["torchscript", "torch.export", "state_dict", "safetensors", "code"]
    assert exporter.pending == ()
    bundle = exporter.finish()
    assert bundle.passed and [e.kind for e in bundle.exports] == seen
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["run"] == 7 and report["verification"]["passed"] is True
    assert [e["kind"] for e in report["verification"]["exports"]] == seen
    with pytest.raises(ValueError, match="not a pending step"):
        exporter.run("torchscript")
    # Only the TorchScript file when asked: the steps follow the formats.
    only = Exporter(model, (torch.randn(2, 4),), tmp_path / "o", original, report={}, formats=())
    assert only.steps == ("torchscript",)


def test_torch_export_is_checked_on_the_standard_attention_path_without_a_global_switch(
    tmp_path, monkeypatch
):
    """torch.export records the standard attention path; eager eval mode may take the fused
    fast path. The reference is computed on the standard path for this model only: the
    process-wide switch is never touched (another session's model may be running)."""
    torch.manual_seed(0)
    model = Seq2Seq().eval()
    for p in model.parameters():
        p.requires_grad_(False)  # frozen, as after training: the fast path would apply
    inputs = seq2seq_inputs()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            standard = model(*inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)

    def flipped(_: bool) -> None:
        raise AssertionError("export flipped the process-wide attention switch")

    monkeypatch.setattr(torch.backends.mha, "set_fastpath_enabled", flipped)
    (reference,) = export_module._standard_path(model)(inputs)
    assert torch.equal(reference, standard)
    check = export_program(model, inputs, tmp_path / "m.pt2", model.state_dict())
    assert check.passed, check.checks


def test_torch_logs_are_quieted_for_the_exporting_thread_only():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("torch.export")
    handler = Keep()
    logger.addHandler(handler)
    try:
        with export_module._quiet_torch_logs():
            logger.warning("from the exporting thread")
            other = threading.Thread(target=lambda: logger.warning("from another session"))
            other.start()
            other.join()
            logger.error("an error still shows")
        logger.warning("after the export")
    finally:
        logger.removeHandler(handler)
    assert records == ["from another session", "an error still shows", "after the export"]
