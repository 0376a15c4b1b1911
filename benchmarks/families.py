"""The seq2seq models of section 8, as the hand-written scripts and `recover` see them.

Each family names a case of tests/forward_zoo.py (its model code, which the hand-written
scripts have and `recover` does not), the output layer that trains, the dimension of the
data that holds the model's batch, and the hidden values `recover --set` fixes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    case: str  # tests/forward_zoo.py FORWARD_BY_NAME
    head: str
    batch_dim: int  # the data's dimension the model reads as its batch
    values: tuple[str, ...]  # `recover --set` for every hidden value

    @property
    def label(self) -> str:
        return self.case


FAMILIES = {
    # The family forward recovery was made for: built batch_first=False, fed [batch, seq,
    # feature] as the data comes, so the model's batch is dimension 1 (the 6 positions)
    # and it reads all samples as one sequence.
    "fed_as_is": Family(
        "vector_seq2seq_fed_as_is",
        "out",
        1,
        (
            "nhead=4",
            "batch_first=False",
            "norm_first=False",
            "activation=relu",
            "layer_norm_eps=1e-5",
            "causal_mask=False",
            "scale_embedding=False",
            "pos_dim=1",
        ),
    ),  # fmt: skip
    # The same family with independent samples (batch_first=True, a causal mask).
    "batch_first": Family(
        "vector_seq2seq_batch_first",
        "out",
        0,
        (
            "nhead=4",
            "batch_first=True",
            "norm_first=False",
            "activation=relu",
            "layer_norm_eps=1e-5",
            "causal_mask=True",
            "scale_embedding=False",
            "pos_dim=1",
        ),
    ),  # fmt: skip
    # A token seq2seq: one shared Embedding, encoder and decoder stacks, a Linear readout.
    "token": Family(
        "token_seq2seq_shared_embedding",
        "readout",
        0,
        (
            "nhead=2",
            "batch_first=True",
            "norm_first=False",
            "activation=gelu",
            "layer_norm_eps=1e-5",
            "causal_mask=True",
            "scale_embedding=True",
        ),
    ),  # fmt: skip
}
