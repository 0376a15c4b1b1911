"""LSTM / GRU / RNN: `weight_ih_l0` (gates * hidden, input) and friends.

The gate multiple of weight_ih_l0's first dimension tells the type (4 LSTM, 3 GRU,
1 RNN); `_reverse` keys mean bidirectional; `weight_hr_l0` means an LSTM projection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import Family, LayerType

RNN_KEY = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
TYPE_BY_GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}


def _expected(
    layers: int, directions: int, gates: int, hidden: int, inputs: int, proj: int, bias: bool
):
    out = proj or hidden
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(layers):
        layer_input = inputs if layer == 0 else out * directions
        for suffix in ("", "_reverse")[:directions]:
            shapes[f"weight_ih_l{layer}{suffix}"] = (gates * hidden, layer_input)
            shapes[f"weight_hh_l{layer}{suffix}"] = (gates * hidden, out)
            if bias:
                shapes[f"bias_ih_l{layer}{suffix}"] = (gates * hidden,)
                shapes[f"bias_hh_l{layer}{suffix}"] = (gates * hidden,)
            if proj:
                shapes[f"weight_hr_l{layer}{suffix}"] = (proj, hidden)
    return shapes


def detect_rnn(group: Group) -> Detection | None:
    shapes = group.shapes()
    matches = [m for m in map(RNN_KEY.match, shapes) if m is not None]
    if not shapes or len(matches) != len(shapes) or "weight_ih_l0" not in shapes:
        return None
    ih, hh = shapes["weight_ih_l0"], shapes.get("weight_hh_l0")
    if hh is None or len(ih) != 2 or len(hh) != 2:
        return None
    hr = shapes.get("weight_hr_l0")
    hidden = hr[1] if hr is not None else hh[1]
    proj = hr[0] if hr is not None else 0
    if hidden == 0 or ih[0] % hidden:
        return None
    gates = ih[0] // hidden
    type_name = TYPE_BY_GATES.get(gates)
    if type_name is None or (proj and type_name != "LSTM"):
        return None
    layers = 1 + max(int(m.group(3)) for m in matches)
    directions = 2 if "weight_ih_l0_reverse" in shapes else 1
    bias = "bias_ih_l0" in shapes
    if shapes != _expected(layers, directions, gates, hidden, ih[1], proj, bias):
        return None
    args = {
        "input_size": ih[1],
        "hidden_size": hidden,
        "num_layers": layers,
        "bias": bias,
        "bidirectional": directions == 2,
    }
    if type_name == "LSTM":
        args["proj_size"] = proj
    hidden_names = ["batch_first"]
    if layers > 1:
        hidden_names.append("dropout")  # between layers only: torch warns for one layer
    if type_name == "RNN":
        hidden_names.append("rnn_nonlinearity")
    evidence = (
        f"weight_ih_l0 {fmt(ih)} is {gates} × hidden {hidden} ({type_name}), "
        f"{layers} layer(s){', bidirectional' if directions == 2 else ''}"
        f"{f', projection {proj}' if proj else ''} → {call(type_name, args)}"
    )
    return Detection(type_name, args, evidence, hidden=tuple(hidden_names), composite=True)


def _retune(m: Any, values: Mapping[str, Any]) -> None:
    if "batch_first" in values:
        m.batch_first = values["batch_first"]


_MEANINGS = {
    "LSTM": "Reads a sequence step by step, keeping a memory it learns to update and forget.",
    "GRU": "Reads a sequence step by step, keeping a memory it learns to update (a lighter LSTM).",
    "RNN": "Reads a sequence step by step, carrying a running summary from one step to the next.",
}

FAMILY = Family(
    "Recurrent",
    detect_rnn,
    tuple(
        LayerType(
            name,
            _MEANINGS[name],
            arguments={"rnn_nonlinearity": "nonlinearity"} if name == "RNN" else None,
            retunes=frozenset({"batch_first"}),
            retune=_retune,
        )
        for name in ("LSTM", "GRU", "RNN")
    ),
    composite=True,
)
