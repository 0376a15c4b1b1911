"""Budgets checked before a model is rebuilt or run on example inputs.

Inspecting a file reads only its index, but rebuilding allocates every declared parameter
and the example forward allocates activations from the declared shapes. A file can
declare far more than it stores: a 1 KB meta or zero-stride `Linear(23000, 23000)` makes
the rebuild allocate 2.2 GB, and a safetensors shape `[250000000, 0]` (no bytes at all)
makes the example forward allocate 2.1 GB. These checks use declared sizes (meta and
zero-stride tensors count in full) and run before anything is allocated.

Call `check_build_budget(checkpoint)` before `build_model`/`check_rebuild`, and
`check_example_budget(shapes, itemsize)` before making example inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from recovery_core.errors import LimitExceededError
from recovery_core.humanize import size


@dataclass(frozen=True)
class BuildLimits:
    # The dashboard rebuilds models of several sessions in one server: 1 GiB of parameters
    # (a 250M-parameter float32 model) is the largest one session may allocate. Raise it
    # for a personal server with big models.
    max_build_bytes: int = 1024**3
    # A single dimension above this is no layer width (vocabularies reach ~256k); example
    # inputs are sized from these dimensions.
    max_dimension: int = 1 << 24
    # Example inputs for the rebuild check and exports: a batch of a few samples.
    max_example_bytes: int = 256 * 1024**2


DEFAULT_BUILD_LIMITS = BuildLimits()


def check_build_budget(checkpoint: object, limits: BuildLimits = DEFAULT_BUILD_LIMITS) -> None:
    """Refuse to rebuild a model whose declared parameters exceed the budget.

    `checkpoint` is a `Checkpoint` (its `tensors` are `TensorInfo`s with declared sizes).
    """
    tensors = getattr(checkpoint, "tensors", ())
    total = 0
    for info in tensors:
        for dim in info.shape:
            if dim > limits.max_dimension:
                raise LimitExceededError(
                    f"tensor {info.name!r} declares a dimension of {dim}, above the "
                    f"{limits.max_dimension} this tool rebuilds (max_dimension); it was not "
                    "rebuilt.",
                    limit="max_dimension",
                )
        total += info.nbytes
    if total > limits.max_build_bytes:
        raise LimitExceededError(
            f"rebuilding this model would allocate {size(total)} of parameters (declared "
            f"sizes; the file may store far less), above the {size(limits.max_build_bytes)} "
            "allowed (max_build_bytes); it was not rebuilt.",
            limit="max_build_bytes",
        )


def check_example_budget(
    shapes: Iterable[tuple[int, ...]], itemsize: int = 4, limits: BuildLimits = DEFAULT_BUILD_LIMITS
) -> None:
    """Refuse example inputs whose shapes would exceed the budget, before allocating them."""
    total = 0
    for shape in shapes:
        if any(d > limits.max_dimension for d in shape):
            raise LimitExceededError(
                f"an example input of shape {tuple(shape)} has a dimension above "
                f"{limits.max_dimension} (max_dimension); it was not made.",
                limit="max_dimension",
            )
        total += math.prod(shape) * itemsize
    if total > limits.max_example_bytes:
        raise LimitExceededError(
            f"the example inputs would take {size(total)}, above the "
            f"{size(limits.max_example_bytes)} allowed (max_example_bytes); they were not made.",
            limit="max_example_bytes",
        )
