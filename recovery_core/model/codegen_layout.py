"""How generated code is laid out: a call on one line when it fits, else one argument
per line, the way ruff format writes it."""

from __future__ import annotations

LINE = 100  # ruff's line length
NESTED = 76  # room for a call nested a few levels deep in __init__


def indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


def call(callee: str, arguments: list[str], room: int = NESTED) -> str:
    """A call on one line when it fits in `room` columns, else one argument per line."""
    one_line = f"{callee}({', '.join(arguments)})"
    if len(one_line) <= room and "\n" not in one_line:
        return one_line
    body = "\n".join(indent(a, 4) + "," for a in arguments)
    return f"{callee}(\n{body}\n)"


def bracketed(items: list[str]) -> str:
    """A list display, on one line when it fits."""
    one_line = "[" + ", ".join(items) + "]"
    if len(one_line) <= NESTED and "\n" not in one_line:
        return one_line
    return "[\n" + "\n".join(indent(i, 4) + "," for i in items) + "\n]"
