"""The contract every detector follows: a group of keys in, a `Detection` or None out.

A detector looks at one module path (`Group`): the keys under it, relative to it. Leaf
detectors explain the module's direct keys as one torch.nn type and decline when
anything else sits below it; composite detectors (attention, Transformer layers, RNNs)
claim the whole subtree and check every key in it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recovery_core.io.checkpoint import TensorInfo


@dataclass(frozen=True)
class Group:
    path: str  # "" for the root
    keys: Mapping[
        str, TensorInfo
    ]  # every key under `path`, relative to it ("weight", "layers.0.linear1.weight")
    children: tuple[
        str, ...
    ] = ()  # immediate child names, definition order, parameter-less ones included
    # Facts about the neighbourhood, asked lazily (few detectors need them; a group is made
    # for every module, 50,000 of them in a 100,000-key file):
    # path -> spatial dims (1-3) of the nearest sibling convolution
    neighbour_conv_dims_of: Callable[[str], int | None] | None = field(default=None, repr=False)
    # path -> output width of the nearest earlier module showing one
    width_of: Callable[[str], int | None] | None = field(default=None, repr=False)
    # path -> in_features of a Linear defined right after it, if that is what follows
    next_linear_of: Callable[[str], int | None] | None = field(default=None, repr=False)
    # path -> spatial dims of the last convolution defined before its keys in the file
    conv_dims_before_of: Callable[[str], int | None] | None = field(default=None, repr=False)
    # Evidence from the whole checkpoint, shared by every group (never copied):
    tied: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # key -> keys sharing storage
    order: Mapping[str, int] = field(default_factory=dict)  # full key -> position in the file
    transposed_names: frozenset[str] = frozenset()  # module names proven to store (in, out)

    @functools.cached_property
    def neighbour_conv_dims(self) -> int | None:
        """Spatial dims (1-3) of the nearest sibling convolution."""
        of = self.neighbour_conv_dims_of
        return None if of is None else of(self.path)

    @functools.cached_property
    def conv_dims_before(self) -> int | None:
        """Spatial dims of the last convolution defined before this module's keys in the
        file (the keys in the file: a weight-normed group's stand-in weight is not one)."""
        of = self.conv_dims_before_of
        return None if of is None else of(self.path)

    @property
    def input_width(self) -> int | None:
        return None if self.width_of is None else self.width_of(self.path)

    @property
    def next_linear_width(self) -> int | None:
        return None if self.next_linear_of is None else self.next_linear_of(self.path)

    def full(self, relative: str) -> str:
        return f"{self.path}.{relative}" if self.path else relative

    def partners(self, relative: str) -> tuple[str, ...]:
        """Full keys elsewhere that share this key's storage (tied weights)."""
        return self.tied.get(self.full(relative), ())

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @functools.cached_property  # every detector asks; a frozen group computes it once
    def direct(self) -> dict[str, TensorInfo]:
        return {k: v for k, v in self.keys.items() if "." not in k}

    @functools.cached_property
    def is_leaf(self) -> bool:
        """True when every key sits directly on this module (no child owns weights)."""
        return all("." not in k for k in self.keys)

    def shape(self, relative: str) -> tuple[int, ...] | None:
        info = self.keys.get(relative)
        return None if info is None else info.shape

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key's shape; the same dict on each call, so callers must not change it."""
        return self._shapes

    @functools.cached_property
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.keys.items()}


@dataclass(frozen=True)
class Detection:
    type: str  # torch.nn class name (or one of ours: "PositionalEncoding")
    args: Mapping[str, Any]  # constructor keyword arguments the shapes determine
    evidence: str  # "weight (64, 32) → Linear(in_features=32, out_features=64)"
    hidden: tuple[str, ...] = ()  # free hyperparameters the constructor also takes
    alternatives: tuple[str, ...] = ()  # other types the same shapes allow
    note: str = ""  # why the type is uncertain
    composite: bool = False  # claims the whole subtree; children are listed for display


Detector = Callable[[Group], "Detection | None"]


def fmt(shape: tuple[int, ...]) -> str:
    """A shape as people write it: (64, 32), (64,)."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def call(type_name: str, args: Mapping[str, Any]) -> str:
    """Linear(in_features=32, out_features=64)."""
    return f"{type_name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"
