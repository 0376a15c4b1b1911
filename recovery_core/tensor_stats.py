"""Statistics and histograms of one tensor's values, computed in float64 chunk by chunk.

Chunking keeps the extra memory to a few MB whatever the tensor's size (a float64 copy
of a 1 GB float32 tensor would be 2 GB). Mean, std, min and max are over the finite
values; NaN and Inf are counted separately.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

CHUNK_ELEMENTS = 1 << 18  # ~2 MB of float64 per chunk; temporaries stay ~10 MB


def _float64_chunks(t: torch.Tensor) -> Iterator[torch.Tensor]:
    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.is_complex():
        t = t.real  # the dashboard shows the real part of complex weights
    flat = t.reshape(-1)  # a copy only when the tensor is not contiguous
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        yield flat[start : start + CHUNK_ELEMENTS].to(torch.float64)


def has_values(t: torch.Tensor) -> bool:
    """False for meta tensors (shape only) and empty ones."""
    return t.device.type != "meta" and t.numel() > 0


def summarize_values(t: torch.Tensor) -> tuple[float, float, float, float, int, int]:
    """(mean, std, min, max, nan_count, inf_count); std is the sample std (n - 1)."""
    nan = math.nan
    if not has_values(t):
        return nan, nan, nan, nan, 0, 0
    count, mean, m2 = 0, 0.0, 0.0
    low, high = math.inf, -math.inf
    nans = infs = 0
    for chunk in _float64_chunks(t):
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
    if count == 0:
        return nan, nan, nan, nan, nans, infs
    std = math.sqrt(m2 / (count - 1)) if count > 1 else 0.0
    return mean, std, low, high, nans, infs


def value_histogram(t: torch.Tensor, bins: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts int64 [bins], edges float64 [bins + 1]) of the finite values."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    _, _, low, high, _, _ = summarize_values(t)
    if math.isnan(low):
        return torch.zeros(bins, dtype=torch.int64), torch.linspace(0.0, 1.0, bins + 1).double()
    if low == high:  # one distinct value: give it a visible bar
        low, high = low - 0.5, high + 0.5
    counts = torch.zeros(bins, dtype=torch.float64)
    for chunk in _float64_chunks(t):
        finite = chunk[torch.isfinite(chunk)]
        if finite.numel():
            counts += torch.histc(finite, bins=bins, min=low, max=high)
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    return counts.round().to(torch.int64), edges
