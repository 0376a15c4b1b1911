"""Frozen-prefix caching: run the frozen part once, train the trainable suffix on its output.

The cut is found on the model itself: a probe forward records which modules return the
model's output object (the "output chain"). If every trainable parameter sits inside one
module of that chain, and that module (or, for a Sequential, its first trainable child)
is called once, its input depends only on frozen modules. Frozen modules run in eval mode
(see `freeze.set_train_mode`), so that input is deterministic and can be computed once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from recovery_core.fit.freeze import FreezePlan, eval_mode

# Features are computed in chunks of at least this many samples.
FEATURE_CHUNK = 256


@dataclass(frozen=True)
class Suffix:
    """Where to cut: the entry module's input is cached; `runner` computes the output."""

    entry: str  # module path whose input is cached
    runner: nn.Module  # the trainable suffix: the entry module or a Sequential tail
    description: str  # "head" or "net[3:]"


class _Captured(Exception):
    """Raised by the capture hook to skip the rest of the forward (we only need the input)."""


def output_chain(model: nn.Module, probe_inputs: Sequence[Tensor]) -> tuple[list[str], Counter]:
    """Module paths whose output *is* the model output (deepest last), and call counts."""
    outputs: dict[str, Any] = {}
    calls: Counter = Counter()
    handles = []
    for path, module in model.named_modules():

        def hook(_m: nn.Module, _a: Any, out: Any, path: str = path) -> None:
            outputs[path] = out
            calls[path] += 1

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad(), eval_mode(model):  # a probe must not move BatchNorm statistics
            result = model(*probe_inputs)
    finally:
        for h in handles:
            h.remove()
    chain = [p for p in outputs if _same_values(outputs[p], result)]
    chain.sort(key=lambda p: (p.count(".") + 1) if p else 0)
    return chain, calls


def _same_values(out: Any, result: Any) -> bool:
    """`out` is the model's output, or a view of it (a model that moves its batch
    dimension for the caller returns its last module's output as a view)."""
    if not isinstance(result, Tensor) or not isinstance(out, Tensor):
        return False
    return out is result or (
        out.data_ptr() == result.data_ptr() and out.numel() == result.numel()
    )


def find_suffix(
    model: nn.Module, plan: FreezePlan, probe_inputs: Sequence[Tensor]
) -> tuple[Suffix | None, str]:
    """The trainable suffix to run on cached features, or None with the reason."""
    trainable = list(plan.trainable_param_names)
    if not trainable:
        return None, "nothing trains"
    modules = dict(model.named_modules())
    chain, calls = output_chain(model, probe_inputs)
    if not chain:
        return None, "the model's output is not a single tensor returned by a module"
    for path in reversed(chain):  # deepest first: the smallest suffix wins
        if not all(_within(name, path) for name in trainable):
            continue
        module = modules[path]
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            first = next(
                i
                for i, (name, _) in enumerate(children)
                if any(_within(t, _join(path, name)) for t in trainable)
            )
            if first == 0 and path == "":
                return None, "the first layer trains, so there is no frozen prefix to cache"
            if first > 0:
                tail = children[first:]
                if any(calls[_join(path, n)] != 1 for n, _ in tail):
                    return None, f"a layer after {path or 'the input'} is called more than once"
                entry = _join(path, tail[0][0])
                runner = nn.Sequential(*(m for _, m in tail))
                return Suffix(entry, runner, f"{path or 'model'}[{first}:]"), ""
        if path == "":
            return None, "the trainable modules are not a suffix of the forward"
        if calls[path] != 1:
            return None, f"{path} is called more than once in the forward"
        return Suffix(path, module, path), ""
    return None, "the trainable modules are not a suffix of the forward (a middle layer trains)"


def _within(name: str, path: str) -> bool:
    return path == "" or name.startswith(path + ".")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class CachedFeatures:
    """The entry module's inputs for every sample, stored with the samples along dimension 0.

    A sequence model built with batch_first=False keeps its samples along dimension 1;
    `dims` records where each input holds them, and `take` puts them back there. Tensors
    that do not follow the batch (a causal mask, a flag) are kept as constants.
    """

    def __init__(
        self,
        batched: dict[int | str, Tensor],
        constants: dict[int | str, Any],
        n_args: int,
        dims: dict[int | str, int] | None = None,
    ):
        self.batched = batched
        self.constants = constants
        self.n_args = n_args
        self.dims = dims or {}

    @property
    def sample_dim(self) -> int:
        """Where the entry's (first) input holds the samples; its output keeps them there."""
        return next(iter(self.dims.values()), 0)

    def take(self, idx: Tensor) -> tuple[list[Any], dict[str, Any]]:
        values = {
            k: t[idx].movedim(0, self.dims.get(k, 0)) for k, t in self.batched.items()
        } | self.constants
        args = [values[i] for i in range(self.n_args)]
        kwargs = {k: v for k, v in values.items() if isinstance(k, str)}
        return args, kwargs

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.batched.values())


def capture_inputs(
    model: nn.Module, entry: nn.Module, inputs: Sequence[Tensor]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The args and kwargs `entry` receives when the model runs on `inputs` (no grad)."""
    captured: dict[str, Any] = {}

    def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["args"], captured["kwargs"] = args, kwargs
        raise _Captured

    handle = entry.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with torch.no_grad(), eval_mode(model):
            model(*inputs)
    except _Captured:
        pass
    finally:
        handle.remove()
    assert "args" in captured, "the entry module was not called"
    return captured["args"], captured["kwargs"]


def cache_features(
    model: nn.Module, suffix: Suffix, inputs: Sequence[Tensor], chunk: int = FEATURE_CHUNK
) -> tuple[CachedFeatures | None, str]:
    """Run the frozen prefix once over all samples. None (with a reason) when the entry's
    inputs do not keep samples along dimension 0, so batches could not be sliced."""
    entry = dict(model.named_modules())[suffix.entry]
    n = inputs[0].shape[0]
    probes = [capture_inputs(model, entry, [t[:k] for t in inputs]) for k in (2, 3) if k <= n]
    if len(probes) < 2:
        return None, "too few samples to check the cached features' layout"
    (args_a, kw_a), (args_b, kw_b) = probes
    a = dict(enumerate(args_a)) | kw_a
    b = dict(enumerate(args_b)) | kw_b
    batched_keys: list[int | str] = []
    dims: dict[int | str, int] = {}
    constants: dict[int | str, Any] = {}
    for key, va in a.items():
        vb = b.get(key)
        if isinstance(va, Tensor) and isinstance(vb, Tensor):
            dim = _sample_dim(va, vb)
            if dim is not None:
                batched_keys.append(key)
                dims[key] = dim
            elif va.shape == vb.shape and torch.equal(va, vb):
                constants[key] = va
            else:
                return None, f"the input of {suffix.entry} does not keep samples along dimension 0"
        elif not isinstance(va, Tensor) and not isinstance(vb, Tensor) and va == vb:
            constants[key] = va
        else:
            return None, f"the input of {suffix.entry} changes in a way that cannot be cached"
    parts: dict[int | str, list[Tensor]] = {k: [] for k in batched_keys}
    step = max(chunk, 1)
    for start in range(0, n, step):
        args, kwargs = capture_inputs(model, entry, [t[start : start + step] for t in inputs])
        values = dict(enumerate(args)) | kwargs
        for key in batched_keys:
            parts[key].append(values[key].detach())
    batched = {k: torch.cat(v, dims[k]).movedim(dims[k], 0) for k, v in parts.items()}
    return CachedFeatures(batched, constants, n_args=len(args_a), dims=dims), ""


def _sample_dim(a: Tensor, b: Tensor) -> int | None:
    """The one dimension that held 2 samples in `a` and 3 in `b` (the rest equal), if any."""
    if a.dim() != b.dim():
        return None
    differing = [d for d in range(a.dim()) if a.shape[d] != b.shape[d]]
    if len(differing) == 1 and (a.shape[differing[0]], b.shape[differing[0]]) == (2, 3):
        return differing[0]
    return None


def cached_forward(suffix: Suffix, features: CachedFeatures) -> Callable[[Tensor], Tensor]:
    """idx -> the suffix's output for those samples."""

    def forward(idx: Tensor) -> Tensor:
        args, kwargs = features.take(idx)
        out = suffix.runner(*args, **kwargs)
        dim = features.sample_dim
        return out.movedim(dim, 0) if dim and out.dim() > dim else out

    return forward


def full_forward(model: nn.Module, inputs: Sequence[Tensor]) -> Callable[[Tensor], Tensor]:
    def forward(idx: Tensor) -> Tensor:
        return model(*(t[idx] for t in inputs))

    return forward


__all__ = [
    "CachedFeatures",
    "Suffix",
    "cache_features",
    "cached_forward",
    "capture_inputs",
    "find_suffix",
    "full_forward",
    "output_chain",
]
