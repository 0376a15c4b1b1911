"""Hugging Face's Conv1D (GPT-2 and relatives): a linear map whose weight is stored (in, out).

torch.nn.Linear stores (out, in) with a bias as long as the first dimension; a bias as
long as the second (and not the first) proves the transposed layout. A square weight
cannot show it, so it counts as Conv1D only when another module of the same name in
the checkpoint is proven one (GPT-2's `attn.c_proj` is square, `mlp.c_proj` is not).

Family parts: detection, the class the generated file defines (torch.nn has none), its
arguments. Its keys are `weight` and `bias`, both parameters.
"""

from __future__ import annotations

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import Family, LayerType, Shapes

TYPE = "HFConv1D"

# Written into a generated file that needs it; scriptable and equal to transformers' own.
CLASS_SOURCE = '''
class HFConv1D(nn.Module):
    """Hugging Face's Conv1D: a linear map with its weight stored (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(x, self.weight) + self.bias
'''


def proves_transposed(weight: tuple[int, ...], bias: tuple[int, ...]) -> bool:
    """A bias that fits only the second dimension of a 2-D weight."""
    return len(weight) == 2 and len(bias) == 1 and bias[0] == weight[1] != weight[0]


def detect_hf_conv1d(group: Group) -> Detection | None:
    direct = group.direct
    if not group.is_leaf or set(direct) != {"weight", "bias"}:
        return None
    weight, bias = direct["weight"].shape, direct["bias"].shape
    if len(weight) != 2 or bias != (weight[1],):
        return None
    nx, nf = weight
    args = {"nf": nf, "nx": nx}
    if nx != nf:  # the bias fits only the second dimension
        return Detection(
            TYPE,
            args,
            f"weight {fmt(weight)} with bias {fmt(bias)}: the bias fits only the second "
            f"dimension, so the weight is stored (in, out) → {call(TYPE, args)}",
        )
    if group.name not in group.transposed_names:
        return None  # square and nothing says so: the Linear detector takes it
    return Detection(
        TYPE,
        args,
        f"square weight {fmt(weight)} named '{group.name}', like modules proven to be Conv1D "
        f"in this checkpoint → {call(TYPE, args)}",
        alternatives=("Linear",),
        note=(
            "A square weight with a bias is a Linear or a Conv1D (stored transposed); chose "
            "Conv1D because other modules of the same name store their weight (in, out)."
        ),
    )


def _rebuild(shapes: Shapes) -> tuple[dict, tuple[str, ...]] | None:
    weight, bias = shapes.get("weight"), shapes.get("bias")
    if weight is None or len(weight) != 2 or bias != (weight[1],):
        return None
    return {"nf": weight[1], "nx": weight[0]}, ()


FAMILY = Family(
    "Hugging Face Conv1D",
    detect_hf_conv1d,
    (
        LayerType(
            TYPE,
            "Hugging Face's linear layer with its weight stored the other way round "
            "(inputs first): mixes input features into new ones.",
            class_source=CLASS_SOURCE,
            rebuild=_rebuild,
        ),
    ),
)
