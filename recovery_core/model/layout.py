"""Which dimension of the data, as the user gives it, is the model's batch.

A sequence model built with `batch_first=False` reads dimension 0 as the sequence, so
its batch is dimension 1 of the tensors it is given, whether they are [seq, batch, ...]
as intended or [batch, seq, ...] fed as they come (then attention mixes samples, and a
slice along dimension 0 would change what the model computes). Everything that cuts the
data into pieces (the search's samples, evaluation batches, training's mini-batches and
its train/validation split, the frozen-prefix cache) cuts along this dimension, so that
the model computes on every piece exactly what it computes on the whole.

`batch_major` presents such a model to the training machinery, which cuts dimension 0,
with its batch first: the data is moved once, and forward hooks move it back for the
model, leaving module names and weights untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from recovery_core.model.spec import ArchSpec


@dataclass(frozen=True)
class BatchDims:
    inputs: int  # the model's batch dimension in each input tensor as given
    target: int  # and in its output / the target
    # False when positions run along the model's batch dimension (a batch_first=False
    # model fed [batch, seq, ...] as it comes): sample i then gets position i, so only
    # a prefix of the samples computes what the whole does; nothing can be held out.
    independent: bool = True
    per_step: bool = True  # False when the model reduces each sequence to one output row

    @property
    def moved(self) -> bool:
        return self.inputs != 0 or self.target != 0

    def describe(self) -> str:
        text = (
            "samples along dimension 0"
            if not self.moved
            else f"samples along dimension {self.inputs} of the inputs and {self.target} of "
            "the target (the model reads dimension 0 as its sequence)"
        )
        if not self.independent:
            text += (
                "; positions follow the samples' order, so the data is evaluated whole and "
                "no part is held out"
            )
        return text


def batch_dims(spec: ArchSpec, values: Mapping[str, Any] | None = None) -> BatchDims:
    """The model's batch dimension in the data, for the spec's forward and these values."""
    values = values or {}
    wiring = spec.wiring
    if wiring is None or wiring.kind == "sequential":
        return BatchDims(0, 0)

    def value(name: str, default: Any) -> Any:
        return values[name] if name in values else spec.value(name, default)

    dim = 0 if value("batch_first", False) else 1
    reduces = "reduce" in wiring.hidden and value("reduce", "none") != "none"
    positional = "pos_dim" in wiring.hidden and value("pos_dim", 1) == dim
    return BatchDims(dim, 0 if reduces else dim, independent=not positional, per_step=not reduces)


def sequence_dims(
    spec: ArchSpec, values: Mapping[str, Any] | None = None
) -> tuple[int, int | None] | None:
    """Where the model's sequence runs in each input and in the target (None when the
    target has one row per sample); None for a model that reads no sequence."""
    wiring = spec.wiring
    if wiring is None or wiring.kind == "sequential":
        return None
    dims = batch_dims(spec, values)
    return 1 - dims.inputs, (1 - dims.target) if dims.per_step else None


def first_steps(inputs: Sequence[Tensor], spec: ArchSpec, steps: int) -> tuple[Tensor, ...]:
    """Inputs as the user gives them with each sequence cut to its first `steps` (a model
    that reads no sequence gets them whole). Any prefix of a sequence is a valid input,
    and the export checks need one that is quick to run, not the whole of a long one."""
    seq = sequence_dims(spec)
    if seq is None:
        return tuple(inputs)
    return tuple(take(t, steps, seq[0]) for t in inputs)


def take(tensor: Tensor, count: int, dim: int) -> Tensor:
    """The first `count` samples along `dim` (the whole tensor when it has fewer)."""
    if tensor.dim() <= dim:
        return tensor
    return tensor.narrow(dim, 0, min(count, tensor.shape[dim]))


def samples(tensors: Sequence[Tensor], dim: int) -> int:
    return min((t.shape[dim] if t.dim() > dim else t.shape[0]) for t in tensors)


def to_batch_major(
    inputs: Sequence[Tensor], target: Tensor, dims: BatchDims
) -> tuple[tuple[Tensor, ...], Tensor]:
    """The data with the model's batch along dimension 0 (views, no copies)."""
    moved = tuple(t.movedim(dims.inputs, 0) if t.dim() > dims.inputs else t for t in inputs)
    return moved, (target.movedim(dims.target, 0) if target.dim() > dims.target else target)


def from_batch_major(inputs: Sequence[Tensor], dims: BatchDims) -> tuple[Tensor, ...]:
    """Batch-major inputs back in the layout the user gave them (e.g. export examples)."""
    return tuple(t.movedim(0, dims.inputs) if t.dim() > dims.inputs else t for t in inputs)


def attach_batch_major(model: nn.Module, dims: BatchDims) -> nn.Module:
    """From now on `model` takes and returns batch-major tensors (see `to_batch_major`);
    copies made of it keep that, until `drop_batch_major`."""
    if not dims.moved:
        return model

    def before(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(from_batch_major(args, dims))

    def after(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, Tensor) and output.dim() > dims.target:
            return output.movedim(dims.target, 0)
        return output

    # The mark drop_batch_major looks for (mypy allows no attributes on a function).
    before.batch_major = after.batch_major = True  # type: ignore[attr-defined]
    model.register_forward_pre_hook(before)
    model.register_forward_hook(after)
    return model


def drop_batch_major(model: nn.Module) -> nn.Module:
    """Remove what `attach_batch_major` added (from the model or a copy of it), so it takes
    the data as given again."""
    for hooks in (model._forward_pre_hooks, model._forward_hooks):
        for key in [k for k, hook in hooks.items() if getattr(hook, "batch_major", False)]:
            del hooks[key]
    return model


@contextlib.contextmanager
def batch_major(model: nn.Module, dims: BatchDims) -> Iterator[nn.Module]:
    """`attach_batch_major` for the duration of a block (copies made inside keep it)."""
    attach_batch_major(model, dims)
    try:
        yield model
    finally:
        drop_batch_major(model)


def prune_by_data(spec: ArchSpec, inputs: Sequence[Tensor], target: Tensor) -> dict[str, tuple]:
    """Candidates the data's shapes rule out before anything is scored.

    A sequence model's per-step output is [batch, step, features]; class labels drop the
    features ([batch, step]). A target with one dimension fewer than that wants one
    output per sample, so the steps must be reduced; one with as many keeps every step.
    """
    pruned: dict[str, tuple] = {}
    if not inputs:
        return pruned
    per_step_rank = 3 if target.is_floating_point() else 2
    for hp in spec.free:
        if hp.name == "reduce" and len(hp.candidates) > 1:
            per_step = target.dim() >= per_step_rank
            keep = tuple(c for c in hp.candidates if (c == "none") == per_step)
            pruned[hp.name] = keep or hp.candidates
    return pruned
