"""Conv1d/2d/3d (and ConvTranspose*): `weight` with 3-5 dims, optional `bias`.

Conv stores (out, in, *kernel), ConvTranspose (in, out, *kernel): the same shapes, so
a bias whose length matches only one of the first two dimensions is what decides.

Grouped and depthwise convolutions store (out, in / groups, *kernel). The input width
comes from the layer before (the last 1-D tensor of the nearest earlier module: a bias,
a norm, a layer scale); when it divides by the second dimension, groups is that
quotient. When the width before does not settle it, groups is a free hyperparameter
`<path>.groups` whose candidates are the divisors of out_channels.

Stride, padding and dilation (and a transposed convolution's output padding) leave no
trace in the weights. Each convolution has its own, named by its path like a slot:
`<path>.stride`, `<path>.padding`, `<path>.dilation`, `<path>.output_padding`. A kernel
of size 1 has no padding or dilation to choose. The data's shapes settle most of them
(stack_shapes.py); the rest keep their defaults or are scored.
"""

from __future__ import annotations

import re

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import (
    EXAMPLE_BATCH,
    EXAMPLE_SPATIAL,
    Args,
    Family,
    LayerType,
    Rebuild,
    Setting,
    Shapes,
    StackStep,
    dims_of,
)
from recovery_core.model.spec import ModelInput

TRANSPOSED_NAME = re.compile(r"deconv|transpose|convt|upconv|upsample", re.IGNORECASE)
# One value for every convolution, as before: still read from a checkpoint's metadata
# (hyper_parameters' conv_stride / conv_padding apply to every layer) and from specs
# that name them.
CONV_HIDDEN = ("conv_padding", "conv_stride")
GROUPS = "groups"
_STRIDE = "How far each convolution's filter moves between steps: 2 halves the size."
_PADDING = (
    "Whether each convolution pads the edges so the size stays (same) or lets it shrink "
    "by the filter's reach (valid)."
)
GLOBAL_SETTINGS = (
    Setting(
        "conv_padding",
        _PADDING,
        ("same", "valid"),
        "same",
        metadata_names=("conv_padding",),
        label="Convolution padding",
    ),
    Setting(
        "conv_stride",
        _STRIDE,
        (1, 2),
        1,
        metadata_names=("conv_stride",),
        label="Convolution stride",
    ),
)
# Each convolution's own, in constructor order ("blocks.0.stride"); groups only where
# the shapes leave it open (candidates: the divisors of out_channels).
LAYER_SETTINGS = (
    Setting(
        "stride",
        "How far this convolution's filter moves between steps: 2 halves the size.",
        (1, 2),
        1,
        per_layer=True,
        label="Stride",
    ),
    Setting(
        "padding",
        "Whether this convolution pads the edges so the size stays (same) or lets it shrink "
        "by the filter's reach (valid).",
        ("same", "valid"),  # plus k // 2 - 1 for an even square kernel: padding_candidates
        "same",
        per_layer=True,
        label="Padding",
    ),
    Setting(
        "dilation",
        "How far apart the points this convolution's filter reads are: 2 spreads it over "
        "twice the span with the same weights.",
        (1, 2),
        1,
        per_layer=True,
        label="Dilation",
    ),
    Setting(
        "output_padding",
        "One extra row and column a transposed convolution adds to its output, to reach an "
        "even size when it doubles the size.",
        (0, 1),
        0,
        per_layer=True,
        label="Output padding",
    ),
    Setting(
        GROUPS,
        "Into how many separate groups this convolution splits its channels; as many as "
        "its channels means each channel is filtered on its own (depthwise).",
        per_layer=True,
        label="Channel groups",
    ),
)
# Per-layer settings, in constructor order, and what each is when nothing says otherwise.
SETTINGS = ("stride", "padding", "dilation", "output_padding")
SETTING_DEFAULTS = {s.name: s.default for s in LAYER_SETTINGS if s.name in SETTINGS}
# The global (metadata) name each per-layer setting falls back on.
LEGACY_NAMES = {"stride": "conv_stride", "padding": "conv_padding"}


def setting_name(path: str, setting: str) -> str:
    """The free hyperparameter holding one convolution's setting: "blocks.0.stride"."""
    return f"{path}.{setting}" if path else setting


def setting_of(name: str, path: str) -> str | None:
    """Which setting `name` is for the convolution at `path` ("stride"), or None."""
    prefix = f"{path}." if path else ""
    setting = name[len(prefix) :] if name.startswith(prefix) else ""
    return setting if setting in SETTINGS else None


def split_setting(name: str) -> tuple[str, str] | None:
    """("blocks.0", "stride") for "blocks.0.stride"; None for a name of another kind."""
    path, _, setting = name.rpartition(".")
    return (path, setting) if setting in SETTINGS else None


def hidden_settings(path: str, type_name: str, kernel: tuple[int, ...]) -> tuple[str, ...]:
    """The per-layer names a convolution hides: a 1-wide kernel has no padding or
    dilation to choose; only a transposed one has an output padding."""
    settings = ["stride"]
    if any(k > 1 for k in kernel):
        settings += ["padding", "dilation"]
    if type_name.startswith("ConvTranspose"):
        settings.append("output_padding")
    return tuple(setting_name(path, s) for s in settings)


def padding_amounts(mode: object, kernel: tuple[int, ...], dilation: int) -> tuple[int, ...]:
    """Per-dimension padding: "same" pads dilation × (k // 2), which keeps the size at
    stride 1 for an odd kernel; "valid" pads nothing; a number is used as it is."""
    if mode == "same":
        return tuple(dilation * (k // 2) for k in kernel)
    if mode == "valid":
        return tuple(0 for _ in kernel)
    if isinstance(mode, int) and not isinstance(mode, bool):
        return tuple(mode for _ in kernel)
    raise ValueError(f"padding {mode!r} is not 'same', 'valid' or a number")


def padding_candidates(kernel: tuple[int, ...]) -> tuple[object, ...]:
    """'same' and 'valid'; for an even square kernel also k // 2 - 1 (a 4×4 kernel,
    stride 2, padding 1 doubles a transposed convolution's size: DCGAN)."""
    candidates: tuple[object, ...] = ("same", "valid")
    if len(set(kernel)) == 1 and kernel[0] % 2 == 0 and kernel[0] >= 4:
        candidates += (kernel[0] // 2 - 1,)
    return candidates


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
    groups, groups_why, groups_known = 1, "", True
    if transposed:
        type_name, other = transpose, conv
        in_channels, out_channels = first, second
    else:
        type_name, other = conv, transpose
        out_channels = first
        groups, groups_why, groups_known = _groups(group, first, second)
        in_channels = second * groups
    hidden = hidden_settings(group.path, type_name, kernel)
    if not transposed and not groups_known:
        hidden = (*hidden, groups_name(group.path))
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


def _rebuild_as(type_name: str) -> Rebuild:
    def rebuild(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
        weight, bias = shapes.get("weight"), shapes.get("bias")
        if weight is None or len(weight) != dims_of(type_name) + 2:
            return None
        transposed = type_name.startswith("ConvTranspose")
        inp, out = (weight[0], weight[1]) if transposed else (weight[1], weight[0])
        if bias not in (None, (out,)):
            return None
        kernel = tuple(weight[2:])
        args = {"in_channels": inp, "out_channels": out, "kernel_size": kernel}
        # Its own stride, padding, ... are named by its path: the caller places them.
        return {**args, "bias": bias is not None}, hidden_settings("", type_name, kernel)

    return rebuild


def _stack(args: Args) -> StackStep:
    return StackStep("map", args["in_channels"], args["out_channels"])


def _example_of(dims: int):
    def example(args: Args, spatial_total: int | None) -> ModelInput:
        side = EXAMPLE_SPATIAL
        if spatial_total is not None:  # a Linear after it reads this many positions
            root = round(spatial_total ** (1 / dims))
            side = root if root**dims == spatial_total else side
        return ModelInput("x", "float", (EXAMPLE_BATCH, args["in_channels"]) + (side,) * dims)

    return example


def _conv_type(kind: str, dims: int) -> LayerType:
    name = f"{kind}{dims}d"
    what = {1: "a signal", 2: "an image", 3: "a volume"}[dims]
    meaning = (
        f"Slides small learned filters over {what}, each making one output channel."
        if kind == "Conv"
        else f"Spreads each position of {what} over a learned filter: the upsampling "
        "counterpart of a convolution."
    )
    return LayerType(
        name,
        meaning,
        arguments={"conv_padding": "padding", "conv_stride": "stride"},
        hidden=CONV_HIDDEN,
        stack=_stack,
        example=_example_of(dims),
        rebuild=_rebuild_as(name),
    )


FAMILY = Family(
    "Convolution",
    detect_conv,
    tuple(_conv_type(kind, dims) for kind in ("Conv", "ConvTranspose") for dims in (1, 2, 3)),
    settings=GLOBAL_SETTINGS + LAYER_SETTINGS,
)
