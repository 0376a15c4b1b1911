"""recovery_core: turn a bare PyTorch state dict back into a working, retrained, exported model.

The dashboard and other callers use only the names exported here.
"""

# Names resolve on first use (PEP 562): `import recovery_core` and the inspect path load
# no torch; the first name that needs it imports it.
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recovery_core import (
        humanize,
        plan,  # the recovery plan: save, load, replay
        session,  # the pipeline object (Recovery) and the steps' shared pieces
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
    from recovery_core.export.exporter import ExportBundle, export_all
    from recovery_core.fit.freeze import FreezePlan, plan_freeze, preset_patterns
    from recovery_core.fit.search import SearchResult, score_candidates, searchable_names
    from recovery_core.fit.train import TrainingConfig, TrainingResult, TrainingRun
    from recovery_core.infer import (
        catalog as families,  # layer families: meaning(type), opened_for_training(type)
    )
    from recovery_core.infer import infer_spec
    from recovery_core.inspect import Inspection, describe
    from recovery_core.io.checkpoint import (
        Checkpoint,
        LoadLimits,
        TensorInfo,
        TensorStats,
        load_checkpoint,
    )
    from recovery_core.io.data import (
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
    from recovery_core.model.build import (
        RebuildStatus,
        build_model,
        check_rebuild,
        example_inputs,
        load_weights,
    )
    from recovery_core.model.codegen import generate_code
    from recovery_core.model.layout import (
        BatchDims,
        attach_batch_major,
        batch_dims,
        drop_batch_major,
        from_batch_major,
        take,
        to_batch_major,
    )
    from recovery_core.model.spec import ArchSpec, Hyperparameter, ModelInput, ModuleSpec, Wiring

# Public submodules, by the name callers use -> where they live.
_SUBMODULES = {
    "families": "recovery_core.infer.catalog",
    "humanize": "recovery_core.humanize",
    "plan": "recovery_core.plan",
    "session": "recovery_core.session",
}
_WHERE = {
    "ArchSpec": "recovery_core.model.spec",
    "BatchDims": "recovery_core.model.layout",
    "BuildError": "recovery_core.errors",
    "Checkpoint": "recovery_core.io.checkpoint",
    "CheckpointFormatError": "recovery_core.errors",
    "DataError": "recovery_core.errors",
    "DataMapping": "recovery_core.io.data",
    "Dataset": "recovery_core.io.data",
    "ExportBundle": "recovery_core.export.exporter",
    "ExportError": "recovery_core.errors",
    "FreezePlan": "recovery_core.fit.freeze",
    "Hyperparameter": "recovery_core.model.spec",
    "HyperparameterError": "recovery_core.errors",
    "InferenceError": "recovery_core.errors",
    "Inspection": "recovery_core.inspect",
    "LoadLimits": "recovery_core.io.checkpoint",
    "ModelInput": "recovery_core.model.spec",
    "ModuleSpec": "recovery_core.model.spec",
    "RebuildStatus": "recovery_core.model.build",
    "RecoveryError": "recovery_core.errors",
    "SearchResult": "recovery_core.fit.search",
    "TensorInfo": "recovery_core.io.checkpoint",
    "TensorStats": "recovery_core.io.checkpoint",
    "TrainingConfig": "recovery_core.fit.train",
    "TrainingError": "recovery_core.errors",
    "TrainingResult": "recovery_core.fit.train",
    "TrainingRun": "recovery_core.fit.train",
    "UnsafeCheckpointError": "recovery_core.errors",
    "Wiring": "recovery_core.model.spec",
    "attach_batch_major": "recovery_core.model.layout",
    "baseline_loss": "recovery_core.io.data",
    "batch_dims": "recovery_core.model.layout",
    "build_model": "recovery_core.model.build",
    "check_rebuild": "recovery_core.model.build",
    "describe": "recovery_core.inspect",
    "drop_batch_major": "recovery_core.model.layout",
    "example_inputs": "recovery_core.model.build",
    "export_all": "recovery_core.export.exporter",
    "from_batch_major": "recovery_core.model.layout",
    "generate_code": "recovery_core.model.codegen",
    "guess_mapping": "recovery_core.io.data",
    "infer_spec": "recovery_core.infer",
    "load_checkpoint": "recovery_core.io.checkpoint",
    "load_dataset": "recovery_core.io.data",
    "load_weights": "recovery_core.model.build",
    "loss_function": "recovery_core.io.data",
    "make_mapping": "recovery_core.io.data",
    "mapped_tensors": "recovery_core.io.data",
    "plan_freeze": "recovery_core.fit.freeze",
    "preset_patterns": "recovery_core.fit.freeze",
    "score_candidates": "recovery_core.fit.search",
    "searchable_names": "recovery_core.fit.search",
    "split_indices": "recovery_core.io.data",
    "take": "recovery_core.model.layout",
    "to_batch_major": "recovery_core.model.layout",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBMODULES:
        value: Any = importlib.import_module(_SUBMODULES[name])
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
