"""LSTM / GRU / RNN: `weight_ih_l0` (gates * hidden, input) and friends.

The gate multiple of weight_ih_l0's first dimension tells the type (4 LSTM, 3 GRU,
1 RNN); `_reverse` keys mean bidirectional; `weight_hr_l0` means an LSTM projection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from recovery_core.infer.detection import Detection, Group, call, fmt
from recovery_core.infer.family import Args, Family, Fixes, LayerType, Setting

RNN_KEY = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
TYPE_BY_GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}
NONLINEARITY = Setting(
    "rnn_nonlinearity",
    "The bend a plain RNN applies to its running summary at each step: tanh keeps it "
    "between -1 and 1, relu only cuts off negative values.",
    ("tanh", "relu"),
    "tanh",
    metadata_names=("rnn_nonlinearity", "nonlinearity"),
    reads="word",
    label="RNN activation",
)


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


def _determines(fixes: Fixes, args: Args) -> None:
    where = fixes.path or "the RNN"
    fixes.add("input_size", args["input_size"], "weight_ih_l0")
    projected = bool(args.get("proj_size"))
    fixes.add("hidden_size", args["hidden_size"], "weight_hr_l0" if projected else "weight_hh_l0")
    last = args["num_layers"] - 1
    fixes.add(
        "num_layers",
        args["num_layers"],
        f"weight_ih_l{last}",
        f"{where} has weight_ih_l0 … weight_ih_l{last}"
        if last
        else f"{where} has only weight_ih_l0",
    )
    bidirectional = args["bidirectional"]
    fixes.add(
        "bidirectional",
        bidirectional,
        "weight_ih_l0_reverse" if bidirectional else "weight_ih_l0",
        f"{where} {'has' if bidirectional else 'has no'} *_reverse weights",
    )
    if projected:
        fixes.add("proj_size", args["proj_size"], "weight_hr_l0")


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
            hidden=("batch_first", "dropout") + (("rnn_nonlinearity",) if name == "RNN" else ()),
            determines=_determines,
            retunes=frozenset({"batch_first"}),
            retune=_retune,
            roles=frozenset({"rnn"}),  # a sequence forward's core
        )
        for name in ("LSTM", "GRU", "RNN")
    ),
    composite=True,
    settings=(NONLINEARITY,),
)
