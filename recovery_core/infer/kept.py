"""Tensors no layer type explains, kept as is: a parameter or a buffer, and why.

A class token, a layer scale, a relative-position table or a learned logit scale sits
directly on a container module. No torch.nn class owns it, but its name and shape are
all a rebuilt model needs to hold it: the generated code registers it under its own
name (`nn.Parameter` or `register_buffer`) and a strict load fills in its values.

Parameter or buffer: integer and boolean tensors are buffers (they cannot take
gradients); so are names that are buffers by convention (running statistics, index
tables, position ids, masks, sinusoidal tables). Everything else is a parameter: a
learned tensor is by far the more common thing to find unexplained.
"""

from __future__ import annotations

import re

from recovery_core.io.checkpoint import TensorInfo
from recovery_core.model.spec import KeptTensor, TensorKind

_FLOATING = frozenset({"float16", "bfloat16", "float32", "float64"}) | {
    f"float8_{kind}" for kind in ("e4m3fn", "e4m3fnuz", "e5m2", "e5m2fnuz", "e8m0fnu")
}
_COMPLEX = frozenset({"complex32", "complex64", "complex128"})

# Names that are buffers by convention, whatever their dtype.
BUFFER_NAME = re.compile(
    r"(^|_)(running_(mean|var)|num_batches_tracked|pe|inv_freq|freqs?_cis|"
    r"\w*_index|\w*_ids|\w*mask|masked_bias|logits_bias|anchors?)$",
    re.IGNORECASE,
)

# What the usual unexplained tensors are, so the tree can say it (first match wins).
MEANINGS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), meaning)
    for pattern, meaning in (
        (r"relative_position_bias_table|rel_pos", "a relative-position bias table"),
        (r"relative_position_index|_index$", "an index into a table"),
        (r"(cls|class|dist|distill|mask|reg)_?(token|embedding)s?$", "a learned token"),
        (r"pos(ition(al)?)?_?(embed|emb|embedding|encoding)s?$", "a learned position table"),
        (r"(^|_)(gamma|layer_?scale|ls\d*|lambda)(\d*)$", "a layer scale"),
        (r"logit_scale|temperature", "a learned scalar"),
        (r"bias$", "a bias"),
    )
)


def meaning(name: str) -> str:
    """What a kept tensor probably is, from its name ("" when the name says nothing)."""
    return next((m for pattern, m in MEANINGS if pattern.search(name)), "")


def kept_tensor(name: str, info: TensorInfo) -> KeptTensor:
    """How a tensor no layer explains is registered, with the reason."""
    what = meaning(name) or "a tensor"
    kind: TensorKind
    if info.dtype not in _FLOATING and info.dtype not in _COMPLEX:
        kind, why = "buffer", f"{what}; {info.dtype} cannot take gradients, so a buffer"
    elif BUFFER_NAME.search(name):
        kind, why = "buffer", f"{what}; '{name}' is a buffer's name by convention"
    else:
        kind, why = "parameter", f"{what}; {info.dtype}, so a trainable parameter"
    return KeptTensor(name=name, shape=info.shape, dtype=info.dtype, kind=kind, why=why)
