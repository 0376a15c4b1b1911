"""A person's choice among the types a module's shapes allow: the runner-up made the type.

Inference ranks the candidate types of an ambiguous module and lists the others in
`ModuleSpec.alternatives`. `choose_type` rebuilds that module as one of them: the same
keys, the constructor arguments that type reads from the same shapes, and the hidden
values it needs (added with their usual defaults when the spec has none). Nothing
else in the tree changes, so the rebuilt model still strict-loads the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from recovery_core.errors import HyperparameterError
from recovery_core.infer.families.conv import hidden_settings
from recovery_core.infer.hyperparameters import NOT_DETERMINED, module_free_value
from recovery_core.infer.registry import layer_type
from recovery_core.model.spec import SOURCE_DEFAULT, ArchSpec, Hyperparameter, ModuleSpec

Shape = tuple[int, ...]
_CONTAINERS = ("Sequential", "ModuleList")


def _args_for(type_name: str, shapes: Mapping[str, Shape]) -> tuple[dict[str, Any], tuple] | None:
    """(constructor args, hidden names) of `type_name` for these keys, or None if it
    cannot hold them: its family reads them (`LayerType.rebuild`)."""
    found = layer_type(type_name)
    return None if found is None or found.rebuild is None else found.rebuild(shapes)


def _default(name: str, module: ModuleSpec) -> Hyperparameter:
    """A free value the chosen type needs and the spec did not have yet."""
    free = module_free_value(name, module)
    return Hyperparameter(
        name=name,
        value=free.default,
        source=SOURCE_DEFAULT,
        evidence=f"{NOT_DETERMINED}; the usual default for a {module.type}",
        candidates=free.candidates,
    )


def choose_type(spec: ArchSpec, path: str, type_name: str, shapes: Mapping[str, Shape]) -> ArchSpec:
    """The spec with the module at `path` rebuilt as `type_name`, one of its alternatives.

    `shapes` are the checkpoint's (`Checkpoint.shapes`). Raises HyperparameterError with
    the choices when the type is not one the module's shapes allow."""
    try:
        module = spec.module(path)
    except KeyError:
        raise HyperparameterError(f"there is no module {path or '(root)'!r} to retype.") from None
    if type_name == module.type:
        return spec
    if type_name not in module.alternatives:
        choices = ", ".join(module.alternatives) or "none: its shapes allow one type only"
        raise HyperparameterError(
            f"{path or '(root)'} cannot be a {type_name}; the types its shapes allow besides "
            f"{module.type} are: {choices}."
        )
    prefix = f"{path}." if path else ""
    own = {key[len(prefix) :]: shapes[key] for key in module.keys if key in shapes}
    if module.type in _CONTAINERS and type_name in _CONTAINERS:
        found: tuple[dict[str, Any], tuple] | None = ({}, ())
    else:
        found = _args_for(type_name, own)
    if found is None:
        raise HyperparameterError(f"{path or '(root)'}'s keys do not fit a {type_name}.")
    args, hidden = found
    if type_name.startswith("Conv"):  # a convolution's own stride, padding, ... at its path
        hidden = hidden_settings(path, type_name, tuple(args["kernel_size"]))
    others = tuple(t for t in (module.type, *module.alternatives) if t != type_name)
    chosen = replace(
        module,
        type=type_name,
        args=args if module.type not in _CONTAINERS else module.args,
        hidden=hidden if module.type not in _CONTAINERS else module.hidden,
        alternatives=others,
        note=f"{type_name} chosen over {module.type}, which inference had ranked first.",
        evidence=f"chosen by hand among the types its shapes allow; {module.evidence}",
    )
    root = _replaced(spec.root, chosen)
    known = {hp.name for hp in spec.hyperparameters}
    added = tuple(_default(name, chosen) for name in chosen.hidden if name not in known)
    return replace(spec, root=root, hyperparameters=spec.hyperparameters + added)


def _replaced(node: ModuleSpec, new: ModuleSpec) -> ModuleSpec:
    if node.path == new.path:
        return new
    prefix = f"{node.path}." if node.path else ""
    if not new.path.startswith(prefix):
        return node
    return replace(node, children=tuple(_replaced(c, new) for c in node.children))


def apply_type_choices(
    spec: ArchSpec, values: Mapping[str, Any], shapes: Mapping[str, Shape]
) -> tuple[ArchSpec, dict[str, Any]]:
    """`--set norm=PReLU`: values naming a module with alternatives (and no hyperparameter
    of that name) choose its type; the rest are returned for `ArchSpec.with_values`."""
    hyperparameters = {hp.name for hp in spec.hyperparameters}
    ambiguous = {m.path for m in spec.modules() if m.alternatives and m.path}
    rest = {}
    for name, value in values.items():
        if name in ambiguous and name not in hyperparameters and isinstance(value, str):
            spec = choose_type(spec, name, value, shapes)
        else:
            rest[name] = value
    return spec, rest
