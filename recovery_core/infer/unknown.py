"""Parameter-less modules ("Unknown"): the choices offered for them and hints from names."""

from __future__ import annotations

import functools

UNKNOWN_CHOICES = ("ReLU", "GELU", "Tanh", "Sigmoid", "Identity", "Dropout", "Flatten")

# Between convolutions a parameter-less slot may also pool, max or average, with one of
# these (kernel, stride, padding): "MaxPool2d" is kernel 2, stride 2 (the name alone, as
# before); "MaxPool2d(3)" kernel 3, stride 3 (torch's default stride is the kernel);
# "MaxPool2d(3, 2)" kernel 3, stride 2 (AlexNet); "MaxPool2d(3, 2, 1)" pads 1 (ResNet's stem).
POOL_GEOMETRIES = ((2, 2, 0), (3, 3, 0), (3, 2, 0), (3, 2, 1))


def pool_choice(kind: str, kernel: int, stride: int, padding: int) -> str:
    """The choice's name for a pool: "MaxPool2d", "MaxPool2d(3)", "AvgPool1d(3, 2, 1)"."""
    if (kernel, stride, padding) == (2, 2, 0):
        return kind
    if stride == kernel and not padding:
        return f"{kind}({kernel})"
    return f"{kind}({kernel}, {stride}{f', {padding}' if padding else ''})"


POOLS = {
    dims: tuple(
        pool_choice(f"{kind}Pool{dims}d", *geometry)
        for geometry in POOL_GEOMETRIES
        for kind in ("Max", "Avg")
    )
    for dims in (1, 2, 3)
}
PARAMETER_FREE_CHOICES = UNKNOWN_CHOICES + tuple(p for pools in POOLS.values() for p in pools)


@functools.lru_cache(maxsize=4096)
def pool_geometry(choice: str) -> tuple[int, int, int, int] | None:
    """(dims, kernel, stride, padding) of a Max/AvgPool choice; None for anything else."""
    name, paren, rest = choice.partition("(")
    if name[:7] not in ("MaxPool", "AvgPool") or name[7:] not in ("1d", "2d", "3d"):
        return None
    dims = int(name[7])
    if not paren:
        return dims, 2, 2, 0
    numbers = rest.removesuffix(")").split(", ")
    if (
        not rest.endswith(")")
        or not 1 <= len(numbers) <= 3
        or not all(n.isdigit() for n in numbers)
    ):
        return None
    kernel, stride, padding = (*map(int, numbers), *[0] * (3 - len(numbers)))
    return dims, kernel, stride or kernel, padding


@functools.lru_cache(maxsize=4096)
def shape_class(choice: str) -> str:
    """What a choice does to the shape: "keep", "flatten", "pool<n>d" (kernel 2, stride 2),
    "pool<n>d(k, s, p)" for another pool geometry, or the adaptive pool itself."""
    if choice == "Flatten":
        return "flatten"
    geometry = pool_geometry(choice)
    if geometry is not None:
        dims, kernel, stride, padding = geometry
        plain = (kernel, stride, padding) == (2, 2, 0)
        return f"pool{dims}d" + ("" if plain else f"({kernel}, {stride}, {padding})")
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
