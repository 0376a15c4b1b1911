"""Find the state dict inside a loaded training checkpoint and strip prefixes every key shares.

Works on the plain object that the weights-only unpickler returned (dicts, lists, tensors,
scalars). Every walk is iterative and bounded by `LoadLimits`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recovery_core.errors import CheckpointFormatError, LimitExceededError
from recovery_core.io.limits import LoadLimits
from recovery_core.io.torch_pickle import TensorRef

if TYPE_CHECKING:
    import torch

# Where training code nests the weights, in order of preference on a tie in tensor count.
WRAPPER_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "module",
    "network",
    "generator",
    "params",
    "weights",
    "state_dict_ema",
    "model_ema",
    "ema",
    "ema_state_dict",
)
# Entries that hold the constructor's settings (Lightning, nanoGPT, argparse dumps).
HYPER_PARAMETER_KEYS = (
    "hyper_parameters",
    "hparams",
    "hyperparameters",
    "model_args",
    "args",
    "config",
    "cfg",
)
# Prefixes that wrappers add to every key: torch.compile, DataParallel/DDP, Lightning.
SHARED_PREFIXES = ("_orig_mod.", "module.", "model.", "net.")

PLAIN_TYPES = (bool, int, float, str, type(None))


def is_tensor(value: Any) -> bool:
    """A tensor, or its metadata stand-in from `torch_pickle` (which needs no torch)."""
    if isinstance(value, TensorRef):
        return True
    torch_module = sys.modules.get("torch")  # nothing can be a tensor before torch loads
    return torch_module is not None and isinstance(value, torch_module.Tensor)


def _shape_and_dtype(value: Any) -> tuple[tuple[int, ...], str]:
    if isinstance(value, TensorRef):
        return value.shape, value.dtype
    return tuple(value.shape), str(value.dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Unwrapped:
    state_dict: dict[str, torch.Tensor | TensorRef]  # file order, keys not yet stripped
    wrapper_key: str | None  # dotted path of the nesting, e.g. "state_dict" or "model.ema"
    extras: dict[str, str]
    hyper_parameters: dict[str, Any]
    module_paths: tuple[str, ...]  # the pickle's `_metadata` keys, not yet stripped
    warnings: tuple[str, ...]


def walk(obj: Any, limits: LoadLimits, display: str) -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) inside dicts, lists and tuples; refuses deep or huge objects."""
    budget = 20 * limits.max_keys + 1000
    stack: list[tuple[str, Any, int]] = [("", obj, 0)]
    while stack:
        path, value, depth = stack.pop()
        yield path, value
        budget -= 1
        if budget < 0:
            raise _too_many_objects(limits, display)
        if isinstance(value, Mapping):
            children = [(_key_text(k, limits, display), v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            children = [(str(i), v) for i, v in enumerate(value)]
        else:
            continue
        if depth >= limits.max_depth and children:
            raise LimitExceededError(
                f"{display} nests containers deeper than {limits.max_depth} levels (at "
                f"{path or 'the top'!r}, max_depth); checkpoints never need that, so it was "
                "refused.",
                limit="max_depth",
            )
        if all(type(child) is TensorRef for _, child in children):
            # A state dict's 100,000 tensors: leaves, yielded here in the order the stack
            # would give them, without a trip through it each.
            for key, child in children:
                yield (f"{path}.{key}" if path else key), child
                budget -= 1
                if budget < 0:
                    raise _too_many_objects(limits, display)
            continue
        for key, child in reversed(children):
            stack.append((f"{path}.{key}" if path else key, child, depth + 1))


def _too_many_objects(limits: LoadLimits, display: str) -> LimitExceededError:
    return LimitExceededError(
        f"{display} holds more than {20 * limits.max_keys + 1000} objects, above this "
        "loader's limit (20 x max_keys); it was refused.",
        limit="max_keys",
    )


def _key_text(key: Any, limits: LoadLimits, display: str) -> str:
    """A dict key as text, refused when longer than any real key (paths repeat it)."""
    text = key if isinstance(key, str) else repr(key) if not isinstance(key, int) else f"{key:d}"
    if len(text) > limits.max_key_chars:
        raise LimitExceededError(
            f"{display} has a key of {len(text)} characters, more than the "
            f"{limits.max_key_chars} allowed (max_key_chars); it was refused.",
            limit="max_key_chars",
        )
    return text


def check_key(key: str, limits: LoadLimits, display: str) -> None:
    """A tensor name is a dotted module path: bounded length and parts, none empty."""
    _key_text(key, limits, display)
    parts = key.split(".", limits.max_key_parts)
    if len(parts) > limits.max_key_parts:
        raise LimitExceededError(
            f"{display} has a key with more than {limits.max_key_parts} dotted parts "
            "(max_key_parts); no model nests that deep, so it was refused.",
            limit="max_key_parts",
        )
    if "" in parts:
        raise CheckpointFormatError(
            f"{display} has the key {key!r} with an empty part (two dots in a row, or a dot "
            "at an end); a state dict's names never do, so it was refused."
        )


def text_chars(value: Any, budget: int) -> int:
    """Characters of text in plain values, counted per reference and stopped past `budget`
    (a list of a thousand references to one big string counts it a thousand times)."""
    total = 0
    stack = [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            total += 24  # numbers, None: their repr is short
    return total


def unwrap(obj: Any, display: str, limits: LoadLimits) -> Unwrapped:
    if is_tensor(obj):
        raise CheckpointFormatError(
            f"{display} holds a single tensor of shape {_shape_and_dtype(obj)[0]}, not a state dict; "
            "save model.state_dict() instead."
        )
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{display} holds a {type(obj).__name__}, not a state dict (a dict of name -> "
            "tensor); save model.state_dict() instead."
        )
    tensor_count = sum(is_tensor(v) for _, v in walk(obj, limits, display))
    if tensor_count > limits.max_keys:
        raise LimitExceededError(
            f"{display} holds {tensor_count} tensors, more than this loader's limit of "
            f"{limits.max_keys} (max_keys); it was refused.",
            limit="max_keys",
        )
    path, chosen, direct = _choose_state_dict(obj, limits)
    if direct == 0:
        where = "" if tensor_count == 0 else f" ({tensor_count} tensors only inside other entries)"
        raise CheckpointFormatError(
            f"{display} has no tensors under any entry that looks like a state dict{where}; "
            f"its top-level entries are {_short_list(obj)}."
        )
    state_dict: dict[str, torch.Tensor | TensorRef] = {}
    dropped = []
    for key, value in chosen.items():
        if isinstance(key, str) and is_tensor(value):
            state_dict[key] = value
        else:
            kind = value.type_name if isinstance(value, TensorRef) else type(value).__name__
            dropped.append(f"{key!r} ({kind})")
    warnings = []
    if dropped:
        warnings.append(
            f"dropped {len(dropped)} non-tensor entr{'y' if len(dropped) == 1 else 'ies'} of the "
            f"state dict: {', '.join(dropped[:5])}{' ...' if len(dropped) > 5 else ''}"
        )
    for key in state_dict:
        check_key(key, limits, display)
    extras, hyper_parameters = _surroundings(obj, path)
    used = text_chars([extras, hyper_parameters, list(state_dict)], limits.max_text_chars)
    if used > limits.max_text_chars:
        raise LimitExceededError(
            f"{display} holds more than {limits.max_text_chars} characters of names, settings "
            "and other entries (max_text_chars, counting every reference); it was refused.",
            limit="max_text_chars",
        )
    metadata = getattr(chosen, "_metadata", None)
    module_paths = tuple(str(k) for k in metadata) if isinstance(metadata, Mapping) else ()
    return Unwrapped(
        state_dict=state_dict,
        wrapper_key=".".join(path) or None,
        extras=extras,
        hyper_parameters=hyper_parameters,
        module_paths=module_paths,
        warnings=tuple(warnings),
    )


def _direct_tensor_count(mapping: Mapping) -> int:
    return sum(is_tensor(v) for v in mapping.values())


def _choose_state_dict(
    obj: Mapping, limits: LoadLimits
) -> tuple[tuple[str, ...], Mapping, int]:
    """The mapping with the most tensors: the top level, or one reached through wrapper
    keys; with its count of tensors (each candidate counted once: 100,000 values)."""
    candidates: list[tuple[tuple[str, ...], Mapping]] = []
    queue: list[tuple[tuple[str, ...], Mapping]] = [((), obj)]
    while queue:
        path, mapping = queue.pop(0)
        candidates.append((path, mapping))
        if len(path) >= limits.max_depth:
            continue
        for key in WRAPPER_KEYS:
            child = mapping.get(key)
            if isinstance(child, Mapping):
                queue.append(((*path, key), child))
    counts = [_direct_tensor_count(m) for _, m in candidates]
    if all(count == 0 for count in counts):
        # Unusual names ("generator_g", "backbone"): any top-level dict holding tensors,
        # except optimizer state, which also holds tensors.
        candidates += [
            ((str(k),), v)
            for k, v in obj.items()
            if isinstance(v, Mapping) and "optim" not in str(k).lower()
        ]
        counts += [_direct_tensor_count(m) for _, m in candidates[len(counts) :]]
    # max() keeps the first of equal counts: top level, then WRAPPER_KEYS order.
    best = max(range(len(candidates)), key=counts.__getitem__)
    return (*candidates[best], counts[best])


def _surroundings(obj: Mapping, path: tuple[str, ...]) -> tuple[dict[str, str], dict[str, Any]]:
    """Summaries of the entries beside the state dict, and the hyper-parameter dicts."""
    extras: dict[str, str] = {}
    hyper: dict[str, Any] = {}
    level: Mapping = obj
    # Each mapping on the way down to the state dict: its entries other than the next step.
    for depth, step in enumerate(path):
        prefix = ".".join(path[:depth])
        for key, value in level.items():
            if key == step:
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            if str(key) in HYPER_PARAMETER_KEYS and isinstance(value, Mapping):
                hyper.update(_plain_values(value))
                extras[name] = f"{len(value)} settings (see hyper_parameters)"
            else:
                extras[name] = summarize(value)
        level = level[step]
    if not path:  # weights at the top level, settings beside them
        for key, value in obj.items():
            if str(key) in HYPER_PARAMETER_KEYS and isinstance(value, Mapping):
                hyper.update(_plain_values(value))
    return extras, hyper


def _plain_values(mapping: Mapping, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Scalars, strings and lists of them; nested dicts flattened with dotted names."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, PLAIN_TYPES):
            out[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, PLAIN_TYPES) for v in value):
            out[name] = list(value)
        elif isinstance(value, Mapping) and depth < 2:
            out.update(_plain_values(value, f"{name}.", depth + 1))
    return out


def summarize(value: Any) -> str:
    """One short phrase describing a non-weight entry."""
    if is_tensor(value):
        shape, dtype = _shape_and_dtype(value)
        return f"tensor {shape} {dtype}"
    if isinstance(value, Mapping):
        if "param_groups" in value:
            groups = value["param_groups"]
            n = len(groups) if isinstance(groups, (list, tuple)) else "?"
            return f"optimizer state: {n} param group{'' if n == 1 else 's'}"
        tensors = _direct_tensor_count(value)
        if tensors:
            return f"another state dict: {tensors} tensors"
        return f"dict with {len(value)} entries"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, Mapping) and "param_groups" in v for v in value):
            return f"{len(value)} optimizer states"
        if all(isinstance(v, PLAIN_TYPES) for v in value) and _short_repr(value, 80):
            return repr(list(value))
        return f"list of {len(value)} items"
    if isinstance(value, str):
        return repr(value[:77]) + ("..." if len(value) > 77 else "")
    if isinstance(value, PLAIN_TYPES):
        text = str(value) if not isinstance(value, int) or abs(value) < 10**70 else "a huge integer"
        return text if len(text) <= 80 else text[:77] + "..."
    return value.type_name if isinstance(value, TensorRef) else type(value).__name__


def _short_repr(values: list | tuple, limit: int) -> bool:
    """Whether repr(values) fits in `limit` characters, without building a long repr."""
    if len(values) > limit:
        return False
    return text_chars(list(values), limit) <= limit and len(repr(list(values))) <= limit


def _short_list(mapping: Mapping) -> str:
    keys = [repr(str(k)) for k in list(mapping)[:8]]
    return ", ".join(keys) + (" ..." if len(mapping) > 8 else "") if keys else "none"


def strip_shared_prefix(keys: list[str]) -> str:
    """The run of known wrapper prefixes every key starts with (e.g. "module._orig_mod.")."""
    prefix = ""
    while keys:
        for p in SHARED_PREFIXES:
            candidate = prefix + p
            if all(k.startswith(candidate) and len(k) > len(candidate) for k in keys):
                prefix = candidate
                break
        else:
            break
    return prefix


def strip_module_paths(paths: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    """Module paths as seen from the unwrapped module: the wrapper's own path becomes ""."""
    if not prefix:
        return paths
    root = prefix[:-1]
    out = []
    for p in paths:
        if p == root:
            out.append("")
        elif p.startswith(prefix):
            out.append(p[len(prefix) :])
    return tuple(dict.fromkeys(out))
