"""Linear: a 2-D `weight` (out, in) and optionally a `bias` (out,)."""

from __future__ import annotations

from recovery_core.infer.detection import Detection, Group, call, fmt

# Hugging Face's Conv1D (GPT-2 and relatives) stores a linear map transposed, (in, out).
HF_CONV1D_NAMES = frozenset({"c_attn", "c_fc", "c_proj"})


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
    if group.name in HF_CONV1D_NAMES:
        return Detection(
            "Linear",
            args,
            evidence,
            alternatives=("Conv1D (Hugging Face, weight stored as (in, out))",),
            note=(
                f"'{group.name}' is named like Hugging Face's Conv1D, which stores the weight "
                f"transposed: the layer may map {out_features} → {in_features} features instead."
            ),
        )
    if bias is None:
        return Detection(
            "Linear",
            args,
            evidence,
            alternatives=("Embedding",),
            note="A 2-D weight without bias may also be an Embedding table; its name does not suggest one.",
        )
    return Detection("Linear", args, evidence)


def transposed_linear_note(group: Group) -> str:
    """A sentence when unexplained keys look like a linear map stored (in, out)."""
    direct = group.direct
    weight, bias = direct.get("weight"), direct.get("bias")
    if set(direct) != {"weight", "bias"} or len(weight.shape) != 2 or len(bias.shape) != 1:
        return ""
    in_features, out_features = weight.shape
    if bias.shape[0] != out_features or in_features == out_features:
        return ""
    return (
        f"weight {fmt(weight.shape)} with bias {fmt(bias.shape)} is a linear map stored "
        f"transposed (like Hugging Face's Conv1D: in={in_features}, out={out_features}); "
        "torch.nn.Linear stores (out, in), so these keys are left unexplained."
    )
