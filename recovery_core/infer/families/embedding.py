"""Embedding: a 2-D `weight` (num_embeddings, embedding_dim) and nothing else.

Shapes alone cannot tell an Embedding from a bias-free Linear, so this detector runs
before the Linear one and takes the module only on evidence:
- the name: `emb`, `wte`, `lookup`, `shared`, or a module named like a bias that holds
  a 2-D table (T5's `relative_attention_bias`: one bias per bucket and head, looked up);
- tied storage: a weight shared with a Linear that has a bias (a language model's
  decoder reusing its input table) is the table; of bias-free tied weights the first
  in the file is (the input comes before the output projection).
"""

from __future__ import annotations

import re

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import (
    EXAMPLE_BATCH,
    EXAMPLE_SEQUENCE,
    Args,
    Family,
    Fixes,
    LayerType,
    Shapes,
    StackStep,
)
from recovery_core.model.spec import ModelInput

EMBEDDING_NAME = re.compile(r"emb|wte|wpe|lookup|^shared$|bias$", re.IGNORECASE)
# A token table's size is named by its role in the forward; else by its path.
VOCAB_NAMES = {
    "embedding": "vocab_size",
    "src_embedding": "src_vocab_size",
    "tgt_embedding": "tgt_vocab_size",
}


def _tied_evidence(group: Group) -> tuple[str, bool] | None:
    """(why, certain) when tied storage says this weight is an Embedding table."""
    partners = group.partners("weight")
    for partner in partners:
        owner = partner.rpartition(".")[0]
        if (f"{owner}.bias" if owner else "bias") in group.order:
            return f"tied to {partner}, whose module has a bias: that one is the Linear", True
    mine = group.order.get(group.full("weight"), 0)
    if partners and all(mine < group.order.get(p, 0) for p in partners):
        return f"tied to {', '.join(partners)} and first in the file: the input table", False
    return None


def detect_embedding(group: Group) -> Detection | None:
    direct = group.direct
    if not group.is_leaf or set(direct) != {"weight"} or len(direct["weight"].shape) != 2:
        return None
    weight = direct["weight"]
    num_embeddings, embedding_dim = weight.shape
    args = {"num_embeddings": num_embeddings, "embedding_dim": embedding_dim}
    seen = f"weight {fmt(weight.shape)}"
    if EMBEDDING_NAME.search(group.name):
        return Detection(
            "Embedding", args, f"{seen} named '{group.name}' → {call('Embedding', args)}"
        )
    tied = _tied_evidence(group)
    if tied is None:
        return None
    why, certain = tied
    return Detection(
        "Embedding",
        args,
        f"{seen} {why} → {call('Embedding', args)}",
        alternatives=() if certain else ("Linear",),
        note=""
        if certain
        else "Bias-free tied 2-D weights: the first is taken as the Embedding table.",
    )


def _rebuild(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    weight = shapes.get("weight")
    if weight is None or len(weight) != 2 or set(shapes) != {"weight"}:
        return None
    return {"num_embeddings": weight[0], "embedding_dim": weight[1]}, ()


def _determines(fixes: Fixes, args: Args) -> None:
    role = next((r for r, p in fixes.roles.items() if p == fixes.path and r in VOCAB_NAMES), None)
    name = VOCAB_NAMES[role] if role else fixes.key("num_embeddings")
    fixes.add(name, args["num_embeddings"], "weight")


def _stack(args: Args) -> StackStep:
    return StackStep("tokens", None, args["embedding_dim"])


def _example(args: Args, spatial_total: int | None) -> ModelInput:
    return ModelInput("tokens", "long", (EXAMPLE_BATCH, EXAMPLE_SEQUENCE - 1))


FAMILY = Family(
    "Embedding",
    detect_embedding,
    (
        LayerType(
            "Embedding",
            "A lookup table: each token number picks one row of numbers that stands for it.",
            stack=_stack,
            example=_example,
            rebuild=_rebuild,
            determines=_determines,
        ),
    ),
)
