"""Export the trained model and prove each file: reload it and compare.

Every file is serialised to bytes first and then written atomically (a temporary file in
the same folder, fsync, `os.replace`), so an interrupted export never leaves a half file
under the final name. No export ever overwrites the checkpoint the user loaded.

Verification per file: it reloads, its outputs match the in-memory model (max abs
difference <= 1e-5), its state dict has exactly the original keys and shapes, and the
original weights load into it. `torch.export` cannot handle every model (data-dependent
control flow, some RNNs); its `.pt2` is therefore optional: a failure there is recorded
in the report but does not fail the bundle. TorchScript, the state dicts, the code and
the frozen-tensor check are required.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from recovery_core.errors import ExportError
from recovery_core.export.files import (
    FORMATS,
    InputPaths,
    export_paths,
    formats_to_write,
    refuse_input,
    refuse_overwriting_input,
    staged_write,
    write_atomic,
)
from recovery_core.fit.freeze import eval_mode

OUTPUT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class ExportCheck:
    """One exported file and its verification."""

    path: str
    kind: str  # "torchscript", "torch.export", "state_dict", "safetensors", "code", "report"
    method: str  # "script", "trace", "export", "save", "write"
    checks: tuple[Check, ...]
    note: str = ""  # e.g. why scripting failed and tracing was used
    optional: bool = False  # a failure is reported but does not fail the bundle

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": os.path.basename(self.path),
            "kind": self.kind,
            "method": self.method,
            "note": self.note,
            "optional": self.optional,
            "passed": self.passed,
            "checks": [vars(c) for c in self.checks],
        }


@dataclass(frozen=True)
class TensorChange:
    key: str
    changed: bool
    max_abs_change: float
    frozen: bool


@dataclass(frozen=True)
class ExportBundle:
    out_dir: str
    files: Mapping[str, str]  # kind -> path
    exports: tuple[ExportCheck, ...]
    frozen_check: Check | None
    changes: tuple[TensorChange, ...]
    report_path: str

    @property
    def checks(self) -> tuple[Check, ...]:
        """Every check, flat, named "<kind>: <check>" (for a checklist)."""
        named = [
            Check(f"{e.kind}{' (optional)' if e.optional else ''}: {c.name}", c.passed, c.detail)
            for e in self.exports
            for c in e.checks
        ]
        if self.frozen_check is not None:
            named.append(self.frozen_check)
        return tuple(named)

    @property
    def passed(self) -> bool:
        required = all(e.passed for e in self.exports if not e.optional)
        return required and (self.frozen_check is None or self.frozen_check.passed)


# ---------------------------------------------------------------- tensor changes


def compare_state_dicts(
    original: Mapping[str, Tensor], trained: Mapping[str, Tensor], trainable_keys: Sequence[str]
) -> list[TensorChange]:
    """Per key: did it change, by how much, and was it frozen."""
    missing = [k for k in original if k not in trained]
    extra = [k for k in trained if k not in original]
    if missing or extra:
        raise ExportError(
            f"The trained model's keys differ from the original: missing {missing[:5]}, unexpected {extra[:5]}."
        )
    trainable = set(trainable_keys)
    changes = []
    for key, before in original.items():
        after = trained[key].detach().to(before.device)
        same = (
            before.shape == after.shape
            and before.dtype == after.dtype
            and torch.equal(before, after)
        )
        if same:
            delta = 0.0
        elif before.shape != after.shape:
            delta = math.inf
        else:
            delta = float((after.double() - before.double()).abs().max()) if before.numel() else 0.0
        changes.append(TensorChange(key, not same, delta, key not in trainable))
    return changes


def frozen_unchanged(changes: Sequence[TensorChange]) -> Check:
    """Every frozen tensor must be bit-identical to the original."""
    moved = [c.key for c in changes if c.frozen and c.changed]
    n_frozen = sum(c.frozen for c in changes)
    if moved:
        return Check(
            "frozen tensors unchanged",
            False,
            f"{len(moved)} frozen tensors changed: {', '.join(moved[:5])}",
        )
    n_changed = sum(c.changed for c in changes)
    return Check(
        "frozen tensors unchanged",
        True,
        f"{n_frozen} frozen tensors bit-identical; {n_changed} trainable tensors changed",
    )


def _to_bytes(save: Callable[[io.BytesIO], None]) -> bytes:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------- comparisons


def _outputs(result: Any) -> list[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in _outputs(item)]
    if isinstance(result, Mapping):
        return [t for item in result.values() for t in _outputs(item)]
    return []


def _compare_outputs(name: str, reference: Any, candidate: Any) -> Check:
    ref, got = _outputs(reference), _outputs(candidate)
    if len(ref) != len(got) or not ref:
        return Check(name, False, f"{len(got)} output tensors, expected {len(ref)}")
    worst = 0.0
    for a, b in zip(ref, got, strict=True):
        if a.shape != b.shape:
            return Check(name, False, f"output shape {tuple(b.shape)}, expected {tuple(a.shape)}")
        if a.numel():
            worst = max(worst, float((a.double() - b.double()).abs().max()))
    ok = worst <= OUTPUT_TOLERANCE
    return Check(name, ok, f"max abs difference {worst:.2e} (limit {OUTPUT_TOLERANCE:.0e})")


def _compare_keys(state: Mapping[str, Tensor], original: Mapping[str, Tensor]) -> Check:
    missing = [k for k in original if k not in state]
    extra = [k for k in state if k not in original]
    wrong = [
        k for k in original if k in state and tuple(state[k].shape) != tuple(original[k].shape)
    ]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if extra:
            parts.append(f"unexpected {extra[:5]}")
        if wrong:
            parts.append(f"shape differs for {wrong[:5]}")
        return Check("keys and shapes", False, "; ".join(parts))
    return Check("keys and shapes", True, f"{len(original)} keys, all shapes equal")


def _loads_original(load: Callable[[], Any]) -> Check:
    try:
        load()
    except Exception as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        return Check("loads the original weights", False, detail or type(e).__name__)
    return Check("loads the original weights", True, "load_state_dict(original) succeeded")


def _varied_batch(example_inputs: Sequence[Tensor], batch_dim: int = 0) -> tuple[Tensor, ...]:
    """The example inputs with one more sample along the model's batch dimension."""
    return tuple(torch.cat([t, t.narrow(batch_dim, 0, 1)], dim=batch_dim) for t in example_inputs)


# ---------------------------------------------------------------- TorchScript


def export_torchscript(
    model: nn.Module,
    example_inputs: Sequence[Tensor],
    path: str | os.PathLike[str],
    original_state_dict: Mapping[str, Tensor],
    *,
    input_path: InputPaths = None,
    batch_dim: int = 0,
) -> ExportCheck:
    """Script the model (trace only where scripting fails), save atomically, verify."""
    path = os.fspath(path)
    refuse_input(path, input_path)
    example_inputs = tuple(example_inputs)
    with eval_mode(model):
        note, method = "", "script"
        try:
            compiled = torch.jit.script(model)
        except Exception as e:
            method, note = (
                "trace",
                f"scripting failed ({_first_line(e)}); traced with the example inputs instead",
            )
            try:
                compiled = torch.jit.trace(model, example_inputs, check_trace=False)
            except Exception as e2:
                failed = Check("compiled", False, f"{note}; tracing failed too ({_first_line(e2)})")
                return ExportCheck(path, "torchscript", "none", (failed,))
        # A trace may bake the example's shapes in: then say whether another batch size works.
        return _saved_and_verified(
            ExportCheck(path, "torchscript", method, (Check("compiled", True, f"torch.jit.{method}"),), note),
            lambda b: torch.jit.save(compiled, b),
            ("torch.jit.load", lambda staged: torch.jit.load(staged, map_location="cpu")),
            lambda loaded: _verify_unoptimised(
                _eager(model), loaded, example_inputs, original_state_dict,
                other_batch=method == "trace", batch_dim=batch_dim,
            ),
        )  # fmt: skip


def _verify_unoptimised(
    reference: Callable[[tuple[Tensor, ...]], list[Tensor]],
    loaded: Any,
    example_inputs: tuple[Tensor, ...],
    original_state_dict: Mapping[str, Tensor],
    *,
    other_batch: bool,
    batch_dim: int = 0,
) -> list[Check]:
    """`_verify_reloaded` with the reloaded TorchScript graph run as the file holds it:
    without the graph executor's profiling runs and optimising passes, which cost more
    than the one or two runs a check makes (they pay off over many calls; the people who
    load the file get them). The switch is per thread: no other session's model changes."""
    with torch.jit.optimized_execution(False):
        return _verify_reloaded(
            reference, loaded, example_inputs, original_state_dict,
            other_batch=other_batch, batch_dim=batch_dim,
        )  # fmt: skip


def _saved_and_verified(
    written: ExportCheck,
    save: Callable[[io.BytesIO], None],
    loader: tuple[str, Callable[[str], Any]],
    verify: Callable[[Any], list[Check]],
) -> ExportCheck:
    """Write the file `written` names (atomically), reload it and verify it while its
    bytes reach the disk (`staged_write`); `written` holds the checks so far, which the
    reload's and `verify`'s are added to. `loader` reads the path it is given."""
    with staged_write(written.path, _to_bytes(save)) as staged:
        name, load = loader
        try:
            loaded = load(staged)
        except Exception as e:
            failed = Check("reloads", False, _first_line(e))
            return replace(written, checks=(*written.checks, failed))
        reloads = Check("reloads", True, f"{name} succeeded")
        return replace(written, checks=(*written.checks, reloads, *verify(loaded)))


def _eager(model: nn.Module) -> Callable[[tuple[Tensor, ...]], list[Tensor]]:
    """The in-memory model's outputs, as it runs (the fused attention fast path included)."""

    def outputs(inputs: tuple[Tensor, ...]) -> list[Tensor]:
        with torch.no_grad():
            return _outputs(model(*inputs))

    return outputs


def _standard_path(model: nn.Module) -> Callable[[tuple[Tensor, ...]], list[Tensor]]:
    """The in-memory model's outputs through PyTorch's standard attention path, the one
    torch.export records (bit for bit). In eval mode nn.MultiheadAttention and the
    Transformer layers may take a fused fast path (~2e-5 off), but never while a torch
    function mode is active: `_PlainOps`, which only passes every call through, is one.
    Modes are per thread, so this changes nothing for any other thread, unlike
    torch.backends.mha.set_fastpath_enabled, which would switch every session's models."""

    def outputs(inputs: tuple[Tensor, ...]) -> list[Tensor]:
        with torch.no_grad(), _PlainOps():
            return _outputs(model(*inputs))

    return outputs


class _PlainOps(TorchFunctionMode):
    """A torch function mode that runs every call as it is (see `_standard_path`)."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Collection[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        return func(*args, **(kwargs or {}))


def _verify_reloaded(
    reference: Callable[[tuple[Tensor, ...]], list[Tensor]],
    loaded: Any,
    example_inputs: tuple[Tensor, ...],
    original_state_dict: Mapping[str, Tensor],
    *,
    other_batch: bool,
    batch_dim: int = 0,
) -> list[Check]:
    """What every reloaded export must show: the model's outputs (`reference`), the
    original's keys and shapes, and that the original weights load into it."""
    checks = []
    with torch.no_grad():
        checks.append(
            _compare_outputs("outputs match", reference(example_inputs), loaded(*example_inputs))
        )
        if other_batch:
            varied = _varied_batch(example_inputs, batch_dim)
            try:
                checks.append(
                    _compare_outputs("other batch size", reference(varied), loaded(*varied))
                )
            except Exception as e:
                checks.append(Check("other batch size", False, _first_line(e)))
    checks.append(_compare_keys(loaded.state_dict(), original_state_dict))
    checks.append(_loads_original(lambda: loaded.load_state_dict(dict(original_state_dict))))
    return checks


# ---------------------------------------------------------------- torch.export


def export_program(
    model: nn.Module,
    example_inputs: Sequence[Tensor],
    path: str | os.PathLike[str],
    original_state_dict: Mapping[str, Tensor],
    *,
    input_path: InputPaths = None,
    batch_dim: int = 0,
) -> ExportCheck:
    """A `torch.export` program (`.pt2`) with a dynamic batch dimension, verified.

    Returns a failed ExportCheck (never raises) when torch.export cannot handle the model.
    """
    path = os.fspath(path)
    refuse_input(path, input_path)
    # Contiguous: a program traced on a slice guards on its strides, and rejects the
    # contiguous tensors people pass.
    example_inputs = tuple(t.contiguous() for t in example_inputs)
    with eval_mode(model):
        # AUTO: the batch dimension stays dynamic where the model allows it, within the
        # range it allows (a positional table bounds it), in one trace; fixed otherwise.
        dynamic = tuple({batch_dim: torch.export.Dim.AUTO} for _ in example_inputs)
        try:
            with _quiet_torch_logs():
                program = torch.export.export(model, example_inputs, dynamic_shapes=dynamic)
        except Exception as e:
            failed = Check("exported", False, f"torch.export failed: {_first_line(e)}")
            return ExportCheck(path, "torch.export", "export", (failed,), optional=True)
        batch_range = _dynamic_batch(program, batch_dim)
        fixed = batch_range is None
        exported = Check(
            "exported", True, "fixed shapes" if fixed else f"dynamic batch dimension{batch_range}"
        )
        note = "the model fixes its batch size: fixed shapes" if fixed else ""
        # torch.export records the standard attention path: compare like with like.
        return _saved_and_verified(
            ExportCheck(path, "torch.export", "export", (exported,), note, optional=True),
            lambda b: torch.export.save(program, b),
            ("torch.export.load", lambda staged: torch.export.load(staged).module()),
            lambda loaded: _verify_reloaded(
                _standard_path(model), loaded, example_inputs, original_state_dict,
                other_batch=not fixed,  # fixed shapes take only the example's batch size
                batch_dim=batch_dim,
            ),
        )  # fmt: skip


def _dynamic_batch(program: Any, batch_dim: int) -> str | None:
    """ " (2 to 5000)", the range of sizes an exported program takes along the batch
    dimension ("" when unbounded); None when export fixed it."""
    sizes = [
        node.meta["val"].shape[batch_dim]
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
        and isinstance(node.meta.get("val"), Tensor) and node.meta["val"].dim() > batch_dim
    ]  # fmt: skip
    if not sizes or not all(isinstance(size, torch.SymInt) for size in sizes):
        return None
    ranges = program.range_constraints.get(sizes[0].node.expr)
    try:
        return f" ({int(ranges.lower)} to {int(ranges.upper)})"
    except (AttributeError, TypeError, ValueError, OverflowError):  # none, or no upper bound
        return ""


# ---------------------------------------------------------------- state dicts


def export_state_dict(
    model: nn.Module,
    path_pt: str | os.PathLike[str],
    path_safetensors: str | os.PathLike[str],
    *,
    input_path: InputPaths = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[ExportCheck, ExportCheck]:
    """The weights as a torch `.pt` state dict and as `.safetensors`, each reloaded and compared."""
    path_pt, path_st = os.fspath(path_pt), os.fspath(path_safetensors)
    for p in (path_pt, path_st):
        refuse_input(p, input_path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}

    write_atomic(path_pt, _to_bytes(lambda b: torch.save(state, b)))
    try:
        reloaded = torch.load(path_pt, map_location="cpu", weights_only=True)
        pt_checks: tuple[Check, ...] = (
            Check("reloads", True, "torch.load(weights_only=True) succeeded"),
            _equal_tensors(reloaded, state),
        )
    except Exception as e:
        pt_checks = (Check("reloads", False, _first_line(e)),)
    pt = ExportCheck(path_pt, "state_dict", "save", pt_checks)

    from safetensors.torch import load_file, save

    # safetensors refuses tensors that share memory (tied weights): store each as its own copy.
    flat, tied = _untie(state)
    note = f"tied weights stored as separate copies: {', '.join(tied)}" if tied else ""
    write_atomic(path_st, save(flat, metadata=dict(metadata) if metadata else None))
    try:
        st_checks: tuple[Check, ...] = (
            Check("reloads", True, "safetensors load_file succeeded"),
            _equal_tensors(load_file(path_st), state),
        )
    except Exception as e:
        st_checks = (Check("reloads", False, _first_line(e)),)
    return pt, ExportCheck(path_st, "safetensors", "save", st_checks, note)


def _untie(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    seen: dict[int, str] = {}
    flat, tied = {}, []
    for key, tensor in state.items():
        storage = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if storage is not None and storage in seen:
            flat[key] = tensor.clone().contiguous()
            tied.append(f"{key} = {seen[storage]}")
        else:
            flat[key] = tensor.contiguous()
            if storage is not None:
                seen[storage] = key
    return flat, tied


def _equal_tensors(reloaded: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> Check:
    keys = _compare_keys(reloaded, state)
    if not keys.passed:
        return Check("identical tensors", False, keys.detail)
    different = [
        k
        for k, v in state.items()
        if v.dtype != reloaded[k].dtype or not torch.equal(v, reloaded[k])
    ]
    if different:
        return Check(
            "identical tensors",
            False,
            f"{len(different)} tensors differ: {', '.join(different[:5])}",
        )
    return Check("identical tensors", True, f"{len(state)} tensors bit-identical after reloading")


# ---------------------------------------------------------------- everything


def export_all(
    model: nn.Module,
    example_inputs: Sequence[Tensor],
    out_dir: str | os.PathLike[str],
    original_state_dict: Mapping[str, Tensor],
    *,
    code: str | None = None,
    report: Mapping[str, Any],
    input_path: InputPaths = None,
    stem: str = "model",
    trainable_keys: Sequence[str] | None = None,
    batch_dim: int = 0,
    formats: Collection[str] | None = None,
) -> ExportBundle:
    """Write and verify `<stem>.pt` (TorchScript), `<stem>.pt2`, `<stem>_state_dict.pt`,
    `<stem>.safetensors`, `<stem>.py` (when `code` is given) and `report.json`; with
    `formats` (names from FORMATS), the TorchScript file and only those besides it.

    `report` holds what the caller knows (hyperparameters and how they were chosen, the
    freeze set, losses); the verification results are added. With `trainable_keys`, every
    other tensor must be bit-identical to `original_state_dict`. The same work one step at
    a time, each file ready as soon as it is verified: `Exporter`.
    """
    return Exporter(
        model, example_inputs, out_dir, original_state_dict, code=code, report=report,
        input_path=input_path, stem=stem, trainable_keys=trainable_keys,
        batch_dim=batch_dim, formats=formats,
    ).finish()  # fmt: skip


# The steps of an export in the order they run, and the files each writes: TorchScript
# first (the file most people want), torch.export (the slowest) next, then the weights
# (one reload serves both) and the code.
STEPS: dict[str, tuple[str, ...]] = {
    "torchscript": ("torchscript",),
    "torch.export": ("torch.export",),
    "state_dict": ("state_dict", "safetensors"),
    "code": ("code",),
}


class Exporter:
    """`export_all` one step at a time. Construction refuses to write over any file that
    was read and creates the folder; `run(step)` writes and verifies one step's files
    (`steps`, in order, TorchScript first); `finish()` runs whatever is left, checks the
    frozen tensors and writes the report once, complete. Iterating gives each ExportCheck
    as soon as it is verified. `exports` and `done` may be read from another thread while
    one thread runs the steps."""

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Sequence[Tensor],
        out_dir: str | os.PathLike[str],
        original_state_dict: Mapping[str, Tensor],
        *,
        code: str | None = None,
        report: Mapping[str, Any],
        input_path: InputPaths = None,
        stem: str = "model",
        trainable_keys: Sequence[str] | None = None,
        batch_dim: int = 0,
        formats: Collection[str] | None = None,
    ) -> None:
        self.out_dir = os.fspath(out_dir)
        wanted = formats_to_write(formats)
        self.paths = {
            kind: path
            for kind, path in export_paths(self.out_dir, stem, with_code=code is not None).items()
            if kind in wanted or kind == "report"
        }
        refuse_overwriting_input(self.paths.values(), input_path)  # before writing anything
        os.makedirs(self.out_dir, exist_ok=True)
        self.model, self.example_inputs = model, tuple(example_inputs)
        self.original, self.code, self.report = original_state_dict, code, dict(report)
        self.trainable_keys, self.batch_dim = trainable_keys, batch_dim
        self.steps = tuple(step for step in STEPS if step in self.paths)
        self.done: list[str] = []  # the steps run, in order
        self.exports: list[ExportCheck] = []  # their files' checks, each as it is verified

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(step for step in self.steps if step not in self.done)

    def run(self, step: str) -> tuple[ExportCheck, ...]:
        """Write and verify the files of `step` (one of `steps`, each once)."""
        if step not in self.pending:
            raise ValueError(f"{step!r} is not a pending step of this export: {self.pending}")
        model, example, paths = self.model, self.example_inputs, self.paths
        if step == "torchscript":
            checks: tuple[ExportCheck, ...] = (
                export_torchscript(
                    model, example, paths[step], self.original, batch_dim=self.batch_dim
                ),
            )
        elif step == "torch.export":
            checks = (
                export_program(
                    model, example, paths[step], self.original, batch_dim=self.batch_dim
                ),
            )
        elif step == "state_dict":
            checks = export_state_dict(model, paths["state_dict"], paths["safetensors"])
        else:
            assert self.code is not None  # the step exists only with code
            checks = (_export_code(self.code, paths["code"]),)
        self.exports.extend(checks)
        self.done.append(step)
        return checks

    def __iter__(self) -> Iterator[ExportCheck]:
        for step in self.pending:
            yield from self.run(step)

    def finish(self) -> ExportBundle:
        """Run the steps left, check the frozen tensors, write the report; the bundle."""
        for _ in self:
            pass
        changes: list[TensorChange] = []
        frozen_check = None
        if self.trainable_keys is not None:
            changes = compare_state_dicts(
                self.original, self.model.state_dict(), self.trainable_keys
            )
            frozen_check = frozen_unchanged(changes)
        bundle = ExportBundle(
            out_dir=self.out_dir,
            files=dict(self.paths),
            exports=tuple(self.exports),
            frozen_check=frozen_check,
            changes=tuple(changes),
            report_path=self.paths["report"],
        )
        _write_report(bundle, self.report)
        return bundle


def _write_report(bundle: ExportBundle, report: Mapping[str, Any]) -> None:
    """`report` with the verification's results added, as strict JSON."""
    full_report = dict(report)
    full_report["verification"] = {
        "passed": bundle.passed,
        "exports": [e.to_json() for e in bundle.exports],
        "frozen_check": None if bundle.frozen_check is None else vars(bundle.frozen_check),
        "changed_tensors": [
            {"key": c.key, "max_abs_change": c.max_abs_change, "frozen": c.frozen}
            for c in bundle.changes
            if c.changed
        ],
    }
    text = json.dumps(_finite(full_report), indent=2, default=_json_default, allow_nan=False)
    write_atomic(bundle.report_path, text.encode())


def _export_code(code: str, path: str) -> ExportCheck:
    """Write the generated source; check it parses (it is never run here)."""
    write_atomic(path, code.encode())
    try:
        compile(code, os.path.basename(path), "exec", dont_inherit=True)
        check = Check("valid Python", True, f"{len(code.splitlines())} lines parse")
    except SyntaxError as e:
        check = Check("valid Python", False, f"line {e.lineno}: {e.msg}")
    return ExportCheck(path, "code", "write", (check,))


def _finite(value: Any) -> Any:
    """Strict JSON has no NaN or Infinity: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist() if value.numel() <= 16 else f"tensor {tuple(value.shape)}"
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    return str(value)


# torch.jit warns on every use that it is deprecated, and about harmless constants; the
# checks are what tell whether a file works. Narrow filters, added once (and idempotent):
# a save-and-restore `catch_warnings` around each export would race between sessions'
# threads and could leave the process's warnings silenced.
warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
warnings.filterwarnings("ignore", r".* was found in ScriptModule constants", UserWarning)


class _QuietThreads(logging.Filter):
    """Drops torch's log records below ERROR made by a thread that is running torch.export
    (it logs a failed trace's diagnostics; the failure is reported in its check). Records of
    every other thread pass: nothing process-wide is switched while one session exports."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.thread not in self.threads


_QUIET = _QuietThreads()
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Keep torch's warnings about this thread's torch.export off the console.

    Torch's loggers end at their own handlers (they do not propagate to the root), so the
    filter goes on those handlers, added where missing (torch may add handlers later).
    One thing it cannot catch: torch.export `print`s a partial graph to stderr when it
    fails on data-dependent control flow. That stays on stderr: redirecting sys.stderr
    would silence every thread of the process, not only this export.
    """
    ident = threading.get_ident()
    with _QUIET_LOCK:
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if (name == "torch" or name.startswith("torch.")) and isinstance(
                logger, logging.Logger
            ):
                for handler in logger.handlers:
                    if _QUIET not in handler.filters:
                        handler.addFilter(_QUIET)
        _QUIET.threads.add(ident)
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET.threads.discard(ident)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:300]


__all__ = [
    "FORMATS",  # where and how files are written: export/files.py, torch-free
    "export_paths",
    "formats_to_write",
    "refuse_overwriting_input",
    "write_atomic",
    "Check",
    "ExportBundle",
    "ExportCheck",
    "TensorChange",
    "compare_state_dicts",
    "export_all",
    "export_program",
    "export_state_dict",
    "export_torchscript",
    "frozen_unchanged",
]
