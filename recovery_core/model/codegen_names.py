"""The one validated name factory of the code generator, and the literals it writes.

Every identifier the generated file uses that comes from a spec (an attribute, a
constructor keyword, a keyword argument of RecoveredModel, a forward's input, a buffer
name) is a `Name`, and only this module makes one: `Name` refuses any text that is not
an ASCII identifier (`str.isascii`, `str.isidentifier`, not a keyword, not a dunder).
Anything else a checkpoint spells (`self`, `class`, `²`, `ñ`, `x;import os`) can only
reach the file as a string literal (`register(self, "class", ...)`,
`getattr(self, "²")`) or is refused with a `BuildError`. Values become literals, and
checkpoint text becomes a one-line comment. The ASCII rules themselves live in
`recovery_core.model.names`.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Set as AbstractSet
from typing import Any

from recovery_core.errors import BuildError
from recovery_core.model import names

# Names our RecoveredModel uses itself, plus nn.Module's own API: a checkpoint child
# with one of these names cannot become an attribute.
RESERVED = frozenset(
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

# Globals the generated constructor reads: a keyword argument by one of these names
# would shadow it inside __init__.
INIT_GLOBALS = frozenset(
    {"self", "super", "math", "torch", "nn", "Tensor", "Any", "Optional"}
    | {"register", "kept", "tie", "Container", "parameter_free_layer", "padding_for"}
    | {"PositionalEncoding"}
)

# What a generated forward reads besides its inputs: globals, builtins and its own locals.
FORWARD_NAMES = (
    INIT_GLOBALS
    | {"causal_mask", "add_positions", "reduce_steps", "getattr"}
    | {
        "layer",
        "mask",
        "tgt_mask",
        "memory",
        "h",
        "s",
        "t",
        "out",
    }
)

# The settings a forward reads as attributes of the model (`self.causal_mask`).
FORWARD_SETTINGS = frozenset({"scale_embedding", "causal_mask", "batch_first", "reduce", "pos_dim"})

_FACTORY = object()  # the key only this module holds


def _is_strict_identifier(text: str) -> bool:
    return (
        isinstance(text, str)
        and text.isascii()
        and text.isidentifier()
        and not keyword.iskeyword(text)
        and names.is_identifier(text)
    )


class Name(str):
    """An identifier checked by this module's factory; code is written only from these."""

    __slots__ = ()

    def __new__(cls, text: str, key: object = None) -> Name:
        if key is not _FACTORY:
            raise TypeError("a Name is made only by recovery_core.model.codegen_names")
        if not _is_strict_identifier(text):
            raise BuildError(f"{text!r} is not a plain ASCII Python name.")
        return super().__new__(cls, text)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # Pickled and copied as text, checked again when made anew.
        return identifier, (str(self), "a pickled name")


def _checked(name: Name) -> Name:
    if type(name) is not Name:  # a plain str never reaches an identifier position
        raise TypeError(f"{name!r} was not made by the name factory")
    return name


def keyword_argument(name: Name, value: str) -> str:
    """`name=value`: a keyword in a call, the name from the factory."""
    return f"{_checked(name)}={value}"


def dotted(owner: str, name: Name) -> str:
    """`owner.name`: an attribute, the name from the factory."""
    return f"{owner}.{_checked(name)}"


def identifier(text: str, what: str) -> Name:
    """`text` as a Name (a constructor keyword, a buffer name), or a BuildError."""
    if not _is_strict_identifier(text):
        raise BuildError(
            f"{what} {text!r} is not a valid Python name, so no module can carry it; "
            "rename the keys before rebuilding."
        )
    return Name(text, _FACTORY)


def attribute(text: str) -> Name | None:
    """`text` as an attribute name (`self.text`) when it means the child itself on any
    nn.Module; None when the child must be reached by its name as a string instead."""
    if names.is_plain_attribute(text) and text not in RESERVED and _is_strict_identifier(text):
        return Name(text, _FACTORY)
    return None


def argument(hyperparameter: str, taken: AbstractSet[str]) -> Name:
    """A keyword argument of RecoveredModel for a hyperparameter ("net.1" -> net_1),
    never one already `taken` (then suffixed with `_<len(taken)>`) nor a global."""
    text = names.argument_name(hyperparameter)
    if text.startswith("__"):  # "ñ.1" -> "__1": never a dunder
        text = "module" + text
    if text in INIT_GLOBALS:
        text += "_"
    if text in taken:
        text += f"_{len(taken)}"
    return Name(text, _FACTORY)


def inputs(given: tuple[str, ...], defaults: tuple[str, ...]) -> tuple[Name, ...]:
    """A forward's input names: the wiring's own when they are distinct plain names that
    shadow nothing the forward reads, else the defaults."""
    ok = (
        len(given) == len(defaults)
        and len(set(given)) == len(given)
        and all(_is_strict_identifier(n) and n not in FORWARD_NAMES for n in given)
    )
    return tuple(Name(n, _FACTORY) for n in (given if ok else defaults))


def forward_setting(text: str) -> Name:
    """An attribute the forward reads (`self.causal_mask`): one of our own names."""
    if text not in FORWARD_SETTINGS:
        raise BuildError(f"the wiring reads {text!r}, which is not a setting a forward has.")
    return identifier(text, "the forward setting")


# ---------------------------------------------------------------- literals


class Code(str):
    """Code we wrote ourselves (an expression over keyword arguments), never from a file."""


def literal(value: Any) -> str:
    """A Python literal for a plain value; anything else is refused."""
    if isinstance(value, Code):
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
        items = [literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise BuildError(
        f"the value {value!r} ({type(value).__name__}) cannot be written into a model "
        "definition; only numbers, strings, booleans and tuples can."
    )


def annotation(value: Any) -> str:
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind.__name__
    return "Any"


def one_line(text: str) -> str:
    """Checkpoint text flattened so it can only ever be a comment."""
    return re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text)).strip()


def registrable(name: str, where: str) -> str:
    """A checkpoint name for a child, parameter or buffer, as a string literal."""
    if not names.is_registrable(name):
        raise BuildError(
            f"the name {name!r} at {where or '(root)'} is nn.Module's own bookkeeping "
            "(or empty, or unprintable), so no working model can hold it; rename the keys."
        )
    return literal(name)


def registrable_key(key: str) -> str:
    """A whole state-dict key as a string literal, each of its parts checked."""
    for part in key.split("."):
        registrable(part, key)
    return literal(key)


def load(name: Name) -> ast.Name:
    """A read of a factory name, as an ast node."""
    return ast.Name(str(_checked(name)), ast.Load())


def store(name: Name) -> ast.Name:
    """An assignment target named by the factory, as an ast node."""
    return ast.Name(str(_checked(name)), ast.Store())


def access_node(path: str) -> ast.expr:
    """The module at a path ("a.b.0") as reached from `self`: an ast expression whose
    attributes are factory names and whose other names are string constants."""
    node: ast.expr = ast.Name("self", ast.Load())
    for part in path.split("."):
        plain = attribute(part)
        if names.is_index(part):
            node = ast.Subscript(node, ast.Constant(int(part)), ast.Load())
        elif plain is not None:
            node = ast.Attribute(node, str(_checked(plain)), ast.Load())
        elif names.shadows_module_attribute(part):
            raise BuildError(
                f"a forward cannot reach {path}: nn.Module itself answers to the name "
                f"{part!r}; the model loads without a forward, or rename the keys."
            )
        else:  # `self`, `class`, `²`, `a b`: reached by name, as TorchScript allows
            registrable(part, path)
            node = ast.Call(ast.Name("getattr", ast.Load()), [node, ast.Constant(part)], [])
    return node


def access(path: str) -> str:
    """`self.a.b[0]` for the module path "a.b.0" (`getattr(self, 'class')` for names
    Python refuses)."""
    return ast.unparse(access_node(path))


def dtype(text: str, where: str) -> str:
    """`torch.int64` for "int64", or a BuildError."""
    try:
        return names.dtype_expression(text)
    except ValueError:
        raise BuildError(
            f"{where} has the dtype {text!r}, which torch does not know; it cannot be rebuilt."
        ) from None
