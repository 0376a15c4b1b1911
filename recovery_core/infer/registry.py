"""Every detector, in the order they are tried. The first that explains a group wins.

Ordering rule: composites first (they claim whole subtrees and match exact key sets),
larger before smaller (Transformer before its stacks before their layers); then the
leaves, name-based ones before the shape-only ones that would also match
(PositionalEncoding and Embedding before Linear, BatchNorm before the affine norms,
Bilinear before Conv since both read a 3-D weight, Hugging Face's Conv1D before Linear
since a bias fitting the second dimension proves it). Weight norm is not a detector: the
composer unwraps it and asks these (`weight_norm.py`). A new layer type is one new file
plus one line here.
"""

from __future__ import annotations

from recovery_core.infer import attention, conv, hf_conv1d, norm, positional, rnn
from recovery_core.infer.attention import detect_attention
from recovery_core.infer.bilinear import detect_bilinear
from recovery_core.infer.conv import detect_conv
from recovery_core.infer.detection import Detector
from recovery_core.infer.embedding import detect_embedding
from recovery_core.infer.hf_conv1d import detect_hf_conv1d
from recovery_core.infer.linear import detect_linear
from recovery_core.infer.norm import detect_affine_norm, detect_batchnorm
from recovery_core.infer.positional import detect_positional_encoding
from recovery_core.infer.rnn import detect_rnn
from recovery_core.infer.transformer import (
    detect_decoder,
    detect_decoder_layer,
    detect_encoder,
    detect_encoder_layer,
    detect_transformer,
)

DETECTORS: tuple[Detector, ...] = (
    detect_transformer,
    detect_encoder,
    detect_decoder,
    detect_decoder_layer,
    detect_encoder_layer,
    detect_attention,
    detect_rnn,
    detect_positional_encoding,
    detect_batchnorm,
    detect_bilinear,
    detect_conv,
    detect_embedding,
    detect_hf_conv1d,
    detect_linear,
    detect_affine_norm,
)

# What families declare besides detection, gathered once for the readers:
# type -> keys torch registers as buffers (None: all of them); inspect reads it.
BUFFERS_BY_TYPE: dict[str, frozenset[str] | None] = {**norm.BUFFERS, **positional.BUFFERS}
# type -> {our hidden name: the constructor's argument name}; codegen reads it.
ARGUMENT_NAMES: dict[str, dict[str, str]] = {
    **attention.ARGUMENT_NAMES,
    **conv.ARGUMENT_NAMES,
    **norm.ARGUMENT_NAMES,
    **rnn.ARGUMENT_NAMES,
}
# type -> the class a generated file defines because torch.nn has none; codegen reads it.
CLASS_SOURCES: dict[str, str] = {**hf_conv1d.CLASS_SOURCES}
