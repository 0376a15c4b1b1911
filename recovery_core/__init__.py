"""recovery_core: turn a bare PyTorch state dict back into a working, retrained, exported model.

The dashboard and other callers use only the names exported here.
"""

# Names resolve on first use (PEP 562): `import recovery_core` and the inspect path load
# no torch; the first name that needs it imports it.
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recovery_core import (
        families,  # layer families: meaning(type), opened_for_training(type)
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

_SUBMODULES = ("families", "humanize", "plan", "session")
_WHERE = {
    "ArchSpec": "recovery_core.spec",
    "BatchDims": "recovery_core.layout",
    "BuildError": "recovery_core.errors",
    "Checkpoint": "recovery_core.checkpoint",
    "CheckpointFormatError": "recovery_core.errors",
    "DataError": "recovery_core.errors",
    "DataMapping": "recovery_core.data",
    "Dataset": "recovery_core.data",
    "ExportBundle": "recovery_core.export",
    "ExportError": "recovery_core.errors",
    "FreezePlan": "recovery_core.freeze",
    "Hyperparameter": "recovery_core.spec",
    "HyperparameterError": "recovery_core.errors",
    "InferenceError": "recovery_core.errors",
    "Inspection": "recovery_core.inspect",
    "LoadLimits": "recovery_core.checkpoint",
    "ModelInput": "recovery_core.spec",
    "ModuleSpec": "recovery_core.spec",
    "RebuildStatus": "recovery_core.build",
    "RecoveryError": "recovery_core.errors",
    "SearchResult": "recovery_core.search",
    "TensorInfo": "recovery_core.checkpoint",
    "TensorStats": "recovery_core.checkpoint",
    "TrainingConfig": "recovery_core.train",
    "TrainingError": "recovery_core.errors",
    "TrainingResult": "recovery_core.train",
    "TrainingRun": "recovery_core.train",
    "UnsafeCheckpointError": "recovery_core.errors",
    "Wiring": "recovery_core.spec",
    "attach_batch_major": "recovery_core.layout",
    "baseline_loss": "recovery_core.data",
    "batch_dims": "recovery_core.layout",
    "build_model": "recovery_core.build",
    "check_rebuild": "recovery_core.build",
    "describe": "recovery_core.inspect",
    "drop_batch_major": "recovery_core.layout",
    "example_inputs": "recovery_core.build",
    "export_all": "recovery_core.export",
    "from_batch_major": "recovery_core.layout",
    "generate_code": "recovery_core.codegen",
    "guess_mapping": "recovery_core.data",
    "infer_spec": "recovery_core.infer",
    "load_checkpoint": "recovery_core.checkpoint",
    "load_dataset": "recovery_core.data",
    "load_weights": "recovery_core.build",
    "loss_function": "recovery_core.data",
    "make_mapping": "recovery_core.data",
    "mapped_tensors": "recovery_core.data",
    "plan_freeze": "recovery_core.freeze",
    "preset_patterns": "recovery_core.freeze",
    "score_candidates": "recovery_core.search",
    "searchable_names": "recovery_core.search",
    "split_indices": "recovery_core.data",
    "take": "recovery_core.layout",
    "to_batch_major": "recovery_core.layout",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"recovery_core.{name}")
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'recovery_core' has no attribute {name!r}")
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "families",
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
