"""recovery_core: turn a bare PyTorch state dict back into a working, retrained, exported model.

The dashboard and other callers use only the names exported here.
"""

from recovery_core.checkpoint import Checkpoint, TensorInfo, TensorStats
from recovery_core.errors import (
    BuildError,
    CheckpointFormatError,
    DataError,
    ExportError,
    InferenceError,
    RecoveryError,
    TrainingError,
    UnsafeCheckpointError,
)
from recovery_core.spec import ArchSpec, Hyperparameter, ModelInput, ModuleSpec, Wiring

__all__ = [
    "ArchSpec",
    "BuildError",
    "Checkpoint",
    "CheckpointFormatError",
    "DataError",
    "ExportError",
    "Hyperparameter",
    "InferenceError",
    "ModelInput",
    "ModuleSpec",
    "RecoveryError",
    "TensorInfo",
    "TensorStats",
    "TrainingError",
    "UnsafeCheckpointError",
    "Wiring",
]
