"""Frozen-prefix caching: run the frozen part once, train the trainable suffix on its output.

The cut is found on the model itself: a probe forward records which modules return the
model's output object (the "output chain"). If every trainable parameter sits inside one
module of that chain, and that module (or, for a Sequential, its first trainable child)
is called once, its input depends only on frozen modules. Frozen modules run in eval mode
(see `freeze.set_train_mode`), so that input is deterministic and can be computed once.

The frozen trunk runs over the data once: the probe that finds the cut (two samples) also
records the entry's input, and comparing it with the first chunk of the cache tells which
dimension holds the samples, so no other forward is needed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from recovery_core.fit.freeze import FreezePlan, eval_mode

# Features are computed in chunks of at least this many samples (`chunk_for`).
FEATURE_CHUNK = 256
# A chunk grows past its least size, up to CHUNK_GROWTH times, while its estimated work
# stays under CHUNK_WORK multiply-adds: a chunk's fixed cost (a Python call per module,
# ~4 ms for a small transformer) dominates when a sample costs microseconds, as 79
# chunks of a 6,000-parameter trunk over 20,000 sequences did (0.45 s; 6 chunks now
# take ~0.15 s). A model whose sample costs more keeps the least size, and its memory.
CHUNK_WORK = 1 << 28
CHUNK_GROWTH = 16


# The probe's samples: two, so that a chunk of another size tells where samples are held.
PROBE_SAMPLES = 2


@dataclass(frozen=True)
class Capture:
    """What a module received for the first `samples` samples of the data."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    samples: int


@dataclass(frozen=True)
class Suffix:
    """Where to cut: the entry module's input is cached; `runner` computes the output."""

    entry: str  # module path whose input is cached
    runner: nn.Module  # the trainable suffix: the entry module or a Sequential tail
    description: str  # "head" or "net[3:]"
    # The entry's input during find_suffix's probe (its first samples): with the cache's
    # first chunk it tells where the samples are held, without another forward.
    probe: Capture | None = field(default=None, compare=False, repr=False)


class _Captured(Exception):
    """Raised by the capture hook to skip the rest of the forward (we only need the input)."""


def output_chain(
    model: nn.Module, probe_inputs: Sequence[Tensor], record: Collection[str] = ()
) -> tuple[list[str], Counter, dict[str, Capture]]:
    """Module paths whose output *is* the model output (deepest last), call counts, and
    the first inputs of the modules in `record` (probe-sized, kept for the cache)."""
    outputs: dict[str, Any] = {}
    calls: Counter = Counter()
    seen: dict[str, Capture] = {}
    samples = probe_inputs[0].shape[0] if probe_inputs else 0
    handles = []
    for path, module in model.named_modules():

        def hook(_m: nn.Module, _a: Any, out: Any, path: str = path) -> None:
            outputs[path] = out
            calls[path] += 1

        def pre_hook(_m: nn.Module, args: tuple, kwargs: dict, path: str = path) -> None:
            if path not in seen:  # copies: the rest of the forward may write into them
                seen[path] = Capture(_copied(args), _copied(kwargs), samples)

        handles.append(module.register_forward_hook(hook))
        if path in record:
            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
    try:
        with torch.no_grad(), eval_mode(model):  # a probe must not move BatchNorm statistics
            result = model(*probe_inputs)
    finally:
        for h in handles:
            h.remove()
    chain = [p for p in outputs if _same_values(outputs[p], result)]
    chain.sort(key=lambda p: (p.count(".") + 1) if p else 0)
    return chain, calls, seen


def _copied(value: Any) -> Any:
    """`value` with every tensor in it (in tuples, lists and dicts) cloned."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copied(v) for v in value)
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    return value


def _same_values(out: Any, result: Any) -> bool:
    """`out` is the model's output, or a view of it (a model that moves its batch
    dimension for the caller returns its last module's output as a view)."""
    if not isinstance(result, Tensor) or not isinstance(out, Tensor):
        return False
    return out is result or (out.data_ptr() == result.data_ptr() and out.numel() == result.numel())


def find_suffix(
    model: nn.Module, plan: FreezePlan, probe_inputs: Sequence[Tensor]
) -> tuple[Suffix | None, str]:
    """The trainable suffix to run on cached features, or None with the reason. The suffix
    carries its entry's input for `probe_inputs` (see `Suffix.probe`)."""
    trainable = list(plan.trainable_param_names)
    if not trainable:
        return None, "nothing trains"
    chain, calls, seen = output_chain(model, probe_inputs, _entries(model, trainable))
    if not chain:
        return None, "the model's output is not a single tensor returned by a module"
    suffix, why_not = _cut(model, trainable, chain, calls)
    if suffix is None:
        return None, why_not
    return replace(suffix, probe=seen.get(suffix.entry)), ""


def _entries(model: nn.Module, trainable: Sequence[str]) -> set[str]:
    """Every module `_cut` may choose as the entry: those holding every trainable parameter
    and, inside a Sequential among them, its first child holding one."""
    entries = set()
    for path, module in model.named_modules():
        if not all(_within(name, path) for name in trainable):
            continue
        entries.add(path)
        for name, _ in module.named_children() if isinstance(module, nn.Sequential) else ():
            if any(_within(t, _join(path, name)) for t in trainable):
                entries.add(_join(path, name))
                break
    return entries


def _cut(
    model: nn.Module, trainable: Sequence[str], chain: Sequence[str], calls: Counter
) -> tuple[Suffix | None, str]:
    """The smallest suffix of the output chain that holds every trainable parameter."""
    modules = dict(model.named_modules())
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
    model: nn.Module,
    suffix: Suffix,
    inputs: Sequence[Tensor],
    chunk: int = FEATURE_CHUNK,
    probe: Capture | None = None,
) -> tuple[CachedFeatures | None, str]:
    """Run the frozen prefix once over all samples, in chunks from the first. None (with
    a reason) when the entry's inputs do not keep samples along one dimension, so batches
    could not be sliced. `probe`: the entry's input for these inputs' first samples,
    already captured (find_suffix's): compared with the first chunk, it tells where the
    samples are, so no extra forward is needed to find out. It is not a piece of the cache:
    where positions follow the samples' order, only a chunk from the first sample computes
    what the whole does."""
    entry = dict(model.named_modules())[suffix.entry]
    n = inputs[0].shape[0]
    if n <= PROBE_SAMPLES:
        return None, "too few samples to check the cached features' layout"
    if probe is None or probe.samples != PROBE_SAMPLES:
        probe = _capture(model, entry, inputs, 0, PROBE_SAMPLES)
    step = max(chunk, 1)
    first = _capture(model, entry, inputs, 0, min(step, n))
    # Two captures of different sizes tell which dimension holds the samples.
    other = first if first.samples != probe.samples else (
        _capture(model, entry, inputs, 0, PROBE_SAMPLES + 1)
    )  # fmt: skip
    layout, reason = _layout(suffix, probe, other)
    if layout is None:
        return None, reason
    dims, constants = layout
    pieces = [first] + [
        _capture(model, entry, inputs, start, min(start + step, n))
        for start in range(step, n, step)
    ]
    values = [dict(enumerate(p.args)) | p.kwargs for p in pieces]
    batched = {
        key: torch.cat([v[key].detach() for v in values], dim).movedim(dim, 0)
        for key, dim in dims.items()
    }
    return CachedFeatures(batched, constants, n_args=len(first.args), dims=dims), ""


def _capture(
    model: nn.Module, entry: nn.Module, inputs: Sequence[Tensor], start: int, stop: int
) -> Capture:
    args, kwargs = capture_inputs(model, entry, [t[start:stop] for t in inputs])
    return Capture(args, kwargs, stop - start)


def _layout(
    suffix: Suffix, a: Capture, b: Capture
) -> tuple[tuple[dict[int | str, int], dict[int | str, Any]] | None, str]:
    """From two pieces of different sizes: the dimension holding the samples in each
    batched input, and the inputs that stay the same (a causal mask, a flag)."""
    values_a = dict(enumerate(a.args)) | a.kwargs
    values_b = dict(enumerate(b.args)) | b.kwargs
    dims: dict[int | str, int] = {}
    constants: dict[int | str, Any] = {}
    for key, va in values_a.items():
        vb = values_b.get(key)
        if isinstance(va, Tensor) and isinstance(vb, Tensor):
            dim = _sample_dim(va, vb, (a.samples, b.samples))
            if dim is not None:
                dims[key] = dim
            elif va.shape == vb.shape and torch.equal(va, vb):
                constants[key] = va
            else:
                return None, f"the input of {suffix.entry} does not keep samples along dimension 0"
        elif not isinstance(va, Tensor) and not isinstance(vb, Tensor) and va == vb:
            constants[key] = va
        else:
            return None, f"the input of {suffix.entry} changes in a way that cannot be cached"
    return (dims, constants), ""


def _sample_dim(a: Tensor, b: Tensor, sizes: tuple[int, int]) -> int | None:
    """The one dimension that held `sizes` samples in `a` and `b` (the rest equal), if any."""
    if a.dim() != b.dim():
        return None
    differing = [d for d in range(a.dim()) if a.shape[d] != b.shape[d]]
    if len(differing) == 1 and (a.shape[differing[0]], b.shape[differing[0]]) == sizes:
        return differing[0]
    return None


def chunk_for(module: nn.Module, samples: Sequence[Tensor], least: int) -> int:
    """Samples per chunk of a pass of `module` over `samples` (samples along dimension
    0): its parameters times a sample's elements bound a sample's multiply-adds for layers
    applied at every position (linear, convolution, attention's projections), and a
    sample's elements squared its pairwise ones (attention's scores). Deterministic: the
    same model and data always make the same chunks."""
    params = sum(p.numel() for p in module.parameters())
    elements = sum(t[:1].numel() for t in samples)
    work = max(params * elements + elements * elements, 1)
    return max(least, min(least * CHUNK_GROWTH, CHUNK_WORK // work))


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
    "Capture",
    "Suffix",
    "cache_features",
    "cached_forward",
    "capture_inputs",
    "chunk_for",
    "find_suffix",
    "full_forward",
    "output_chain",
]
