"""The layer families, for callers outside inference (the dashboard): what each layer
type means to a person, and whether choosing what trains opens it up part by part.

Everything here is read from the registry (recovery_core/infer/registry.py); nothing
imports torch.
"""

from __future__ import annotations

from recovery_core.infer.family import Family, LayerType
from recovery_core.infer.registry import FAMILIES, layer_type, meaning, opened_for_training

__all__ = ["FAMILIES", "Family", "LayerType", "layer_type", "meaning", "opened_for_training"]
