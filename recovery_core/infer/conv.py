"""Conv1d/2d/3d (and ConvTranspose*): `weight` with 3-5 dims, optional `bias`.

Conv stores (out, in, *kernel), ConvTranspose (in, out, *kernel): the same shapes, so
a bias whose length matches only one of the first two dimensions is what decides.

Grouped and depthwise convolutions store (out, in / groups, *kernel). The input width
comes from the layer before (the last 1-D tensor of the nearest earlier module: a bias,
a norm, a layer scale); when it divides by the second dimension, groups is that
quotient. When the width before does not settle it, groups is a free hyperparameter
`<path>.groups` whose candidates are the divisors of out_channels.
"""

from __future__ import annotations

import re

from recovery_core.infer.detection import Detection, Group, call, fmt

TRANSPOSED_NAME = re.compile(r"deconv|transpose|convt|upconv|upsample", re.IGNORECASE)
CONV_HIDDEN = ("conv_padding", "conv_stride")
# Family parts read by codegen: the constructor's own names for our hidden values.
ARGUMENT_NAMES = {
    f"{kind}{dims}d": {"conv_padding": "padding", "conv_stride": "stride"}
    for kind in ("Conv", "ConvTranspose")
    for dims in (1, 2, 3)
}
GROUPS = "groups"


def groups_name(path: str) -> str:
    """The free hyperparameter holding a convolution's groups: "blocks.0.dwconv.groups"."""
    return f"{path}.{GROUPS}" if path else GROUPS


def _groups(group: Group, out_channels: int, per_group: int) -> tuple[int, str, bool]:
    """(groups, evidence, determined) for a convolution storing (out, per_group, *k).

    Only a depthwise layout (one input channel per group) is read from the layer before:
    a shortcut convolution (ResNet's downsample) also follows a layer of another width,
    so a quotient of 2 or 4 proves nothing. Wide quotients (8 and more, ResNeXt's 32) are
    proposed as a free value."""
    width = group.input_width
    if per_group == 1 and out_channels > 1:
        if width is not None and out_channels % width == 0:
            if width == 1:
                return 1, "", True
            return width, f"the layer before gives {width} channels: depthwise", True
        if width is None:  # nothing with weights comes before: it reads the model's input
            return 1, "", True  # a one-channel input (audio, grayscale), not a depthwise layer
        return out_channels, "the layer before shows no fitting width; depthwise is usual", False
    if width is not None and width % per_group == 0:
        quotient = width // per_group
        if quotient >= 8 and out_channels % quotient == 0:
            return quotient, f"the layer before gives {width} channels", False
    return 1, "", True


def detect_conv(group: Group) -> Detection | None:
    direct = group.direct
    weight, bias = direct.get("weight"), direct.get("bias")
    if not group.is_leaf or weight is None or set(direct) - {"weight", "bias"}:
        return None
    if not 3 <= len(weight.shape) <= 5:
        return None
    dims = len(weight.shape) - 2
    first, second, kernel = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
    if bias is not None and len(bias.shape) != 1:
        return None
    bias_len = None if bias is None else bias.shape[0]

    if bias_len is not None and bias_len != first:
        if bias_len != second:
            return None
        transposed, decided = True, True  # bias fits only (in, out, *kernel)
    elif bias_len is not None and first != second:
        transposed, decided = False, True  # bias fits only (out, in, *kernel)
    else:
        transposed, decided = bool(TRANSPOSED_NAME.search(group.name)), False

    conv, transpose = f"Conv{dims}d", f"ConvTranspose{dims}d"
    hidden: tuple[str, ...] = CONV_HIDDEN
    groups, groups_why, groups_known = 1, "", True
    if transposed:
        type_name, other = transpose, conv
        in_channels, out_channels = first, second
    else:
        type_name, other = conv, transpose
        out_channels = first
        groups, groups_why, groups_known = _groups(group, first, second)
        in_channels = second * groups
        if not groups_known:
            hidden = (*CONV_HIDDEN, groups_name(group.path))
    args = {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "kernel_size": kernel,
        "bias": bias is not None,
    }
    if groups != 1 or not groups_known:
        args[GROUPS] = groups
    evidence = f"weight {fmt(weight.shape)}"
    evidence += f" and bias {fmt(bias.shape)}" if bias is not None else " without bias"
    if groups_why and (groups != 1 or not groups_known):
        evidence += f"; {groups_why}"
    evidence += f" → {call(type_name, args)}"
    if decided:
        return Detection(type_name, args, evidence, hidden=hidden)
    note = (
        f"{conv} stores (out, in, *kernel) and {transpose} (in, out, *kernel): the shapes "
        f"allow both; chose {type_name} from "
        + ("the name." if transposed else "the more common case.")
    )
    return Detection(type_name, args, evidence, hidden=hidden, alternatives=(other,), note=note)
