"""The shared test zoo: small, seeded torch.nn models with known settings.

Each `ZooCase` says what inference should find (types by path, determined
hyperparameters, wiring kind) and what the weights cannot show (`hidden`, the true
values of the free hyperparameters). Every model's forward mirrors the wiring described
in docs/spec-conventions.md, so a rebuilt model can be compared against the original.

Import as `from tests.zoo import ZOO` (run pytest as `python -m pytest` from the repo root).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

SEED = 0


@dataclass(frozen=True)
class ZooCase:
    name: str
    build: Callable[[], nn.Module]  # unseeded constructor; use make()
    types: Mapping[str, str]  # module path -> expected ModuleSpec.type
    determined: Mapping[str, Any]  # hyperparameter name -> value fixed by the weights
    wiring: str | None  # expected Wiring.kind
    hidden: Mapping[str, Any] = field(default_factory=dict)  # true values of free hyperparameters
    inputs: Callable[[], tuple[torch.Tensor, ...]] | None = None

    def make(self) -> nn.Module:
        """The model, with the same weights every time, in eval mode."""
        torch.manual_seed(SEED)
        return self.build().eval()

    def example_inputs(self) -> tuple[torch.Tensor, ...] | None:
        """Arguments the original model's forward accepts (None: no forward to mirror)."""
        if self.inputs is None:
            return None
        torch.manual_seed(SEED + 1)
        return self.inputs()

    def __repr__(self) -> str:  # short ids in pytest output
        return self.name


# ---------------------------------------------------------------- building blocks


def sinusoid_table(max_len: int, d_model: int) -> torch.Tensor:
    """The classic sin/cos table, shape [max_len, d_model]."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


class PositionalEncoding(nn.Module):
    """A fixed positional table stored as a buffer; layout [1, L, d] (batch first)."""

    def __init__(self, d_model: int, max_len: int, buffer: str = "pe", dropout: float = 0.1):
        super().__init__()
        self.buffer_name = buffer
        self.dropout = nn.Dropout(dropout)  # parameter-less child, as in the PyTorch tutorial
        self.register_buffer(buffer, sinusoid_table(max_len, d_model).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = getattr(self, self.buffer_name)
        return self.dropout(x + table[:, : x.size(1)])


class TokenEmbedding(nn.Module):
    """The tutorial's embedding wrapper: scales by sqrt(d_model)."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.d_model = d_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens) * math.sqrt(self.d_model)


def tokens(vocab_size: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, shape)


# ---------------------------------------------------------------- models


class MLPNoBias(nn.Module):
    """A plain container whose children are called in order."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(16, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RMSNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.rms_norm = nn.RMSNorm(16, eps=1e-6)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rms_norm(self.fc(x)))


class SelfAttention(nn.Module):
    """A lone attention block: no wiring we recognise (its forward is not a stack)."""

    def __init__(self, **mha_kwargs: Any):
        super().__init__()
        self.attn = nn.MultiheadAttention(**mha_kwargs)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attn(q, k, v, need_weights=False)[0]


class EncoderLM(nn.Module):
    """embedding -> + pe -> TransformerEncoder (norm_first, gelu, final norm) -> head."""

    def __init__(self, vocab_size=50, d_model=32, nhead=4, dim_feedforward=64, num_layers=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.pos_encoding = PositionalEncoding(d_model, max_len=16)
        layer = nn.TransformerEncoderLayer(
            d_model,
            nhead,
            dim_feedforward,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.pos_encoding(self.embedding(tokens))
        return self.head(self.encoder(x))


class TutorialPositionalEncoding(nn.Module):
    """The PyTorch translation tutorial's encoding, made batch first: buffer [1, L, d]."""

    def __init__(self, emb_size: int, dropout: float, maxlen: int = 20):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pos_embedding", sinusoid_table(maxlen, emb_size).unsqueeze(0))

    def forward(self, token_embedding: torch.Tensor) -> torch.Tensor:
        return self.dropout(token_embedding + self.pos_embedding[:, : token_embedding.size(1)])


class Seq2SeqTransformer(nn.Module):
    """The tutorial's translation model (nn.Transformer), with batch_first=True."""

    def __init__(self, src_vocab_size=40, tgt_vocab_size=30, emb_size=32, nhead=4):
        super().__init__()
        self.transformer = nn.Transformer(
            d_model=emb_size,
            nhead=nhead,
            num_encoder_layers=2,
            num_decoder_layers=1,
            dim_feedforward=64,
            dropout=0.1,
            batch_first=True,
        )
        self.generator = nn.Linear(emb_size, tgt_vocab_size)
        self.src_tok_emb = TokenEmbedding(src_vocab_size, emb_size)
        self.tgt_tok_emb = TokenEmbedding(tgt_vocab_size, emb_size)
        self.positional_encoding = TutorialPositionalEncoding(emb_size, dropout=0.1)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        src_emb = self.positional_encoding(self.src_tok_emb(src))
        tgt_emb = self.positional_encoding(self.tgt_tok_emb(tgt))
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        out = self.transformer(src_emb, tgt_emb, tgt_mask=tgt_mask)
        return self.generator(out)


class EncoderDecoder(nn.Module):
    """A seq2seq model from separate TransformerEncoder / TransformerDecoder modules."""

    def __init__(self, src_vocab_size=25, tgt_vocab_size=35, d_model=16, nhead=2):
        super().__init__()
        self.src_embedding = nn.Embedding(src_vocab_size, d_model)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d_model)
        self.pos_encoding = PositionalEncoding(d_model, max_len=12)
        enc_layer = nn.TransformerEncoderLayer(d_model, nhead, 32, batch_first=True)
        dec_layer = nn.TransformerDecoderLayer(d_model, nhead, 32, batch_first=True)
        self.encoder = nn.TransformerEncoder(
            enc_layer, 2, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(dec_layer, 2, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, tgt_vocab_size)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        memory = self.encoder(self.pos_encoding(self.src_embedding(src)))
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        out = self.decoder(self.pos_encoding(self.tgt_embedding(tgt)), memory, tgt_mask=tgt_mask)
        return self.head(out)


class RecurrentHead(nn.Module):
    """[embedding ->] rnn -> output[0] -> head."""

    def __init__(self, rnn: nn.RNNBase, head: nn.Linear, embedding: nn.Embedding | None = None):
        super().__init__()
        if embedding is not None:
            self.embedding = embedding
        self.rnn = rnn
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "embedding"):
            x = self.embedding(x)
        return self.head(self.rnn(x)[0])


class StackedLinears(nn.Module):
    """A ModuleList whose items are called in order, then a head."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.out(x)


# ---------------------------------------------------------------- the zoo

TRANSFORMER_DEFAULTS = {
    "dropout": 0.1,
    "layer_norm_eps": 1e-5,
    "norm_first": False,
    "activation": "relu",
}

ZOO: tuple[ZooCase, ...] = (
    ZooCase(
        name="mlp_sequential",
        build=lambda: nn.Sequential(
            nn.Linear(16, 32),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(32, 32),
            nn.Tanh(),
            nn.Linear(32, 4),
        ),
        types={
            "": "Sequential",
            "0": "Linear",
            "1": "Unknown",
            "2": "Unknown",
            "4": "Unknown",
            "5": "Linear",
        },
        determined={},
        wiring="sequential",
        hidden={"1": "ReLU", "2": "Dropout", "4": "Tanh"},
        inputs=lambda: (torch.randn(2, 16),),
    ),
    ZooCase(
        name="mlp_no_bias",
        build=MLPNoBias,
        types={"": "Module", "fc1": "Linear", "act": "Unknown", "fc2": "Linear"},
        determined={},
        wiring="sequential",
        hidden={"act": "GELU"},
        inputs=lambda: (torch.randn(2, 8),),
    ),
    ZooCase(
        name="cnn_batchnorm2d",
        build=lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 8 * 8, 10),
        ),
        types={
            "": "Sequential",
            "0": "Conv2d",
            "1": "BatchNorm2d",
            "3": "Conv2d",
            "4": "BatchNorm2d",
            "6": "Unknown",
            "7": "Linear",
        },
        determined={},
        wiring="sequential",
        hidden={
            "0.padding": "same",
            "0.stride": 1,
            "3.padding": "same",
            "3.stride": 1,
            "eps": 1e-5,
            "2": "ReLU",
            "5": "ReLU",
            "6": "Flatten",
        },
        inputs=lambda: (torch.randn(2, 3, 8, 8),),
    ),
    ZooCase(
        name="cnn_conv1d",
        build=lambda: nn.Sequential(
            nn.Conv1d(4, 8, 5, padding=2),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.Conv1d(8, 8, 3, padding=1),
        ),
        types={"": "Sequential", "0": "Conv1d", "1": "BatchNorm1d", "2": "Unknown", "3": "Conv1d"},
        determined={},
        wiring="sequential",
        hidden={"0.padding": "same", "0.dilation": 1, "3.stride": 1, "eps": 1e-5, "2": "ReLU"},
        inputs=lambda: (torch.randn(2, 4, 8),),
    ),
    ZooCase(
        name="cnn_conv3d",
        build=lambda: nn.Sequential(
            nn.Conv3d(2, 4, 3, padding=1),
            nn.BatchNorm3d(4),
            nn.ReLU(),
            nn.Conv3d(4, 4, 1, bias=False),
        ),
        types={"": "Sequential", "0": "Conv3d", "1": "BatchNorm3d", "3": "Conv3d"},
        determined={},
        wiring="sequential",
        hidden={"0.padding": "same", "0.stride": 1, "3.stride": 1, "eps": 1e-5, "2": "ReLU"},
        inputs=lambda: (torch.randn(2, 2, 8, 8, 8),),
    ),
    ZooCase(
        name="layernorm_no_bias",
        build=lambda: nn.Sequential(
            nn.Linear(8, 16), nn.LayerNorm(16, bias=False), nn.ReLU(), nn.Linear(16, 2)
        ),
        types={"": "Sequential", "0": "Linear", "1": "LayerNorm", "2": "Unknown", "3": "Linear"},
        determined={},
        wiring="sequential",
        hidden={"layer_norm_eps": 1e-5, "2": "ReLU"},
        inputs=lambda: (torch.randn(2, 8),),
    ),
    ZooCase(
        name="groupnorm",
        build=lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.GroupNorm(4, 8),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 8 * 8, 5),
        ),
        types={"": "Sequential", "0": "Conv2d", "1": "GroupNorm", "3": "Unknown", "4": "Linear"},
        determined={},
        wiring="sequential",
        hidden={
            "num_groups": 4,
            "0.padding": "same",
            "0.stride": 1,
            "2": "ReLU",
            "3": "Flatten",
        },
        inputs=lambda: (torch.randn(2, 3, 8, 8),),
    ),
    ZooCase(
        name="rmsnorm",
        build=RMSNormMLP,
        types={"": "Module", "fc": "Linear", "rms_norm": "RMSNorm", "head": "Linear"},
        determined={},
        wiring="sequential",
        hidden={"layer_norm_eps": 1e-6},
        inputs=lambda: (torch.randn(2, 8),),
    ),
    ZooCase(
        name="mha_packed",
        build=lambda: SelfAttention(embed_dim=32, num_heads=4, batch_first=True),
        types={"": "Module", "attn": "MultiheadAttention", "attn.out_proj": "Linear"},
        determined={"embed_dim": 32},
        wiring=None,
        hidden={"nhead": 4, "batch_first": True, "dropout": 0.0},
    ),
    ZooCase(
        name="mha_kdim_vdim",
        build=lambda: SelfAttention(
            embed_dim=32, num_heads=2, kdim=16, vdim=24, add_bias_kv=True, bias=False
        ),
        types={"": "Module", "attn": "MultiheadAttention", "attn.out_proj": "Linear"},
        determined={"embed_dim": 32},
        wiring=None,
        hidden={"nhead": 2, "batch_first": False, "dropout": 0.0},
    ),
    ZooCase(
        name="encoder_lm",
        build=EncoderLM,
        types={
            "": "Module",
            "embedding": "Embedding",
            "pos_encoding": "PositionalEncoding",
            "encoder": "TransformerEncoder",
            "encoder.layers.0": "TransformerEncoderLayer",
            "encoder.layers.1": "TransformerEncoderLayer",
            "encoder.layers.0.self_attn": "MultiheadAttention",
            "encoder.norm": "LayerNorm",
            "head": "Linear",
        },
        determined={
            "d_model": 32,
            "dim_feedforward": 64,
            "num_encoder_layers": 2,
            "vocab_size": 50,
            "max_len": 16,
        },
        wiring="encoder",
        hidden={
            **TRANSFORMER_DEFAULTS,
            "nhead": 4,
            "batch_first": True,
            "norm_first": True,
            "activation": "gelu",
            "scale_embedding": False,
            "causal_mask": False,
        },
        inputs=lambda: (tokens(50, 2, 7),),
    ),
    ZooCase(
        name="seq2seq_tutorial",
        build=Seq2SeqTransformer,
        types={
            "": "Module",
            "transformer": "Transformer",
            "transformer.encoder": "TransformerEncoder",
            "transformer.decoder": "TransformerDecoder",
            "transformer.decoder.layers.0": "TransformerDecoderLayer",
            "transformer.decoder.layers.0.multihead_attn": "MultiheadAttention",
            "generator": "Linear",
            "src_tok_emb.embedding": "Embedding",
            "tgt_tok_emb.embedding": "Embedding",
            "positional_encoding": "PositionalEncoding",
        },
        determined={
            "d_model": 32,
            "dim_feedforward": 64,
            "num_encoder_layers": 2,
            "num_decoder_layers": 1,
            "src_vocab_size": 40,
            "tgt_vocab_size": 30,
            "max_len": 20,
        },
        wiring="seq2seq",
        hidden={
            **TRANSFORMER_DEFAULTS,
            "nhead": 4,
            "batch_first": True,
            "scale_embedding": True,
            "causal_mask": True,
        },
        inputs=lambda: (tokens(40, 2, 7), tokens(30, 2, 5)),
    ),
    ZooCase(
        name="encoder_decoder_modules",
        build=EncoderDecoder,
        types={
            "": "Module",
            "src_embedding": "Embedding",
            "tgt_embedding": "Embedding",
            "pos_encoding": "PositionalEncoding",
            "encoder": "TransformerEncoder",
            "decoder": "TransformerDecoder",
            "decoder.layers.1": "TransformerDecoderLayer",
            "decoder.norm": "LayerNorm",
            "head": "Linear",
        },
        determined={
            "d_model": 16,
            "dim_feedforward": 32,
            "num_encoder_layers": 2,
            "num_decoder_layers": 2,
            "src_vocab_size": 25,
            "tgt_vocab_size": 35,
            "max_len": 12,
        },
        wiring="seq2seq",
        hidden={
            **TRANSFORMER_DEFAULTS,
            "nhead": 2,
            "batch_first": True,
            "scale_embedding": False,
            "causal_mask": True,
        },
        inputs=lambda: (tokens(25, 2, 7), tokens(35, 2, 5)),
    ),
    ZooCase(
        name="lstm_bidirectional",
        build=lambda: RecurrentHead(
            nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True), nn.Linear(32, 3)
        ),
        types={"": "Module", "rnn": "LSTM", "head": "Linear"},
        determined={"input_size": 8, "hidden_size": 16, "num_layers": 2, "bidirectional": True},
        wiring="rnn",
        hidden={"batch_first": True, "dropout": 0.0},
        inputs=lambda: (torch.randn(2, 5, 8),),
    ),
    ZooCase(
        name="lstm_proj",
        build=lambda: RecurrentHead(nn.LSTM(8, 16, proj_size=4), nn.Linear(4, 2)),
        types={"": "Module", "rnn": "LSTM", "head": "Linear"},
        determined={"input_size": 8, "hidden_size": 16, "num_layers": 1, "proj_size": 4},
        wiring="rnn",
        hidden={"batch_first": False},
        inputs=lambda: (torch.randn(2, 5, 8),),
    ),
    ZooCase(
        name="gru",
        build=lambda: RecurrentHead(nn.GRU(8, 12, bias=False, batch_first=True), nn.Linear(12, 2)),
        types={"": "Module", "rnn": "GRU", "head": "Linear"},
        determined={"input_size": 8, "hidden_size": 12, "num_layers": 1, "bidirectional": False},
        wiring="rnn",
        hidden={"batch_first": True},
        inputs=lambda: (torch.randn(2, 5, 8),),
    ),
    ZooCase(
        name="rnn_relu",
        build=lambda: RecurrentHead(
            nn.RNN(8, 12, num_layers=2, nonlinearity="relu"), nn.Linear(12, 2)
        ),
        types={"": "Module", "rnn": "RNN", "head": "Linear"},
        determined={"input_size": 8, "hidden_size": 12, "num_layers": 2},
        wiring="rnn",
        hidden={"batch_first": False, "rnn_nonlinearity": "relu", "dropout": 0.0},
        inputs=lambda: (torch.randn(2, 5, 8),),
    ),
    ZooCase(
        name="embedding_lstm",
        build=lambda: RecurrentHead(
            nn.LSTM(16, 32, batch_first=True), nn.Linear(32, 30), embedding=nn.Embedding(30, 16)
        ),
        types={"": "Module", "embedding": "Embedding", "rnn": "LSTM", "head": "Linear"},
        determined={"vocab_size": 30, "input_size": 16, "hidden_size": 32, "num_layers": 1},
        wiring="rnn",
        hidden={"batch_first": True},
        inputs=lambda: (tokens(30, 2, 6),),
    ),
    ZooCase(
        name="modulelist",
        build=StackedLinears,
        types={
            "": "Module",
            "layers": "ModuleList",
            "layers.0": "Linear",
            "layers.2": "Linear",
            "out": "Linear",
        },
        determined={},
        wiring="sequential",
        hidden={},
        inputs=lambda: (torch.randn(2, 8),),
    ),
    ZooCase(
        name="prelu_mlp",  # infer/families/prelu.py: a weight-only 1-D module, ranked as LayerNorm
        build=lambda: nn.Sequential(nn.Linear(8, 16), nn.PReLU(16), nn.Linear(16, 4)),
        types={"0": "Linear", "1": "LayerNorm", "2": "Linear"},
        determined={},
        wiring="sequential",
        hidden={"wiring": "each child in order, 1 as PReLU"},  # what the data picks
        inputs=lambda: (torch.randn(2, 8),),
    ),
)

ZOO_BY_NAME: dict[str, ZooCase] = {case.name: case for case in ZOO}
