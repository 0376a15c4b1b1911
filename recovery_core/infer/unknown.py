"""Parameter-less modules ("Unknown"): the choices offered for them and hints from names."""

from __future__ import annotations

UNKNOWN_CHOICES = ("ReLU", "GELU", "Tanh", "Sigmoid", "Identity", "Dropout", "Flatten")
# Between convolutions a parameter-less slot may also pool (kernel 2, stride 2).
POOLS = {dims: (f"MaxPool{dims}d", f"AvgPool{dims}d") for dims in (1, 2, 3)}
PARAMETER_FREE_CHOICES = UNKNOWN_CHOICES + tuple(p for pools in POOLS.values() for p in pools)


def shape_class(choice: str) -> str:
    """What a choice does to the shape: "keep", "flatten", or "pool<n>d"."""
    if choice == "Flatten":
        return "flatten"
    if choice.startswith(("MaxPool", "AvgPool")):
        return f"pool{choice[-2:]}"
    if choice.startswith("Adaptive"):
        return choice  # to one fixed size (and flattened, or not): a class of its own
    return "keep"
UNKNOWN_NAME_HINTS = (
    ("gelu", "GELU"),
    ("relu", "ReLU"),
    ("tanh", "Tanh"),
    ("sigmoid", "Sigmoid"),
    ("drop", "Dropout"),
    ("flat", "Flatten"),
    ("ident", "Identity"),
)


def name_hint(name: str) -> str | None:
    """The module a parameter-less child's name points at ("act_relu" → "ReLU"), if any."""
    lowered = name.lower()
    return next((choice for part, choice in UNKNOWN_NAME_HINTS if part in lowered), None)
