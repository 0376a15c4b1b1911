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
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from recovery_core.errors import ExportError
from recovery_core.freeze import eval_mode

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


# ---------------------------------------------------------------- atomic writes


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`.

    The temporary name is random and created with O_EXCL (mkstemp) in the target's own
    folder, so a planted file or symlink is never written through; a `path` that is a
    symlink is refused rather than replaced or followed. Disk errors become ExportError.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if os.path.islink(path):
        raise ExportError(
            f"Refusing to write {name}: it is a symbolic link; choose a plain file name."
        )
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise ExportError(
            f"Could not write {name}: {e.strerror or type(e).__name__}; choose another folder."
        ) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


_atomic_write = write_atomic


# The files a recovery read (checkpoint, shards, index, dataset): one path or several.
InputPaths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None


def _refuse_input(path: str, input_path: InputPaths) -> None:
    for each in _input_list(input_path):
        same = os.path.realpath(path) == os.path.realpath(each)
        if not same and os.path.exists(path) and os.path.exists(each):
            same = os.path.samefile(path, each)
        if same:
            raise ExportError(
                f"Refusing to write {os.path.basename(path)}: it is the checkpoint you loaded, "
                "or a file read with it (a shard, its index or the dataset); choose another "
                "output name."
            )


def _input_list(inputs: Any) -> list[str]:
    if inputs is None:
        return []
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    return [os.fspath(i) for i in inputs if i is not None]


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
    _refuse_input(path, input_path)
    example_inputs = tuple(example_inputs)
    # torch.jit warns that it is deprecated and about harmless constants; the checks below
    # are what tell whether the file works.
    with eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
                return ExportCheck(
                    path,
                    "torchscript",
                    "none",
                    (Check("compiled", False, f"{note}; tracing failed too ({_first_line(e2)})"),),
                )
        _atomic_write(path, _to_bytes(lambda b: torch.jit.save(compiled, b)))
        checks = [Check("compiled", True, f"torch.jit.{method}")]
        try:
            loaded = torch.jit.load(path, map_location="cpu")
        except Exception as e:
            return ExportCheck(
                path,
                "torchscript",
                method,
                (*checks, Check("reloads", False, _first_line(e))),
                note,
            )
        checks.append(Check("reloads", True, "torch.jit.load succeeded"))
        # A trace may bake the example's shapes in: then say whether another batch size works.
        checks += _verify_reloaded(
            model,
            loaded,
            example_inputs,
            original_state_dict,
            other_batch=method == "trace",
            batch_dim=batch_dim,
        )
    return ExportCheck(path, "torchscript", method, tuple(checks), note)


def _verify_reloaded(
    model: nn.Module,
    loaded: Any,
    example_inputs: tuple[Tensor, ...],
    original_state_dict: Mapping[str, Tensor],
    *,
    other_batch: bool,
    batch_dim: int = 0,
) -> list[Check]:
    """What every reloaded export must show: the model's outputs, the original's keys and
    shapes, and that the original weights load into it."""
    checks = []
    with torch.no_grad():
        checks.append(
            _compare_outputs("outputs match", model(*example_inputs), loaded(*example_inputs))
        )
        if other_batch:
            varied = _varied_batch(example_inputs, batch_dim)
            try:
                checks.append(_compare_outputs("other batch size", model(*varied), loaded(*varied)))
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
    _refuse_input(path, input_path)
    # Contiguous: a program traced on a slice guards on its strides, and rejects the
    # contiguous tensors people pass.
    example_inputs = tuple(t.contiguous() for t in example_inputs)
    with eval_mode(model):
        # AUTO: the batch dimension stays dynamic where the model allows it, within the
        # range it allows (a positional table bounds it), in one trace; fixed otherwise.
        dynamic = tuple({batch_dim: torch.export.Dim.AUTO} for _ in example_inputs)
        try:
            with _quiet_torch():
                program = torch.export.export(model, example_inputs, dynamic_shapes=dynamic)
        except Exception as e:
            return ExportCheck(
                path,
                "torch.export",
                "export",
                (Check("exported", False, f"torch.export failed: {_first_line(e)}"),),
                optional=True,
            )
        batch_range = _dynamic_batch(program, batch_dim)
        note = "" if batch_range is not None else "the model fixes its batch size: fixed shapes"
        _atomic_write(path, _to_bytes(lambda b: torch.export.save(program, b)))
        checks = [
            Check(
                "exported",
                True,
                "fixed shapes" if batch_range is None else f"dynamic batch dimension{batch_range}",
            )
        ]
        try:
            loaded = torch.export.load(path).module()
        except Exception as e:
            return ExportCheck(
                path,
                "torch.export",
                "export",
                (*checks, Check("reloads", False, _first_line(e))),
                note,
                True,
            )
        checks.append(Check("reloads", True, "torch.export.load succeeded"))
        # torch.export records the standard attention path; in eval mode the eager model
        # may take PyTorch's fused fast path, which differs by ~2e-5. Compare like with like.
        with _standard_attention_path():
            checks += _verify_reloaded(
                model,
                loaded,
                example_inputs,
                original_state_dict,
                other_batch=not note,  # fixed shapes take only the example's batch size
                batch_dim=batch_dim,
            )
    return ExportCheck(path, "torch.export", "export", tuple(checks), note, optional=True)


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


@contextlib.contextmanager
def _standard_attention_path() -> Iterator[None]:
    """Turn off the fused attention fast path for a while (a process-wide switch)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


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
        _refuse_input(p, input_path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}

    _atomic_write(path_pt, _to_bytes(lambda b: torch.save(state, b)))
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
    _atomic_write(path_st, save(flat, metadata=dict(metadata) if metadata else None))
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


def export_paths(out_dir: str | os.PathLike[str], stem: str, *, with_code: bool) -> dict[str, str]:
    """Where `export_all` writes each kind of file."""
    out = os.fspath(out_dir)
    paths = {
        "torchscript": os.path.join(out, f"{stem}.pt"),
        "torch.export": os.path.join(out, f"{stem}.pt2"),
        "state_dict": os.path.join(out, f"{stem}_state_dict.pt"),
        "safetensors": os.path.join(out, f"{stem}.safetensors"),
        "report": os.path.join(out, "report.json" if stem == "model" else f"{stem}_report.json"),
    }
    if with_code:
        paths["code"] = os.path.join(out, f"{stem}.py")
    return paths


def refuse_overwriting_input(
    paths: Iterable[str],
    input_path: InputPaths,
) -> None:
    """ExportError when any of `paths` is a file that was read: `input_path` is one path
    or all of them (checkpoint, shards, index, dataset). Compared by real path and by
    samefile, so links and other spellings of the same file are caught."""
    for path in paths:
        _refuse_input(path, input_path)


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
    other tensor must be bit-identical to `original_state_dict`.
    """
    out = os.fspath(out_dir)
    wanted = formats_to_write(formats)
    paths = {
        kind: path
        for kind, path in export_paths(out, stem, with_code=code is not None).items()
        if kind in wanted or kind == "report"
    }
    refuse_overwriting_input(paths.values(), input_path)  # before writing anything
    os.makedirs(out, exist_ok=True)

    # TorchScript first: the file most people want, ready while the others are written.
    exports = [
        export_torchscript(
            model, example_inputs, paths["torchscript"], original_state_dict, batch_dim=batch_dim
        )
    ]
    if "torch.export" in paths:
        exports.append(
            export_program(
                model,
                example_inputs,
                paths["torch.export"],
                original_state_dict,
                batch_dim=batch_dim,
            )
        )
    if "state_dict" in paths:
        exports.extend(export_state_dict(model, paths["state_dict"], paths["safetensors"]))
    if "code" in paths and code is not None:
        exports.append(_export_code(code, paths["code"]))

    changes: list[TensorChange] = []
    frozen_check = None
    if trainable_keys is not None:
        changes = compare_state_dicts(original_state_dict, model.state_dict(), trainable_keys)
        frozen_check = frozen_unchanged(changes)

    bundle = ExportBundle(
        out_dir=out,
        files=dict(paths),
        exports=tuple(exports),
        frozen_check=frozen_check,
        changes=tuple(changes),
        report_path=paths["report"],
    )
    full_report = dict(report)
    full_report["verification"] = {
        "passed": bundle.passed,
        "exports": [e.to_json() for e in exports],
        "frozen_check": None if frozen_check is None else vars(frozen_check),
        "changed_tensors": [
            {"key": c.key, "max_abs_change": c.max_abs_change, "frozen": c.frozen}
            for c in changes
            if c.changed
        ],
    }
    text = json.dumps(_finite(full_report), indent=2, default=_json_default, allow_nan=False)
    _atomic_write(paths["report"], text.encode())
    return bundle


# What export_all can write besides the report; the TorchScript file is always written.
FORMATS = ("torchscript", "torch.export", "state_dict", "safetensors", "code")


def formats_to_write(formats: Collection[str] | None) -> set[str]:
    """The formats export_all writes for `formats` (None: all); ExportError for unknown ones."""
    if formats is None:
        return set(FORMATS)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(
            f"unknown export format {', '.join(unknown)}; choose from {', '.join(FORMATS)}"
        )
    wanted = {"torchscript", *formats}
    if wanted & {"state_dict", "safetensors"}:
        wanted |= {"state_dict", "safetensors"}  # one reload serves both: written together
    return wanted


def _export_code(code: str, path: str) -> ExportCheck:
    """Write the generated source; check it parses (it is never run here)."""
    _atomic_write(path, code.encode())
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


# Loggers torch.export writes its failure diagnostics to (we report the failure ourselves).
NOISY_LOGGERS = (
    "torch.fx.experimental.symbolic_shapes",
    "torch._dynamo",
    "torch.export",
    "torch._export",
)


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Keep torch.export's graph dumps and warnings off the console while it tries.

    It prints a failed graph to stdout/stderr; those are process-wide, so this is kept
    to the export call itself.
    """
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line[:300]


__all__ = [
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
