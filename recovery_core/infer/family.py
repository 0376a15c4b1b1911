"""A layer family: what the whole pipeline knows about one kind of layer, in one place.

A `Family` is one detector (a key group in, a `Detection` out) and the layer types it
can name. Each `LayerType` says, for one torch class:

- how it is built: its constructor's own names for our hidden values (`arguments`),
  one call to `nn.<name>` or to a class the generated file defines (`class_source`);
- its buffers (the rest of its keys are parameters);
- how a person would say what it does (`meaning`);
- how a stack called in order passes data through it (`stack`, `example`: wiring);
- how to read its constructor arguments from its own key shapes (`rebuild`: a person or
  a forward choosing it among a module's alternatives, infer/retype.py);
- which other types store the very same keys (`same_keys_as`): inference offers it as a
  runner-up wherever one of those wins, so the data can decide;
- which hidden values a built module can switch in place (`retunes`, `retune`: search).

The registry (infer/registry.py) lists the families in the order their detectors are
tried; everything else (codegen, wiring, the search, the dashboard) reads the registry.
Nothing here imports torch: `retune` receives the built module and sets attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from recovery_core.infer.detection import Detector
from recovery_core.model.spec import ModelInput

Shapes = Mapping[str, tuple[int, ...]]
Args = Mapping[str, Any]
# (constructor args, hidden names) for a module's own keys (relative names), or None
# when this type cannot hold them.
Rebuild = Callable[[Shapes], "tuple[dict[str, Any], tuple[str, ...]] | None"]

# Example inputs: two samples, short sequences, small feature maps.
EXAMPLE_BATCH = 2
EXAMPLE_SEQUENCE = 7  # short, and cut to the positional table's length
EXAMPLE_TARGET_SEQUENCE = 5
EXAMPLE_SPATIAL = 8


@dataclass(frozen=True)
class StackStep:
    """How one module of a stack called in order reads and writes the data.

    reads: "tokens" (integer ids; only the first module), "vector" (features, flattening a
    feature map before it when a Flatten may sit between), "map" (channels of a feature
    map), or "same" (either, and the size stays: norms, activations with weights).
    width_in / width_out: features or channels; None where any width goes (PReLU's one
    shared slope).
    map_when_first: a "same" module that starts a stack reads a feature map.
    """

    reads: Literal["tokens", "vector", "map", "same"]
    width_in: int | None
    width_out: int | None
    map_when_first: bool = False


@dataclass(frozen=True)
class LayerType:
    name: str  # the torch.nn class name, or ours ("PositionalEncoding", "HFConv1D")
    meaning: str  # for people: what the layer does, in a sentence
    # How codegen builds it: one call with its args ("call"), or an emitter of its own.
    build: Literal["call", "stack", "positional"] = "call"
    class_source: str = ""  # the class the generated file defines when torch.nn has none
    arguments: Mapping[str, str] | None = None  # our hidden name -> the constructor's name
    buffers: frozenset[str] = frozenset()  # keys torch registers as buffers
    all_buffers: bool = False  # every key is a buffer
    stack: Callable[[Args], StackStep] | None = None  # None: a stack cannot call it
    example: Callable[[Args, int | None], ModelInput] | None = None  # input when first
    rebuild: Rebuild | None = None
    same_keys_as: tuple[str, ...] = ()
    retunes: frozenset[str] = frozenset()  # hidden names `retune` switches in place
    retune: Callable[[Any, Mapping[str, Any]], None] | None = None
    roles: frozenset[str] = frozenset()  # sequence-forward roles besides adapters and heads
    opened_for_training: bool = False  # offered part by part when choosing what trains

    @property
    def renames(self) -> Mapping[str, str]:
        return self.arguments or {}


@dataclass(frozen=True)
class Family:
    name: str
    detect: Detector
    types: tuple[LayerType, ...]
    # Claims its whole subtree: its parts are exactly what torch builds, and what they
    # would determine the family already says.
    composite: bool = False


def dims_of(type_name: str) -> int:
    """1, 2 or 3 for "Conv2d", "BatchNorm3d", ...; 0 when the name carries none."""
    return int(type_name[-2]) if type_name.endswith("d") and type_name[-2:-1] in "123" else 0


def nothing(module: Any, values: Mapping[str, Any]) -> None:
    """A retune for types that hold no switchable value themselves."""
