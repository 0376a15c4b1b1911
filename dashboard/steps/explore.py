"""Step 1: what is in the file — every tensor, the layers they form, where the parameters are."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, state, ui
from dashboard import format as fmt

TABLE_KEY = "explore_table"
FILTER_KEY = "explore_filter"
HISTOGRAM_BINS = 60
FORMAT_WORDS = {
    "torch-zip": "PyTorch file (torch.save)",
    "torch-legacy": "older PyTorch file (before zip)",
    "safetensors": "safetensors file",
    "sharded": "a model split over several files",
    "memory": "in memory",
}


def provenance(opened: state.Opened) -> None:
    """What was unwrapped, stripped or found beside the weights."""
    ckpt = opened.checkpoint
    facts = [f"Format: **{FORMAT_WORDS.get(ckpt.format, ckpt.format)}**."]
    if ckpt.wrapper_key:
        facts.append(
            f"The weights were nested under the entry **`{ckpt.wrapper_key}`**; it was unwrapped."
        )
    if ckpt.stripped_prefix:
        facts.append(
            f"Every key started with **`{ckpt.stripped_prefix}`**; that prefix was removed."
        )
    st.markdown(" ".join(facts))
    if ckpt.extras:
        st.markdown("Also in the file (not weights, kept aside):")
        st.dataframe(
            pd.DataFrame({"entry": list(ckpt.extras), "what it holds": list(ckpt.extras.values())}),
            hide_index=True,
        )
    if ckpt.hyper_parameters:
        st.markdown("Settings stored in the file (they win over guesses):")
        st.json(dict(ckpt.hyper_parameters), expanded=False)
    if ckpt.metadata:
        st.markdown("Metadata stored in the file:")
        st.json(dict(ckpt.metadata), expanded=False)
    for warning in ckpt.warnings:
        st.warning(warning)


def value_warnings(opened: state.Opened) -> None:
    """NaN or infinite weights load, but a person must see them before training on them."""
    total = sum(t.nbytes for t in opened.checkpoint.tensors)
    scan_key = f"explore_scan:{opened.source.key}"
    scanned_key = f"explore_scanned:{opened.source.key}"
    if st.session_state.get(scan_key):  # the button is True for one rerun only: remember it
        st.session_state[scanned_key] = True
    if total > state.VALUE_SCAN_BYTES and not st.session_state.get(scanned_key):
        st.button(
            f"Check all {fmt.size(total)} of values for NaN and infinity",
            key=scan_key,
            help="Reads every value once. Small files are checked when they open.",
        )
        return
    bad = [s for s in state.value_stats(opened) if s.nan_count or s.inf_count]
    if bad:
        listed = ", ".join(
            f"`{s.name}` ({s.nan_count:,} NaN, {s.inf_count:,} infinite)" for s in bad[:5]
        )
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        st.warning(
            f"{len(bad)} tensors hold values that are not numbers or are infinite: {listed}{more}. "
            "The model will give NaN outputs wherever they are used; retrain those layers or "
            "use another checkpoint.",
            icon=":material/warning:",
        )


def tensor_table(opened: state.Opened) -> str | None:
    """The key/shape table; returns the name of the tensor the person clicked, if any."""
    rows = opened.inspection.rows
    query = st.text_input("Filter by name", key=FILTER_KEY, placeholder="e.g. decoder or weight")
    shown = [r for r in rows if query.lower() in r.name.lower()] if query else list(rows)
    frame = pd.DataFrame(
        {
            "name": [r.name for r in shown],
            "shape": [fmt.shape(r.shape) for r in shown],
            "dtype": [r.dtype for r in shown],
            "numbers": [r.numel for r in shown],
            "size": [r.nbytes for r in shown],
            "kind": [r.role for r in shown],
            "layer": [r.module or "—" for r in shown],
            "layer type": [r.module_type for r in shown],
        }
    )
    event = st.dataframe(
        frame,
        key=TABLE_KEY,
        on_select="rerun",
        # A click on any cell picks its row (the checkbox at the left does too).
        selection_mode=["single-row", "single-cell"],
        hide_index=True,
        width="stretch",
        column_config={
            "numbers": st.column_config.NumberColumn(format="compact", help="Number of values"),
            "size": st.column_config.NumberColumn(format="bytes", help="Bytes on disk"),
            "kind": st.column_config.TextColumn(
                help="A parameter is learned by training; a buffer is a fixed table "
                "(such as positional encodings or running statistics)."
            ),
        },
    )
    st.caption(
        f"{len(shown)} of {len(rows)} tensors · {fmt.count(opened.inspection.parameter_count)} "
        "learned parameters. Click a row to see its values; click a column title to sort."
    )
    selected = clicked_row(event)
    return shown[selected].name if selected is not None and selected < len(shown) else None


def clicked_row(event) -> int | None:
    """The row picked by its checkbox or by a click on one of its cells."""
    if event is None:
        return None
    selection = event.selection
    rows = list(selection.get("rows", []))
    if rows:
        return rows[0]
    cells = list(selection.get("cells", []))
    return cells[0][0] if cells else None


def tensor_details(opened: state.Opened, name: str) -> None:
    """Statistics and a histogram of one tensor, read from the file only now."""
    stats = opened.checkpoint.stats(name)
    st.subheader(f"Values of `{name}`")
    cols = st.columns(6)
    for col, (label, value) in zip(
        cols,
        (
            ("mean", stats.mean),
            ("spread (std)", stats.std),
            ("smallest", stats.min),
            ("largest", stats.max),
        ),
        strict=False,
    ):
        col.metric(label, fmt.loss(value))
    cols[4].metric("NaN (not a number)", stats.nan_count)
    cols[5].metric("Infinite", stats.inf_count)
    if stats.nan_count or stats.inf_count:
        st.warning("This tensor holds values that are not numbers; training on it may fail.")
    counts, edges = opened.checkpoint.histogram(name, HISTOGRAM_BINS)
    if int(counts.sum()):
        fig = charts.value_histogram(counts.tolist(), edges.tolist(), name)
        st.plotly_chart(fig, width="stretch")


def layer_tree(opened: state.Opened) -> None:
    """The inferred layers: one expander per top-level module, nested rows indented."""
    spec, inspection = opened.spec, opened.inspection
    for top in spec.root.children:
        params = inspection.module_parameter_count(top)
        with st.expander(f"**{top.name}** · {top.type} · {fmt.count(params)} parameters"):
            rows = []
            for m in top.walk():
                depth = m.path.count(".") - top.path.count(".")
                rows.append(
                    {
                        "layer": "    " * depth + (m.name or m.path),
                        "type": m.type
                        + (f" (or {', '.join(m.alternatives)})" if m.alternatives else ""),
                        "settings": ", ".join(f"{k}={v}" for k, v in m.args.items()),
                        "parameters": inspection.module_parameter_count(m),
                    }
                )
            st.dataframe(
                pd.DataFrame(rows),
                hide_index=True,
                width="stretch",
                column_config={"parameters": st.column_config.NumberColumn(format="compact")},
            )
            for m in top.walk():
                if m.note:
                    st.caption(f"`{m.path}`: {m.note}")


def icicle(opened: state.Opened) -> None:
    own = {r.name: r.numel for r in opened.inspection.rows if r.role == "parameter"}
    modules = [
        charts.ModuleWeight(m.path, m.type, sum(own.get(k, 0) for k in m.keys))
        for m in opened.spec.modules()
    ]
    st.plotly_chart(charts.parameter_icicle(modules), width="stretch")


def unexplained(opened: state.Opened) -> None:
    keys = opened.spec.unexplained_keys
    used = ui.roles_by_path(opened.spec)  # a kept tensor the forward reads: a position table
    if keys:
        st.warning(
            f"{len(keys)} {'tensor does' if len(keys) == 1 else 'tensors do'} not match any "
            "layer we know; kept as is, rebuilt under their own names and shapes and loaded "
            "with their values: "
            + ", ".join(
                f"`{k}`" + (f" (the forward reads it as its {used[k]})" if k in used else "")
                for k in keys
            )
        )
    else:
        st.success("Every tensor in the file is explained by a recognised layer.")
    for note in opened.spec.notes:
        st.info(note)


def render() -> None:
    ui.header(
        1,
        "A checkpoint is a list of named tables of numbers (tensors). Here is every one of "
        "them, and the layers of the network we recognised from their names and shapes.",
    )
    opened = state.studio().opened
    if opened is None:
        return
    provenance(opened)
    value_warnings(opened)
    unexplained(opened)
    st.subheader("Tensors")
    selected = tensor_table(opened)
    if selected:
        with ui.reported(f"reading {selected}"):
            tensor_details(opened, selected)
    st.subheader("Layers we recognised")
    # The data flow as the session's settings have it (the wiring can be one of them).
    spec = state.studio().spec or opened.spec
    if spec.wiring is not None:
        st.markdown(f"How data flows: {spec.wiring.description}")
    layer_tree(opened)
    icicle(opened)


render()
