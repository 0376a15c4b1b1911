"""Would the generated file strict-load its checkpoint? Built and compared before writing.

`codegen` writes a file that promises `load_state_dict(weights)` is strict. This check
keeps that promise honest without reading a single value: the model is built on the
meta device (no memory for weights) and its state-dict keys and shapes are compared
with the checkpoint's index.
"""

from __future__ import annotations

import torch

from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model.build import LoadReport, build_model, check_fit
from recovery_core.model.spec import ArchSpec


def check_generated_code(spec: ArchSpec, checkpoint: Checkpoint) -> LoadReport:
    """Keys the built model lacks or adds, and shapes that differ, against the checkpoint."""
    with torch.device("meta"):
        model = build_model(spec)
        shapes = {t.name: torch.empty(t.shape) for t in checkpoint.tensors}
    return check_fit(model, shapes, strict=True)
