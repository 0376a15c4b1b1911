"""Linear: a 2-D `weight` (out, in) and optionally a `bias` (out,).

A bias-free 2-D weight may also be an Embedding table; the Embedding detector runs
first and takes it when the evidence says so (name, tied storage), else this one does
and names Embedding as the runner-up.
"""

from __future__ import annotations

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import EXAMPLE_BATCH, Args, Family, LayerType, Shapes, StackStep
from recovery_core.model.spec import ModelInput


def detect_linear(group: Group) -> Detection | None:
    direct = group.direct
    weight, bias = direct.get("weight"), direct.get("bias")
    if not group.is_leaf or weight is None or set(direct) - {"weight", "bias"}:
        return None
    if len(weight.shape) != 2:
        return None
    out_features, in_features = weight.shape
    if bias is not None and bias.shape != (out_features,):
        return None
    args = {"in_features": in_features, "out_features": out_features, "bias": bias is not None}
    evidence = f"weight {fmt(weight.shape)}"
    evidence += f" and bias {fmt(bias.shape)}" if bias is not None else " without bias"
    evidence += f" → {call('Linear', args)}"
    if bias is not None:
        return Detection("Linear", args, evidence)
    partners = group.partners("weight")
    if partners:
        return Detection(
            "Linear",
            args,
            f"{evidence}; its weight is tied to {partners[0]}",
            alternatives=("Embedding",),
            note=(
                f"A bias-free 2-D weight tied to {partners[0]}, which comes first and is taken as "
                "the Embedding table; this one reads as the output projection sharing it."
            ),
        )
    return Detection(
        "Linear",
        args,
        evidence,
        alternatives=("Embedding",),
        note="A 2-D weight without bias may also be an Embedding table; its name does not suggest one.",
    )


def _rebuild(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    weight, bias = shapes.get("weight"), shapes.get("bias")
    if weight is None or len(weight) != 2 or bias not in (None, (weight[0],)):
        return None
    out, inp = weight
    return {"in_features": inp, "out_features": out, "bias": bias is not None}, ()


def _stack(args: Args) -> StackStep:
    return StackStep("vector", args["in_features"], args["out_features"])


def _example(args: Args, spatial_total: int | None) -> ModelInput:
    return ModelInput("x", "float", (EXAMPLE_BATCH, args["in_features"]))


FAMILY = Family(
    "Linear",
    detect_linear,
    (
        LayerType(
            "Linear",
            "Mixes its input features into new ones: every output is a weighted sum of "
            "every input, plus an offset.",
            stack=_stack,
            example=_example,
            rebuild=_rebuild,
        ),
    ),
)
