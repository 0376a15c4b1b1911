"""Conv1d/2d/3d (and ConvTranspose*): `weight` with 3-5 dims, optional `bias`.

Conv stores (out, in, *kernel), ConvTranspose (in, out, *kernel): the same shapes, so
a bias whose length matches only the second dimension is the one thing that decides.
"""

from __future__ import annotations

import re

from recovery_core.infer.detection import Detection, Group, call, fmt

TRANSPOSED_NAME = re.compile(r"deconv|transpose|convt|upconv|upsample", re.IGNORECASE)
CONV_HIDDEN = ("conv_padding", "conv_stride")


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
    else:
        transposed, decided = bool(TRANSPOSED_NAME.search(group.name)), False

    conv, transpose = f"Conv{dims}d", f"ConvTranspose{dims}d"
    if transposed:
        type_name, other = transpose, conv
        in_channels, out_channels = first, second
    else:
        type_name, other = conv, transpose
        in_channels, out_channels = second, first
    args = {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "kernel_size": kernel,
        "bias": bias is not None,
    }
    evidence = f"weight {fmt(weight.shape)}"
    evidence += f" and bias {fmt(bias.shape)}" if bias is not None else " without bias"
    evidence += f" → {call(type_name, args)}"
    if decided:
        return Detection(type_name, args, evidence, hidden=CONV_HIDDEN)
    note = (
        f"{conv} stores (out, in, *kernel) and {transpose} (in, out, *kernel): the shapes "
        f"allow both; chose {type_name} from "
        + ("the name." if transposed else "the more common case.")
    )
    if not transposed and second == 1 and first > 1:
        note += f" in_channels=1 may also be a depthwise convolution (groups={first})."
    return Detection(
        type_name, args, evidence, hidden=CONV_HIDDEN, alternatives=(other,), note=note
    )
