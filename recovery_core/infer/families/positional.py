"""A positional-encoding table: one 2-D or 3-D tensor named like `pe` on a module of its own."""

from __future__ import annotations

import re

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import Args, Family, Fixes, LayerType
from recovery_core.model.spec import positional_length

POSITIONAL_NAME = re.compile(
    r"^(pe|pos_?emb(edding)?s?|pos(itional)?_?enc(oding)?s?|position(al)?_?(embedding|encoding)s?)$",
    re.IGNORECASE,
)


def detect_positional_encoding(group: Group) -> Detection | None:
    direct = group.direct
    if not group.is_leaf or len(direct) != 1:
        return None
    ((name, info),) = direct.items()
    if not POSITIONAL_NAME.match(name) or len(info.shape) not in (2, 3):
        return None
    args = {"shape": info.shape, "buffer": name, "persistent": True}
    return Detection(
        "PositionalEncoding",
        args,
        f"a lone {len(info.shape)}-D table '{name}' {fmt(info.shape)} → {call('PositionalEncoding', args)}",
    )


def _determines(fixes: Fixes, args: Args) -> None:
    fixes.add("max_len", positional_length(tuple(args["shape"])), args["buffer"])


FAMILY = Family(
    "PositionalEncoding",
    detect_positional_encoding,
    (
        LayerType(
            "PositionalEncoding",
            "A fixed table added to a sequence so the model can tell positions apart.",
            build="positional",
            all_buffers=True,
            determines=_determines,
        ),
    ),
)
