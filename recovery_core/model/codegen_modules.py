"""The constructor half of a generated model: Python expressions building each module.

`ModuleWriter.expr(m)` writes `nn.Linear(in_features=4, ...)`, a container of its
children, a Transformer stack, a positional table or a parameter-free slot; the names
in it come from `codegen_names` (attributes, keywords, arguments) and every value is a
literal. What the file then needs (helpers, positional classes) is noted in the shared
`RenderState`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from recovery_core.errors import BuildError
from recovery_core.infer.families.conv import GROUPS, SETTINGS, groups_name, setting_of
from recovery_core.infer.registry import ARGUMENT_NAMES, CLASS_SOURCES, TYPES
from recovery_core.infer.unknown import UNKNOWN_CHOICES
from recovery_core.model import names
from recovery_core.model.codegen_layout import NESTED, bracketed, call
from recovery_core.model.codegen_names import (
    Code,
    Name,
    attribute,
    dtype,
    identifier,
    keyword_argument,
    literal,
    registrable,
    registrable_key,
)
from recovery_core.model.spec import ArchSpec, ModuleSpec

# Parameter-less modules a placeholder ("Unknown") may stand for, and which may appear
# as types of their own: the choices inference offers for them.
PARAMETER_FREE = UNKNOWN_CHOICES

# Every layer type comes from its family (infer/registry.py): built by one call to
# `nn.<type>` (or to the class the file defines when torch.nn has none), with the
# constructor's own names for our hidden values; or by an emitter below (the encoder and
# decoder stacks, the positional table).
RENAMED = ARGUMENT_NAMES
FAMILY_CLASSES = CLASS_SOURCES
LEAF_TYPES = frozenset(
    {t.name for t in TYPES.values() if t.build == "call" and not t.class_source}
    | set(PARAMETER_FREE)
)
STACKS = frozenset(t.name for t in TYPES.values() if t.build == "stack")
CONTAINERS = frozenset({"Sequential", "ModuleList", "Module"})
SUPPORTED = frozenset(TYPES) | LEAF_TYPES | CONTAINERS | {"Unknown"}


@dataclass(frozen=True)
class HiddenArgument:
    """One keyword argument of RecoveredModel: a hyperparameter the weights do not fix."""

    name: str  # the hyperparameter's name in the spec: "nhead", "net.1"
    argument: Name  # its keyword argument in RecoveredModel: "nhead", "net_1"
    value: Any
    comment: str


class RenderState:
    """What the parts of one rendering share: the spec, the keyword arguments, and the
    helpers and positional classes the file turns out to need."""

    def __init__(self, spec: ArchSpec):
        self.spec = spec
        self.wiring = spec.wiring
        self.helpers: set[str] = set()  # helper definitions the file needs
        self.pe_buffers: set[tuple[str, bool]] = set()  # (buffer name, persistent)
        self.hidden: dict[str, HiddenArgument] = {}
        self.extra_init: list[str] = []  # forward-only settings, set by the wiring

    def arg(self, name: str) -> Name:
        return self.hidden[name].argument

    def has_module(self, path: str) -> bool:
        return any(m.path == path for m in self.spec.modules())


# ---------------------------------------------------------------- tree helpers


def child(m: ModuleSpec, name: str) -> ModuleSpec | None:
    path = f"{m.path}.{name}" if m.path else name
    return next((c for c in m.children if c.path == path), None)


def layer_of(m: ModuleSpec) -> ModuleSpec:
    """The encoder or decoder layer inside a Transformer stack."""
    want = (
        "TransformerEncoderLayer" if m.type == "TransformerEncoder" else "TransformerDecoderLayer"
    )
    for d in m.walk():
        if d.type == want:
            return d
    raise BuildError(
        f"{m.path or '(root)'} is a {m.type} but no {want} was found inside it; "
        "the checkpoint does not show its layers."
    )


def built_modules(m: ModuleSpec) -> Iterator[ModuleSpec]:
    """Modules that are constructed (composites hide their display-only children)."""
    yield m
    if m.type in CONTAINERS:
        for c in m.children:
            yield from built_modules(c)
    elif m.type in STACKS:
        norm = child(m, "norm")
        if norm is not None:
            yield norm


# ---------------------------------------------------------------- constructor expressions


class ModuleWriter:
    """Python expressions constructing the modules of a spec."""

    def __init__(self, state: RenderState):
        self.state = state
        self.helpers = state.helpers

    def expr(self, m: ModuleSpec, room: int = NESTED) -> str:
        """Python code constructing module m, on one line if it fits in `room` columns."""
        if m.type in LEAF_TYPES or m.type in FAMILY_CLASSES:
            return self._leaf(m, room)
        if m.type == "Unknown":
            self.helpers.add("parameter_free")
            return f"parameter_free_layer({self.state.arg(m.hidden[0] if m.hidden else m.path)})"
        if m.type == "PositionalEncoding":
            return self._positional(m, room)
        if m.type in STACKS:
            return call(f"nn.{m.type}", self.stack_words(m), room)
        return self._container(m, room)

    def callee(self, m: ModuleSpec) -> str:
        """`nn.Linear`, or the class the file defines for a family torch.nn lacks."""
        if m.type in FAMILY_CLASSES:
            self.helpers.add(m.type)
            return m.type
        return f"nn.{m.type}"

    def _leaf(self, m: ModuleSpec, room: int) -> str:
        code = call(self.callee(m), self.keywords(m), room - 4 * (m.weight_norm is not None))
        return self.with_weight_norm(m, code, room)

    def _positional(self, m: ModuleSpec, room: int) -> str:
        buffer = identifier(str(m.args.get("buffer", "pe")), "the buffer name")
        persistent = bool(m.args.get("persistent", True))
        self.state.pe_buffers.add((buffer, persistent))
        shape = tuple(m.args.get("shape", ()))
        if len(shape) not in (2, 3):
            raise BuildError(
                f"the positional encoding {m.path} has shape {shape}; "
                "only [L, d], [1, L, d] and [L, 1, d] tables can be added to a sequence."
            )
        self.helpers.add("positions")
        return call(self.pe_class(buffer, persistent), [f"shape={literal(shape)}"], room)

    def pe_class(self, buffer: str, persistent: bool) -> str:
        kinds = {
            (str(m.args.get("buffer", "pe")), bool(m.args.get("persistent", True)))
            for m in self.state.spec.modules()
            if m.type == "PositionalEncoding"
        }
        if len(kinds) == 1:
            return "PositionalEncoding"
        name = "PositionalEncoding" if buffer == "pe" else f"PositionalEncoding_{buffer}"
        return name if persistent else f"{name}_not_saved"

    # -- a layer's keywords

    def keywords(self, m: ModuleSpec) -> list[str]:
        args = dict(m.args)
        groups = groups_name(m.path)
        if groups in m.hidden and groups in self.state.hidden:
            # Free groups: the weight stores in_channels / groups, so in_channels follows it.
            per_group = args["in_channels"] // args[GROUPS]
            args["in_channels"] = Code(f"{per_group} * {self.state.arg(groups)}")
            args[GROUPS] = Code(self.state.arg(groups))
        words = [
            keyword_argument(identifier(k, "the constructor argument"), literal(v))
            for k, v in args.items()
        ]
        renamed = RENAMED.get(m.type, {})
        for name in m.hidden:
            if name in self.state.hidden and name != groups and setting_of(name, m.path) is None:
                own = identifier(renamed.get(name, name), "the constructor argument")
                words.append(keyword_argument(own, self._hidden_value(m, name)))
        if m.type.startswith("Conv"):
            words += self._conv_settings(m)
        return words

    def _hidden_value(self, m: ModuleSpec, name: str) -> str:
        argument = self.state.arg(name)
        if name == "conv_padding" or setting_of(name, m.path) == "padding":
            self.helpers.add("conv_padding")
            kernel = literal(tuple(m.args.get("kernel_size", ())))
            dilation = self._conv_dilation(m)
            return f"padding_for({kernel}, {argument}{f', {dilation}' if dilation else ''})"
        return argument

    def _conv_dilation(self, m: ModuleSpec) -> str | None:
        """The argument holding a convolution's dilation ("same" padding scales with it)."""
        name = next((n for n in m.hidden if setting_of(n, m.path) == "dilation"), None)
        return self.state.arg(name) if name is not None and name in self.state.hidden else None

    def _conv_settings(self, m: ModuleSpec) -> list[str]:
        """`stride=blocks_0_stride, padding=padding_for(...)`: a convolution's own settings,
        in constructor order, each a keyword argument of RecoveredModel."""
        settings = {setting_of(n, m.path): n for n in m.hidden if n in self.state.hidden}
        return [f"{s}={self._hidden_value(m, settings[s])}" for s in SETTINGS if settings.get(s)]

    def with_weight_norm(self, m: ModuleSpec, code: str, room: int) -> str:
        """`weight_norm(nn.Conv1d(...), ...)` when the checkpoint stores g and v."""
        norm = m.weight_norm
        if norm is None:
            return code
        wrap = (
            "nn.utils.parametrizations.weight_norm"
            if norm.style == "parametrization"
            else "nn.utils.weight_norm"
        )
        words = [code, f"name={literal(norm.parameter)}", f"dim={literal(norm.dim)}"]
        return call(wrap, words, room)

    # -- tensors no layer explains, and tied weights

    def kept(self, m: ModuleSpec, owner: str, room: int = NESTED) -> str:
        """`kept(owner, [...])`: registers the tensors no layer type explains."""
        self.helpers.add("kept")
        items = []
        for t in m.kept:
            where = f"{m.path}.{t.name}" if m.path else t.name
            torch_dtype = dtype(t.dtype, f"{t.name} at {m.path or '(root)'}")
            items.append(
                f"({literal(t.kind)}, {registrable(t.name, where)}, "
                f"{literal(tuple(t.shape))}, {torch_dtype})"
            )
        return call("kept", [owner, bracketed(items)], room)

    def ties(self, root: ModuleSpec, room: int) -> list[str]:
        """`tie(self, key, source)` for weights the checkpoint stores once for two keys."""
        if not root.ties:
            return []
        self.helpers.add("tie")
        return [
            call("tie", ["self", registrable_key(key), registrable_key(source)], room)
            for key, source in root.ties
        ]

    # -- containers and stacks

    def _container(self, m: ModuleSpec, room: int = NESTED) -> str:
        inner = room - 4 if m.kept else room
        if m.type == "Module":
            self.helpers.add("container")
            code = call("Container", self._named_children(m), inner)
        elif m.type == "Sequential":
            code = call("nn.Sequential", self.indexed_children(m), inner)
        else:
            code = call("nn.ModuleList", [bracketed(self.indexed_children(m))], inner)
        return self.kept(m, code, room) if m.kept else code

    def _named_children(self, m: ModuleSpec) -> list[str]:
        """`name=expr` for plain names, `**{"self": expr}` for the rest (Container's)."""
        words = []
        for c in m.children:
            plain = attribute(c.name)
            if plain is not None:
                words.append(keyword_argument(plain, self.expr(c)))
            else:
                self.helpers.add("register")
                words.append(f"**{{{registrable(c.name, c.path)}: {self.expr(c)}}}")
        return words

    def indexed_children(self, m: ModuleSpec) -> list[str]:
        """Children of a Sequential/ModuleList at their indices; holes become Identity."""
        by_index: dict[int, ModuleSpec] = {}
        for c in m.children:
            if not names.is_index(c.name):
                raise BuildError(
                    f"{m.path or '(root)'} is a {m.type} but its child {c.name!r} is not "
                    "an index; it cannot be rebuilt as one."
                )
            by_index[int(c.name)] = c
        count = max(by_index, default=-1) + 1
        return [self.expr(by_index[i]) if i in by_index else "nn.Identity()" for i in range(count)]

    def stack_words(self, m: ModuleSpec) -> list[str]:
        """The arguments of nn.TransformerEncoder / nn.TransformerDecoder."""
        layer = layer_of(m)
        words = [self.expr(layer), f"num_layers={literal(m.args['num_layers'])}"]
        words.append(f"norm={self._final_norm(m, layer)}")
        if m.type == "TransformerEncoder":
            # The nested-tensor fast path only matters with padding masks, which we never pass.
            words.append("enable_nested_tensor=False")
        return words

    def _final_norm(self, m: ModuleSpec, layer: ModuleSpec) -> str:
        norm = child(m, "norm")
        if norm is not None:
            return self.expr(norm)
        if not m.args.get("has_norm"):
            return "None"
        words = [f"normalized_shape={literal((layer.args['d_model'],))}"]
        words.append(f"bias={literal(layer.args.get('bias', True))}")
        if "layer_norm_eps" in self.state.hidden:
            words.append(f"eps={self.state.arg('layer_norm_eps')}")
        return call("nn.LayerNorm", words)
