"""One place that decides what a checkpoint's names may become in generated code.

A state-dict key's parts are module, parameter and buffer names chosen by whoever wrote
the model: `self` (every BERT), `class`, `²`, `a-b` all occur. Generated code must keep
them exactly (so a strict load works) without ever turning them into code. The rules
are ASCII-strict on purpose: Python accepts `²`-free Unicode identifiers and `str.isdigit`
accepts `²`, but neither is what the checkpoint's author could have typed as an index.
"""

from __future__ import annotations

import functools
import keyword
import re

_ASCII_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASCII_INDEX = re.compile(r"(0|[1-9][0-9]*)")


@functools.cache
def _module_state() -> tuple[frozenset[str], type]:
    """What an nn.Module instance keeps in its own __dict__ (a child or tensor by one of
    these names would overwrite the module's bookkeeping, so no working model has one),
    and nn.Module itself. Asked of torch on first use: listing a checkpoint needs none."""
    from torch import nn

    return frozenset(nn.Module().__dict__), nn.Module


def is_index(name: str) -> bool:
    """True for "0", "12": a position in a Sequential or ModuleList (never "²", "01")."""
    return _ASCII_INDEX.fullmatch(name) is not None


def is_identifier(name: str) -> bool:
    """An ASCII Python identifier that is not a keyword and not a dunder."""
    return (
        _ASCII_IDENTIFIER.fullmatch(name) is not None
        and not keyword.iskeyword(name)
        and not name.startswith("__")
    )


def is_plain_attribute(name: str) -> bool:
    """True when `obj.name = child` and `obj.name` mean the child itself on any nn.Module:
    an identifier that nn.Module (and our generated classes) do not already define."""
    return is_identifier(name) and not shadows_module_attribute(name)


def is_registrable(name: str) -> bool:
    """True when the name can be given to a child, parameter or buffer at all (through
    add_module and friends, or their tables for names nn.Module's methods also use)."""
    state, _ = _module_state()
    return bool(name) and "." not in name and name not in state and name.isprintable()


def argument_name(name: str) -> str:
    """An ASCII keyword-argument name for a hyperparameter such as "net.1" or "net.²"."""
    argument = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not argument or argument[0].isdigit():
        argument = f"module_{argument}"
    if keyword.iskeyword(argument):
        argument += "_"
    return argument


def dtype_expression(dtype: str) -> str:
    """`torch.int64` for "int64": only a real torch dtype's name becomes code."""
    import torch

    if not _ASCII_IDENTIFIER.fullmatch(dtype) or not isinstance(
        getattr(torch, dtype, None), torch.dtype
    ):
        raise ValueError(f"{dtype!r} is not a torch dtype")
    return f"torch.{dtype}"


def shadows_module_attribute(name: str) -> bool:
    """True for `forward`, `state_dict`, `__class__`, `training`: nn.Module itself answers
    `getattr(module, name)`, so code can reach a child of that name only through the
    module's tables, which TorchScript cannot read."""
    state, module = _module_state()
    return name in state or hasattr(module, name)
