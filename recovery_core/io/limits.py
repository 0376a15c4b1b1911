"""Bounds on the work one untrusted file may cause (it must not exhaust the host).

Every bound a file controls lives here, with the reason for its default. Exceeding one
raises `LimitExceededError` naming the field, so a person who trusts a file can raise it.
"""

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
    # The parse runs in a child process that is killed when the budget runs out.
    time_budget_seconds: float = 60.0
    # Address space the parsing child may add (tensor data is never read there, except for
    # legacy files whose storages are bounded by the file size anyway).
    parse_memory_bytes: int = 1024**3
    # Pickle opcodes in data.pkl: torch.save spends ~30 per tensor, so 200k keys fit in 8M.
    max_pickle_opcodes: int = 40 * 200_000
    # Items in one pickled list/dict/set/tuple (a state dict is the largest: max_keys).
    max_container_items: int = 200_000
    # Characters of text kept from a file (hyperparameters, extras, key names, metadata),
    # counted over every reference: a thousand references to one 1 MiB string count 1 GiB.
    max_text_chars: int = 8 * 1024**2
    # One key: real keys are < 200 characters and < 20 dotted parts.
    max_key_chars: int = 1024
    max_key_parts: int = 64
    # JSON objects and arrays in a safetensors header or shard index: a tensor needs three
    # (entry, shape, offsets). Counted before json.loads, where each costs ~100 bytes+.
    max_json_containers: int = 3 * 200_000 + 64
    # Nesting of a safetensors header / shard index: real ones are 3 levels deep.
    max_json_depth: int = 16
    # Statistics and histograms of one tensor: time per call (a zero-stride tensor can
    # declare billions of elements over a few bytes; statistics read the real bytes).
    stats_time_seconds: float = 10.0


DEFAULT_LIMITS = LoadLimits()
