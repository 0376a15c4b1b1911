"""nn.Bilinear: a 3-D `weight` (out, in1, in2) and optionally a `bias` (out,).

Conv1d stores exactly the same shapes (out, in, kernel). Evidence decides, strongest
first: the name (bilinear vs conv); a neighbouring convolution or a place in a numbered
sequence (Bilinear takes two inputs, so a Sequential cannot call it) means Conv1d, and
the Conv detector takes it, as it does a second dimension of 1 (a depthwise layout; a
Bilinear of one feature is useless); a named module away from any convolution is a
Bilinear, with Conv1d as the runner-up. A lone 3-D root is left to the Conv detector.
"""

from __future__ import annotations

import re

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import Family, LayerType, Shapes
from recovery_core.model.names import is_index

BILINEAR_NAME = re.compile(r"bilin", re.IGNORECASE)
CONV_NAME = re.compile(r"conv|(^|_)(dw|pw)|depthwise|downsample|stem|patch", re.IGNORECASE)


def detect_bilinear(group: Group) -> Detection | None:
    direct = group.direct
    weight, bias = direct.get("weight"), direct.get("bias")
    if not group.is_leaf or weight is None or set(direct) - {"weight", "bias"}:
        return None
    if len(weight.shape) != 3 or (bias is not None and bias.shape != weight.shape[:1]):
        return None
    by_name = bool(BILINEAR_NAME.search(group.name))
    if not by_name and (
        weight.shape[1] == 1  # one input channel per group: a depthwise convolution's layout
        or not group.path
        or is_index(group.name)
        or CONV_NAME.search(group.name)
        or group.neighbour_conv_dims is not None
    ):
        return None
    out, in1, in2 = weight.shape
    args = {"in1_features": in1, "in2_features": in2, "out_features": out, "bias": bias is not None}
    why = f"its name '{group.name}'" if by_name else "no convolution sits near it"
    return Detection(
        "Bilinear",
        args,
        f"weight {fmt(weight.shape)} → {call('Bilinear', args)}",
        alternatives=("Conv1d",),
        note=(
            f"Bilinear (out, in1, in2) and Conv1d (out, in, kernel) store the same shapes; "
            f"chose Bilinear because {why}."
        ),
    )


def _rebuild(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    weight, bias = shapes.get("weight"), shapes.get("bias")
    if weight is None or len(weight) != 3 or bias not in (None, weight[:1]):
        return None
    out, in1, in2 = weight
    return {
        "in1_features": in1,
        "in2_features": in2,
        "out_features": out,
        "bias": bias is not None,
    }, ()


FAMILY = Family(
    "Bilinear",
    detect_bilinear,
    (
        LayerType(
            "Bilinear",
            "Combines two inputs: every output weighs each pair of their features.",
            rebuild=_rebuild,
        ),
    ),
)
