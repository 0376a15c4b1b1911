"""The recovered architecture as plain, frozen data.

The spec is the single source of truth that every later step reads: `build` turns it
into an `nn.Module`, `codegen` into source code, `search` varies its free
hyperparameters, the dashboard renders it. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, get_args

from recovery_core.errors import HyperparameterError

# Where a hyperparameter's value came from. The strings appear in JSON reports: a contract.
Source = Literal["shape", "checkpoint metadata", "default", "search", "user"]
SOURCE_SHAPE: Final = "shape"  # fixed by a weight shape (key and shape recorded)
SOURCE_METADATA: Final = "checkpoint metadata"  # the checkpoint's hyper_parameters / __metadata__
SOURCE_DEFAULT: Final = "default"  # not determined: the usual default among the candidates
SOURCE_SEARCH: Final = "search"  # not determined: chosen by scoring candidates on data
SOURCE_USER: Final = "user"  # not determined: fixed by the person
SOURCES: tuple[Source, ...] = get_args(Source)
# The sources that fix a value: the weights' shapes and the checkpoint's own metadata.
DETERMINING_SOURCES: frozenset[Source] = frozenset({SOURCE_SHAPE, SOURCE_METADATA})

# How the top-level modules are called in the forward (see `Wiring`).
WiringKind = Literal["sequential", "encoder", "rnn", "seq2seq"]
WIRING_KINDS: tuple[WiringKind, ...] = get_args(WiringKind)

# How a kept tensor is registered on its module.
TensorKind = Literal["parameter", "buffer"]
# How a weight norm is stored: `parametrizations.weight.original0/1`, or `weight_g`/`weight_v`.
WeightNormStyle = Literal["parametrization", "hook"]
# A forward argument's element type: token ids or numbers.
InputDtype = Literal["long", "float"]

# `ArchSpec.value`'s default for "no default given" (None is a value a caller may want).
_NO_DEFAULT: Any = object()

# The hyperparameter that chooses among forward hypotheses (`ArchSpec.wirings`).
WIRING = "wiring"


def positional_length(shape: tuple[int, ...]) -> int:
    """How many positions a positional-encoding buffer covers: `[1, L, d]` holds them along
    dimension 1, `[L, 1, d]` and `[L, d]` along dimension 0 (docs/spec-conventions.md)."""
    return shape[1] if len(shape) == 3 and shape[0] == 1 else shape[0]


@dataclass(frozen=True)
class Hyperparameter:
    """One constructor or forward value, with where it came from."""

    name: str  # "d_model", "num_encoder_layers", "nhead", "batch_first", ...
    value: Any
    source: Source  # one of the SOURCE_* constants
    evidence: str  # a sentence a person can check: "encoder.layers.0.linear1.weight is (64, 32)"
    candidates: tuple[Any, ...] = ()  # valid values when not determined by the weights
    key: str | None = None  # the state-dict key that determined it
    shape: tuple[int, ...] | None = None  # that key's shape

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown hyperparameter source {self.source!r}; one of {SOURCES}")

    @property
    def determined(self) -> bool:
        """True when the weights or the checkpoint's metadata fix it: read from `source`,
        so the two can never disagree."""
        return self.source in DETERMINING_SOURCES

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "determined": self.determined,
            "source": self.source,
            "candidates": list(self.candidates),
            "evidence": self.evidence,
            "key": self.key,
            "shape": list(self.shape) if self.shape is not None else None,
        }


@dataclass(frozen=True)
class KeptTensor:
    """A tensor no known layer explains, kept as is on its owning module (name and shape
    exact, values from the checkpoint) so every key still loads."""

    name: str  # the attribute name on its module: "class_token", "relative_position_index"
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without "torch.": "float32", "int64", "bool"
    kind: TensorKind
    why: str  # why this kind: "an integer tensor: a buffer", "a layer scale: a parameter"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
            "why": self.why,
        }


@dataclass(frozen=True)
class WeightNorm:
    """A weight stored as magnitude and direction (torch's weight_norm)."""

    parameter: str  # the reparametrised tensor: "weight"
    dim: int | None  # the dimension kept by the magnitude; None: one magnitude for all
    style: WeightNormStyle

    def to_json(self) -> dict[str, Any]:
        return {"parameter": self.parameter, "dim": self.dim, "style": self.style}


@dataclass(frozen=True, slots=True)  # slots: 66,000 of them at 100,000 keys (~7 MiB less)
class ModuleSpec:
    """One module of the recovered tree.

    `type` is a torch.nn class name ("Linear", "TransformerEncoderLayer", "Sequential",
    "ModuleList") or one of ours: "Module" (a plain container), "PositionalEncoding"
    (a module holding a positional-encoding buffer), "Identity"-like parameter-less
    placeholders found through the pickle's `_metadata`.
    `args` are the constructor keyword arguments the weights determine; `hidden` names
    the hidden hyperparameters (looked up in `ArchSpec.hyperparameters`) the constructor
    also takes. Composite layers (TransformerEncoderLayer, Transformer, ...) list their
    submodules as children for display, but build constructs them in one call.
    """

    path: str  # "" for the root, else dotted: "encoder.layers.0.self_attn"
    type: str
    args: Mapping[str, Any] = field(default_factory=dict)
    hidden: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # state-dict keys this module owns directly (full names)
    children: tuple[ModuleSpec, ...] = ()
    evidence: str = ""
    alternatives: tuple[str, ...] = ()  # other types the shapes equally allow, e.g. ("RMSNorm",)
    note: str = ""  # why the type is uncertain, when alternatives is not empty
    kept: tuple[KeptTensor, ...] = ()  # tensors of its own no layer type explains
    weight_norm: WeightNorm | None = None  # how its weight is reparametrised, if it is
    # On the root only: (key, source) pairs stored as one tensor in the checkpoint (tied
    # weights, e.g. a decoder reusing its embedding table), to be shared again when rebuilt.
    ties: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1] if self.path else ""

    def walk(self) -> Iterator[ModuleSpec]:
        """This module and every descendant, depth first, in definition order."""
        # A stack, not nested generators: each module passed up through one generator per
        # level (66,000 modules, ~8 walks per inspect at 100,000 keys).
        pending = [self]
        while pending:
            module = pending.pop()
            yield module
            pending.extend(reversed(module.children))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "args": dict(self.args),
            "hidden": list(self.hidden),
            "keys": list(self.keys),
            "evidence": self.evidence,
            "alternatives": list(self.alternatives),
            "note": self.note,
            "kept": [k.to_json() for k in self.kept],
            "weight_norm": None if self.weight_norm is None else self.weight_norm.to_json(),
            "ties": [list(pair) for pair in self.ties],
        }


@dataclass(frozen=True)
class ModelInput:
    """One argument of the recognised forward."""

    name: str  # "src", "tgt", "x"
    dtype: InputDtype
    shape: tuple[int, ...]  # example shape with batch first; -1 never appears


@dataclass(frozen=True)
class Wiring:
    """One hypothesis of how the top-level modules are called in the forward.

    kind: "sequential" (a stack called in order), "encoder" (a sequence model whose core
    is a Transformer encoder stack), "rnn" (a sequence model whose core is an RNN),
    "seq2seq" (an encoder-decoder taking (src, tgt)).
    roles: role name -> module path, e.g. {"src_embedding": "proj", "head": "out"}; the
    input adapters keep the role names "embedding" / "src_embedding" / "tgt_embedding"
    whether they are an Embedding or a Linear, and one module may hold both
    src_embedding and tgt_embedding (shared).
    name: unique among an ArchSpec's `wirings`; the value of the "wiring" choice.
    reason: why it is ranked where it is (construction order, names, widths).
    """

    kind: WiringKind
    roles: Mapping[str, str]
    inputs: tuple[ModelInput, ...]
    description: str
    name: str = ""
    reason: str = ""
    hidden: tuple[str, ...] = ()  # forward-only choices this forward reads ("reduce", ...)
    # Modules this forward reads as another type than inferred: (as inferred, as read).
    retyped: tuple[tuple[ModuleSpec, ModuleSpec], ...] = ()

    def steps(self) -> tuple[str, ...]:
        """The forward's steps after its inputs, one per line, for people (the diagram)."""
        parts = [part.strip() for part in self.description.split(" → ") if part.strip()]
        if parts and parts[0].startswith("(") and parts[0].endswith(")"):
            parts = parts[1:]  # the inputs, e.g. "(src, tgt)": `inputs` names them
        return tuple(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "roles": dict(self.roles),
            "inputs": [
                {"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in self.inputs
            ],
            "description": self.description,
            "reason": self.reason,
            "retyped": {new.path: new.type for _, new in self.retyped},
        }


def with_forward_types(root: ModuleSpec, before: Wiring | None, after: Wiring | None) -> ModuleSpec:
    """The tree with `before`'s retyped modules back as inferred and `after`'s as it reads them."""
    swaps = [(read, inferred) for inferred, read in (before.retyped if before else ())]
    swaps += list(after.retyped) if after else []
    for old, new in swaps:
        root = _replace_module(root, old.path, new)
    return root


def _replace_module(node: ModuleSpec, path: str, new: ModuleSpec) -> ModuleSpec:
    if node.path == path:
        return new
    prefix = f"{node.path}." if node.path else ""
    if not path.startswith(prefix):
        return node
    return replace(node, children=tuple(_replace_module(c, path, new) for c in node.children))


@dataclass(frozen=True)
class ArchSpec:
    root: ModuleSpec
    hyperparameters: tuple[Hyperparameter, ...]
    wiring: Wiring | None
    unexplained_keys: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # anything a person should know: ambiguities, guesses
    wirings: tuple[Wiring, ...] = ()  # every forward hypothesis that fits, best-ranked first

    def modules(self) -> Iterator[ModuleSpec]:
        return self.root.walk()

    def module(self, path: str) -> ModuleSpec:
        for m in self.modules():
            if m.path == path:
                return m
        raise KeyError(path)

    def hyperparameter(self, name: str) -> Hyperparameter:
        for hp in self.hyperparameters:
            if hp.name == name:
                return hp
        raise KeyError(name)

    def value(self, name: str, default: Any = _NO_DEFAULT) -> Any:
        """The value of the hyperparameter `name`; `default` when there is none by that name
        and a default was given, else HyperparameterError naming the known ones."""
        for hp in self.hyperparameters:
            if hp.name == name:
                return hp.value
        if default is not _NO_DEFAULT:
            return default
        known = ", ".join(sorted(hp.name for hp in self.hyperparameters)) or "none"
        raise HyperparameterError(f"there is no hyperparameter {name!r}; known: {known}")

    @property
    def free(self) -> tuple[Hyperparameter, ...]:
        """Hyperparameters the weights do not determine."""
        return tuple(hp for hp in self.hyperparameters if not hp.determined)

    def with_values(self, values: Mapping[str, Any], source: Source = SOURCE_USER) -> ArchSpec:
        """A copy with free hyperparameters set. Determined ones cannot be changed."""
        if source in DETERMINING_SOURCES:
            raise ValueError(
                f"a value set on a spec is not determined; {source!r} is for inference"
            )
        known = {hp.name: hp for hp in self.hyperparameters}
        for name, value in values.items():
            if name not in known:
                raise HyperparameterError(
                    f"there is no hyperparameter {name!r}; known: {', '.join(sorted(known))}"
                )
            hp = known[name]
            if hp.determined and value != hp.value:
                raise HyperparameterError(
                    f"{name} is fixed at {hp.value!r} by {hp.evidence}; it cannot be set to {value!r}"
                )
            if not hp.determined and hp.candidates and value not in hp.candidates:
                raise HyperparameterError(
                    f"{value!r} is not a valid {name}; choose one of {list(hp.candidates)}"
                )
        hps = tuple(
            replace(hp, value=values[hp.name], source=source)
            if hp.name in values and not hp.determined
            else hp
            for hp in self.hyperparameters
        )
        wiring, root = self.wiring, self.root
        if WIRING in values:
            wiring = next(w for w in self.wirings if w.name == values[WIRING])
            root = with_forward_types(root, self.wiring, wiring)
        return replace(self, hyperparameters=hps, wiring=wiring, root=root)

    def wiring_named(self, name: str) -> Wiring:
        for wiring in self.wirings:
            if wiring.name == name:
                return wiring
        raise HyperparameterError(
            f"there is no forward named {name!r}; the forwards that fit these weights are: "
            + (", ".join(repr(w.name) for w in self.wirings) or "none")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "modules": [m.to_json() for m in self.modules() if m.keys or m.children or m.path],
            "hyperparameters": [hp.to_json() for hp in self.hyperparameters],
            "wiring": None
            if self.wiring is None
            else self.wiring.to_json() | {"candidates": [w.to_json() for w in self.wirings]},
            "unexplained_keys": list(self.unexplained_keys),
            "notes": list(self.notes),
        }
