"""Recognise a forward wiring from the module tree (docs/spec-conventions.md, "Wiring").

The modules a forward would call ("parts") are found by opening plain containers.
A wiring is recognised only when every part has a role and the sizes agree (an
embedding as wide as the encoder, a head that reads the encoder's output, ...); when
anything is left over, no wiring is claimed and the reason is returned as a note.
"""

from __future__ import annotations

import re

from recovery_core.infer.unknown import name_hint
from recovery_core.spec import ModelInput, ModuleSpec, Wiring, positional_length

RNN_TYPES = frozenset({"LSTM", "GRU", "RNN"})
NORM_TYPES = frozenset(
    {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "RMSNorm"}
)
SOURCE_NAME = re.compile(r"src|source|enc|input", re.IGNORECASE)
TARGET_NAME = re.compile(r"tgt|target|dec|output", re.IGNORECASE)
EXAMPLE_BATCH = 2
EXAMPLE_SEQUENCE = 7  # short, and cut to the positional table's length
EXAMPLE_TARGET_SEQUENCE = 5
EXAMPLE_SPATIAL = 8


def parts_of(root: ModuleSpec) -> list[ModuleSpec]:
    """The modules a forward calls: plain containers opened, parameter-less ones skipped."""
    found: list[ModuleSpec] = []

    def visit(module: ModuleSpec) -> None:
        if module.type == "Module":
            for child in module.children:
                visit(child)
        elif module.type != "Unknown":
            found.append(module)

    visit(root)
    return found


def _layer_width(module: ModuleSpec) -> int | None:
    """d_model of a Transformer / TransformerEncoder / TransformerDecoder."""
    if "d_model" in module.args:
        return module.args["d_model"]
    for inner in module.walk():
        if inner.type in ("TransformerEncoderLayer", "TransformerDecoderLayer"):
            return inner.args["d_model"]
    return None


def _head_width(module: ModuleSpec) -> int | None:
    """in_features of a head: a Linear, or the first Linear of a Sequential."""
    for inner in module.walk():
        if inner.type == "Linear":
            return inner.args["in_features"]
        if inner.type not in ("Sequential", "ModuleList", "Unknown"):
            return None
    return None


def _positional_length(modules: list[ModuleSpec]) -> int | None:
    lengths = []
    for pe in modules:
        lengths.append(positional_length(tuple(pe.args["shape"])))
    return min(lengths) if lengths else None


def _sequence(length: int | None, wanted: int) -> int:
    return wanted if length is None else max(1, min(wanted, length))


def _src_tgt(
    a: ModuleSpec, b: ModuleSpec, head: ModuleSpec | None
) -> tuple[ModuleSpec, ModuleSpec]:
    """Order two embeddings as (source, target): by name, then by the head's vocabulary."""
    for first, second in ((a, b), (b, a)):
        if SOURCE_NAME.search(first.path) and not SOURCE_NAME.search(second.path):
            return first, second
        if TARGET_NAME.search(second.path) and not TARGET_NAME.search(first.path):
            return first, second
    if head is not None and head.type == "Linear":
        vocab = head.args["out_features"]
        if b.args["num_embeddings"] == vocab != a.args["num_embeddings"]:
            return a, b
        if a.args["num_embeddings"] == vocab != b.args["num_embeddings"]:
            return b, a
    return a, b


def _split(parts: list[ModuleSpec], width: int) -> tuple[list, list, list, list] | None:
    """(embeddings, positional encodings, heads, leftovers) for a transformer of `width`."""
    embeddings = [p for p in parts if p.type == "Embedding"]
    encodings = [p for p in parts if p.type == "PositionalEncoding"]
    heads = [p for p in parts if p.type in ("Linear", "Sequential")]
    taken = {id(p) for p in embeddings + encodings + heads}
    leftovers = [p for p in parts if id(p) not in taken]
    if any(e.args["embedding_dim"] != width for e in embeddings):
        return None
    if any(pe.args["shape"][-1] != width for pe in encodings):
        return None
    if any(_head_width(h) != width for h in heads):
        return None
    return embeddings, encodings, heads, leftovers


def _encoder(parts: list[ModuleSpec]) -> Wiring | None:
    encoders = [p for p in parts if p.type == "TransformerEncoder"]
    if len(encoders) != 1:
        return None
    encoder = encoders[0]
    split = _split(parts, _layer_width(encoder))
    if split is None:
        return None
    embeddings, encodings, heads, leftovers = split
    if leftovers != [encoder] or len(embeddings) != 1 or len(encodings) > 1 or len(heads) > 1:
        return None
    roles = {"embedding": embeddings[0].path, "encoder": encoder.path}
    if encodings:
        roles["pos_encoding"] = encodings[0].path
    if heads:
        roles["head"] = heads[0].path
    length = _sequence(_positional_length(encodings), EXAMPLE_SEQUENCE)
    return Wiring(
        kind="encoder",
        roles=roles,
        inputs=(ModelInput("tokens", "long", (EXAMPLE_BATCH, length)),),
        description="tokens → embedding → + positional encoding → TransformerEncoder → head",
    )


def _seq2seq(parts: list[ModuleSpec]) -> Wiring | None:
    transformers = [p for p in parts if p.type == "Transformer"]
    encoders = [p for p in parts if p.type == "TransformerEncoder"]
    decoders = [p for p in parts if p.type == "TransformerDecoder"]
    if len(transformers) == 1 and not encoders and not decoders:
        core = {"transformer": transformers[0]}
    elif not transformers and len(encoders) == 1 and len(decoders) == 1:
        core = {"encoder": encoders[0], "decoder": decoders[0]}
        if _layer_width(encoders[0]) != _layer_width(decoders[0]):
            return None
    else:
        return None
    split = _split(parts, _layer_width(next(iter(core.values()))))
    if split is None:
        return None
    embeddings, encodings, heads, leftovers = split
    if {id(p) for p in leftovers} != {id(p) for p in core.values()}:
        return None
    if len(embeddings) != 2 or len(heads) != 1 or len(encodings) > 2:
        return None
    src, tgt = _src_tgt(*embeddings, heads[0])
    roles = {"src_embedding": src.path, "tgt_embedding": tgt.path}
    roles |= {role: module.path for role, module in core.items()}
    if len(encodings) == 1:
        roles["pos_encoding"] = encodings[0].path
    elif len(encodings) == 2:
        src_pe, tgt_pe = _src_tgt(*encodings, None)
        roles |= {"src_pos_encoding": src_pe.path, "tgt_pos_encoding": tgt_pe.path}
    roles["head"] = heads[0].path
    length = _positional_length(encodings)
    inputs = (
        ModelInput("src", "long", (EXAMPLE_BATCH, _sequence(length, EXAMPLE_SEQUENCE))),
        ModelInput("tgt", "long", (EXAMPLE_BATCH, _sequence(length, EXAMPLE_TARGET_SEQUENCE))),
    )
    middle = "Transformer" if "transformer" in core else "TransformerEncoder / TransformerDecoder"
    return Wiring(
        kind="seq2seq",
        roles=roles,
        inputs=inputs,
        description=f"(src, tgt) → embeddings → + positional encoding → {middle} → head",
    )


def _rnn(parts: list[ModuleSpec]) -> Wiring | None:
    rnns = [p for p in parts if p.type in RNN_TYPES]
    if len(rnns) != 1:
        return None
    rnn = rnns[0]
    args = rnn.args
    width = (args.get("proj_size") or args["hidden_size"]) * (2 if args["bidirectional"] else 1)
    embeddings = [p for p in parts if p.type == "Embedding"]
    heads = [p for p in parts if p.type in ("Linear", "Sequential")]
    if len(embeddings) > 1 or len(heads) != 1 or len(parts) != 2 + len(embeddings):
        return None
    if _head_width(heads[0]) != width:
        return None
    roles = {"rnn": rnn.path, "head": heads[0].path}
    length = EXAMPLE_SEQUENCE - 1
    if embeddings:
        if embeddings[0].args["embedding_dim"] != args["input_size"]:
            return None
        roles = {"embedding": embeddings[0].path} | roles
        model_input = ModelInput("tokens", "long", (EXAMPLE_BATCH, length))
    else:
        model_input = ModelInput("x", "float", (EXAMPLE_BATCH, length, args["input_size"]))
    return Wiring(
        kind="rnn",
        roles=roles,
        inputs=(model_input,),
        description=f"{'tokens → embedding → ' if embeddings else 'x → '}{rnn.type} → output[0] → head",
    )


def _stack(module: ModuleSpec) -> list[ModuleSpec] | None:
    """The leaves a sequential forward calls in order, or None if one cannot be chained."""
    leaves: list[ModuleSpec] = []
    for child in module.children:
        if child.type in ("Sequential", "ModuleList"):
            inner = _stack(child)
            if inner is None:
                return None
            leaves.extend(inner)
        elif child.type in ("Linear", "Embedding", "Unknown") or child.type in NORM_TYPES:
            leaves.append(child)
        elif child.type.startswith(("Conv", "ConvTranspose")):
            leaves.append(child)
        else:
            return None
    return leaves


def _chain_input(leaves: list[ModuleSpec]) -> ModelInput | None:
    """The example input of a stack whose sizes chain, or None when they do not."""
    layers = [m for m in leaves if m.type != "Unknown"]
    if not layers:
        return None
    channels: int | None = None  # set while the data is a feature map
    features: int | None = None  # set while the data is a vector
    spatial_total: int | None = None  # positions per channel where a Linear flattens a map
    may_flatten = False  # a parameter-less module since the last layer could be a Flatten
    for layer in leaves:
        args = layer.args
        if layer.type == "Unknown":
            may_flatten = may_flatten or name_hint(layer.name) in (None, "Flatten")
            continue
        if layer.type == "Linear":
            if channels is not None:
                if args["in_features"] % channels or not may_flatten:
                    return None
                spatial_total = spatial_total or args["in_features"] // channels
            elif features is not None and args["in_features"] != features:
                return None
            channels, features = None, args["out_features"]
        elif layer.type.startswith(("Conv", "ConvTranspose")):
            if features is not None or (channels is not None and args["in_channels"] != channels):
                return None
            channels = args["out_channels"]
        elif layer.type == "Embedding":
            if layer is not layers[0]:
                return None
            features = args["embedding_dim"]
        else:  # a norm: keeps the size
            width = (
                args.get("num_features") or args.get("num_channels") or args["normalized_shape"][-1]
            )
            expected = channels if channels is not None else features
            if expected is not None and width != expected:
                return None
            if expected is None and layer.type in ("BatchNorm2d", "BatchNorm3d", "GroupNorm"):
                channels = width
            elif expected is None:
                features = width
        may_flatten = False
    return _first_input(layers[0], spatial_total)


def _first_input(first: ModuleSpec, spatial_total: int | None) -> ModelInput:
    args = first.args
    if first.type == "Embedding":
        return ModelInput("tokens", "long", (EXAMPLE_BATCH, EXAMPLE_SEQUENCE - 1))
    if first.type == "Linear":
        return ModelInput("x", "float", (EXAMPLE_BATCH, args["in_features"]))
    if first.type.startswith(("Conv", "ConvTranspose", "BatchNorm")):
        dims = int(first.type[-2])
        channels = args.get("in_channels") or args["num_features"]
        if dims == 1 and first.type.startswith("BatchNorm"):
            return ModelInput("x", "float", (EXAMPLE_BATCH, channels))
        side = EXAMPLE_SPATIAL
        if spatial_total is not None and first.type.startswith("Conv"):
            root = round(spatial_total ** (1 / dims))
            side = root if root**dims == spatial_total else side
        return ModelInput("x", "float", (EXAMPLE_BATCH, channels) + (side,) * dims)
    if first.type == "GroupNorm":
        return ModelInput(
            "x", "float", (EXAMPLE_BATCH, args["num_channels"], EXAMPLE_SPATIAL, EXAMPLE_SPATIAL)
        )
    return ModelInput("x", "float", (EXAMPLE_BATCH, *args["normalized_shape"]))


def _sequential(root: ModuleSpec) -> Wiring | None:
    if root.type not in ("Sequential", "ModuleList", "Module"):
        return None
    leaves = _stack(root)
    if not leaves:
        return None
    model_input = _chain_input(leaves)
    if model_input is None:
        return None
    return Wiring(
        kind="sequential",
        roles={},
        inputs=(model_input,),
        description="x → each child in order (a ModuleList's items in order)",
    )


def recognise_wiring(root: ModuleSpec) -> tuple[Wiring | None, str]:
    """The wiring, or None with a sentence saying why none was recognised."""
    parts = parts_of(root)
    if (
        root.type in RNN_TYPES
        or root.type.startswith("Transformer")
        or root.type == "MultiheadAttention"
    ):
        return None, f"The root itself is a {root.type}; no surrounding forward to recognise."
    for recognise in (_seq2seq, _encoder, _rnn):
        wiring = recognise(parts)
        if wiring is not None:
            return wiring, ""
    wiring = _sequential(root)
    if wiring is not None:
        return wiring, ""
    if root.type in ("Module", "Sequential", "ModuleList"):
        return None, (
            "No forward wiring recognised (not a chain of layers, an embedding → encoder → head "
            "model, an encoder-decoder or an embedding → RNN → head model); the rebuilt model "
            "loads the weights but has no forward."
        )
    return None, f"The root is a single {root.type}; no forward wiring around it was recognised."
