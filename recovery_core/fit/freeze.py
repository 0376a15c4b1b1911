"""Choose what trains: patterns over module paths and parameter names -> a `FreezePlan`.

A pattern is an exact module path (`head`: the module and everything below it), an
exact parameter name (`head.bias`), or a glob (`encoder.layers.2.*`, matched with
fnmatch against module paths and parameter names). Everything not matched is frozen.
Frozen modules run in eval mode during training, so frozen BatchNorm layers keep their
running statistics and frozen dropout stays off.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import nn

from recovery_core.errors import TrainingError

GLOB_CHARS = "*?["

# Preset name -> label shown in the dashboard.
PRESETS = {
    "output_layer": "only the output layer",
    "last_blocks": "last N blocks",
    "everything": "everything",
}


@dataclass(frozen=True)
class FreezePlan:
    patterns: tuple[str, ...]
    trainable_modules: tuple[str, ...]  # module paths that run in train mode
    trainable_params: int  # number of scalars that train
    total_params: int
    # State-dict keys training may change: trainable parameters, plus the buffers of
    # trainable modules (a trainable BatchNorm updates its running statistics).
    trainable_keys: tuple[str, ...]
    trainable_param_names: tuple[str, ...] = ()

    @property
    def fraction(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0


def plan_freeze(model: nn.Module, patterns: Sequence[str]) -> FreezePlan:
    """Resolve patterns against the model. A pattern that matches nothing is an error."""
    modules = dict(model.named_modules())
    # Every name, tied parameters included (an embedding tied to the head has two names).
    params = dict(model.named_parameters(remove_duplicate=False))
    matched_modules: set[str] = set()
    matched_params: set[str] = set()
    for pattern in patterns:
        mods, prms = _match(pattern, modules, params)
        if not mods and not prms:
            close = difflib.get_close_matches(pattern, [p for p in modules if p], n=5, cutoff=0.5)
            hint = f"close module paths: {', '.join(close)}" if close else _top_level_hint(modules)
            raise TrainingError(f"The pattern {pattern!r} matches no module or parameter; {hint}.")
        matched_modules |= mods
        matched_params |= prms

    # A matched module trains with everything below it.
    in_train = {path for path in modules if any(a in matched_modules for a in _lineage(path))}
    trainable_ids = {
        id(p) for name, p in params.items() if name in matched_params or _owner(name) in in_train
    }
    trainable_names = [name for name, p in params.items() if id(p) in trainable_ids]
    # A module owning a trainable parameter directly runs in train mode too.
    in_train |= {_owner(name) for name in trainable_names}
    trainable_name_set = set(trainable_names)  # membership per key: a list is O(keys²)
    trainable_keys = [
        key
        for key in model.state_dict(keep_vars=True)
        if key in trainable_name_set or (key not in params and _owner(key) in in_train)
    ]
    unique = {id(p): p for p in params.values()}  # count a tied tensor once
    return FreezePlan(
        patterns=tuple(patterns),
        trainable_modules=tuple(p for p in modules if p in in_train),
        trainable_params=sum(p.numel() for i, p in unique.items() if i in trainable_ids),
        total_params=sum(p.numel() for p in unique.values()),
        trainable_keys=tuple(trainable_keys),
        trainable_param_names=tuple(trainable_names),
    )


def _match(
    pattern: str, modules: dict[str, nn.Module], params: dict[str, nn.Parameter]
) -> tuple[set[str], set[str]]:
    pattern = pattern.strip()
    if any(c in pattern for c in GLOB_CHARS):
        return (
            {p for p in modules if fnmatch.fnmatchcase(p, pattern)},
            {n for n in params if fnmatch.fnmatchcase(n, pattern)},
        )
    if pattern in modules:
        return {pattern}, set()
    if pattern in params:
        return set(), {pattern}
    return set(), set()


def paths_matching(paths: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The module paths (of a list of units, such as a dashboard's checkboxes) that a
    plan's patterns touch: a path within a pattern's module or holding it; "*": all."""
    if "*" in patterns:
        return list(paths)
    return [
        p
        for p in paths
        if any(p == q or p.startswith(q + ".") or q.startswith(p + ".") for q in patterns)
    ]


def _is_within(path: str, ancestor: str) -> bool:
    return ancestor == "" or path == ancestor or path.startswith(ancestor + ".")


def _owner(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _lineage(path: str) -> Iterator[str]:
    """The path and each of its ancestors up to the root "": what it is within."""
    yield path
    while path:
        path = _owner(path)
        yield path


def _top_level_hint(modules: dict[str, nn.Module]) -> str:
    top = [p for p in modules if p and "." not in p]
    return f"top-level modules: {', '.join(top[:10])}" if top else "the model has no submodules"


def apply_freeze(model: nn.Module, plan: FreezePlan) -> None:
    """Set requires_grad: True exactly for the plan's trainable parameters."""
    named = dict(model.named_parameters(remove_duplicate=False))
    trainable_ids = {id(named[n]) for n in plan.trainable_param_names if n in named}
    for param in named.values():
        param.requires_grad_(id(param) in trainable_ids)


def set_train_mode(model: nn.Module, plan: FreezePlan) -> None:
    """Trainable modules in train mode, every frozen one in eval mode.

    `Module.train()` is recursive, so each module's flag is set on its own.
    """
    trainable = set(plan.trainable_modules)
    for path, module in model.named_modules():
        module.training = path in trainable


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for a while; each module's own flag is put back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


# ---------------------------------------------------------------- presets


def preset_patterns(model: nn.Module, name: str, n: int = 1) -> tuple[str, ...]:
    """Patterns for a dashboard preset.

    - "output_layer": the last module (in definition order) that owns parameters.
    - "last_blocks": the last `n` children of the deepest ModuleList/Sequential of
      layers (e.g. `decoder.layers.4`, `decoder.layers.5`), plus the output layer.
    - "everything": every module.
    Labels from PRESETS are accepted as names too.
    """
    key = {label: k for k, label in PRESETS.items()}.get(name, name)
    if key == "everything":
        return ("*",)
    if key == "output_layer":
        return (_output_layer(model),)
    if key == "last_blocks":
        if n < 1:
            raise TrainingError(f"The number of blocks must be at least 1, not {n}.")
        container, blocks = _layer_stack(model)
        chosen = [f"{container}.{b}" if container else b for b in blocks[-n:]]
        head = _output_layer(model)
        if not any(_is_within(head, c) for c in chosen):
            chosen.append(head)
        return tuple(chosen)
    raise TrainingError(f"Unknown preset {name!r}; choose one of {list(PRESETS)}.")


def _output_layer(model: nn.Module) -> str:
    owners = [p for p, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        raise TrainingError("The model has no parameters to train.")
    return owners[-1]


def _layer_stack(model: nn.Module) -> tuple[str, list[str]]:
    """The deepest ModuleList (or Sequential of two or more) with parameterised children."""
    best: tuple[int, int, str, list[str]] | None = None
    for order, (path, module) in enumerate(model.named_modules()):
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        blocks = [c for c, m in module.named_children() if any(True for _ in m.parameters())]
        # A ModuleList is a stack even with one layer; a Sequential needs two to be one.
        if len(blocks) < (1 if isinstance(module, nn.ModuleList) else 2):
            continue
        depth = path.count(".") + 1 if path else 0
        if best is None or (depth, order) >= (best[0], best[1]):
            best = (depth, order, path, blocks)
    if best is None:
        raise TrainingError("The model has no stack of layers (a ModuleList or Sequential).")
    return best[2], best[3]


__all__ = [
    "PRESETS",
    "FreezePlan",
    "apply_freeze",
    "eval_mode",
    "paths_matching",
    "plan_freeze",
    "preset_patterns",
    "set_train_mode",
]
