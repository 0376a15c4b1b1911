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
- which hidden values a built module can switch in place (`retunes`, `retune`: search);
- which model-wide hidden values it reads (`hidden`), and what its shapes fix
  (`determines`: d_model, layer counts, vocabulary sizes, ...).

A family also declares the hidden values it owns (`Family.settings`: candidates,
default, the checkpoint metadata entries that carry one, and what it means to a
person); a value several families read is declared once, by the one it belongs to
(nhead by attention, layer_norm_eps by the affine norms). The forward's own values
(reduce, causal_mask, ...) are declared next to the wirings (infer/wiring.py).

The registry (infer/registry.py) lists the families in the order their detectors are
tried; everything else (codegen, wiring, the search, the dashboard) reads the registry.
Nothing here imports torch: `retune` receives the built module and sets attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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
class Setting:
    """One hidden value: a choice the weights do not show.

    candidates / default: None when worked out from the model (nhead from the widths it
    must divide). metadata_names: entries of a checkpoint's `hyper_parameters` that carry
    it. reads: how such an entry is read ("fraction": a number in [0, 1); "word": any
    case; "choice": one of the candidates as it is). per_layer: each module has its own,
    named by its path ("blocks.0.stride"), and `name` is the last part. label: its name
    for people.
    """

    name: str
    meaning: str  # for people: what the value changes, in a sentence
    candidates: tuple[Any, ...] | None = None
    default: Any = None
    metadata_names: tuple[str, ...] = ()
    reads: Literal["choice", "fraction", "word"] = "choice"
    per_layer: bool = False
    # For people, a few words ("Attention heads"); the dashboard writes the code name
    # after it. A per-layer one is followed by "of <path>".
    label: str = ""


class Fixes(Protocol):
    """Where a layer type writes the values its shapes fix (infer/hyperparameters.py).

    Keys are relative to the module (`key` gives the full one); `add` with no evidence
    says "<key> is <shape>"."""

    @property
    def path(self) -> str: ...

    @property
    def shapes(self) -> Shapes: ...  # the checkpoint's, by full key

    @property
    def roles(self) -> Mapping[str, str]: ...  # the wiring's role -> module path

    def key(self, relative: str) -> str: ...

    def add(
        self, name: str, value: Any, relative_key: str, evidence: str | None = None
    ) -> None: ...


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
    # Sequence-forward roles besides adapters and heads: "final_norm", "rnn" (the core).
    roles: frozenset[str] = frozenset()
    hidden: tuple[str, ...] = ()  # model-wide hidden values it reads (declared Settings)
    determines: Callable[[Fixes, Args], None] | None = None  # what its shapes fix
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
    settings: tuple[Setting, ...] = ()  # the hidden values this family owns


def dims_of(type_name: str) -> int:
    """1, 2 or 3 for "Conv2d", "BatchNorm3d", ...; 0 when the name carries none."""
    return int(type_name[-2]) if type_name.endswith("d") and type_name[-2:-1] in "123" else 0


def nothing(module: Any, values: Mapping[str, Any]) -> None:
    """A retune for types that hold no switchable value themselves."""
