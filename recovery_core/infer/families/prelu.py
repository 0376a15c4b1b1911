"""PReLU: one `weight` of shape (C,) (a slope per channel) or (1,) (one shared slope).

LayerNorm(bias=False) and RMSNorm store exactly the same key, so shapes alone cannot
tell them apart. This family goes before the affine norms and takes the module only on
evidence: a single value (a norm of one feature normalises nothing), a name like `prelu`
or `act`, or a neighbouring convolution (a norm there reads channels, not the last
dimension). Elsewhere the norm detector wins and this family is its runner-up
(`same_keys_as`): inference lists PReLU among the alternatives, and a stack called in
order offers a forward that reads the module as PReLU, so the data decides.
"""

from __future__ import annotations

import re

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.families.norm import LAYERNORM_NAME, RMSNORM_NAME
from recovery_core.infer.family import EXAMPLE_BATCH, Args, Family, LayerType, Shapes, StackStep
from recovery_core.model.spec import ModelInput

PRELU_NAME = re.compile(r"prelu|act|relu", re.IGNORECASE)


def detect_prelu(group: Group) -> Detection | None:
    if not group.is_leaf or set(group.direct) != {"weight"}:
        return None
    shape = group.direct["weight"].shape
    if len(shape) != 1:
        return None
    if shape == (1,):
        why = "a single value normalises nothing, but is PReLU's one shared slope"
    elif PRELU_NAME.search(group.name) and not RMSNORM_NAME.search(group.name):
        why = f"its name '{group.name}'"
    elif group.neighbour_conv_dims is not None and not LAYERNORM_NAME.search(group.name):
        why = "it sits next to a convolution, where channels are not the last dimension"
    else:
        return None  # the affine norms take it, naming PReLU as their runner-up
    args = {"num_parameters": shape[0]}
    return Detection(
        "PReLU",
        args,
        f"weight {fmt(shape)} without bias → {call('PReLU', args)}",
        alternatives=("LayerNorm", "RMSNorm"),
        note=f"PReLU, LayerNorm(bias=False) and RMSNorm store the same key; chose PReLU because {why}.",
    )


def _rebuild(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    weight = shapes.get("weight")
    if weight is None or len(weight) != 1 or set(shapes) != {"weight"}:
        return None
    return {"num_parameters": weight[0]}, ()


def _stack(args: Args) -> StackStep:
    slopes = args["num_parameters"]
    width = None if slopes == 1 else slopes  # one shared slope fits any width
    return StackStep("same", width, width)


def _example(args: Args, spatial_total: int | None) -> ModelInput:
    return ModelInput("x", "float", (EXAMPLE_BATCH, args["num_parameters"]))


FAMILY = Family(
    "PReLU",
    detect_prelu,
    (
        LayerType(
            "PReLU",
            "A bend like ReLU whose slope for negative values is learned.",
            stack=_stack,
            example=_example,
            rebuild=_rebuild,
            same_keys_as=("LayerNorm", "RMSNorm"),
        ),
    ),
)
