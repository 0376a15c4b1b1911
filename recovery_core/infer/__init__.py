"""Architecture inference: names and shapes in, an `ArchSpec` out (never tensor values)."""

from __future__ import annotations

from recovery_core.checkpoint import Checkpoint
from recovery_core.errors import InferenceError
from recovery_core.infer.compose import compose_tree, module_notes
from recovery_core.infer.hyperparameters import (
    determined_hyperparameters,
    free_hyperparameters,
    metadata_conflicts,
)
from recovery_core.infer.registry import DETECTORS
from recovery_core.infer.wiring import recognise_wiring
from recovery_core.spec import ArchSpec

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
    if unexplained:
        wiring, why = (
            None,
            (
                f"{len(unexplained)} key(s) are not explained by any known layer, so no forward "
                "wiring is claimed."
            ),
        )
    else:
        wiring, why = recognise_wiring(root)
    if why:
        notes.append(why)
    shapes = {t.name: t.shape for t in checkpoint.tensors}
    determined = determined_hyperparameters(root, wiring, shapes)
    free, metadata_notes = free_hyperparameters(root, wiring, checkpoint.hyper_parameters)
    notes += metadata_notes + metadata_conflicts(determined, checkpoint.hyper_parameters)
    return ArchSpec(
        root=root,
        hyperparameters=tuple(determined + free),
        wiring=wiring,
        unexplained_keys=unexplained,
        notes=tuple(notes),
    )
