"""Read a checkpoint safely and lazily into a normalized `Checkpoint`.

CONTRACT (other modules rely on these names; the loader fills them in):
- `load_checkpoint(source, *, name=None) -> Checkpoint` takes a path (file, sharded folder,
  or `*.index.json`) or bytes.
- `Checkpoint.tensors`: TensorInfo per key, after unwrapping and prefix stripping, in file order.
- `Checkpoint.tensor(name)` / `.state_dict()` read values on demand.
- `Checkpoint.from_state_dict(sd)` wraps an in-memory state dict (tests, the dashboard).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix: "float32"
    numel: int
    nbytes: int


@dataclass(frozen=True)
class TensorStats:
    name: str
    mean: float
    std: float
    min: float
    max: float
    nan_count: int
    inf_count: int


def tensor_info(name: str, t: torch.Tensor) -> TensorInfo:
    """Shape facts only: never touches the tensor's data."""
    return TensorInfo(
        name=name,
        shape=tuple(t.shape),
        dtype=str(t.dtype).removeprefix("torch."),
        numel=t.numel(),
        nbytes=t.numel() * t.element_size(),
    )


@dataclass(frozen=True)
class Checkpoint:
    tensors: tuple[TensorInfo, ...]
    format: str  # "torch-zip", "torch-legacy", "safetensors", "sharded", "memory"
    _read: Callable[[str], torch.Tensor] = field(repr=False, compare=False)
    source_name: str = ""  # a display name (never a server path for uploads)
    wrapper_key: str | None = None  # e.g. "state_dict" when the weights were nested
    stripped_prefix: str = ""  # e.g. "module." when every key carried it
    extras: Mapping[str, str] = field(default_factory=dict)  # other entries: name -> summary
    hyper_parameters: Mapping[str, Any] = field(default_factory=dict)  # plain values only
    metadata: Mapping[str, str] = field(default_factory=dict)  # safetensors __metadata__
    # The pickle's `_metadata` module paths (after prefix stripping): every submodule,
    # including parameter-less ones such as activations, "" being the root.
    module_paths: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {t.name: t.shape for t in self.tensors}

    def info(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def tensor(self, name: str) -> torch.Tensor:
        """The values of one tensor, read now (and only now)."""
        return self._read(name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {t.name: self._read(t.name) for t in self.tensors}

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, source_name: str = "in memory", **kw: Any
    ) -> Checkpoint:
        sd = dict(state_dict)
        metadata = getattr(state_dict, "_metadata", None)
        if metadata is not None and "module_paths" not in kw:
            kw["module_paths"] = tuple(metadata.keys())
        return cls(
            tensors=tuple(tensor_info(k, v) for k, v in sd.items()),
            format="memory",
            _read=sd.__getitem__,
            source_name=source_name,
            **kw,
        )
