"""Plotly figures built from plain data (no Streamlit, no torch): testable on their own.

Every function takes lists, numbers and small records and returns a `go.Figure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from dashboard import format as fmt

ROOT_LABEL = "model"
# One colour per layer type, so "all the attention layers" can be seen at a glance.
TYPE_COLOURS = (
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#e45756",
    "#72b7b2",
    "#eeca3b",
    "#b279a2",
    "#ff9da6",
    "#9d755d",
    "#bab0ac",
)
MARKERS_UP_TO = 120  # evaluation points shown as dots while they are few enough to see
_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "template": "plotly_white"}


@dataclass(frozen=True)
class ModuleWeight:
    """One module of the tree and the parameters it owns directly (not its children's)."""

    path: str  # "" for the root, dotted otherwise
    type: str
    own_params: int


@dataclass(frozen=True)
class LossSeries:
    """One training run's losses, step by step."""

    name: str
    steps: Sequence[int]
    losses: Sequence[float]


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def parameter_icicle(modules: Sequence[ModuleWeight]) -> go.Figure:
    """Parameters by module as an icicle: each box as wide as the parameters under it."""
    paths = {m.path for m in modules}
    rows = [m for m in modules if m.path]
    palette: dict[str, str] = {}
    ids, labels, parents, values, types, colours = (
        [ROOT_LABEL],
        [ROOT_LABEL],
        [""],
        [0],
        [""],
        ["lightgrey"],
    )
    for m in modules:
        if not m.path:
            values[0] = m.own_params  # parameters the root holds directly
    for m in rows:
        # Walk up to the nearest listed ancestor so a sparse list still forms a tree.
        parent = _parent(m.path)
        while parent and parent not in paths:
            parent = _parent(parent)
        ids.append(m.path)
        labels.append(m.path.rsplit(".", 1)[-1])
        parents.append(parent or ROOT_LABEL)
        values.append(m.own_params)
        types.append(m.type)
        colours.append(palette.setdefault(m.type, TYPE_COLOURS[len(palette) % len(TYPE_COLOURS)]))
    fig = go.Figure(
        go.Icicle(
            ids=ids,
            labels=labels,
            parents=parents,
            values=values,
            branchvalues="remainder",
            text=types,  # the layer type, under its name
            textinfo="label+text",
            hovertemplate="%{id}<br>%{text}<br>%{value:,} parameters<extra></extra>",
            marker={"colors": colours},
            maxdepth=5,  # deeper levels appear when a box is clicked
            tiling={"orientation": "v"},
        )
    )
    fig.update_layout(
        title="Where the parameters are: each box is as wide as its share; colour = layer type "
        "(click a box to zoom in)",
        height=420,
        **_LAYOUT,
    )
    return fig


def value_histogram(counts: Sequence[int], edges: Sequence[float], name: str) -> go.Figure:
    """A tensor's values as bars: `edges` has one more entry than `counts`."""
    if len(edges) != len(counts) + 1:
        raise ValueError(f"need {len(counts) + 1} bin edges for {len(counts)} counts")
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fig = go.Figure(go.Bar(x=centers, y=list(counts), width=widths, marker_color="#4c78a8"))
    fig.update_layout(
        title=f"Values in {name}",
        xaxis_title="value",
        yaxis_title="how many",
        bargap=0,
        **_LAYOUT,
    )
    return fig


def candidate_ranking(
    labels: Sequence[str], losses: Sequence[float | None], *, top: int = 12
) -> go.Figure:
    """Candidate settings ranked by loss, best at the top; failed candidates are left out."""
    scored = [(lbl, v) for lbl, v in zip(labels, losses, strict=True) if v is not None]
    scored = sorted(scored, key=lambda item: item[1])[:top]
    names = [lbl for lbl, _ in scored]
    values = [v for _, v in scored]
    colors = ["#2ca02c" if i == 0 else "#9db4c0" for i in range(len(values))]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=colors,
            text=[fmt.loss(v) for v in values],
            textposition="auto",
            hovertemplate="%{y}<br>loss %{x:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Loss of each candidate on your data (lower is better)",
        xaxis_title="loss",
        yaxis={"autorange": "reversed"},  # best first, at the top
        height=max(220, 40 + 28 * len(values)),
        **_LAYOUT,
    )
    return fig


def loss_curves(
    series: Sequence[LossSeries],
    baseline: float | None = None,
    *,
    title: str = "Training loss",
    baselines: Sequence[tuple[str, float]] = (),
) -> go.Figure:
    """One line per run; the baseline (the original weights' loss) as a dashed line. Runs
    measured on different data each have their own: `baselines` as (label, value) pairs."""
    fig = go.Figure()
    for s in series:
        fig.add_trace(go.Scatter(x=list(s.steps), y=list(s.losses), mode="lines", name=s.name))
    lines = list(baselines) or ([("baseline", baseline)] if baseline is not None else [])
    for i, (label, value) in enumerate(lines):
        fig.add_hline(
            y=value,
            line_dash="dash" if i == 0 else "dot",
            line_color="#d62728",
            annotation_text=f"{label} {fmt.loss(value)}",
            annotation_position="top right" if i % 2 == 0 else "bottom right",
        )
    fig.update_layout(
        title=title,
        xaxis_title="training step",
        yaxis_title="loss",
        legend={"orientation": "h", "y": -0.25},
        **_LAYOUT,
    )
    return fig


def training_chart(
    evaluation: LossSeries,
    training: LossSeries,
    baseline: float | None = None,
    *,
    title: str = "Loss while training",
) -> go.Figure:
    """A run as it trains: the evaluation loss (the measure of the baseline and the verdict)
    as the main line, each batch's training loss faint behind it."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=list(training.steps),
            y=list(training.losses),
            mode="lines",
            name=training.name,
            line={"color": "#9db4c0", "width": 1},
            opacity=0.45,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=list(evaluation.steps),
            y=list(evaluation.losses),
            mode="lines+markers" if len(evaluation.steps) <= MARKERS_UP_TO else "lines",
            name=evaluation.name,
            # Every point drawn (no simplification of a flat stretch): the line visibly grows.
            line={"color": "#1f77b4", "width": 3, "simplify": False},
            marker={"size": 5},
        )
    )
    if baseline is not None:
        fig.add_hline(
            y=baseline,
            line_dash="dash",
            line_color="#d62728",
            annotation_text=f"baseline {fmt.loss(baseline)}",
            annotation_position="top right",
        )
    fig.update_layout(
        title=title,
        xaxis_title="training step",
        yaxis_title="loss",
        height=360,
        legend={"orientation": "h", "y": -0.3},
        **_LAYOUT,
    )
    return fig
