"""Which parameter-less choices let a stack's shapes chain, found without running it.

A stack (a `sequential` forward) calls its layers in order. Its parameter-less slots may
keep the shape (activations, dropout), pool, pool to a fixed size or flatten; only some
placements reach the next weighted layer with the size it reads (a Linear's in_features,
a convolution's channels). Shapes are propagated symbolically from the data's own input
shape, and a dynamic programme over (layer, shape) keeps only the branches that can still
end well: a VGG-like stack with a dozen slots is enumerated in milliseconds instead of
trying 4^12 combinations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from recovery_core.infer.unknown import shape_class
from recovery_core.spec import ArchSpec, ModuleSpec

Shape = tuple[int, ...]  # one sample's shape (no batch dimension)
_CONTAINERS = frozenset({"Module", "Sequential", "ModuleList"})


def stack_layers(spec: ArchSpec) -> list[ModuleSpec] | None:
    """The layers a sequential forward calls, in order; None when something else is there."""
    layers = [m for m in spec.root.walk() if m.type not in _CONTAINERS]
    known = ("Linear", "Unknown", "Conv", "BatchNorm", "InstanceNorm", "GroupNorm", "LayerNorm")
    if not layers or not all(m.type.startswith(known) for m in layers):
        return None
    return layers


def _padding(mode: Any, kernel: int) -> int:
    if mode == "same":
        return kernel // 2
    if mode == "valid":
        return 0
    return int(mode)


def _weighted(layer: ModuleSpec, shape: Shape, values: Mapping[str, Any]) -> Shape | None:
    """The shape after a layer with weights, or None when it cannot read `shape`."""
    args, kind = layer.args, layer.type
    if kind == "Linear":
        if not shape or shape[-1] != args["in_features"]:
            return None
        return (*shape[:-1], args["out_features"])
    if kind.startswith("Conv") and not kind.startswith("ConvTranspose"):
        dims = int(kind[-2])
        if len(shape) != dims + 1 or shape[0] != args["in_channels"]:
            return None
        stride = int(values.get("conv_stride", 1))
        spatial = []
        for size, kernel in zip(shape[1:], args["kernel_size"], strict=True):
            padding = _padding(values.get("conv_padding", "same"), kernel)
            out = (size + 2 * padding - kernel) // stride + 1
            if out < 1:
                return None
            spatial.append(out)
        return (args["out_channels"], *spatial)
    if kind.startswith(("BatchNorm", "InstanceNorm")):
        return shape if shape and shape[0] == args["num_features"] else None
    if kind == "GroupNorm":
        return shape if shape and shape[0] == args["num_channels"] else None
    if kind == "LayerNorm":
        normalized = tuple(args["normalized_shape"])
        return shape if shape[-len(normalized) :] == normalized else None
    return None


def _slot(choice: str, shape: Shape) -> Shape | None:
    """The shape after a parameter-less choice, or None when it cannot apply."""
    kind = shape_class(choice)
    if kind == "keep":
        return shape
    if kind == "flatten":
        return (math.prod(shape),) if len(shape) > 1 else shape
    if kind.startswith("pool"):
        dims = int(kind[4])
        if len(shape) != dims + 1 or any(s < 2 for s in shape[1:]):
            return None
        return (shape[0], *(s // 2 for s in shape[1:]))
    # "AdaptiveAvgPool2d(7)" (and its "+Flatten" form)
    name, _, rest = choice.partition("(")
    dims, size = int(name[-2]), int(rest.split(")")[0])
    if len(shape) != dims + 1:
        return None
    pooled = (shape[0], *([size] * dims))
    return (math.prod(pooled),) if choice.endswith("+Flatten") else pooled


def skeletons(
    spec: ArchSpec,
    names: Sequence[str],
    candidates: Sequence[Sequence[Any]],
    current: Sequence[Any],
    input_shape: Shape,
    limit: int,
    output_shape: Shape | None = None,
) -> list[tuple[Any, ...]] | None:
    """Every combination of the parameter-less slots' shape classes (one representative
    value each: the current one where it is of that class) and of the stride and padding
    whose shapes chain from `input_shape` to the last layer (and end as `output_shape`,
    the target's, when given); None when the spec is not a stack of layers this reasons
    about, or more than `limit` combinations chain."""
    layers = stack_layers(spec)
    if layers is None:
        return None
    index = {n: i for i, n in enumerate(names)}
    slots = {m.path for m in layers if m.type == "Unknown"}
    if not slots <= set(index):
        return None  # a slot without a choice: leave it to the running search
    globals_ = [n for n in ("conv_stride", "conv_padding") if n in index]
    found: list[tuple[Any, ...]] = []
    for setting in _product([candidates[index[n]] for n in globals_]):
        values = dict(zip(globals_, setting, strict=True))
        reps = {
            path: _representatives(candidates[index[path]], current[index[path]]) for path in slots
        }
        for choice in _paths(tuple(layers), values, reps, input_shape, output_shape):
            combo = list(current)
            for name, value in (*values.items(), *choice.items()):
                combo[index[name]] = value
            found.append(tuple(combo))
            if len(found) > limit:
                return None
    return found


def _product(axes: list[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    if not axes:
        yield ()
        return
    for head in axes[0]:
        for rest in _product(axes[1:]):
            yield (head, *rest)


def _representatives(candidates: Sequence[Any], current: Any) -> tuple[Any, ...]:
    by_class: dict[str, Any] = {}
    for value in [current, *candidates]:
        if value in candidates:
            by_class.setdefault(shape_class(value), value)
    return tuple(by_class.values())


def _paths(
    layers: tuple[ModuleSpec, ...],
    values: Mapping[str, Any],
    reps: Mapping[str, tuple[Any, ...]],
    start: Shape,
    end: Shape | None,
) -> Iterator[dict[str, Any]]:
    """Slot choices along which the shapes chain to the end (depth first, memoised)."""

    @functools.cache
    def viable(i: int, shape: Shape) -> bool:
        if i == len(layers):
            return end is None or shape == end
        return any(viable(i + 1, nxt) for _, nxt in steps(i, shape))

    def steps(i: int, shape: Shape) -> list[tuple[Any, Shape]]:
        layer = layers[i]
        if layer.type != "Unknown":
            nxt = _weighted(layer, shape, values)
            return [] if nxt is None else [(None, nxt)]
        out = []
        for choice in reps[layer.path]:
            nxt = _slot(str(choice), shape)
            if nxt is not None:
                out.append((choice, nxt))
        return out

    def walk(i: int, shape: Shape, chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(layers):
            if end is None or shape == end:
                yield dict(chosen)
            return
        for choice, nxt in steps(i, shape):
            if not viable(i + 1, nxt):
                continue
            if choice is not None:
                chosen[layers[i].path] = choice
            yield from walk(i + 1, nxt, chosen)
            chosen.pop(layers[i].path, None)

    if not viable(0, start):
        return
    yield from walk(0, start, {})
