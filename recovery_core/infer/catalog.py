"""The layer families, for callers outside inference (the dashboard): what each layer
type means to a person, whether choosing what trains opens it up part by part, and the
hidden values the families and the forwards declare (`SETTINGS`, `setting_label`,
`setting_meaning`).

Everything here is read from the registry (recovery_core/infer/registry.py); nothing
imports torch.
"""

from __future__ import annotations

from recovery_core.infer.family import Family, LayerType, Setting
from recovery_core.infer.hyperparameters import SETTINGS, setting, setting_label, setting_meaning
from recovery_core.infer.registry import FAMILIES, layer_type, meaning, opened_for_training

__all__ = [
    "FAMILIES",
    "SETTINGS",
    "Family",
    "LayerType",
    "Setting",
    "layer_type",
    "meaning",
    "opened_for_training",
    "setting",
    "setting_label",
    "setting_meaning",
]
