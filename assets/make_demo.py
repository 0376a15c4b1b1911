"""Make the bundled demo: a small encoder-decoder transformer checkpoint and a dataset.

Run from the repository root:  .venv/bin/python assets/make_demo.py
Deterministic (seeded) and quick (a few seconds on a laptop CPU). It writes
`assets/demo_checkpoint.pt` (a bare state dict, as people usually share models) and
`assets/demo_data.pt` (a dict of tensors), together well under 1 MB.

The model follows the "Wiring / seq2seq" convention in docs/spec-conventions.md, so the
forward the dashboard recovers is the forward the model was trained with.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
CHECKPOINT_PATH = HERE / "demo_checkpoint.pt"
DATA_PATH = HERE / "demo_data.pt"

VOCAB = 16  # token 0 = padding (unused), 1 = start of sequence, 2..15 = content
BOS = 1
SEQ_LEN = 8
D_MODEL = 32
NHEAD = 4  # deliberately not the default (8): the dashboard's search has to find it
MAX_LEN = 64
SEED = 0
RENAMED_A, RENAMED_B = 2, 3  # the two output tokens whose names the demo data swaps


class PositionalEncoding(nn.Module):
    """Sinusoidal positions in a buffer shaped [1, max_len, d_model] (batch first)."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div)
        pe[0, :, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.size(1)]


class Seq2SeqTransformer(nn.Module):
    """The tutorial-style translation model, shrunk to a toy size."""

    def __init__(self) -> None:
        super().__init__()
        self.src_tok_emb = nn.Embedding(VOCAB, D_MODEL)
        self.tgt_tok_emb = nn.Embedding(VOCAB, D_MODEL)
        self.positional_encoding = PositionalEncoding(D_MODEL, MAX_LEN)
        self.transformer = nn.Transformer(
            d_model=D_MODEL,
            nhead=NHEAD,
            num_encoder_layers=2,
            num_decoder_layers=2,
            dim_feedforward=64,
            dropout=0.0,  # a toy task: dropout only slows the short training down
            batch_first=True,
        )
        self.generator = nn.Linear(D_MODEL, VOCAB)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(D_MODEL)
        src_emb = self.positional_encoding(self.src_tok_emb(src) * scale)
        tgt_emb = self.positional_encoding(self.tgt_tok_emb(tgt) * scale)
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        return self.generator(self.transformer(src_emb, tgt_emb, tgt_mask=mask))


def copy_task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random content sequences; the decoder sees <start> + the target shifted right."""
    src = torch.randint(2, VOCAB, (n, SEQ_LEN), generator=generator)
    tgt = torch.cat([torch.full((n, 1), BOS), src[:, :-1]], dim=1)
    return src, tgt, src.clone()


def train_copy(model: nn.Module, steps: int, generator: torch.Generator) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        src, tgt, target = copy_task(64, generator)
        loss = loss_fn(model(src, tgt).reshape(-1, VOCAB), target.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def make_dataset(generator: torch.Generator, n: int = 256) -> dict[str, torch.Tensor]:
    """The same copy task, except that two output tokens were renamed (swapped).

    Why this data:
    - The network still knows which input token belongs at each position; only the names
      it must write for two tokens changed. That knowledge lives in the final `generator`
      layer alone, so retraining just that layer (everything else frozen) brings the loss
      from well above the original model's back down near zero: the point the demo makes.
    - Most positions (12 of 14 token kinds) still agree with the original labels, so on
      this data the original architecture scores clearly better than wrong guesses of its
      hidden settings (nhead, scaling, causal mask). Renaming every token instead would
      make the confidently-right original model look worst and mislead that search.
    """
    src, tgt, target = copy_task(n, generator)
    renamed = torch.arange(VOCAB)
    renamed[[RENAMED_A, RENAMED_B]] = torch.tensor([RENAMED_B, RENAMED_A])
    return {"src": src, "tgt": tgt, "target": renamed[target]}


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they bring
    generator = torch.Generator().manual_seed(SEED)
    model = Seq2SeqTransformer()
    final = train_copy(model, steps=700, generator=generator)
    torch.save(model.state_dict(), CHECKPOINT_PATH)
    data = make_dataset(generator)
    torch.save(data, DATA_PATH)
    with torch.no_grad():
        logits = model(data["src"], data["tgt"])
        copy_acc = (logits.argmax(-1) == data["src"]).float().mean()
    print(f"copy-task training loss {final:.4f}; demo-data copy accuracy {copy_acc:.2%}")
    print(f"wrote {CHECKPOINT_PATH.name} ({CHECKPOINT_PATH.stat().st_size:,} bytes)")
    print(f"wrote {DATA_PATH.name} ({DATA_PATH.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
