"""`ArchSpec` -> the readable Python source of a standalone `RecoveredModel`.

The generated file imports only torch, math and typing. Its no-argument constructor
builds the inferred structure with the checkpoint's attribute names (so a strict load
works); every hidden hyperparameter is a keyword argument whose default is the chosen
value, with a comment saying the weights did not determine it. When a forward wiring was
recognised the class has that forward, written so `torch.jit.script` accepts it.

`build.build_model` executes this same source, so the generated file and the built
module cannot drift apart. Names from the checkpoint end up in code, so every one is
checked to be a plain identifier (or an index) and every value is a literal; comments
are flattened to one line. Nothing the checkpoint says can become code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from recovery_core import forwards, names
from recovery_core.errors import BuildError
from recovery_core.infer.conv import GROUPS, SETTINGS, groups_name, setting_of
from recovery_core.infer.registry import ARGUMENT_NAMES, CLASS_SOURCES, TYPES
from recovery_core.infer.unknown import UNKNOWN_CHOICES
from recovery_core.spec import (
    SOURCE_DEFAULT,
    SOURCE_METADATA,
    SOURCE_SEARCH,
    SOURCE_USER,
    ArchSpec,
    ModuleSpec,
    Source,
)

# Attributes of RecoveredModel read only by its forward: the search may change them on a
# built model instead of building a new one.
FORWARD_ONLY = frozenset({"scale_embedding", "causal_mask", "reduce", "pos_dim"})

# Parameter-less modules a placeholder ("Unknown") may stand for, and which may appear
# as types of their own: the choices inference offers for them.
PARAMETER_FREE = UNKNOWN_CHOICES

# Every layer type comes from its family (infer/registry.py): built by one call to
# `nn.<type>` (or to the class the file defines when torch.nn has none), with the
# constructor's own names for our hidden values; or by an emitter below (the encoder and
# decoder stacks, the positional table).
_RENAMED = ARGUMENT_NAMES
FAMILY_CLASSES = CLASS_SOURCES
_LEAF_TYPES = frozenset(
    {t.name for t in TYPES.values() if t.build == "call" and not t.class_source}
    | set(PARAMETER_FREE)
)
_STACKS = frozenset(t.name for t in TYPES.values() if t.build == "stack")
_CONTAINERS = frozenset({"Sequential", "ModuleList", "Module"})
_SUPPORTED = frozenset(TYPES) | _LEAF_TYPES | _CONTAINERS | {"Unknown"}

# Names our RecoveredModel uses itself, plus nn.Module's own API: a checkpoint child
# with one of these names cannot become an attribute.
_RESERVED = frozenset(
    {"scale_embedding", "causal_mask", "batch_first", "d_model", "reduce", "pos_dim"}
    | {"forward", "training"}
    | {name for name in dir(object) if not name.startswith("__")}
    | {
        "add_module",
        "apply",
        "buffers",
        "children",
        "cpu",
        "cuda",
        "double",
        "eval",
        "float",
        "half",
        "load_state_dict",
        "modules",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_buffer",
        "register_module",
        "register_parameter",
        "requires_grad_",
        "state_dict",
        "to",
        "train",
        "type",
        "zero_grad",
    }
)

_LINE = 100  # ruff's line length
_NESTED = 76  # room for a call nested a few levels deep in __init__


@dataclass(frozen=True)
class HiddenArgument:
    """One keyword argument of RecoveredModel: a hyperparameter the weights do not fix."""

    name: str  # the hyperparameter's name in the spec: "nhead", "net.1"
    argument: str  # its keyword argument in RecoveredModel: "nhead", "net_1"
    value: Any
    comment: str


def generate_code(spec: ArchSpec) -> str:
    """The whole standalone file defining `RecoveredModel` for this spec."""
    return _Renderer(spec).render()


def hidden_arguments(spec: ArchSpec) -> tuple[HiddenArgument, ...]:
    """The hyperparameters that change the generated model, in constructor order."""
    return tuple(_Renderer(spec).hidden.values())


# ---------------------------------------------------------------- checks on names and values


def _identifier(name: str, what: str) -> str:
    if not names.is_identifier(name):
        raise BuildError(
            f"{what} {name!r} is not a valid Python name, so no module can carry it; "
            "rename the keys before rebuilding."
        )
    return name


class _Code(str):
    """Code we wrote ourselves (an expression over keyword arguments), never from a file."""


def _literal(value: Any) -> str:
    """A Python literal for a plain value; anything else is refused."""
    if isinstance(value, _Code):
        return str(value)
    if isinstance(value, str) and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'  # the common case, in the quotes ruff format would choose
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise BuildError(f"the value {value!r} cannot be written into a model definition.")
        return repr(value)
    if isinstance(value, tuple | list):
        items = [_literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise BuildError(
        f"the value {value!r} ({type(value).__name__}) cannot be written into a model "
        "definition; only numbers, strings, booleans and tuples can."
    )


def _annotation(value: Any) -> str:
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind.__name__
    return "Any"


def _one_line(text: str) -> str:
    """Checkpoint text flattened so it can only ever be a comment."""
    return re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text)).strip()


def _argument_name(name: str) -> str:
    """A keyword-argument name for a hyperparameter name such as "net.1"."""
    return names.argument_name(name)


def _registrable_key(key: str) -> str:
    """A whole state-dict key as a string literal, each of its parts checked."""
    for part in key.split("."):
        _registrable(part, key)
    return _literal(key)


def _registrable(name: str, where: str) -> str:
    """A checkpoint name for a child, parameter or buffer, as a string literal."""
    if not names.is_registrable(name):
        raise BuildError(
            f"the name {name!r} at {where or '(root)'} is nn.Module's own bookkeeping "
            "(or empty, or unprintable), so no working model can hold it; rename the keys."
        )
    return _literal(name)


def _access(path: str) -> str:
    """`self.a.b[0]` for the module path "a.b.0"."""
    code = "self"
    for part in path.split("."):
        if names.is_index(part):
            code += f"[{part}]"
        elif names.is_plain_attribute(part) and part not in _RESERVED:
            code += "." + part
        elif names.shadows_module_attribute(part):
            raise BuildError(
                f"a forward cannot reach {path}: nn.Module itself answers to the name "
                f"{part!r}; the model loads without a forward, or rename the keys."
            )
        else:  # `self`, `class`, `²`, `a b`: reached by name, as TorchScript allows
            code = f"getattr({code}, {_registrable(part, path)})"
    return code


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _call(callee: str, arguments: list[str], room: int = _NESTED) -> str:
    """A call on one line when it fits in `room` columns, else one argument per line."""
    one_line = f"{callee}({', '.join(arguments)})"
    if len(one_line) <= room and "\n" not in one_line:
        return one_line
    body = "\n".join(_indent(a, 4) + "," for a in arguments)
    return f"{callee}(\n{body}\n)"


def _list(items: list[str]) -> str:
    one_line = "[" + ", ".join(items) + "]"
    if len(one_line) <= _NESTED and "\n" not in one_line:
        return one_line
    return "[\n" + "\n".join(_indent(i, 4) + "," for i in items) + "\n]"


# ---------------------------------------------------------------- the renderer


class _Renderer:
    def __init__(self, spec: ArchSpec):
        self.spec = spec
        self.wiring = spec.wiring
        self.helpers: set[str] = set()  # helper definitions the file needs
        self.pe_buffers: set[tuple[str, bool]] = set()  # (buffer name, persistent)
        self.hidden: dict[str, HiddenArgument] = {}
        self.extra_init: list[str] = []  # forward-only settings, set by the wiring
        for m in spec.modules():
            if m.type not in _SUPPORTED:
                raise BuildError(
                    f"module {m.path or '(root)'} has type {m.type!r}, which cannot be rebuilt; "
                    f"supported types are {', '.join(sorted(_SUPPORTED))}."
                )
        self._collect_hidden(spec.root)
        for name in self._wiring_hidden():
            self._add_hidden(name)

    # -- which hyperparameters become keyword arguments

    def _built_modules(self, m: ModuleSpec):
        """Modules that are constructed (composites hide their display-only children)."""
        yield m
        if m.type in _CONTAINERS:
            for child in m.children:
                yield from self._built_modules(child)
        elif m.type in _STACKS:
            norm = self._child(m, "norm")
            if norm is not None:
                yield norm

    def _collect_hidden(self, root: ModuleSpec) -> None:
        for m in self._built_modules(root):
            names = list(m.hidden)
            if m.type in _STACKS:
                names = list(self._layer_of(m).hidden)
                if self._child(m, "norm") is None and m.args.get("has_norm"):
                    names.append("layer_norm_eps")
            if m.type == "Unknown" and not names:
                names = [m.path]
            for name in names:
                if name in self._hp_names() or m.type == "Unknown":
                    self._add_hidden(name)

    def _wiring_hidden(self) -> tuple[str, ...]:
        return forwards.wiring_hidden(self)

    def _hp_names(self) -> set[str]:
        return {hp.name for hp in self.spec.hyperparameters}

    def _add_hidden(self, name: str) -> None:
        if name in self.hidden:
            return
        try:
            hp = self.spec.hyperparameter(name)
        except KeyError:
            hp = None
        value: Any
        source: Source
        candidates: tuple[Any, ...]
        if hp is None:
            value, source, candidates = self._convention_default(name), SOURCE_DEFAULT, ()
        else:
            value, source, candidates = hp.value, hp.source, hp.candidates
        if name == "scale_embedding" or name == "causal_mask" or name == "batch_first":
            candidates = candidates or (False, True)
        argument = _argument_name(name)
        if argument in {h.argument for h in self.hidden.values()}:
            argument += f"_{len(self.hidden)}"
        choices = ", ".join(_one_line(str(c)) for c in candidates)
        if source == SOURCE_SEARCH:
            comment = "not determined by the weights; chosen by search on data"
        elif source == SOURCE_METADATA:
            comment = "taken from the checkpoint's metadata"
        elif source == SOURCE_USER:
            comment = "not determined by the weights; set by hand"
        else:
            comment = "not determined by the weights"
        if choices:
            comment += f"; candidates: {choices}"
        self.hidden[name] = HiddenArgument(name, argument, value, comment)

    def _convention_default(self, name: str) -> Any:
        if name == "causal_mask":
            return self.wiring is not None and self.wiring.kind == "seq2seq"
        if name in forwards.DEFAULTS:
            return forwards.DEFAULTS[name]
        if self._has_module(name) and self.spec.module(name).type == "Unknown":
            return "Identity"
        raise BuildError(f"hyperparameter {name!r} has no value; set it before rebuilding.")

    def _has_module(self, path: str) -> bool:
        return any(m.path == path for m in self.spec.modules())

    # -- tree helpers

    @staticmethod
    def _child(m: ModuleSpec, name: str) -> ModuleSpec | None:
        path = f"{m.path}.{name}" if m.path else name
        return next((child for child in m.children if child.path == path), None)

    def _layer_of(self, m: ModuleSpec) -> ModuleSpec:
        want = (
            "TransformerEncoderLayer"
            if m.type == "TransformerEncoder"
            else "TransformerDecoderLayer"
        )
        for d in m.walk():
            if d.type == want:
                return d
        raise BuildError(
            f"{m.path or '(root)'} is a {m.type} but no {want} was found inside it; "
            "the checkpoint does not show its layers."
        )

    def _arg(self, name: str) -> str:
        return self.hidden[name].argument

    # -- constructor expressions

    def _hidden_value(self, m: ModuleSpec, name: str) -> str:
        argument = self._arg(name)
        if name == "conv_padding" or setting_of(name, m.path) == "padding":
            self.helpers.add("conv_padding")
            kernel = _literal(tuple(m.args.get("kernel_size", ())))
            dilation = self._conv_dilation(m)
            return f"padding_for({kernel}, {argument}{f', {dilation}' if dilation else ''})"
        return argument

    def _conv_dilation(self, m: ModuleSpec) -> str | None:
        """The argument holding a convolution's dilation ("same" padding scales with it)."""
        name = next((n for n in m.hidden if setting_of(n, m.path) == "dilation"), None)
        return self._arg(name) if name is not None and name in self.hidden else None

    def _conv_settings(self, m: ModuleSpec) -> list[str]:
        """`stride=blocks_0_stride, padding=padding_for(...)`: a convolution's own settings,
        in constructor order, each a keyword argument of RecoveredModel."""
        settings = {setting_of(n, m.path): n for n in m.hidden if n in self.hidden}
        return [f"{s}={self._hidden_value(m, settings[s])}" for s in SETTINGS if settings.get(s)]

    def _keywords(self, m: ModuleSpec) -> list[str]:
        args = dict(m.args)
        groups = groups_name(m.path)
        if groups in m.hidden and groups in self.hidden:
            # Free groups: the weight stores in_channels / groups, so in_channels follows it.
            per_group = args["in_channels"] // args[GROUPS]
            args["in_channels"] = _Code(f"{per_group} * {self._arg(groups)}")
            args[GROUPS] = _Code(self._arg(groups))
        words = [
            f"{_identifier(k, 'the constructor argument')}={_literal(v)}" for k, v in args.items()
        ]
        renamed = _RENAMED.get(m.type, {})
        for name in m.hidden:
            if name in self.hidden and name != groups and setting_of(name, m.path) is None:
                words.append(f"{renamed.get(name, name)}={self._hidden_value(m, name)}")
        if m.type.startswith("Conv"):
            words += self._conv_settings(m)
        return words

    def _with_weight_norm(self, m: ModuleSpec, code: str, room: int) -> str:
        """`weight_norm(nn.Conv1d(...), ...)` when the checkpoint stores g and v."""
        norm = m.weight_norm
        if norm is None:
            return code
        wrap = (
            "nn.utils.parametrizations.weight_norm"
            if norm.style == "parametrization"
            else "nn.utils.weight_norm"
        )
        words = [code, f"name={_literal(norm.parameter)}", f"dim={_literal(norm.dim)}"]
        return _call(wrap, words, room)

    def _kept(self, m: ModuleSpec, owner: str, room: int = _NESTED) -> str:
        """`kept(owner, [...])`: registers the tensors no layer type explains."""
        self.helpers.add("kept")
        items = []
        for t in m.kept:
            try:
                dtype = names.dtype_expression(t.dtype)
            except ValueError:
                raise BuildError(
                    f"{t.name} at {m.path or '(root)'} has the dtype {t.dtype!r}, which torch "
                    "does not know; it cannot be rebuilt."
                ) from None
            where = f"{m.path}.{t.name}" if m.path else t.name
            items.append(
                f"({_literal(t.kind)}, {_registrable(t.name, where)}, "
                f"{_literal(tuple(t.shape))}, {dtype})"
            )
        return _call("kept", [owner, _list(items)], room)

    def _ties(self, root: ModuleSpec) -> list[str]:
        """`tie(self, key, source)` for weights the checkpoint stores once for two keys."""
        if not root.ties:
            return []
        self.helpers.add("tie")
        return [
            _call("tie", ["self", _registrable_key(key), _registrable_key(source)], _LINE - 8)
            for key, source in root.ties
        ]

    def _named_children(self, m: ModuleSpec) -> list[str]:
        """`name=expr` for plain names, `**{"self": expr}` for the rest (Container's)."""
        words = []
        for c in m.children:
            if names.is_plain_attribute(c.name) and c.name not in _RESERVED:
                words.append(f"{c.name}={self.expr(c)}")
            else:
                self.helpers.add("register")
                words.append(f"**{{{_registrable(c.name, c.path)}: {self.expr(c)}}}")
        return words

    def expr(self, m: ModuleSpec, room: int = _NESTED) -> str:
        """Python code constructing module m, on one line if it fits in `room` columns."""
        if m.type in _LEAF_TYPES or m.type in FAMILY_CLASSES:
            callee = m.type if m.type in FAMILY_CLASSES else f"nn.{m.type}"
            if m.type in FAMILY_CLASSES:
                self.helpers.add(m.type)
            code = _call(callee, self._keywords(m), room - 4 * (m.weight_norm is not None))
            return self._with_weight_norm(m, code, room)
        if m.type == "Unknown":
            self.helpers.add("parameter_free")
            return f"parameter_free_layer({self._arg(m.hidden[0] if m.hidden else m.path)})"
        if m.type == "PositionalEncoding":
            buffer = _identifier(str(m.args.get("buffer", "pe")), "the buffer name")
            persistent = bool(m.args.get("persistent", True))
            self.pe_buffers.add((buffer, persistent))
            shape = tuple(m.args.get("shape", ()))
            if len(shape) not in (2, 3):
                raise BuildError(
                    f"the positional encoding {m.path} has shape {shape}; "
                    "only [L, d], [1, L, d] and [L, 1, d] tables can be added to a sequence."
                )
            self.helpers.add("positions")
            return _call(self._pe_class(buffer, persistent), [f"shape={_literal(shape)}"], room)
        if m.type in _STACKS:
            return self._stack(m, room)
        return self._container(m, room)

    def _stack(self, m: ModuleSpec, room: int) -> str:
        return _call(f"nn.{m.type}", self._stack_words(m), room)

    def _stack_words(self, m: ModuleSpec) -> list[str]:
        layer = self._layer_of(m)
        norm = self._child(m, "norm")
        if norm is not None:
            norm_code = self.expr(norm)
        elif m.args.get("has_norm"):
            words = [f"normalized_shape={_literal((layer.args['d_model'],))}"]
            words.append(f"bias={_literal(layer.args.get('bias', True))}")
            if "layer_norm_eps" in self.hidden:
                words.append(f"eps={self._arg('layer_norm_eps')}")
            norm_code = _call("nn.LayerNorm", words)
        else:
            norm_code = "None"
        words = [self.expr(layer), f"num_layers={_literal(m.args['num_layers'])}"]
        words.append(f"norm={norm_code}")
        if m.type == "TransformerEncoder":
            # The nested-tensor fast path only matters with padding masks, which we never pass.
            words.append("enable_nested_tensor=False")
        return words

    def _container(self, m: ModuleSpec, room: int = _NESTED) -> str:
        inner = room - 4 if m.kept else room
        if m.type == "Module":
            self.helpers.add("container")
            code = _call("Container", self._named_children(m), inner)
        elif m.type == "Sequential":
            code = _call("nn.Sequential", self._indexed_children(m), inner)
        else:
            code = _call("nn.ModuleList", [_list(self._indexed_children(m))], inner)
        return self._kept(m, code, room) if m.kept else code

    def _child_name(self, child: ModuleSpec) -> str:
        name = _identifier(child.name, "the module name")
        if name in _RESERVED:
            raise BuildError(
                f"the module name {name!r} clashes with nn.Module's own attributes; "
                "rename the keys before rebuilding."
            )
        return name

    def _indexed_children(self, m: ModuleSpec) -> list[str]:
        """Children of a Sequential/ModuleList at their indices; holes become Identity."""
        by_index: dict[int, ModuleSpec] = {}
        for child in m.children:
            if not names.is_index(child.name):
                raise BuildError(
                    f"{m.path or '(root)'} is a {m.type} but its child {child.name!r} is not "
                    "an index; it cannot be rebuilt as one."
                )
            by_index[int(child.name)] = child
        count = max(by_index, default=-1) + 1
        return [self.expr(by_index[i]) if i in by_index else "nn.Identity()" for i in range(count)]

    def _pe_class(self, buffer: str, persistent: bool) -> str:
        kinds = {
            (str(m.args.get("buffer", "pe")), bool(m.args.get("persistent", True)))
            for m in self.spec.modules()
            if m.type == "PositionalEncoding"
        }
        if len(kinds) == 1:
            return "PositionalEncoding"
        name = "PositionalEncoding" if buffer == "pe" else f"PositionalEncoding_{buffer}"
        return name if persistent else f"{name}_not_saved"

    # -- the file

    def render(self) -> str:
        root = self.spec.root
        forward = self._forward(root)
        init_lines, base = self._init_body(root)
        init_lines += self.extra_init
        parts = [_HEADER]
        if "parameter_free" in self.helpers:
            parts.append(_PARAMETER_FREE_HELPER)
        if "conv_padding" in self.helpers:
            parts.append(_PADDING_HELPER)
        if self.helpers & {"container", "kept", "register", "tie"}:
            parts.append(_REGISTER_HELPER)
        if "container" in self.helpers:
            parts.append(_CONTAINER_HELPER)
        if "kept" in self.helpers:
            parts.append(_KEPT_HELPER)
        if "tie" in self.helpers:
            parts.append(_TIE_HELPER)
        for type_name, source in FAMILY_CLASSES.items():
            if type_name in self.helpers:
                parts.append(source)
        if "causal" in self.helpers:
            parts.append(forwards.CAUSAL_HELPER)
        if "positions" in self.helpers:
            parts.append(forwards.POSITIONS_HELPER)
        if "reduce" in self.helpers:
            parts.append(forwards.REDUCE_HELPER)
        for buffer, persistent in sorted(self.pe_buffers):
            parts.append(
                forwards.PE_TEMPLATE.format(
                    cls=self._pe_class(buffer, persistent),
                    buffer=buffer,
                    persistent=persistent,
                )
            )
        parts.append(self._class(base, init_lines, forward))
        parts.append(_MAIN)
        return "\n\n\n".join(p.strip("\n") for p in parts) + "\n"

    def _signature(self) -> str:
        if not self.hidden:
            return "def __init__(self) -> None:"
        lines = ["def __init__(", "    self,"]
        for h in self.hidden.values():
            lines.append(
                f"    {h.argument}: {_annotation(h.value)} = {_literal(h.value)},"
                f"  # {_one_line(h.comment)}"
            )
        lines.append(") -> None:")
        return "\n".join(lines)

    def _init_body(self, root: ModuleSpec) -> tuple[list[str], str]:
        kept = [self._kept(root, "self", _LINE - 8)] if root.kept else []
        if root.type == "Module":
            lines = ["super().__init__()"]
            for child in root.children:
                if names.is_plain_attribute(child.name) and child.name not in _RESERVED:
                    target = f"self.{child.name} = "
                    lines.append(target + self.expr(child, _LINE - 8 - len(target)))
                else:  # `self`, `class`, `²`, `forward`: registered under the very name
                    self.helpers.add("register")
                    name = _registrable(child.name, child.path)
                    lines.append(_call("register", ["self", name, self.expr(child)], _LINE - 8))
            return lines + kept + self._ties(root), "nn.Module"
        if root.type in ("Sequential", "ModuleList"):
            items = self._indexed_children(root)
            if root.type == "ModuleList":
                items = [_list(items)]
            init = _call("super().__init__", items, _LINE - 8)
            return [init, *kept, *self._ties(root)], f"nn.{root.type}"
        if root.type in _STACKS:
            init = _call("super().__init__", self._stack_words(root), _LINE - 8)
            return [init], f"nn.{root.type}"
        if root.type in _LEAF_TYPES or root.type in FAMILY_CLASSES:
            base = root.type if root.type in FAMILY_CLASSES else f"nn.{root.type}"
            if root.type in FAMILY_CLASSES:
                self.helpers.add(root.type)
            lines = [_call("super().__init__", self._keywords(root), _LINE - 8)]
            if root.weight_norm is not None:  # applied to the model itself, in place
                lines.append(self._with_weight_norm(root, "self", _LINE - 8))
            return lines, base
        raise BuildError(
            f"the checkpoint's root is a {root.type}, which cannot be rebuilt on its own; "
            "wrap it in a container."
        )

    def _class(self, base: str, init_lines: list[str], forward: str | None) -> str:
        doc = '"""The model recovered from the checkpoint; attribute names match its keys."""'
        body = [doc, "", self._signature(), _indent("\n".join(init_lines), 4)]
        if forward:
            body += ["", forward]
        return f"class RecoveredModel({base}):\n" + _indent("\n".join(body), 4)

    # -- forwards

    def _forward(self, root: ModuleSpec) -> str | None:
        if self.wiring is not None and root.type == "ModuleList":
            # A ModuleList has no forward of its own; the recognised stack calls its items.
            (x,) = self._input_names(("x",))
            return "\n".join([
                f"def forward(self, {x}: Tensor) -> Tensor:",
                "    for layer in self:",
                f"        {x} = layer({x})",
                f"    return {x}",
            ])  # fmt: skip
        if self.wiring is None or root.type != "Module":
            return None  # a root torch module keeps its own forward
        kind = self.wiring.kind
        if kind == "sequential":
            return self._forward_sequential(root)
        return forwards.write_forward(self)

    def _role(self, role: str, required: bool = True) -> str | None:
        path = self.wiring.roles.get(role) if self.wiring else None
        if path is None:
            if required:
                forward = "the forward" if self.wiring is None else f"the {self.wiring.kind} wiring"
                raise BuildError(
                    f"{forward} needs a module for the role {role!r}; none was recognised."
                )
            return None
        if not self._has_module(path):
            raise BuildError(f"the role {role!r} names {path!r}, which is not in the model.")
        return _access(path)

    def _input_names(self, defaults: tuple[str, ...]) -> tuple[str, ...]:
        given = tuple(i.name for i in self.wiring.inputs) if self.wiring else ()
        ok = len(given) == len(defaults) and all(
            names.is_identifier(n) and n != "self" for n in given
        )
        return given if ok and len(set(given)) == len(given) else defaults

    def _forward_sequential(self, root: ModuleSpec) -> str:
        (x,) = self._input_names(("x",))
        lines = [f"def forward(self, {x}: Tensor) -> Tensor:"]
        for child in root.children:
            access = _access(child.path)  # `getattr(self, "class")` for names Python refuses
            if child.type == "ModuleList":
                lines += [f"    for layer in {access}:", f"        {x} = layer({x})"]
            elif child.type == "Module":
                raise BuildError(
                    f"{child.path} is a plain container, so the stack cannot call it in order."
                )
            else:
                lines.append(f"    {x} = {access}({x})")
        lines.append(f"    return {x}")
        return "\n".join(lines)

    def _tensor(self, path: str) -> str:
        """`self.a.pe` for a tensor kept as is at the path "a.pe"."""
        return _access(path)


_HEADER = '''
"""A model recovered from a bare state dict by Model Recovery Studio.

Attribute names match the checkpoint's keys, so `load_state_dict(weights)` is strict.
Keyword arguments marked "not determined by the weights" are guesses or were chosen by
scoring candidates on data: the weights alone cannot tell them apart.
"""

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn
'''

_PARAMETER_FREE_HELPER = """
# Layers without weights leave no keys, so the checkpoint only shows that one was there.
PARAMETER_FREE_LAYERS = {
    "ReLU": nn.ReLU,
    "GELU": nn.GELU,
    "Tanh": nn.Tanh,
    "Sigmoid": nn.Sigmoid,
    "Identity": nn.Identity,
    "Dropout": nn.Dropout,
    "Flatten": nn.Flatten,
    "MaxPool1d": lambda: nn.MaxPool1d(2),
    "MaxPool2d": lambda: nn.MaxPool2d(2),
    "MaxPool3d": lambda: nn.MaxPool3d(2),
    "AvgPool1d": lambda: nn.AvgPool1d(2),
    "AvgPool2d": lambda: nn.AvgPool2d(2),
    "AvgPool3d": lambda: nn.AvgPool3d(2),
}


POOLS = {
    "MaxPool1d": nn.MaxPool1d,
    "MaxPool2d": nn.MaxPool2d,
    "MaxPool3d": nn.MaxPool3d,
    "AvgPool1d": nn.AvgPool1d,
    "AvgPool2d": nn.AvgPool2d,
    "AvgPool3d": nn.AvgPool3d,
}


ADAPTIVE_POOLS = {
    "AdaptiveAvgPool1d": nn.AdaptiveAvgPool1d,
    "AdaptiveAvgPool2d": nn.AdaptiveAvgPool2d,
    "AdaptiveAvgPool3d": nn.AdaptiveAvgPool3d,
}


def parameter_free_layer(name: str) -> nn.Module:
    # A fresh module for a parameter-less slot: "MaxPool2d" pools with kernel 2, stride 2;
    # "MaxPool2d(3, 2, 1)" with kernel 3, stride 2, padding 1 ("MaxPool2d(3)": stride 3);
    # "AdaptiveAvgPool2d(4)" pools to 4 x 4, whatever the input size.
    if name.endswith("+Flatten"):
        return nn.Sequential(parameter_free_layer(name[: -len("+Flatten")]), nn.Flatten())
    if name.endswith(")"):
        kind, numbers = name[:-1].split("(")
        if kind in ADAPTIVE_POOLS:
            return ADAPTIVE_POOLS[kind](int(numbers))
        return POOLS[kind](*(int(n) for n in numbers.split(",")))
    return PARAMETER_FREE_LAYERS[name]()
"""

_PADDING_HELPER = '''
def padding_for(kernel_size: tuple, mode: Any, dilation: int = 1) -> Any:
    """"same" pads dilation * (k // 2) on each side (the size stays at stride 1 for an odd
    kernel), "valid" pads nothing; a number is used as it is."""
    if mode == "same":
        return tuple(dilation * (k // 2) for k in kernel_size)
    if mode == "valid":
        return 0
    return mode
'''

_REGISTER_HELPER = '''
def register(owner: nn.Module, name: str, value: Any) -> None:
    """Adds a child, parameter or buffer under the checkpoint's own name, even one that is
    not a Python name (`self`, `class`, `²`) or that nn.Module also uses (`forward`), so
    every state-dict key stays exactly as the checkpoint spells it."""
    if isinstance(value, nn.Module):
        table = owner._modules
    elif isinstance(value, nn.Parameter):
        table = owner._parameters
    else:
        table = owner._buffers
    if hasattr(type(owner), name):  # a method's name: add_module and friends refuse it
        table[name] = value
    elif isinstance(value, nn.Module):
        owner.add_module(name, value)
    elif isinstance(value, nn.Parameter):
        owner.register_parameter(name, value)
    else:
        owner.register_buffer(name, value)
'''

_CONTAINER_HELPER = '''
class Container(nn.Module):
    """Holds named submodules as the original model did; it is never called itself."""

    def __init__(self, /, **children: nn.Module) -> None:
        super().__init__()
        for name, child in children.items():
            register(self, name, child)
'''

_TIE_HELPER = '''
def tie(owner: nn.Module, key: str, source: str) -> None:
    """Makes `key` the very parameter at `source`, as the checkpoint stored them once
    (a decoder reusing its embedding table): training updates both together."""
    parameters = dict(owner.named_parameters(remove_duplicate=False))
    shared, own = parameters.get(source), parameters.get(key)
    if shared is None or own is None or shared.shape != own.shape:
        return  # a buffer, or shapes that differ: nothing to share
    module, _, name = key.rpartition(".")
    register(owner.get_submodule(module), name, shared)
'''

_KEPT_HELPER = '''
def kept(owner: nn.Module, tensors: list) -> nn.Module:
    """Registers tensors no known layer type explains under their names and shapes;
    load_state_dict fills in their values. Integer and boolean ones are buffers."""
    for kind, name, shape, dtype in tensors:
        value = torch.zeros(shape, dtype=dtype)
        if kind == "parameter":
            value = nn.Parameter(value, requires_grad=value.is_floating_point())
        register(owner, name, value)
    return owner
'''


_MAIN = """
if __name__ == "__main__":
    import sys

    model = RecoveredModel()
    weights = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
    model.load_state_dict(weights)  # strict: every key and shape must match
    model.eval()
    print(f"RecoveredModel loaded {len(weights)} tensors from {sys.argv[1]}")
"""
