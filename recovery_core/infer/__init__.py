"""Architecture inference: names and shapes in, an `ArchSpec` out (never tensor values)."""

from __future__ import annotations

from recovery_core.errors import InferenceError
from recovery_core.infer.compose import compose_tree, module_notes
from recovery_core.infer.hyperparameters import (
    determined_hyperparameters,
    free_hyperparameters,
    metadata_conflicts,
)
from recovery_core.infer.registry import DETECTORS
from recovery_core.infer.wiring import propose_wirings
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model.spec import ArchSpec, ModuleSpec, Wiring, with_forward_types

__all__ = ["DETECTORS", "infer_spec"]


def infer_spec(checkpoint: Checkpoint) -> ArchSpec:
    """Recover the module tree, its hyperparameters and forward wiring from names and shapes."""
    if not checkpoint.tensors:
        raise InferenceError(
            f"{checkpoint.source_name or 'The checkpoint'} holds no tensors, so there is no "
            "architecture to infer; choose a file that contains model weights."
        )
    root, unexplained = compose_tree(checkpoint)
    notes = module_notes(root)
    shapes = {t.name: t.shape for t in checkpoint.tensors}
    wirings, why = _wirings(root, unexplained, shapes)
    if why:
        notes.append(why)
    wiring = wirings[0] if wirings else None
    root = with_forward_types(root, None, wiring)  # the modules as the forward reads them
    determined = determined_hyperparameters(root, wiring, shapes)
    free, metadata_notes = free_hyperparameters(root, wiring, checkpoint.hyper_parameters, wirings)
    notes += metadata_notes + metadata_conflicts(determined, checkpoint.hyper_parameters)
    return ArchSpec(
        root=root,
        hyperparameters=tuple(determined + free),
        wiring=wiring,
        unexplained_keys=unexplained,
        notes=tuple(notes),
        wirings=wirings,
    )


def _wirings(
    root: ModuleSpec, unexplained: tuple[str, ...], shapes: dict[str, tuple[int, ...]]
) -> tuple[tuple[Wiring, ...], str]:
    """The forward hypotheses; tensors kept as is on containers may be positional tables,
    and a forward is proposed only when it uses every one of them."""
    tables = {key: shapes[key] for key in unexplained if key in shapes}
    for module in root.walk():
        for kept in getattr(module, "kept", ()):
            path = f"{module.path}.{kept.name}" if module.path else kept.name
            tables[path] = tuple(kept.shape)
    unusable = [k for k, shape in tables.items() if len(shape) not in (2, 3)]
    if unusable:
        return (), (
            f"{len(unusable)} tensor(s) that no known layer explains ({', '.join(unusable[:3])}) "
            "are used by a forward we cannot see, so no forward is proposed."
        )
    return propose_wirings(root, tables, shapes)
