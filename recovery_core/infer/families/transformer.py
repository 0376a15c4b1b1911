"""Transformer layers, their stacks and nn.Transformer, recognised by exact key sets.

Each layer type builds the key → shape table torch would produce for the d_model,
dim_feedforward and bias read from `linear1.weight`, and matches only when the
checkpoint's keys are exactly that table: no guessing, no partial matches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.families.attention import packed_attention_shapes
from recovery_core.infer.family import Args, Family, Fixes, LayerType, Setting, nothing

Shapes = Mapping[str, tuple[int, ...]]
LayerArgs = dict[str, Any]

LAYER_HIDDEN = ("nhead", "dropout", "activation", "layer_norm_eps", "batch_first", "norm_first")
# The layers' own; nhead, dropout and batch_first are attention's, layer_norm_eps the norms'.
SETTINGS = (
    Setting(
        "norm_first",
        "Whether each block normalises its input before (yes) or after (no) its main step.",
        (False, True),
        False,
        metadata_names=("norm_first", "pre_norm"),
        label="Normalise before each step",
    ),
    Setting(
        "activation",
        "The bend applied inside each feed-forward layer.",
        ("relu", "gelu"),
        "relu",
        metadata_names=("activation", "activation_function", "hidden_act"),
        reads="word",
        label="Activation",
    ),
)


def _under(shapes: Shapes, prefix: str) -> dict[str, tuple[int, ...]]:
    start = prefix + "."
    return {k[len(start) :]: v for k, v in shapes.items() if k.startswith(start)}


def _prefixed(prefix: str, shapes: Shapes) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": v for k, v in shapes.items()}


def _layer_shapes(d_model: int, ff: int, bias: bool, decoder: bool) -> dict[str, tuple[int, ...]]:
    shapes = _prefixed("self_attn", packed_attention_shapes(d_model, bias))
    if decoder:
        shapes |= _prefixed("multihead_attn", packed_attention_shapes(d_model, bias))
    shapes |= {"linear1.weight": (ff, d_model), "linear2.weight": (d_model, ff)}
    if bias:
        shapes |= {"linear1.bias": (ff,), "linear2.bias": (d_model,)}
    for norm in ("norm1", "norm2", "norm3") if decoder else ("norm1", "norm2"):
        shapes[f"{norm}.weight"] = (d_model,)
        if bias:
            shapes[f"{norm}.bias"] = (d_model,)
    return shapes


def _layer_args(shapes: Shapes, decoder: bool) -> LayerArgs | None:
    linear1 = shapes.get("linear1.weight")
    if linear1 is None or len(linear1) != 2:
        return None
    ff, d_model = linear1
    bias = "linear1.bias" in shapes
    if dict(shapes) != _layer_shapes(d_model, ff, bias, decoder):
        return None
    return {"d_model": d_model, "dim_feedforward": ff, "bias": bias}


def encoder_layer_args(shapes: Shapes) -> LayerArgs | None:
    return _layer_args(shapes, decoder=False)


def decoder_layer_args(shapes: Shapes) -> LayerArgs | None:
    return _layer_args(shapes, decoder=True)


def stack_args(
    shapes: Shapes, layer_args: Callable[[Shapes], LayerArgs | None]
) -> tuple[LayerArgs, int, bool] | None:
    """(layer args, number of layers, has a final norm) for `layers.N.*` [+ `norm.*`]."""
    first = _under(shapes, "layers.0")
    args = layer_args(first)
    if args is None:
        return None
    count = 0
    while _under(shapes, f"layers.{count}") == first:
        count += 1
    rest = {k: v for k, v in shapes.items() if not k.startswith("layers.")}
    if len(shapes) - len(rest) != count * len(first):
        return None  # a layer that differs from layer 0, or a gap in the numbering
    d_model = (args["d_model"],)
    if rest not in ({}, {"norm.weight": d_model}, {"norm.weight": d_model, "norm.bias": d_model}):
        return None
    return args, count, bool(rest)


def detect_encoder_layer(group: Group) -> Detection | None:
    return _detect_layer(group, "TransformerEncoderLayer", encoder_layer_args)


def detect_decoder_layer(group: Group) -> Detection | None:
    return _detect_layer(group, "TransformerDecoderLayer", decoder_layer_args)


def _detect_layer(group: Group, type_name: str, layer_args) -> Detection | None:
    args = layer_args(group.shapes())
    if args is None:
        return None
    evidence = (
        f"linear1.weight {fmt(group.shapes()['linear1.weight'])} with self_attn, linear2 and norms "
        f"→ {call(type_name, args)}"
    )
    return Detection(type_name, args, evidence, hidden=LAYER_HIDDEN, composite=True)


def detect_encoder(group: Group) -> Detection | None:
    return _detect_stack(group, "TransformerEncoder", encoder_layer_args)


def detect_decoder(group: Group) -> Detection | None:
    return _detect_stack(group, "TransformerDecoder", decoder_layer_args)


def _detect_stack(group: Group, type_name: str, layer_args) -> Detection | None:
    found = stack_args(group.shapes(), layer_args)
    if found is None:
        return None
    _, count, has_norm = found
    args = {"num_layers": count, "has_norm": has_norm}
    evidence = f"layers.0 … layers.{count - 1} are identical {type_name}Layer key sets"
    evidence += " with a final norm" if has_norm else " without a final norm"
    return Detection(type_name, args, f"{evidence} → {call(type_name, args)}", composite=True)


def detect_transformer(group: Group) -> Detection | None:
    shapes = group.shapes()
    if any(not k.startswith(("encoder.", "decoder.")) for k in shapes):
        return None
    encoder = stack_args(_under(shapes, "encoder"), encoder_layer_args)
    decoder = stack_args(_under(shapes, "decoder"), decoder_layer_args)
    if encoder is None or decoder is None or not encoder[2] or not decoder[2]:
        return None  # nn.Transformer always has both stacks, each with a final norm
    if encoder[0] != decoder[0]:
        return None
    layer = encoder[0]
    args = {
        "d_model": layer["d_model"],
        "num_encoder_layers": encoder[1],
        "num_decoder_layers": decoder[1],
        "dim_feedforward": layer["dim_feedforward"],
        "bias": layer["bias"],
    }
    evidence = (
        f"an encoder of {encoder[1]} and a decoder of {decoder[1]} layers, both normed, with "
        f"encoder.layers.0.linear1.weight {fmt(shapes['encoder.layers.0.linear1.weight'])} "
        f"→ {call('Transformer', args)}"
    )
    return Detection("Transformer", args, evidence, hidden=LAYER_HIDDEN, composite=True)


# ------------------------------------------------------------ what the shapes fix


def _width(fixes: Fixes, linear1: str) -> None:
    ff, d_model = fixes.shapes[fixes.key(linear1)]
    fixes.add("d_model", d_model, linear1)
    fixes.add("dim_feedforward", ff, linear1)


def _layer_count(fixes: Fixes, count: int, name: str, prefix: str) -> None:
    layers = "1 layer (0)" if count == 1 else f"{count} layers (0 … {count - 1})"
    last = f"{prefix}.{count - 1}.linear1.weight"
    fixes.add(name, count, last, f"{fixes.key(prefix)} holds {layers}")


def _determines_transformer(fixes: Fixes, args: Args) -> None:
    _width(fixes, "encoder.layers.0.linear1.weight")
    _layer_count(fixes, args["num_encoder_layers"], "num_encoder_layers", "encoder.layers")
    _layer_count(fixes, args["num_decoder_layers"], "num_decoder_layers", "decoder.layers")


def _determines_stack(name: str) -> Callable[[Fixes, Args], None]:
    def determines(fixes: Fixes, args: Args) -> None:
        _width(fixes, "layers.0.linear1.weight")
        _layer_count(fixes, args["num_layers"], name, "layers")

    return determines


def _determines_layer(fixes: Fixes, args: Args) -> None:
    _width(fixes, "linear1.weight")


# ------------------------------------------------------------ built models


def activation_function(name: str) -> Callable[[Any], Any]:
    """The function torch's Transformer layers call for `activation` ("relu", "gelu")."""
    import torch.nn.functional as F  # only a built model asks: inference stays torch-free

    functions: dict[str, Callable[[Any], Any]] = {"relu": F.relu, "gelu": F.gelu}
    return functions[name]


def _retune_layer(m: Any, values: Mapping[str, Any]) -> None:
    if "norm_first" in values:
        m.norm_first = values["norm_first"]
    activation = values.get("activation")
    if activation is not None:
        m.activation = activation_function(activation)
        m.activation_relu_or_gelu = 1 if activation == "relu" else 2


def _retune_encoder(m: Any, values: Mapping[str, Any]) -> None:
    m.use_nested_tensor = False  # decided at build time from the layer's settings


def _retune_transformer(m: Any, values: Mapping[str, Any]) -> None:
    if "batch_first" in values:
        m.batch_first = values["batch_first"]


TRANSFORMER = Family(
    "Transformer",
    detect_transformer,
    (
        LayerType(
            "Transformer",
            "A whole encoder-decoder: reads one sequence and writes another.",
            hidden=LAYER_HIDDEN,
            determines=_determines_transformer,
            retunes=frozenset({"batch_first"}),
            retune=_retune_transformer,
            opened_for_training=True,
        ),
    ),
    composite=True,
    settings=SETTINGS,
)
ENCODER = Family(
    "TransformerEncoder",
    detect_encoder,
    (
        LayerType(
            "TransformerEncoder",
            "A stack of encoder layers that read a sequence.",
            build="stack",
            determines=_determines_stack("num_encoder_layers"),
            retune=_retune_encoder,
            opened_for_training=True,
        ),
    ),
    composite=True,
)
DECODER = Family(
    "TransformerDecoder",
    detect_decoder,
    (
        LayerType(
            "TransformerDecoder",
            "A stack of decoder layers that write a sequence while reading another.",
            build="stack",
            determines=_determines_stack("num_decoder_layers"),
            retune=nothing,
            opened_for_training=True,
        ),
    ),
    composite=True,
)
DECODER_LAYER = Family(
    "TransformerDecoderLayer",
    detect_decoder_layer,
    (
        LayerType(
            "TransformerDecoderLayer",
            "One decoder block: attends to what it wrote so far and to the input, then "
            "mixes each position's features.",
            hidden=LAYER_HIDDEN,
            determines=_determines_layer,
            retunes=frozenset({"norm_first", "activation"}),
            retune=_retune_layer,
        ),
    ),
    composite=True,
)
ENCODER_LAYER = Family(
    "TransformerEncoderLayer",
    detect_encoder_layer,
    (
        LayerType(
            "TransformerEncoderLayer",
            "One encoder block: attention across the sequence, then mixing each "
            "position's features.",
            hidden=LAYER_HIDDEN,
            determines=_determines_layer,
            retunes=frozenset({"norm_first", "activation"}),
            retune=_retune_layer,
        ),
    ),
    composite=True,
)
