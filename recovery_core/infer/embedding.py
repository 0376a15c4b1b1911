"""Embedding: a 2-D `weight` (num_embeddings, embedding_dim) whose name says embedding.

Shapes alone cannot tell an Embedding from a bias-free Linear, so this detector needs
the name (`emb`, `embedding`, `tok_emb`, `wte`, ...) and runs before the Linear one.
"""

from __future__ import annotations

import re

from recovery_core.infer.detection import Detection, Group, call, fmt

EMBEDDING_NAME = re.compile(r"emb|wte|wpe|lookup|^shared$", re.IGNORECASE)


def detect_embedding(group: Group) -> Detection | None:
    direct = group.direct
    weight = direct.get("weight")
    if not group.is_leaf or set(direct) != {"weight"} or len(weight.shape) != 2:
        return None
    if not EMBEDDING_NAME.search(group.name):
        return None
    num_embeddings, embedding_dim = weight.shape
    args = {"num_embeddings": num_embeddings, "embedding_dim": embedding_dim}
    return Detection(
        "Embedding",
        args,
        f"weight {fmt(weight.shape)} named '{group.name}' → {call('Embedding', args)}",
    )
