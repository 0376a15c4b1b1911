"""Bounds on the work one checkpoint load may do (untrusted files must not exhaust the host)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadLimits:
    # Large language models have ~1,000-10,000 keys; 200k leaves room without letting a
    # crafted pickle of millions of tiny tensors stall the dashboard.
    max_keys: int = 200_000
    # Training checkpoints nest the state dict 1-3 levels deep (Lightning: 2); optimizer
    # state adds a few more. Deeper structures are refused rather than walked.
    max_depth: int = 8
    # safetensors headers of real models are a few MB; the format itself caps them at 100 MB.
    max_header_bytes: int = 100 * 1024**2
    max_file_bytes: int = 64 * 1024**3
    # Wall-clock budget for one `load_checkpoint` call (unpickling, checks, header parsing).
    time_budget_seconds: float = 60.0
