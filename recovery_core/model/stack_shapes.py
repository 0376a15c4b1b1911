"""Which shape-changing choices let a stack's shapes chain, found without running it.

A stack (a `sequential` forward) calls its layers in order. Its parameter-less slots may
keep the shape (activations, dropout), pool (max or average, kernel 2 or 3, stride 2 or
the kernel), pool to a fixed size or flatten; each convolution has its own stride,
padding, dilation (and output padding when transposed). Only some choices reach the next
weighted layer with the size it reads (a Linear's in_features, a convolution's channels)
and end with the target's shape.

Shapes are propagated symbolically from the data's own input shape. A dynamic programme
over (layer, shape) treats a convolution's settings like a slot's choice: one transition
per setting that applies, so a stack of a dozen convolutions is enumerated in
milliseconds instead of trying 8^12 combinations. Each transition costs the number of
values it moves away from the current ones (the defaults: stride 1, 'same' padding,
dilation 1; a slot's guessed shape class), and the skeletons come cheapest first: a
value the shapes do not force keeps its default, and where several settings reach the
same shapes at the same cost all of them stay for the search to score (a few dozen).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from recovery_core.infer.detection import fmt
from recovery_core.infer.families.conv import (
    CONV_HIDDEN,
    LEGACY_NAMES,
    SETTING_DEFAULTS,
    padding_amounts,
    setting_of,
    split_setting,
)
from recovery_core.infer.unknown import pool_geometry, shape_class
from recovery_core.model.spec import ArchSpec, ModuleSpec

Shape = tuple[int, ...]  # one sample's shape (no batch dimension)
_CONTAINERS = frozenset({"Module", "Sequential", "ModuleList"})
# Skeletons handed to the search, cheapest first: each costs it a dry run, a screening
# and a pass over the activations, so a few dozen leave budget for the beam.
MAX_SKELETONS = 48
# The next costlier tier is added when it fits: one value more than the fewest.
EXTRA_DEPARTURES = 1

Step = tuple[tuple[tuple[str, Any], ...], Shape, int]  # (values set, shape after, cost)


def is_shape_name(name: str) -> bool:
    """True for a hidden value that changes a feature map's size: a convolution's own
    stride, padding, dilation or output padding ("blocks.0.stride"), or the global ones
    (conv_stride, conv_padding): the search starts its beam from their shape skeletons."""
    return name in CONV_HIDDEN or split_setting(name) is not None


def stack_layers(spec: ArchSpec) -> list[ModuleSpec] | None:
    """The layers a sequential forward calls, in order; None when something else is there."""
    layers = [m for m in spec.root.walk() if m.type not in _CONTAINERS]
    known = ("Linear", "Unknown", "Conv", "BatchNorm", "InstanceNorm", "GroupNorm", "LayerNorm")
    if not layers or not all(m.type.startswith(known) for m in layers):
        return None
    return layers


def conv_output(
    kind: str, args: Mapping[str, Any], shape: Shape, settings: Mapping[str, Any]
) -> Shape | None:
    """The shape after a convolution with these settings, or None when it cannot run."""
    dims = int(kind[-2])
    if len(shape) != dims + 1 or shape[0] != args["in_channels"]:
        return None
    kernel = tuple(args["kernel_size"])
    stride, dilation = int(settings["stride"]), int(settings["dilation"])
    output_padding = int(settings["output_padding"])
    try:
        padding = padding_amounts(settings["padding"], kernel, dilation)
    except ValueError:
        return None
    transposed = kind.startswith("ConvTranspose")
    if output_padding and (not transposed or output_padding >= stride):
        return None  # torch refuses it beyond the stride (or the dilation: not offered)
    spatial = []
    for size, k, pad in zip(shape[1:], kernel, padding, strict=True):
        if transposed:
            out = (size - 1) * stride - 2 * pad + dilation * (k - 1) + output_padding + 1
        else:
            out = (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        if out < 1:
            return None
        spatial.append(out)
    return (args["out_channels"], *spatial)


def _weighted(layer: ModuleSpec, shape: Shape, settings: Mapping[str, Any]) -> Shape | None:
    """The shape after a layer with weights, or None when it cannot read `shape`."""
    args, kind = layer.args, layer.type
    if kind == "Linear":
        if not shape or shape[-1] != args["in_features"]:
            return None
        return (*shape[:-1], args["out_features"])
    if kind.startswith("Conv"):
        return conv_output(kind, args, shape, settings)
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
    geometry = pool_geometry(choice)
    if geometry is not None:
        dims, kernel, stride, padding = geometry
        if len(shape) != dims + 1 or any(s + 2 * padding < kernel for s in shape[1:]):
            return None
        return (shape[0], *((s + 2 * padding - kernel) // stride + 1 for s in shape[1:]))
    # "AdaptiveAvgPool2d(7)" (and its "+Flatten" form)
    name, _, rest = choice.partition("(")
    dims, size = int(name[-2]), int(rest.split(")")[0])
    if len(shape) != dims + 1:
        return None
    pooled = (shape[0], *([size] * dims))
    return (math.prod(pooled),) if choice.endswith("+Flatten") else pooled


def _idle(choice: str, shape: Shape) -> bool:
    """A choice that would do nothing here: a flatten of what is flat already, an adaptive
    pool to the size the map has. The shape-keeping choice stands for it."""
    kind = shape_class(choice)
    if kind == "flatten":
        return len(shape) <= 1
    if kind.startswith("Adaptive") and not choice.endswith("+Flatten"):
        return _slot(choice, shape) == shape
    return False


def skeletons(
    spec: ArchSpec,
    names: Sequence[str],
    candidates: Sequence[Sequence[Any]],
    current: Sequence[Any],
    input_shape: Shape,
    limit: int,
    output_shape: Shape | None = None,
) -> list[tuple[Any, ...]] | None:
    """Combinations of the parameter-less slots' shape classes (one representative value
    each: the current one where it is of that class) and of every convolution's own
    stride, padding, dilation and output padding, whose shapes chain from `input_shape`
    to the last layer (and end as `output_shape`, the target's, when given).

    Cheapest first (fewest values moved from the current ones), at most `limit` and
    MAX_SKELETONS: every combination of the fewest moves, then those of one move more
    when they fit. An empty list when nothing chains; None when the spec is not a stack
    of layers this reasons about."""
    layers = stack_layers(spec)
    if layers is None:
        return None
    index = {n: i for i, n in enumerate(names)}
    slots = {m.path for m in layers if m.type == "Unknown"}
    if not slots <= set(index):
        return None  # a slot without a choice: leave it to the running search
    fixed = {hp.name: hp.value for hp in spec.hyperparameters}
    globals_ = [n for n in CONV_HIDDEN if n in index]
    cap = max(0, min(limit, MAX_SKELETONS))
    found: list[tuple[int, tuple[Any, ...]]] = []
    for setting in _product([candidates[index[n]] for n in globals_]):
        values = dict(zip(globals_, setting, strict=True))
        cost = sum(v != current[index[n]] for n, v in values.items())
        stack = _Stack(tuple(layers), names, candidates, current, fixed, values)
        for extra, choice in stack.cheapest(input_shape, output_shape, cap):
            combo = list(current)
            for name, value in (*values.items(), *choice.items()):
                combo[index[name]] = value
            found.append((cost + extra, tuple(combo)))
    found.sort(key=lambda pair: pair[0])  # stable: same-cost skeletons stay together
    return [combo for _, combo in found[:cap]]


def why_nothing_chains(
    spec: ArchSpec,
    names: Sequence[str],
    candidates: Sequence[Sequence[Any]],
    current: Sequence[Any],
    input_shape: Shape,
    output_shape: Shape | None = None,
) -> str | None:
    """Where a stack's shapes break for every choice of its hidden values, as a sentence
    ("stem.0 (Conv2d) cannot read [5, 16, 16]"); None when some choice chains, or when
    the spec is not a stack of layers this reasons about. Told in milliseconds, so an
    impossible search ends before any forward runs."""
    layers = stack_layers(spec)
    if layers is None or not {m.path for m in layers if m.type == "Unknown"} <= set(names):
        return None
    fixed = {hp.name: hp.value for hp in spec.hyperparameters}
    index = {n: i for i, n in enumerate(names)}
    globals_ = [n for n in CONV_HIDDEN if n in index]
    stacks = [
        _Stack(
            tuple(layers), names, candidates, current, fixed, dict(zip(globals_, s, strict=True))
        )
        for s in _product([candidates[index[n]] for n in globals_])
    ]
    if any(not math.isinf(stack.least(0, input_shape, output_shape)) for stack in stacks):
        return None
    stack, reach = stacks[0], {input_shape}
    for i, layer in enumerate(layers):
        after = {nxt for shape in reach for _, nxt, _ in stack.steps(i, shape)}
        if not after:
            seen = " or ".join(fmt(shape) for shape in sorted(reach)[:3])
            what = "a parameter-free layer" if layer.type == "Unknown" else layer.type
            return f"{layer.path} ({what}) cannot read {seen} per sample, with any setting"
        reach = after
    ends = " or ".join(fmt(shape) for shape in sorted(reach)[:3])
    return f"the stack ends as {ends} per sample, never as the target's {fmt(output_shape or ())}"


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


class _Stack:
    """The dynamic programme over (layer, shape) for one setting of the global values."""

    def __init__(
        self,
        layers: tuple[ModuleSpec, ...],
        names: Sequence[str],
        candidates: Sequence[Sequence[Any]],
        current: Sequence[Any],
        fixed: Mapping[str, Any],
        globals_: Mapping[str, Any],
    ):
        self.layers = layers
        self.index = {n: i for i, n in enumerate(names)}
        self.candidates, self.current = candidates, current
        self.fixed, self.globals = fixed, globals_
        # Slots right after another slot ("ReLU, MaxPool2d"): where stacks put their pools.
        self.runs = frozenset(
            b.path
            for a, b in zip(layers, layers[1:], strict=False)
            if a.type == b.type == "Unknown"
        )
        self.options = functools.cache(self._options)
        self.steps = functools.cache(self._steps)
        self.least = functools.cache(self._least)
        self.count = functools.cache(self._count)

    def _value(self, name: str) -> Any:
        return self.current[self.index[name]] if name in self.index else self.fixed.get(name)

    def _conv_axes(self, layer: ModuleSpec) -> list[tuple[str, str | None, tuple[Any, ...]]]:
        """(setting, its searched name or None, the values to try) for each setting."""
        own = {setting_of(n, layer.path): n for n in layer.hidden}
        axes: list[tuple[str, str | None, tuple[Any, ...]]] = []
        for setting, default in SETTING_DEFAULTS.items():
            name = own.get(setting)
            legacy = LEGACY_NAMES.get(setting)
            if name is not None and name in self.index:
                axes.append((setting, name, tuple(self.candidates[self.index[name]])))
            elif name is not None:
                value = self.fixed.get(name, default)
                axes.append((setting, None, (value,)))
            elif legacy is not None and legacy in layer.hidden:
                value = self.globals.get(legacy, self.fixed.get(legacy, default))
                axes.append((setting, None, (value,)))
            else:
                axes.append((setting, None, (default,)))
        return axes

    def _options(self, i: int) -> tuple[tuple[tuple[tuple[str, Any], ...], Any, int], ...]:
        """Layer i's ways, whatever the shape: (values set, the choice or the settings,
        moves from the current values). One way for a layer without hidden values."""
        layer = self.layers[i]
        if layer.type == "Unknown":
            now = str(self.current[self.index[layer.path]])
            reps = _representatives(self.candidates[self.index[layer.path]], now)
            return tuple(
                (((layer.path, c),), str(c), self._slot_cost(layer.path, str(c), now)) for c in reps
            )
        if not layer.type.startswith("Conv"):
            return (((), None, 0),)
        axes = self._conv_axes(layer)
        options = []
        for values in _product([axis[2] for axis in axes]):
            settings = {axis[0]: v for axis, v in zip(axes, values, strict=True)}
            if settings["output_padding"] and settings["stride"] == 1:
                continue  # never reaches a shape
            chosen = tuple(
                (axis[1], v) for axis, v in zip(axes, values, strict=True) if axis[1] is not None
            )
            cost = sum(v != self._value(name) for name, v in chosen)
            options.append((chosen, settings, cost))
        return tuple(options)

    def _steps(self, i: int, shape: Shape) -> tuple[Step, ...]:
        """Every way through layer i from `shape`: the values it sets, the shape after it,
        and how many values move from the current ones."""
        layer, out = self.layers[i], []
        if layer.type == "Unknown":
            now = shape_class(str(self.current[self.index[layer.path]]))
            for chosen, choice, cost in self.options(i):
                if shape_class(choice) != now and _idle(choice, shape):
                    continue
                nxt = _slot(choice, shape)
                if nxt is not None:
                    out.append((chosen, nxt, cost))
            return tuple(out)
        for chosen, settings, cost in self.options(i):
            nxt = _weighted(layer, shape, settings or {})
            if nxt is not None:
                out.append((chosen, nxt, cost))
        return tuple(out)

    def _slot_cost(self, path: str, choice: str, now: str) -> int:
        """1 for a choice of another shape class than the current one; none for a plain
        pool (kernel 2, stride 2) or not in a slot that follows another one, where stacks
        pool after their activation: the guess there (Dropout) says nothing about shape."""
        new, old = shape_class(choice), shape_class(now)
        if path in self.runs and {new, old} <= {"keep", "pool1d", "pool2d", "pool3d"}:
            return 0
        return int(new != old)

    def _least(self, i: int, shape: Shape, end: Shape | None) -> float:
        """The fewest moves from layer i at `shape` to a good end (inf: none)."""
        if i == len(self.layers):
            return 0 if end is None or shape == end else math.inf
        return min(
            (cost + self.least(i + 1, nxt, end) for _, nxt, cost in self.steps(i, shape)),
            default=math.inf,
        )

    def _count(self, i: int, shape: Shape, end: Shape | None, budget: int) -> int:
        """How many ways from layer i at `shape` reach a good end within `budget` moves."""
        if i == len(self.layers):
            return int(end is None or shape == end)
        return sum(
            self.count(i + 1, nxt, end, budget - cost)
            for _, nxt, cost in self.steps(i, shape)
            if cost + self.least(i + 1, nxt, end) <= budget
        )

    def cheapest(
        self, start: Shape, end: Shape | None, cap: int
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(moves, values set) of the chaining ways, the fewest moves first: every way of
        the least tier, then the next one when the total stays within `cap`."""
        least = self.least(0, start, end)
        if math.isinf(least) or cap <= 0:
            return
        budget = int(least)
        while budget < least + EXTRA_DEPARTURES and self.count(0, start, end, budget + 1) <= cap:
            budget += 1
        ways = list(self._walk(0, start, end, budget, 0, {}, [cap]))
        ways.sort(key=lambda way: way[0])
        yield from ways[:cap]

    def _walk(
        self,
        i: int,
        shape: Shape,
        end: Shape | None,
        budget: int,
        spent: int,
        chosen: dict[str, Any],
        left: list[int],
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        if left[0] <= 0:
            return
        if i == len(self.layers):
            left[0] -= 1
            yield spent, dict(chosen)
            return
        for values, nxt, cost in self.steps(i, shape):
            if spent + cost + self.least(i + 1, nxt, end) > budget:
                continue
            chosen.update(values)
            yield from self._walk(i + 1, nxt, end, budget, spent + cost, chosen, left)
            for name, _ in values:
                chosen.pop(name, None)
