"""Normalisation layers: BatchNorm (running statistics) and the affine norms.

BatchNorm1d/2d/3d store the same keys; the neighbouring convolution's dimensionality
picks one. A 1-D weight and bias is LayerNorm or GroupNorm; a weight alone is
LayerNorm(bias=False) or RMSNorm (or another family's type that stores the same key and
declares it: infer/registry.py lists it as the runner-up).
InstanceNorm with running statistics stores exactly BatchNorm's keys. Names, neighbours
and what the keys leave out decide, and the other types are listed as alternatives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import (
    EXAMPLE_BATCH,
    EXAMPLE_SPATIAL,
    Args,
    Family,
    LayerType,
    Setting,
    Shapes,
    StackStep,
)
from recovery_core.model.spec import ModelInput

BATCHNORM_KEYS = frozenset({"weight", "bias", "running_mean", "running_var", "num_batches_tracked"})
RUNNING_STATISTICS = frozenset({"running_mean", "running_var", "num_batches_tracked"})
GROUPNORM_NAME = re.compile(r"(^|_)gn\d*($|_)|group", re.IGNORECASE)
LAYERNORM_NAME = re.compile(r"(^|_)ln\d*($|_)|layer_?norm", re.IGNORECASE)
RMSNORM_NAME = re.compile(r"rms", re.IGNORECASE)
INSTANCENORM_NAME = re.compile(r"instance|(^|_)in\d*($|_)|inorm", re.IGNORECASE)

RUNNING_EPS = Setting(
    "eps",
    "A tiny number a BatchNorm or InstanceNorm adds before dividing by the spread of its "
    "values, so it never divides by zero.",
    (1e-5, 1e-3),
    1e-5,
    metadata_names=("batch_norm_eps", "bn_eps"),
    reads="fraction",
    label="Batch-norm epsilon",
)
LAYER_NORM_EPS = Setting(
    "layer_norm_eps",
    "A tiny number that keeps normalisation from dividing by zero.",
    (1e-5, 1e-6, 1e-12),
    1e-5,
    metadata_names=("layer_norm_eps", "layer_norm_epsilon", "norm_eps"),
    reads="fraction",
    label="Normalisation epsilon",
)
NUM_GROUPS = Setting(
    "num_groups",
    "Into how many groups each GroupNorm splits its channels before rescaling each group.",
    metadata_names=("num_groups",),
    label="Groups per GroupNorm",
)


def detect_batchnorm(group: Group) -> Detection | None:
    direct = group.direct
    if not group.is_leaf or set(direct) - BATCHNORM_KEYS:
        return None
    mean, var = direct.get("running_mean"), direct.get("running_var")
    if mean is None or var is None or len(mean.shape) != 1 or var.shape != mean.shape:
        return None
    affine = "weight" in direct
    if affine != ("bias" in direct):
        return None
    if affine and (direct["weight"].shape != mean.shape or direct["bias"].shape != mean.shape):
        return None
    dims = group.neighbour_conv_dims or group.conv_dims_before or 1
    by_name = bool(INSTANCENORM_NAME.search(group.name))
    # InstanceNorm tracks statistics only when asked and is rarely affine then; BatchNorm
    # is almost always affine. So the name decides, else a missing weight and bias.
    instance = by_name or not affine
    kind, other = ("InstanceNorm", "BatchNorm") if instance else ("BatchNorm", "InstanceNorm")
    type_name = f"{kind}{dims}d"
    args = {"num_features": mean.shape[0], "affine": affine, "track_running_stats": True}
    if group.neighbour_conv_dims:
        why = f"the neighbouring convolution is Conv{dims}d"
    elif group.conv_dims_before:
        why = f"the last convolution before it is Conv{dims}d"
    else:
        why = "no convolution comes before it, so the 1-d case"
    kind_why = (
        "of its name" if by_name else "it has no weight and bias" if instance else "it is affine"
    )
    return Detection(
        type_name,
        args,
        f"running_mean {fmt(mean.shape)} → {call(type_name, args)}",
        hidden=("eps",),
        alternatives=(f"{other}{dims}d",) + tuple(f"{kind}{d}d" for d in (1, 2, 3) if d != dims),
        note=(
            f"BatchNorm and InstanceNorm with running statistics, 1d/2d/3d, store the same "
            f"keys; chose {kind} because {kind_why}, and {dims}d because {why}."
        ),
    )


def detect_affine_norm(group: Group) -> Detection | None:
    direct = group.direct
    weight, bias = direct.get("weight"), direct.get("bias")
    if not group.is_leaf or weight is None or set(direct) - {"weight", "bias"}:
        return None
    if bias is not None and bias.shape != weight.shape:
        return None
    if bias is None and len(weight.shape) != 1:
        return None  # a 2-D weight alone is a Linear or an Embedding
    if bias is not None:
        return _weight_and_bias(group, weight.shape)
    return _weight_only(group, weight.shape)


def _weight_and_bias(group: Group, shape: tuple[int, ...]) -> Detection:
    evidence = f"weight and bias {fmt(shape)}"
    layer_norm_args = {"normalized_shape": shape, "elementwise_affine": True, "bias": True}
    if len(shape) != 1:
        return Detection(
            "LayerNorm",
            layer_norm_args,
            f"{evidence} → {call('LayerNorm', layer_norm_args)}",
            hidden=("layer_norm_eps",),
        )
    by_name = GROUPNORM_NAME.search(group.name) and not LAYERNORM_NAME.search(group.name)
    after_conv = group.neighbour_conv_dims is not None and not LAYERNORM_NAME.search(group.name)
    # A Linear over the same features right after it reads them channels-last, as a
    # LayerNorm leaves them (ConvNeXt's norm between a depthwise conv and its MLP).
    channels_last = group.next_linear_width == shape[0]
    if (by_name or after_conv) and not (channels_last and not by_name):
        args = {"num_channels": shape[0], "affine": True}
        why = "its name" if by_name else "it sits next to a convolution"
        return Detection(
            "GroupNorm",
            args,
            f"{evidence} → {call('GroupNorm', args)}",
            hidden=("num_groups",),
            alternatives=("LayerNorm",),
            note=f"GroupNorm and LayerNorm store the same keys; chose GroupNorm because {why}.",
        )
    return Detection(
        "LayerNorm",
        layer_norm_args,
        f"{evidence} → {call('LayerNorm', layer_norm_args)}",
        hidden=("layer_norm_eps",),
        alternatives=("GroupNorm",),
        note=(
            "LayerNorm and GroupNorm store the same keys; chose LayerNorm because a Linear "
            f"over the same {shape[0]} features follows it."
            if channels_last and group.neighbour_conv_dims is not None
            else "LayerNorm and GroupNorm store the same keys; chose LayerNorm, the more "
            "common one away from convolutions."
        ),
    )


def _weight_only(group: Group, shape: tuple[int, ...]) -> Detection:
    evidence = f"weight {fmt(shape)} without bias"
    if RMSNORM_NAME.search(group.name):
        args = {"normalized_shape": shape, "elementwise_affine": True}
        return Detection(
            "RMSNorm",
            args,
            f"{evidence} named '{group.name}' → {call('RMSNorm', args)}",
            hidden=("layer_norm_eps",),
            alternatives=("LayerNorm",),
            note="RMSNorm and LayerNorm(bias=False) store the same key; chose RMSNorm because of its name.",
        )
    args = {"normalized_shape": shape, "elementwise_affine": True, "bias": False}
    return Detection(
        "LayerNorm",
        args,
        f"{evidence} → {call('LayerNorm', args)}",
        hidden=("layer_norm_eps",),
        alternatives=("RMSNorm",),
        note=(
            "LayerNorm(bias=False) and RMSNorm store the same key; chose LayerNorm because "
            "its name does not suggest RMSNorm."
        ),
    )


# ---------------------------------------------------------------- the families


def _rebuild_running(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    if "running_mean" not in shapes:
        return None
    (features,) = shapes["running_mean"]
    args = {"num_features": features, "affine": "weight" in shapes, "track_running_stats": True}
    return args, ("eps",)


def _batchnorm_stack(args: Args) -> StackStep:
    width = args["num_features"]
    return StackStep("same", width, width)


def _batchnorm_map_stack(args: Args) -> StackStep:
    width = args["num_features"]
    return StackStep("same", width, width, map_when_first=True)


def _batchnorm_example(dims: int):
    def example(args: Args, spatial_total: int | None) -> ModelInput:
        channels = args["num_features"]
        if dims == 1:
            return ModelInput("x", "float", (EXAMPLE_BATCH, channels))
        return ModelInput("x", "float", (EXAMPLE_BATCH, channels) + (EXAMPLE_SPATIAL,) * dims)

    return example


def _running_type(kind: str, dims: int) -> LayerType:
    what = {1: "features", 2: "image channels", 3: "volume channels"}[dims]
    batch = kind == "BatchNorm"
    return LayerType(
        f"{kind}{dims}d",
        (
            f"Rescales each of its {what} to a steady range, using averages kept from training."
            if batch
            else f"Rescales each sample's {what} to a steady range on its own."
        ),
        buffers=RUNNING_STATISTICS,
        hidden=("eps",),
        # A stack of InstanceNorms is not one the wiring proposes (it never was).
        stack=(_batchnorm_map_stack if dims > 1 else _batchnorm_stack) if batch else None,
        example=_batchnorm_example(dims) if batch else None,
        rebuild=_rebuild_running,
    )


RUNNING_NORMS = Family(
    "BatchNorm / InstanceNorm",
    detect_batchnorm,
    tuple(
        _running_type(kind, dims) for kind in ("BatchNorm", "InstanceNorm") for dims in (1, 2, 3)
    ),
    settings=(RUNNING_EPS,),
)


def _affine_weight(shapes: Shapes) -> tuple[tuple[int, ...], bool] | None:
    """(weight shape, has bias) when the keys are a weight and maybe a bias like it."""
    weight, bias = shapes.get("weight"), shapes.get("bias")
    if weight is None or len(weight) < 1 or bias not in (None, weight):
        return None
    return weight, bias is not None


def _rebuild_layer_norm(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    found = _affine_weight(shapes)
    if found is None:
        return None
    shape, bias = found
    args = {"normalized_shape": shape, "elementwise_affine": True, "bias": bias}
    return args, ("layer_norm_eps",)


def _rebuild_rms_norm(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    found = _affine_weight(shapes)
    if found is None or found[1]:
        return None
    return {"normalized_shape": found[0], "elementwise_affine": True}, ("layer_norm_eps",)


def _rebuild_group_norm(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    found = _affine_weight(shapes)
    if found is None or not found[1] or len(found[0]) != 1:
        return None
    return {"num_channels": found[0][0], "affine": True}, ("num_groups",)


def _sequence_stack(args: Args) -> StackStep:
    width = args["normalized_shape"][-1]
    return StackStep("same", width, width)


def _sequence_example(args: Args, spatial_total: int | None) -> ModelInput:
    return ModelInput("x", "float", (EXAMPLE_BATCH, *args["normalized_shape"]))


def _group_stack(args: Args) -> StackStep:
    width = args["num_channels"]
    return StackStep("same", width, width, map_when_first=True)


def _group_example(args: Args, spatial_total: int | None) -> ModelInput:
    channels = args["num_channels"]
    return ModelInput("x", "float", (EXAMPLE_BATCH, channels, EXAMPLE_SPATIAL, EXAMPLE_SPATIAL))


def _retune_eps(m: Any, values: Mapping[str, Any]) -> None:
    if "layer_norm_eps" in values:
        m.eps = values["layer_norm_eps"]


AFFINE_NORMS = Family(
    "LayerNorm / GroupNorm / RMSNorm",
    detect_affine_norm,
    (
        LayerType(
            "LayerNorm",
            "Rescales each position's features to a steady range, then applies a learned "
            "scale (and offset).",
            arguments={"layer_norm_eps": "eps"},
            hidden=("layer_norm_eps",),
            stack=_sequence_stack,
            example=_sequence_example,
            rebuild=_rebuild_layer_norm,
            retunes=frozenset({"layer_norm_eps"}),
            retune=_retune_eps,
            roles=frozenset({"final_norm"}),
        ),
        LayerType(
            "RMSNorm",
            "Rescales each position's features by their typical size, then applies a "
            "learned scale.",
            arguments={"layer_norm_eps": "eps"},
            hidden=("layer_norm_eps",),
            stack=_sequence_stack,
            example=_sequence_example,
            rebuild=_rebuild_rms_norm,
            retunes=frozenset({"layer_norm_eps"}),
            retune=_retune_eps,
            roles=frozenset({"final_norm"}),
        ),
        LayerType(
            "GroupNorm",
            "Rescales groups of channels of each sample to a steady range, then applies a "
            "learned scale and offset.",
            hidden=("num_groups",),
            stack=_group_stack,
            example=_group_example,
            rebuild=_rebuild_group_norm,
        ),
    ),
    settings=(LAYER_NORM_EPS, NUM_GROUPS),
)
