"""Numbers and messages formatted for people: 1.2 M parameters, 3.4 MiB, 0.0123 loss."""

from __future__ import annotations

import math
from collections.abc import Sequence


def count(n: int) -> str:
    """12 -> "12", 12_345 -> "12.3 k", 1_234_567 -> "1.2 M"."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def size(nbytes: int) -> str:
    """Bytes in binary units: 512 B, 3.4 KiB, 1.0 GiB."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def loss(value: float | None) -> str:
    """Four significant digits; scientific only when tiny or huge; a dash when unknown."""
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-4 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def times(loss: float, lower: float) -> str:
    """How many times `lower` is below `loss`, read at a glance: "6,570×" rather than
    "6.57e+03×", "1.6×"; "∞×" when `lower` is 0 (a fit to rounding)."""
    ratio = loss / lower if lower > 0 else math.inf
    if not math.isfinite(ratio):
        return "∞×"
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2g}×"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {int(value % 60)} s"


def shape(dims: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def one_line(message: str) -> str:
    """Collapse a message to one line for stderr and status bars."""
    return " ".join(message.split())
