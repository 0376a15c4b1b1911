"""`ArchSpec` -> the readable Python source of a standalone `RecoveredModel`.

The generated file imports only torch, math and typing. Its no-argument constructor
builds the inferred structure with the checkpoint's attribute names (so a strict load
works); every hidden hyperparameter is a keyword argument whose default is the chosen
value, with a comment saying the weights did not determine it. When a forward wiring was
recognised the class has that forward, written so `torch.jit.script` accepts it.

`build.build_model` executes this same source, so the generated file and the built
module cannot drift apart. Names from the checkpoint end up in code, so every identifier
is a `codegen_names.Name` (ASCII-checked by its one factory), anything else is a string
literal, every value is a literal, and comments are flattened to one line. Nothing the
checkpoint says can become code.

The parts: `codegen_names` (names and literals), `codegen_layout` (line breaking),
`codegen_modules` (constructor expressions), `codegen_templates` (the fixed helpers),
`forwards` (the forward of a sequence or encoder-decoder wiring) and this module (the
keyword arguments, the constructor's body by kind of root, the stack's forward, the file).
"""

from __future__ import annotations

import ast
from typing import Any

from recovery_core.errors import BuildError
from recovery_core.model import codegen_templates as templates
from recovery_core.model import forwards
from recovery_core.model.codegen_layout import LINE, bracketed, call, indent
from recovery_core.model.codegen_modules import (
    FAMILY_CLASSES,
    LEAF_TYPES,
    PARAMETER_FREE,
    STACKS,
    SUPPORTED,
    HiddenArgument,
    ModuleWriter,
    RenderState,
    built_modules,
    child,
    layer_of,
)
from recovery_core.model.codegen_names import (
    Name,
    access,
    access_node,
    annotation,
    argument,
    attribute,
    dotted,
    forward_setting,
    identifier,
    inputs,
    literal,
    load,
    one_line,
    registrable,
    store,
)
from recovery_core.model.spec import (
    SOURCE_DEFAULT,
    SOURCE_METADATA,
    SOURCE_SEARCH,
    SOURCE_USER,
    ArchSpec,
    ModuleSpec,
    Source,
)

__all__ = [
    "FORWARD_ONLY",
    "PARAMETER_FREE",
    "FAMILY_CLASSES",
    "HiddenArgument",
    "generate_code",
    "hidden_arguments",
]

# Attributes of RecoveredModel read only by its forward: the search may change them on a
# built model instead of building a new one.
FORWARD_ONLY = frozenset({"scale_embedding", "causal_mask", "reduce", "pos_dim"})

_COMMENTS = {
    SOURCE_SEARCH: "not determined by the weights; chosen by search on data",
    SOURCE_METADATA: "taken from the checkpoint's metadata",
    SOURCE_USER: "not determined by the weights; set by hand",
}


def generate_code(spec: ArchSpec) -> str:
    """The whole standalone file defining `RecoveredModel` for this spec."""
    return _Renderer(spec).render()


def hidden_arguments(spec: ArchSpec) -> tuple[HiddenArgument, ...]:
    """The hyperparameters that change the generated model, in constructor order."""
    return tuple(_Renderer(spec).hidden.values())


# ---------------------------------------------------------------- keyword arguments


def _check_supported(spec: ArchSpec) -> None:
    for m in spec.modules():
        if m.type not in SUPPORTED:
            raise BuildError(
                f"module {m.path or '(root)'} has type {m.type!r}, which cannot be rebuilt; "
                f"supported types are {', '.join(sorted(SUPPORTED))}."
            )


def _collect_hidden(state: _Renderer) -> None:
    """Every hyperparameter a built module or the wiring's forward reads, in order."""
    spec = state.spec
    known = {hp.name for hp in spec.hyperparameters}
    for m in built_modules(spec.root):
        wanted = list(m.hidden)
        if m.type in STACKS:
            wanted = list(layer_of(m).hidden)
            if child(m, "norm") is None and m.args.get("has_norm"):
                wanted.append("layer_norm_eps")
        if m.type == "Unknown" and not wanted:
            wanted = [m.path]
        for name in wanted:
            if name in known or m.type == "Unknown":
                _add_hidden(state, name)
    for name in forwards.wiring_hidden(state):
        _add_hidden(state, forward_setting(name))  # the forward writes `self.<name> = ...`


def _add_hidden(state: RenderState, name: str) -> None:
    if name in state.hidden:
        return
    value: Any
    source: Source
    candidates: tuple[Any, ...]
    try:
        hp = state.spec.hyperparameter(name)
    except KeyError:
        value, source, candidates = _convention_default(state, name), SOURCE_DEFAULT, ()
    else:
        value, source, candidates = hp.value, hp.source, hp.candidates
    if name in ("scale_embedding", "causal_mask", "batch_first"):
        candidates = candidates or (False, True)
    taken = {h.argument for h in state.hidden.values()}
    comment = _COMMENTS.get(source, "not determined by the weights")
    choices = ", ".join(one_line(str(c)) for c in candidates)
    if choices:
        comment += f"; candidates: {choices}"
    state.hidden[name] = HiddenArgument(name, argument(name, taken), value, comment)


def _convention_default(state: RenderState, name: str) -> Any:
    if name == "causal_mask":
        return state.wiring is not None and state.wiring.kind == "seq2seq"
    if name in forwards.DEFAULTS:
        return forwards.DEFAULTS[name]
    if state.has_module(name) and state.spec.module(name).type == "Unknown":
        return "Identity"
    raise BuildError(f"hyperparameter {name!r} has no value; set it before rebuilding.")


# ---------------------------------------------------------------- the file


class _Renderer(RenderState):
    """One rendering: the file's helpers, the class with its constructor, and the forward.

    `forwards` writes the forward of a sequence or encoder-decoder wiring through this
    object's checked accessors (`_role`, `_arg`, `_input_names`, `_tensor`).
    """

    def __init__(self, spec: ArchSpec):
        super().__init__(spec)
        _check_supported(spec)
        self.modules = ModuleWriter(self)
        _collect_hidden(self)

    def _arg(self, name: str) -> Name:
        return self.arg(name)

    def render(self) -> str:
        root = self.spec.root
        forward = self._forward(root)
        init_lines, base = self._init_body(root)
        init_lines += self.extra_init
        parts = [templates.HEADER, *self._helper_sources()]
        parts.append(self._class(base, init_lines, forward))
        parts.append(templates.MAIN)
        return "\n\n\n".join(p.strip("\n") for p in parts) + "\n"

    def _helper_sources(self) -> list[str]:
        """The helper definitions the model uses, in a fixed order."""
        used = self.helpers
        parts = []
        if "parameter_free" in used:
            parts.append(templates.PARAMETER_FREE_HELPER)
        if "conv_padding" in used:
            parts.append(templates.PADDING_HELPER)
        if used & {"container", "kept", "register", "tie"}:
            parts.append(templates.REGISTER_HELPER)
        for helper, source in (
            ("container", templates.CONTAINER_HELPER),
            ("kept", templates.KEPT_HELPER),
            ("tie", templates.TIE_HELPER),
        ):
            if helper in used:
                parts.append(source)
        parts += [source for type_name, source in FAMILY_CLASSES.items() if type_name in used]
        for helper, source in (
            ("causal", forwards.CAUSAL_HELPER),
            ("positions", forwards.POSITIONS_HELPER),
            ("reduce", forwards.REDUCE_HELPER),
        ):
            if helper in used:
                parts.append(source)
        for buffer, persistent in sorted(self.pe_buffers):
            cls = self.modules.pe_class(buffer, persistent)
            parts.append(forwards.PE_TEMPLATE.format(cls=cls, buffer=buffer, persistent=persistent))
        return parts

    def _class(self, base: str, init_lines: list[str], forward: str | None) -> str:
        doc = '"""The model recovered from the checkpoint; attribute names match its keys."""'
        body = [doc, "", self._signature(), indent("\n".join(init_lines), 4)]
        if forward:
            body += ["", forward]
        return f"class RecoveredModel({base}):\n" + indent("\n".join(body), 4)

    def _signature(self) -> str:
        if not self.hidden:
            return "def __init__(self) -> None:"
        lines = ["def __init__(", "    self,"]
        for h in self.hidden.values():
            lines.append(
                f"    {h.argument}: {annotation(h.value)} = {literal(h.value)},"
                f"  # {one_line(h.comment)}"
            )
        lines.append(") -> None:")
        return "\n".join(lines)

    # -- the constructor's body, by the kind of root

    def _init_body(self, root: ModuleSpec) -> tuple[list[str], str]:
        if root.type == "Module":
            return self._init_module(root), "nn.Module"
        if root.type in ("Sequential", "ModuleList"):
            items = self.modules.indexed_children(root)
            if root.type == "ModuleList":
                items = [bracketed(items)]
            init = call("super().__init__", items, LINE - 8)
            return [init, *self._kept_and_ties(root)], f"nn.{root.type}"
        if root.type in STACKS:
            init = call("super().__init__", self.modules.stack_words(root), LINE - 8)
            return [init], f"nn.{root.type}"
        if root.type in LEAF_TYPES or root.type in FAMILY_CLASSES:
            base = self.modules.callee(root)
            lines = [call("super().__init__", self.modules.keywords(root), LINE - 8)]
            if root.weight_norm is not None:  # applied to the model itself, in place
                lines.append(self.modules.with_weight_norm(root, "self", LINE - 8))
            return lines, base
        raise BuildError(
            f"the checkpoint's root is a {root.type}, which cannot be rebuilt on its own; "
            "wrap it in a container."
        )

    def _init_module(self, root: ModuleSpec) -> list[str]:
        lines = ["super().__init__()"]
        for c in root.children:
            plain = attribute(c.name)
            if plain is not None:
                target = f"{dotted('self', plain)} = "
                lines.append(target + self.modules.expr(c, LINE - 8 - len(target)))
            else:  # `self`, `class`, `²`, `forward`: registered under the very name
                self.helpers.add("register")
                words = ["self", registrable(c.name, c.path), self.modules.expr(c)]
                lines.append(call("register", words, LINE - 8))
        return lines + self._kept_and_ties(root)

    def _kept_and_ties(self, root: ModuleSpec) -> list[str]:
        kept = [self.modules.kept(root, "self", LINE - 8)] if root.kept else []
        return kept + self.modules.ties(root, LINE - 8)

    # -- the forward, by wiring kind

    def _forward(self, root: ModuleSpec) -> str | None:
        if self.wiring is not None and root.type == "ModuleList":
            # A ModuleList has no forward of its own; the recognised stack calls its items.
            return _stack_forward(self._input_names(("x",))[0], [("loop", "")])
        if self.wiring is None or root.type != "Module":
            return None  # a root torch module keeps its own forward
        if self.wiring.kind == "sequential":
            return _stack_forward(self._input_names(("x",))[0], _stack_steps(root))
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
        if not self.has_module(path):
            raise BuildError(f"the role {role!r} names {path!r}, which is not in the model.")
        return access(path)

    def _input_names(self, defaults: tuple[str, ...]) -> tuple[Name, ...]:
        given = tuple(i.name for i in self.wiring.inputs) if self.wiring else ()
        return inputs(given, defaults)

    def _tensor(self, path: str) -> str:
        """`self.a.pe` for a tensor kept as is at the path "a.pe"."""
        return access(path)


# ---------------------------------------------------------------- a stack's forward, as a tree

_LAYER = identifier("layer", "the loop variable")


def _stack_steps(root: ModuleSpec) -> list[tuple[str, str]]:
    """("call", path) for a child called on the running value, ("loop", path) for a
    ModuleList whose items are called in turn."""
    steps = []
    for c in root.children:
        if c.type == "Module":
            raise BuildError(
                f"{c.path} is a plain container, so the stack cannot call it in order."
            )
        steps.append(("loop" if c.type == "ModuleList" else "call", c.path))
    return steps


def _stack_forward(x: Name, steps: list[tuple[str, str]]) -> str:
    """`def forward(self, x: Tensor) -> Tensor:` calling each step on x, built as an ast
    tree (every name in it a factory Name or one of ours) and written by ast.unparse."""
    body: list[ast.stmt] = []
    for how, path in steps:
        module = access_node(path) if path else ast.Name("self", ast.Load())
        if how == "loop":
            update = ast.Assign([store(x)], ast.Call(load(_LAYER), [load(x)], []))
            body.append(ast.For(store(_LAYER), module, [update], []))
        else:
            body.append(ast.Assign([store(x)], ast.Call(module, [load(x)], [])))
    body.append(ast.Return(load(x)))
    tensor = ast.Name("Tensor", ast.Load())
    arguments = ast.arguments(
        [], [ast.arg("self"), ast.arg(str(x), tensor)], None, [], [], None, []
    )
    tree = ast.FunctionDef("forward", arguments, body, [], tensor)
    compile(ast.fix_missing_locations(ast.Module([tree], [])), "<forward>", "exec")
    return ast.unparse(tree)
