"""Statistics and histograms of one tensor's values, computed in float64 chunk by chunk.

Chunking keeps the extra memory to a few MB whatever the tensor's size (a float64 copy
of a 1 GB float32 tensor would be 2 GB). Mean, std, min and max are over the finite
values; NaN and Inf are counted separately.

The work follows the stored bytes, not the declared shape: a dimension of stride 0
repeats the same values, so it is read once and its values weighted by the repeat (a
2**29-element tensor over 16 bytes costs 4 values, not 2 GiB). Non-contiguous tensors
are copied a slab at a time, never whole, and a time budget stops what is left (tensors
whose strides overlap in other ways).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch

from recovery_core.errors import LimitExceededError

CHUNK_ELEMENTS = 1 << 18  # ~2 MB of float64 per chunk; temporaries stay ~10 MB


def collapse_repeats(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(t without its stride-0 dimensions, how many times each value repeats)."""
    repeat = 1
    index: list[int | slice] = []
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride == 0 and size > 1:
            repeat *= size
            index.append(slice(0, 1))
        else:
            index.append(slice(None))
    return (t[tuple(index)] if repeat > 1 else t), repeat


def _float64_chunks(t: torch.Tensor, deadline: float, name: str) -> Iterator[torch.Tensor]:
    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.is_complex():
        t = t.real  # the dashboard shows the real part of complex weights
    slabs: Iterator[torch.Tensor]
    if t.is_contiguous() or t.dim() <= 1:
        slabs = iter([t.reshape(-1)])  # a view (a 1-d tensor is copied a chunk at a time below)
    else:
        rows = max(1, CHUNK_ELEMENTS // max(1, t[0].numel()))
        slabs = (t[i : i + rows].reshape(-1) for i in range(0, t.shape[0], rows))
    for slab in slabs:
        for start in range(0, slab.numel(), CHUNK_ELEMENTS):
            if time.monotonic() > deadline:
                raise LimitExceededError(
                    f"the statistics of {name or 'this tensor'} took longer than the time "
                    "allowed (stats_time_seconds); its strides make it read the same bytes "
                    "many times.",
                    limit="stats_time_seconds",
                )
            yield slab[start : start + CHUNK_ELEMENTS].to(torch.float64)


def has_values(t: torch.Tensor) -> bool:
    """False for meta tensors (shape only) and empty ones."""
    return t.device.type != "meta" and t.numel() > 0


def summarize_values(
    t: torch.Tensor, seconds: float = math.inf, name: str = ""
) -> tuple[float, float, float, float, int, int]:
    """(mean, std, min, max, nan_count, inf_count); std is the sample std (n - 1)."""
    nan = math.nan
    if not has_values(t):
        return nan, nan, nan, nan, 0, 0
    t, repeat = collapse_repeats(t)
    deadline = time.monotonic() + seconds
    count, mean, m2 = 0, 0.0, 0.0
    low, high = math.inf, -math.inf
    nans = infs = 0
    for chunk in _float64_chunks(t, deadline, name):
        finite_mask = torch.isfinite(chunk)
        nans += int(torch.isnan(chunk).sum())
        infs += int(torch.isinf(chunk).sum())
        finite = chunk[finite_mask]
        k = finite.numel()
        if k == 0:
            continue
        # Chan et al.'s parallel update: merges chunk mean/M2 without losing precision.
        chunk_mean = finite.mean().item()
        chunk_m2 = ((finite - chunk_mean) ** 2).sum().item()
        total = count + k
        delta = chunk_mean - mean
        mean += delta * k / total
        m2 += chunk_m2 + delta * delta * count * k / total
        count = total
        low = min(low, finite.min().item())
        high = max(high, finite.max().item())
    # Each value stands for `repeat` equal ones: the mean stays, deviations add up `repeat` times.
    count, m2, nans, infs = count * repeat, m2 * repeat, nans * repeat, infs * repeat
    if count == 0:
        return nan, nan, nan, nan, nans, infs
    std = math.sqrt(m2 / (count - 1)) if count > 1 else 0.0
    return mean, std, low, high, nans, infs


def value_histogram(
    t: torch.Tensor, bins: int = 50, seconds: float = math.inf, name: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts int64 [bins], edges float64 [bins + 1]) of the finite values."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    deadline = time.monotonic() + seconds
    _, _, low, high, _, _ = summarize_values(t, seconds, name)
    if math.isnan(low):
        return torch.zeros(bins, dtype=torch.int64), torch.linspace(0.0, 1.0, bins + 1).double()
    if low == high:  # one distinct value: give it a visible bar
        low, high = low - 0.5, high + 0.5
    counts = torch.zeros(bins, dtype=torch.float64)
    t, repeat = collapse_repeats(t)
    for chunk in _float64_chunks(t, deadline, name):
        finite = chunk[torch.isfinite(chunk)]
        if finite.numel():
            counts += torch.histc(finite, bins=bins, min=low, max=high)
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    return counts.round().to(torch.int64) * repeat, edges
