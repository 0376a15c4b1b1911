"""Every layer family, in the order their detectors are tried. The first that explains a
group wins.

Why the order matters: composites first (they claim whole subtrees and match exact key
sets), larger before smaller (Transformer before its stacks before their layers); then
the leaves, name-based ones before the shape-only ones that would also match
(PositionalEncoding and Embedding before Linear, BatchNorm before the affine norms,
Bilinear before Conv since both read a 3-D weight, Hugging Face's Conv1D before Linear
since a bias fitting the second dimension proves it). A family whose keys another one
also explains goes before it and declines unless its evidence is there; the other then
names it as the runner-up (`LayerType.same_keys_as`). Weight norm is not a family: the
composer unwraps it and asks these (`weight_norm.py`).

Adding a layer family is one new file in infer/ (its detector and its `Family`) plus one
line here (docs/spec-conventions.md, "Adding a layer family"). Everything below is
read from `FAMILIES`; nothing else in the pipeline lists layer types.
"""

from __future__ import annotations

from collections.abc import Iterator

from recovery_core.infer.detection import Detector
from recovery_core.infer.families import (
    attention,
    bilinear,
    conv,
    embedding,
    hf_conv1d,
    linear,
    norm,
    positional,
    prelu,
    rnn,
    transformer,
)
from recovery_core.infer.family import Family, LayerType

FAMILIES: tuple[Family, ...] = (
    transformer.TRANSFORMER,
    transformer.ENCODER,
    transformer.DECODER,
    transformer.DECODER_LAYER,
    transformer.ENCODER_LAYER,
    attention.FAMILY,
    rnn.FAMILY,
    positional.FAMILY,
    norm.RUNNING_NORMS,
    bilinear.FAMILY,
    conv.FAMILY,
    embedding.FAMILY,
    hf_conv1d.FAMILY,
    linear.FAMILY,
    prelu.FAMILY,  # before the affine norms: the same key, taken on evidence only
    norm.AFFINE_NORMS,
)

DETECTORS: tuple[Detector, ...] = tuple(family.detect for family in FAMILIES)


def layer_types() -> Iterator[LayerType]:
    for family in FAMILIES:
        yield from family.types


TYPES: dict[str, LayerType] = {t.name: t for t in layer_types()}
FAMILY_OF: dict[str, Family] = {t.name: f for f in FAMILIES for t in f.types}
# Plain containers: no family names them; a forward opens them, a stack calls their items.
CONTAINERS = frozenset({"Module", "Sequential", "ModuleList"})
# Composite types: their parts repeat what the type itself determines (and a root of
# one keeps its own forward).
COMPOSITES = frozenset(t.name for f in FAMILIES if f.composite for t in f.types)
# type -> keys torch registers as buffers (None: all of them); inspect reads it.
BUFFERS_BY_TYPE: dict[str, frozenset[str] | None] = {
    t.name: None if t.all_buffers else t.buffers
    for t in layer_types()
    if t.all_buffers or t.buffers
}
# type -> {our hidden name: the constructor's argument name}; codegen reads it.
ARGUMENT_NAMES: dict[str, dict[str, str]] = {
    t.name: dict(t.renames) for t in layer_types() if t.renames
}
# type -> the class a generated file defines because torch.nn has none; codegen reads it.
CLASS_SOURCES: dict[str, str] = {t.name: t.class_source for t in layer_types() if t.class_source}
# Hidden names a built model can switch in place (the search), and the types that do it.
RETUNABLE_NAMES = frozenset(name for t in layer_types() for name in t.retunes)
RETUNABLE_TYPES: tuple[LayerType, ...] = tuple(t for t in layer_types() if t.retune is not None)
# type -> the other families' types that declare they store the same keys (runners-up).
SAME_KEYS: dict[str, tuple[LayerType, ...]] = {
    name: tuple(t for t in layer_types() if name in t.same_keys_as and t.name != name)
    for name in TYPES
}


def layer_type(type_name: str) -> LayerType | None:
    """The family's description of `type_name`; None for containers and placeholders."""
    return TYPES.get(type_name)


def types_with_role(role: str) -> frozenset[str]:
    return frozenset(t.name for t in layer_types() if role in t.roles)


def meaning(type_name: str) -> str:
    """What a layer of this type does, in a sentence a person who does not program can
    follow; "" for containers and types no family knows."""
    found = TYPES.get(type_name)
    return found.meaning if found is not None else ""


def opened_for_training(type_name: str) -> bool:
    """True when a module of this type is offered part by part when choosing what trains
    (containers, and the Transformer and its stacks); else it is one unit."""
    found = TYPES.get(type_name)
    if found is None:
        return type_name in CONTAINERS
    return found.opened_for_training
