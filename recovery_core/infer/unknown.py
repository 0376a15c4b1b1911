"""Parameter-less modules ("Unknown"): the choices offered for them and hints from names."""

from __future__ import annotations

UNKNOWN_CHOICES = ("ReLU", "GELU", "Tanh", "Sigmoid", "Identity", "Dropout", "Flatten")
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
