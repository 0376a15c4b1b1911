"""MultiheadAttention: packed `in_proj_weight` (3E, E) or separate q/k/v projections.

Separate projections mean kdim/vdim differ from embed_dim; `bias_k`/`bias_v` mean
add_bias_kv. `out_proj` is the attention's own child and is checked here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import Args, Family, Fixes, LayerType, Setting

Shapes = Mapping[str, tuple[int, ...]]

ATTENTION_HIDDEN = ("nhead", "dropout", "batch_first")
# Declared here, where attention starts; Transformer layers and RNNs read them too.
SETTINGS = (
    Setting(
        "nhead",
        "How many attention heads each attention layer splits its work into.",
        metadata_names=("nhead", "n_head", "n_heads", "num_heads", "num_attention_heads"),
        label="Attention heads",
    ),
    Setting(
        "dropout",
        "How much is randomly switched off while training; no effect when evaluating.",
        (0.0, 0.1),
        0.1,
        metadata_names=("dropout", "dropout_rate"),
        reads="fraction",
        label="Dropout while training",
    ),
    Setting(
        "batch_first",
        "Whether examples come first in the data's layout (yes) or the positions do (no).",
        (False, True),
        False,
        metadata_names=("batch_first",),
        label="Examples first in the layout",
    ),
)


def packed_attention_shapes(embed_dim: int, bias: bool) -> dict[str, tuple[int, ...]]:
    """The keys of nn.MultiheadAttention(embed_dim, nhead, bias=bias) as built inside Transformer layers."""
    shapes: dict[str, tuple[int, ...]] = {
        "in_proj_weight": (3 * embed_dim, embed_dim),
        "out_proj.weight": (embed_dim, embed_dim),
    }
    if bias:
        shapes |= {"in_proj_bias": (3 * embed_dim,), "out_proj.bias": (embed_dim,)}
    return shapes


def attention_args(shapes: Shapes) -> dict[str, Any] | None:
    """Constructor arguments when `shapes` are exactly one MultiheadAttention's keys."""
    if "in_proj_weight" in shapes:
        weight = shapes["in_proj_weight"]
        if len(weight) != 2 or weight[0] != 3 * weight[1]:
            return None
        embed_dim = kdim = vdim = weight[1]
        expected: dict[str, tuple[int, ...]] = {"in_proj_weight": weight}
    elif {"q_proj_weight", "k_proj_weight", "v_proj_weight"} <= set(shapes):
        q, k, v = shapes["q_proj_weight"], shapes["k_proj_weight"], shapes["v_proj_weight"]
        if len(q) != 2 or len(k) != 2 or len(v) != 2:
            return None
        embed_dim, kdim, vdim = q[0], k[1], v[1]
        expected = {"q_proj_weight": q, "k_proj_weight": k, "v_proj_weight": v}
    else:
        return None
    bias = "in_proj_bias" in shapes
    add_bias_kv = "bias_k" in shapes
    expected["out_proj.weight"] = (embed_dim, embed_dim)
    if bias:
        expected |= {"in_proj_bias": (3 * embed_dim,), "out_proj.bias": (embed_dim,)}
    if add_bias_kv:
        expected |= {"bias_k": (1, 1, embed_dim), "bias_v": (1, 1, embed_dim)}
    if dict(shapes) != expected:
        return None
    return {
        "embed_dim": embed_dim,
        "bias": bias,
        "add_bias_kv": add_bias_kv,
        "kdim": kdim,
        "vdim": vdim,
    }


def detect_attention(group: Group) -> Detection | None:
    args = attention_args(group.shapes())
    if args is None:
        return None
    if "in_proj_weight" in group.keys:
        seen = f"in_proj_weight {fmt(group.keys['in_proj_weight'].shape)}"
    else:
        seen = (
            f"q_proj_weight {fmt(group.keys['q_proj_weight'].shape)}, "
            f"k_proj_weight {fmt(group.keys['k_proj_weight'].shape)}, "
            f"v_proj_weight {fmt(group.keys['v_proj_weight'].shape)}"
        )
    return Detection(
        "MultiheadAttention",
        args,
        f"{seen} and out_proj → {call('MultiheadAttention', args)}",
        hidden=ATTENTION_HIDDEN,
        composite=True,
    )


def _determines(fixes: Fixes, args: Args) -> None:
    packed = fixes.key("in_proj_weight") in fixes.shapes
    fixes.add("embed_dim", args["embed_dim"], "in_proj_weight" if packed else "q_proj_weight")


def _retune(m: Any, values: Mapping[str, Any]) -> None:
    if "nhead" in values:
        m.num_heads = values["nhead"]
        m.head_dim = m.embed_dim // values["nhead"]
    if "batch_first" in values:
        m.batch_first = values["batch_first"]


FAMILY = Family(
    "MultiheadAttention",
    detect_attention,
    (
        LayerType(
            "MultiheadAttention",
            "Lets every position of a sequence gather information from the others, "
            "weighing each by how relevant it looks.",
            arguments={"nhead": "num_heads"},
            hidden=ATTENTION_HIDDEN,
            determines=_determines,
            retunes=frozenset({"nhead", "batch_first"}),
            retune=_retune,
        ),
    ),
    composite=True,
    settings=SETTINGS,
)
