"""Weight norm: a weight stored as a magnitude `g` and a direction `v`.

torch writes it two ways: `parametrizations.weight.original0` (g) and `original1` (v)
from `nn.utils.parametrizations.weight_norm`, or `weight_g` and `weight_v` from the older
`nn.utils.weight_norm`. `v` has the weight's own shape; `g` keeps one dimension (`dim`)
and is 1 elsewhere. This family does not detect a layer type itself: it presents the
module to the other detectors as if it held a plain `weight` of v's shape, and records
how to wrap what they find, so the rebuilt module stores exactly the same keys.
"""

from __future__ import annotations

from dataclasses import replace

from recovery_core.infer.detection import Group, fmt
from recovery_core.io.checkpoint import TensorInfo
from recovery_core.model.spec import WeightNorm, WeightNormStyle

# key of g, key of v, style, in that order of preference
_FORMS: tuple[tuple[str, str, WeightNormStyle], ...] = (
    ("parametrizations.{p}.original0", "parametrizations.{p}.original1", "parametrization"),
    ("{p}_g", "{p}_v", "hook"),
)
PARAMETER = "weight"  # the only tensor torch's layers are usually weight-normed on


def norm_dim(g: tuple[int, ...], v: tuple[int, ...]) -> int | None:
    """The dimension g keeps (None: one magnitude for the whole weight, g is a scalar);
    -1 when g's shape fits no dimension, so this is not a weight norm."""
    if g == ():
        return None
    fits = [d for d in range(len(v)) if g == tuple(v[d] if i == d else 1 for i in range(len(v)))]
    return fits[0] if fits else -1


def unwrap_weight_norm(group: Group) -> tuple[Group, WeightNorm, str] | None:
    """The group as its detectors should see it, the weight norm found, and evidence."""
    for g_form, v_form, style in _FORMS:
        g_key, v_key = g_form.format(p=PARAMETER), v_form.format(p=PARAMETER)
        g, v = group.keys.get(g_key), group.keys.get(v_key)
        if g is None or v is None or PARAMETER in group.keys:
            continue
        dim = norm_dim(g.shape, v.shape)
        if dim == -1:
            return None
        keys: dict[str, TensorInfo] = {
            k: info for k, info in group.keys.items() if k not in (g_key, v_key)
        }
        keys[PARAMETER] = replace(v, name=group.full(PARAMETER))
        evidence = (
            f"{g_key} {fmt(g.shape)} and {v_key} {fmt(v.shape)} are a weight norm "
            f"({'over the whole weight' if dim is None else f'dim={dim}'})"
        )
        return replace(group, keys=keys), WeightNorm(PARAMETER, dim, style), evidence
    return None
