"""Models whose forward must be found from the weights and the data alone.

Written the way strangers write models: unhelpful names (`proj`, `blocks`, `mix`,
`readout`), positional tables held as bare buffers, a `batch_first=False` model fed
[batch, seq, feature] tensors as they come, a head tied to the token embedding, pooling
between convolutions. Each case makes its model (seeded) and a dataset on which that
model does well: its own outputs (logits, for classifiers) plus a little noise, so the
original weights are the best explanation of the data and every hidden choice shows in
the loss. (Labels alone, the argmax, cannot tell a sharper model from the true one.)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

SEED = 0


def sinusoid(max_len: int, d: int) -> Tensor:
    position = torch.arange(max_len).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    table = torch.zeros(max_len, d)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


def causal(size: int) -> Tensor:
    """nn.Transformer.generate_square_subsequent_mask, in a form TorchScript compiles."""
    return torch.triu(torch.full((size, size), float("-inf")), diagonal=1)


@dataclass(frozen=True)
class ForwardCase:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int], tuple[Tensor, ...]]  # n samples, in the layout the user has
    sample_dim: int = 0  # where the data holds its samples (held-out slicing)
    head: str = ""  # the output layer retraining may change ("" for a tied head: none)

    def make(self) -> nn.Module:
        torch.manual_seed(SEED)
        return self.build().eval()

    def data(self, model: nn.Module, n: int, seed: int = 1) -> dict[str, Tensor]:
        """Inputs as the user has them, and a target the model fits well."""
        torch.manual_seed(seed)
        inputs = self.inputs(n)
        with torch.no_grad():
            out = model(*inputs)
        target = out + 0.01 * torch.randn_like(out)
        names = ("src", "tgt") if len(inputs) == 2 else ("x",)
        return dict(zip(names, inputs, strict=True)) | {"y": target}

    def new_task_data(self, model: nn.Module, n: int, seed: int = 1) -> dict[str, Tensor]:
        """Inputs as `data` gives them, and a target the model was not trained for: its
        trunk read out by another output layer (the head's tensors redrawn at their own
        mean and spread), which retraining the head fits as well as `data`'s."""
        assert self.head, "a tied head has no layer of its own to redraw"
        other = copy.deepcopy(model)
        generator = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for tensor in other.get_submodule(self.head).parameters():
                drawn = torch.randn(tensor.shape, generator=generator)
                spread = tensor.std() if tensor.numel() > 1 else tensor.abs()
                tensor.copy_(tensor.mean() + spread * drawn)
        return self.data(other, n, seed)

    def new_labels(self, model: nn.Module, n: int, seed: int = 1) -> dict[str, Tensor]:
        """`new_task_data` as class labels: the other output layer's most likely class at
        each output row (a sample, or a step), for cross-entropy."""
        data = self.new_task_data(model, n, seed)
        return data | {"y": data["y"].argmax(-1)}

    def __repr__(self) -> str:
        return self.name


# ---------------------------------------------------------------- seq2seq on vectors


class VectorSeq2Seq(nn.Module):
    """The family this product was made for: one Linear shared by source and target, a
    sinusoidal buffer `pe` [1, 5000, d], separately named encoder and decoder, MSE."""

    def __init__(self, features=12, d=16, nhead=4, batch_first=False, layout="batch", mask=False):
        super().__init__()
        self.layout, self.mask = layout, mask
        self.proj = nn.Linear(features, d)
        table = sinusoid(5000, d)
        self.register_buffer("pe", table.unsqueeze(0) if layout != "seq" else table.unsqueeze(1))
        self.transformer_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, nhead, 32, batch_first=batch_first), 2,
            enable_nested_tensor=False,
        )  # fmt: skip
        self.transformer_decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, nhead, 32, batch_first=batch_first), 2
        )
        self.out = nn.Linear(d, features)

    def positions(self, x: Tensor) -> Tensor:
        if self.layout == "seq":  # [seq, batch, d] with a [L, 1, d] table
            return x + self.pe[: x.size(0)]
        return x + self.pe[:, : x.size(1)]  # batch-first code, whatever the model's layout

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        s = self.positions(self.proj(src))
        t = self.positions(self.proj(tgt))
        mask: Tensor | None = None
        if self.mask:
            mask = causal(t.size(1))
        memory = self.transformer_encoder(s)
        return self.out(self.transformer_decoder(t, memory, tgt_mask=mask))


def vectors(*shape: int) -> Tensor:
    return torch.randn(*shape)


class ProjectedTransformer(nn.Module):
    """nn.Transformer between Linear projections of continuous inputs, one per side."""

    def __init__(self):
        super().__init__()
        self.left = nn.Linear(6, 16)
        self.right = nn.Linear(4, 16)
        self.mix = nn.Transformer(16, 2, 1, 1, 24, batch_first=True)
        self.readout = nn.Linear(16, 4)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        out = self.mix(self.left(src), self.right(tgt), tgt_mask=causal(tgt.size(1)))
        return self.readout(out)


class TokenSeq2Seq(nn.Module):
    """One shared Embedding, separate encoder and decoder stacks, scaled embeddings."""

    def __init__(self, vocab=20, d=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks_a = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, 2, 32, batch_first=True, activation="gelu"), 1,
            enable_nested_tensor=False,
        )  # fmt: skip
        self.blocks_b = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, 2, 32, batch_first=True, activation="gelu"), 1
        )
        self.readout = nn.Linear(d, vocab)
        self.d = d

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        s = self.embed(src) * math.sqrt(self.d)
        t = self.embed(tgt) * math.sqrt(self.d)
        out = self.blocks_b(t, self.blocks_a(s), tgt_mask=causal(tgt.size(1)))
        return self.readout(out)


class LayerListSeq2Seq(nn.Module):
    """Separate adapters for source and target, encoder and decoder as lists of layers."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 16)
        self.b = nn.Linear(3, 16)
        self.down = nn.ModuleList(
            nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True)
            for _ in range(2)
        )
        self.up = nn.ModuleList(
            nn.TransformerDecoderLayer(16, 4, 32, batch_first=True, norm_first=True)
            for _ in range(2)
        )
        self.head = nn.Linear(16, 3)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        s, t = self.a(src), self.b(tgt)
        for layer in self.down:
            s = layer(s)
        for layer in self.up:
            t = layer(t, s)
        return self.head(t)


# ---------------------------------------------------------------- encoders


class Regressor(nn.Module):
    """Encoder-only regressor: Linear input projection, per-step output."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(7, 16)
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2, enable_nested_tensor=False
        )
        self.readout = nn.Linear(16, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.blocks(self.proj(x)))


class Table(nn.Module):
    """Holds a positional table under a name no convention knows."""

    def __init__(self, length: int, d: int):
        super().__init__()
        self.register_buffer("table", sinusoid(length, d))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.size(1)]


class MeanPoolClassifier(nn.Module):
    """Token classifier: embedding, positions, encoder, mean over steps, Linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.where = Table(64, 16)
        self.body = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 1, enable_nested_tensor=False
        )
        self.cls = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls(self.body(self.where(self.embed(x))).mean(1))


class FirstTokenClassifier(nn.Module):
    """Vector inputs, encoder, the first step's output to a Linear (a [CLS]-style read)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.trunk = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True),
            2,
            enable_nested_tensor=False,
        )
        self.fc = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.trunk(self.inp(x))[:, 0])


class TokenTableClassifier(nn.Module):
    """A token table under a name that does not say so (a bias-free Linear to the
    detectors), a list of encoder layers, a final norm, the first step to an MLP head."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(40, 16)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, activation="gelu")
            for _ in range(2)
        )
        self.ln = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))

    def forward(self, x: Tensor) -> Tensor:
        h = self.tok(x)
        for layer in self.layers:
            h = layer(h)
        return self.mlp(self.ln(h)[:, 0])


class TinyLM(nn.Module):
    """Decoder-only LM: token and learned position embeddings, a list of encoder layers run
    with a causal mask, a final norm and a head tied to the token embedding (one key)."""

    def __init__(self, vocab=24, d=16, length=32):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(length, d)
        self.h = nn.ModuleList(
            nn.TransformerEncoderLayer(d, 2, 32, batch_first=True, norm_first=True)
            for _ in range(2)
        )
        self.ln_f = nn.LayerNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        h = self.wte(x) + self.wpe(torch.arange(x.size(1)))
        mask = causal(x.size(1))
        for block in self.h:
            h = block(h, src_mask=mask, is_causal=True)
        return self.ln_f(h) @ self.wte.weight.T


# ---------------------------------------------------------------- recurrent and convolutional


class LastStepGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(25, 12)
        self.cell = nn.GRU(12, 20, batch_first=True)
        self.readout = nn.Linear(20, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.cell(self.embed(x))[0][:, -1])


class Tagger(nn.Module):
    """Per-step outputs from a bidirectional LSTM over vectors."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, 8, bidirectional=True, batch_first=True)
        self.tag = nn.Linear(16, 6)

    def forward(self, x: Tensor) -> Tensor:
        return self.tag(self.rnn(x)[0])


def pooled_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )


class GlobalPoolNet(nn.Module):
    """Named stages, a max pool, then global average pooling before the head. (No batch
    norm: its eps, 1e-5 or 1e-3, moves outputs by less than the data's noise can show.)"""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.GELU())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.readout = nn.Linear(12, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.flat(self.gap(self.body(self.stem(x)))))


class TinyVGG(nn.Module):
    """torchvision's VGG layout: `features`, `avgpool`, `classifier`, with the flatten done
    in the forward (no module for it), max pools between 3x3 convolutions."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 2 * 2, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 5)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(10, 24), nn.Tanh(), nn.Linear(24, 24), nn.GELU(), nn.Linear(24, 3)
    )


# ---------------------------------------------------------------- the cases


def _pair(fs: int, ft: int, s: int = 6, t: int = 5) -> Callable[[int], tuple[Tensor, ...]]:
    return lambda n: (vectors(n, s, fs), vectors(n, t, ft))


def _tokens(vocab: int, *shape: int) -> Tensor:
    return torch.randint(0, vocab, shape)


FORWARD_ZOO: tuple[ForwardCase, ...] = (
    ForwardCase(
        "vector_seq2seq_fed_as_is",
        lambda: VectorSeq2Seq(batch_first=False),
        _pair(12, 12, 6, 6),  # the model's batch is dimension 1: equal lengths
        sample_dim=0,
        head="out",
    ),
    ForwardCase(
        "vector_seq2seq_batch_first",
        lambda: VectorSeq2Seq(batch_first=True, mask=True),
        _pair(12, 12),
        head="out",
    ),
    ForwardCase(
        "vector_seq2seq_sequence_first",
        lambda: VectorSeq2Seq(batch_first=False, layout="seq"),
        lambda n: (vectors(6, n, 12), vectors(5, n, 12)),  # samples along dimension 1
        sample_dim=1,
        head="out",
    ),
    ForwardCase("projected_transformer", ProjectedTransformer, _pair(6, 4), head="readout"),
    ForwardCase(
        "token_seq2seq_shared_embedding",
        TokenSeq2Seq,
        lambda n: (_tokens(20, n, 7), _tokens(20, n, 6)),
        head="readout",
    ),
    ForwardCase("layer_list_seq2seq", LayerListSeq2Seq, _pair(5, 3), head="head"),
    ForwardCase("encoder_regressor", Regressor, lambda n: (vectors(n, 9, 7),), head="readout"),
    ForwardCase(
        "mean_pool_classifier",
        MeanPoolClassifier,
        lambda n: (_tokens(30, n, 10),),
        head="cls",
    ),
    ForwardCase(
        "first_token_classifier", FirstTokenClassifier, lambda n: (vectors(n, 8, 6),), head="fc"
    ),
    ForwardCase(
        "token_table_classifier",
        TokenTableClassifier,
        lambda n: (_tokens(40, n, 9),),
        head="mlp",
    ),
    ForwardCase("tiny_lm_tied", TinyLM, lambda n: (_tokens(24, n, 12),), head="wte"),
    ForwardCase("gru_last_step", LastStepGRU, lambda n: (_tokens(25, n, 9),), head="readout"),
    ForwardCase("lstm_tagger", Tagger, lambda n: (vectors(n, 7, 5),), head="tag"),
    ForwardCase("cnn_max_pool", pooled_cnn, lambda n: (vectors(n, 1, 16, 16),), head="7"),
    ForwardCase(
        "cnn_global_pool", GlobalPoolNet, lambda n: (vectors(n, 3, 12, 12),), head="readout"
    ),
    ForwardCase("vgg_layout", TinyVGG, lambda n: (vectors(n, 3, 16, 16),), head="classifier.3"),
    ForwardCase("mlp", mlp, lambda n: (vectors(n, 10),), head="4"),
)

FORWARD_BY_NAME = {case.name: case for case in FORWARD_ZOO}
