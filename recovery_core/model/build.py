"""`ArchSpec` -> a working `nn.Module`, plus the checks the dashboard shows as ✓/✗.

The module is made from the very source `codegen.generate_code` writes, so the built
model and the downloadable file are the same class. That source is assembled only from
checked identifiers and literals (see codegen), never from code found in a checkpoint.
It is registered with `linecache` under a made-up file name so `torch.jit.script`, which
reads a class's source, can compile the forward.
"""

from __future__ import annotations

import hashlib
import linecache
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recovery_core.errors import BuildError
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model.budget import check_build_budget, check_example_budget
from recovery_core.model.codegen import generate_code, hidden_arguments
from recovery_core.model.spec import ArchSpec, positional_length

_CLASS_CACHE: OrderedDict[str, type[nn.Module]] = OrderedDict()
_LIVE_SOURCES: Counter[str] = Counter()  # generated file name -> classes alive from it
_SOURCES_LOCK = threading.RLock()
_CLASS_CACHE_SIZE = 64  # distinct specs per process; the search reuses one class
_CLASS_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadReport:
    ok: bool
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]
    shape_mismatches: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # key, model, file
    message: str


@dataclass(frozen=True)
class RebuildStatus:
    strict_load_ok: bool
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]
    forward_ok: bool | None  # None: no recognised forward to run
    output_shape: tuple[int, ...] | None
    error: str | None


def model_class(spec: ArchSpec) -> type[nn.Module]:
    """The `RecoveredModel` class for this spec; its defaults are the spec's values."""
    source = generate_code(spec)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    filename = f"<recovered-model-{digest}>"
    # mtime None keeps linecache.checkcache from dropping a file that is not on disk; set
    # again on every call in case someone cleared the cache since.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    with _CLASS_CACHE_LOCK:  # the dashboard builds from several sessions' threads
        cached = _CLASS_CACHE.get(source)
        if cached is not None:
            _CLASS_CACHE.move_to_end(source)
            return cached
        namespace: dict[str, Any] = {"__name__": f"recovered_model_{digest}"}
        exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own checked source
        cls = namespace["RecoveredModel"]
        _keep_source(cls, filename)
        _CLASS_CACHE[source] = cls
        if len(_CLASS_CACHE) > _CLASS_CACHE_SIZE:
            _CLASS_CACHE.popitem(last=False)
        return cls


def _keep_source(cls: type, filename: str) -> None:
    """Keep a generated class's source in linecache (tracebacks and torch.jit.script read
    it there) for as long as some class compiled from it lives, and no longer: a server
    builds many over its life."""
    with _SOURCES_LOCK:
        _LIVE_SOURCES[filename] += 1
    weakref.finalize(cls, _drop_source, filename)


def _drop_source(filename: str) -> None:
    # Re-entrant: the collector may run this inside _keep_source on the same thread.
    with _SOURCES_LOCK:
        _LIVE_SOURCES[filename] -= 1
        if _LIVE_SOURCES[filename] <= 0:
            del _LIVE_SOURCES[filename]
            linecache.cache.pop(filename, None)


def construct(cls: type[nn.Module], spec: ArchSpec, values: Mapping[str, Any]) -> nn.Module:
    """An instance of `cls` with hidden hyperparameters given by spec name."""
    arguments = {h.name: h.argument for h in hidden_arguments(spec)}
    kwargs = {arguments[name]: value for name, value in values.items() if name in arguments}
    try:
        return cls(**kwargs)
    except (AssertionError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        chosen = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "the chosen values"
        raise BuildError(
            f"the model cannot be built with {chosen}: {exc}; pick other candidate values."
        ) from exc


def build_model(spec: ArchSpec) -> nn.Module:
    """The recovered module: checkpoint keys and shapes, and the recognised forward."""
    return construct(model_class(spec), spec, {})


def load_weights(
    model: nn.Module,
    checkpoint_or_state_dict: Checkpoint | Mapping[str, torch.Tensor],
    strict: bool = True,
) -> LoadReport:
    """Load weights into model and report what did not fit; never raises on a mismatch.

    With strict=True nothing is loaded unless every key and shape matches. With
    strict=False the keys that match are loaded and the rest reported.
    """
    if isinstance(checkpoint_or_state_dict, Checkpoint):
        weights = checkpoint_or_state_dict.state_dict()
    else:
        weights = dict(checkpoint_or_state_dict)
    fit = check_fit(model, weights, strict)
    if not fit.ok:
        return fit
    missing, unexpected, mismatches = fit.missing_keys, fit.unexpected_keys, ()
    expected = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in expected}
    try:
        model.load_state_dict(matching, strict=strict)
    except RuntimeError as exc:  # e.g. a dtype torch cannot copy
        return LoadReport(False, missing, unexpected, mismatches, f"loading failed: {exc}")
    if missing or unexpected:
        message = "loaded the matching keys; " + _mismatch_message(missing, unexpected, ())
    else:
        message = f"all {len(expected)} tensors loaded."
    return LoadReport(True, missing, unexpected, mismatches, message)


def check_fit(
    model: nn.Module, weights: Mapping[str, torch.Tensor], strict: bool = True
) -> LoadReport:
    """Whether weights would load into model (keys and shapes), without loading anything."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = tuple(k for k in expected if k not in weights)
    unexpected = tuple(k for k in weights if k not in expected)
    mismatches = tuple(
        (k, expected[k], tuple(weights[k].shape))
        for k in expected
        if k in weights and tuple(weights[k].shape) != expected[k]
    )
    if mismatches or (strict and (missing or unexpected)):
        message = _mismatch_message(missing, unexpected, mismatches)
        return LoadReport(False, missing, unexpected, mismatches, message)
    return LoadReport(True, missing, unexpected, (), "the weights fit.")


def _mismatch_message(
    missing: tuple[str, ...],
    unexpected: tuple[str, ...],
    mismatches: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...],
) -> str:
    def first(keys: tuple[str, ...]) -> str:
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        return ", ".join(keys[:3]) + more

    parts = []
    if missing:
        parts.append(
            f"{len(missing)} keys the model needs are not in the weights ({first(missing)})"
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} keys in the weights have no place in the model ({first(unexpected)})"
        )
    for key, want, got in mismatches[:3]:
        parts.append(f"{key} is {got} in the weights but {want} in the model")
    return "; ".join(parts) + "; fix the architecture or its values and rebuild."


def example_inputs(spec: ArchSpec, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
    """One dummy tensor per forward argument; token ids stay inside each vocabulary."""
    wiring = spec.wiring
    if wiring is None:
        raise BuildError("no forward was recognised, so there is nothing to feed inputs to.")
    shapes = [(batch_size, *i.shape[1:]) for i in wiring.inputs]
    check_example_budget(shapes)  # before allocating: shapes come from the file
    generator = torch.Generator().manual_seed(0)
    vocabularies = _vocabularies(spec)
    max_length = _max_sequence_length(spec)
    tensors = []
    for index, model_input in enumerate(wiring.inputs):
        shape = (batch_size, *model_input.shape[1:])
        if model_input.dtype == "long":
            if max_length is not None and len(shape) >= 2:
                shape = (shape[0], min(shape[1], max_length), *shape[2:])
            high = vocabularies[index] if index < len(vocabularies) else 2
            tensors.append(torch.randint(0, high, shape, generator=generator))
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)


def _vocabularies(spec: ArchSpec) -> list[int]:
    """num_embeddings of the embedding each forward argument goes through, in order."""
    wiring = spec.wiring
    assert wiring is not None
    roles = ("src_embedding", "tgt_embedding") if wiring.kind == "seq2seq" else ("embedding",)
    sizes = []
    for role in roles:
        path = wiring.roles.get(role)
        if path is None:
            break
        sizes.append(int(spec.module(path).args.get("num_embeddings", 2)))
    return sizes


def _max_sequence_length(spec: ArchSpec) -> int | None:
    """The longest sequence the positional tables can cover, if there are any."""
    lengths = []
    for m in spec.modules():
        if m.type == "PositionalEncoding":
            lengths.append(positional_length(tuple(m.args["shape"])))
    return min(lengths) if lengths else None


def check_rebuild(spec: ArchSpec, checkpoint: Checkpoint) -> RebuildStatus:
    """Build, strict-load and run a dummy forward: what the dashboard shows as ✓/✗.

    A file declaring more than the build budget is refused (LimitExceededError) before
    anything is allocated."""
    check_build_budget(checkpoint)
    try:
        model = build_model(spec)
    except BuildError as exc:
        return RebuildStatus(False, (), (), None, None, str(exc))
    report = load_weights(model, checkpoint, strict=True)
    if not report.ok:
        return RebuildStatus(
            False, report.missing_keys, report.unexpected_keys, None, None, report.message
        )
    if spec.wiring is None:
        return RebuildStatus(True, (), (), None, None, None)
    try:
        inputs = example_inputs(spec)
        model.eval()
        with torch.no_grad():
            output = model(*inputs)
    except Exception as exc:  # noqa: BLE001 - any failure of the forward is a ✗ to show
        return RebuildStatus(True, (), (), False, None, f"the forward pass failed: {exc}")
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
    return RebuildStatus(True, (), (), True, shape, None)
