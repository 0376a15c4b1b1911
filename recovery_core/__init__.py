"""recovery_core: turn a bare PyTorch state dict back into a working, retrained, exported model.

The dashboard and other callers use only the names exported here.
"""

from recovery_core import (
    humanize,
    plan,  # the recovery plan: save, load, replay
    session,  # the pipeline object (Recovery) and the steps' shared pieces
)
from recovery_core.build import (
    RebuildStatus,
    build_model,
    check_rebuild,
    example_inputs,
    load_weights,
)
from recovery_core.checkpoint import (
    Checkpoint,
    LoadLimits,
    TensorInfo,
    TensorStats,
    load_checkpoint,
)
from recovery_core.codegen import generate_code
from recovery_core.data import (
    DataMapping,
    Dataset,
    baseline_loss,
    guess_mapping,
    load_dataset,
    loss_function,
    make_mapping,
    mapped_tensors,
    split_indices,
)
from recovery_core.errors import (
    BuildError,
    CheckpointFormatError,
    DataError,
    ExportError,
    HyperparameterError,
    InferenceError,
    RecoveryError,
    TrainingError,
    UnsafeCheckpointError,
)
from recovery_core.export import ExportBundle, export_all
from recovery_core.freeze import FreezePlan, plan_freeze, preset_patterns
from recovery_core.infer import infer_spec
from recovery_core.inspect import Inspection, describe
from recovery_core.layout import (
    BatchDims,
    attach_batch_major,
    batch_dims,
    drop_batch_major,
    from_batch_major,
    take,
    to_batch_major,
)
from recovery_core.search import SearchResult, score_candidates, searchable_names
from recovery_core.spec import ArchSpec, Hyperparameter, ModelInput, ModuleSpec, Wiring
from recovery_core.train import TrainingConfig, TrainingResult, TrainingRun

__all__ = [
    "humanize",
    "plan",
    "session",
    "ArchSpec",
    "BatchDims",
    "BuildError",
    "Checkpoint",
    "CheckpointFormatError",
    "DataError",
    "DataMapping",
    "Dataset",
    "ExportBundle",
    "ExportError",
    "FreezePlan",
    "Hyperparameter",
    "HyperparameterError",
    "InferenceError",
    "Inspection",
    "LoadLimits",
    "ModelInput",
    "ModuleSpec",
    "RebuildStatus",
    "RecoveryError",
    "SearchResult",
    "TensorInfo",
    "TensorStats",
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "TrainingRun",
    "UnsafeCheckpointError",
    "Wiring",
    "attach_batch_major",
    "baseline_loss",
    "batch_dims",
    "build_model",
    "check_rebuild",
    "describe",
    "drop_batch_major",
    "example_inputs",
    "export_all",
    "from_batch_major",
    "generate_code",
    "guess_mapping",
    "infer_spec",
    "load_checkpoint",
    "load_dataset",
    "load_weights",
    "loss_function",
    "make_mapping",
    "mapped_tensors",
    "plan_freeze",
    "preset_patterns",
    "score_candidates",
    "searchable_names",
    "split_indices",
    "take",
    "to_batch_major",
]
