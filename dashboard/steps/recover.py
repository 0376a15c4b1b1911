"""Step 2: every setting of the network, where it came from, and the free ones to choose."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import recovery_core as rc
from dashboard import charts, datasets, scoring, state, status, ui
from dashboard import format as fmt

# Off by default when scoring by hand: it moves the loss only in the last digits.
RARELY_MATTERS = ("layer_norm_eps",)

SOURCE_WORDS = {
    "shape": "read from a weight's shape",
    "checkpoint metadata": "stored in the file",
}
STATE_MARKS = {
    rc.plan.FOUND: ":green[:material/check_circle:]",
    rc.plan.CHOSEN: ":blue[:material/person:]",
    rc.plan.UNVERIFIED: ":orange[:material/help:]",
}


def determined_table(spec: rc.ArchSpec) -> None:
    rows = [
        {
            "setting": status.label(hp.name, free=False),
            "value": fmt.value(hp.value),
            "where it came from": SOURCE_WORDS.get(hp.source, hp.source),
            "evidence": hp.evidence,
        }
        for hp in spec.hyperparameters
        if hp.determined
    ]
    if rows:  # a heading with nothing under it says nothing
        st.subheader("Settings read from the file")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _choose(name: str, key: str) -> None:
    recovery = state.studio().recovery
    assert recovery is not None
    with ui.reported(f"setting {status.label(name)}"):
        recovery.set_values({name: st.session_state[key]})


def state_words(studio: state.Studio, name: str) -> str:
    st_ = studio.states().get(name, rc.plan.CHOSEN)
    words = rc.plan.STATE_WORDS[st_]
    if st_ == rc.plan.UNVERIFIED and studio.spec is not None:
        if name not in rc.searchable_names(studio.spec):
            words += " (the data cannot check it: it only matters while training)"
    return f"{STATE_MARKS[st_]} {words}"


def free_choices(studio: state.Studio) -> None:
    """One widget per free setting, limited to the values that fit the weights."""
    spec = studio.spec
    assert spec is not None
    free = [hp for hp in spec.free if hp.candidates]
    if not free:
        st.success("The weights determine every setting: nothing to choose.")
        return
    st.subheader("Settings to choose")
    cols = st.columns(3)
    for i, hp in enumerate(free):
        key = f"recover_hp_{hp.name}_{studio.spec_version}"
        options = list(hp.candidates)
        with cols[i % 3]:
            st.selectbox(
                status.label(hp.name),
                options,
                index=options.index(hp.value) if hp.value in options else 0,
                format_func=fmt.value,
                key=key,
                on_change=_choose,
                args=(hp.name, key),
                # What it means, declared with the value by its family (core).
                help=rc.families.setting_meaning(hp.name) or hp.evidence,
                disabled=studio.scoring_running,
            )
            st.caption(state_words(studio, hp.name))


def _values(values: dict, names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"{status.label(n)} {fmt.value(values[n])}" for n in names if n in values)


def _label(values: dict, names: list[str]) -> str:
    return ", ".join(f"{n}={fmt.value(values[n])}" for n in names if n in values) or "(defaults)"


def verdict(result: rc.SearchResult) -> str:
    """The search's outcome in the page's words (yes/no, plain labels)."""
    best = result.best
    if best is None:  # the search's own words: where the data's shapes break, or why
        return result.message or "No combination could be scored on this data."
    text = f"Best: {_values(best.values, result.names)} (loss {fmt.loss(best.loss)})."
    if result.tied_names:
        tied = ", ".join(status.label(n) for n in result.tied_names)
        text += f" The data cannot tell these apart, any value fits: {tied}."
    elif result.relative_margin is not None:
        text += f" The runner-up is {result.relative_margin:.1%} worse."
    if result.refitted_head is not None and result.new_task_losses is not None:
        original, refitted = result.new_task_losses
        head = f"**{result.refitted_head}**" if result.refitted_head else "the model's Linear"
        text += (
            f" Your data is new to this model: the original weights fit it "
            f"{fmt.times(original, refitted)} worse ({fmt.loss(original)}) than with the output "
            f"layer {head} retrained ({fmt.loss(refitted)}), so every combination was scored "
            f"with {head} refitted to your data, as training it will."
        )
    return text


def _score() -> None:
    studio = state.studio()
    names = tuple(st.session_state.get("recover_search_names") or ())
    if names:
        studio.accept_unverified = False
        scoring.start(studio, names, automatic=False)


def search_panel(studio: state.Studio) -> None:
    st.subheader("Let your data choose")
    st.markdown(
        "Each combination of the free settings is tried with the original weights; the one "
        "whose loss on your data is lowest is most likely how the model was built. When your "
        "data is new to the model, its output layer is refitted to the data for each one."
    )
    assert studio.spec is not None
    searchable = list(rc.searchable_names(studio.spec))
    if not searchable:
        return
    names = st.multiselect(
        "Settings to score",
        searchable,
        default=[n for n in searchable if n not in RARELY_MATTERS],
        format_func=status.label,
        key="recover_search_names",
        help="Only these are tried; the other settings keep the values shown above.",
    )
    reason = None
    if not datasets.runnable(studio):
        reason = ui.NO_FORWARD
    elif not datasets.ready(studio):
        reason = "Open a dataset in step 3 first: scoring needs examples."
    elif studio.scoring_running:
        reason = "Scoring is running (progress at the top of the page)."
    elif not names:
        reason = "Choose at least one setting to score."
    cols = st.columns([1, 2], vertical_alignment="center")
    cols[0].button(
        "Score the choices on data",
        type="primary",
        key="recover_score",
        disabled=reason is not None,
        on_click=_score,
    )
    with cols[1]:
        ui.disabled_reason(reason)
    result = studio.search
    if result is None:
        return
    # Only losses measured on the same samples compare: the finalists, scored on them all
    # (the others were screened on fewer and would crowd the chart out of order).
    comparable = rc.session.finalists(result)
    # Name only the settings that differ between the bars: the rest is the same for all.
    differ = [n for n in result.names if len({repr(c.values.get(n)) for c in comparable}) > 1]
    fig = charts.candidate_ranking(
        [_label(c.values, differ) for c in comparable],
        [c.loss for c in comparable],
    )
    st.plotly_chart(fig, width="stretch")
    (st.success if result.separable or result.tied_names else st.warning)(verdict(result))


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def wiring_dot(wiring: rc.Wiring) -> str:
    """The forward as a left-to-right chain of its steps, read from the wiring alone."""
    steps = getattr(wiring, "steps", None)
    parts = (
        list(steps())
        if callable(steps)
        else [p.strip() for p in wiring.description.split("→") if p.strip()]
    )
    lines = [
        "digraph {",
        'rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#eef3fb", '
        'fontname="sans-serif", fontsize=11]; edge [color="#888888"];',
    ]
    inputs = [i.name for i in wiring.inputs]
    for i, name in enumerate(inputs):
        lines.append(f'in{i} [label="{_dot_text(name)}", shape=ellipse, fillcolor="#ffffff"];')
    for i, part in enumerate(parts):
        lines.append(f's{i} [label="{_dot_text(part)}"];')
        if i:
            lines.append(f"s{i - 1} -> s{i};")
    if parts and inputs and not any(name in parts[0] for name in inputs):
        lines += [f"in{i} -> s0;" for i in range(len(inputs))]
    lines.append("}")
    return "\n".join(lines)


def data_flow(studio: state.Studio) -> None:
    """How data flows through the model: the spec's wiring as a diagram, and the other
    forwards that fit the weights, best first."""
    spec = studio.spec
    assert spec is not None
    wiring = spec.wiring
    if wiring is None:
        return
    st.subheader("How data flows")
    alternatives = tuple(getattr(spec, "wirings", ()) or ())
    left, right = st.columns([3, 2]) if len(alternatives) > 1 else (st.container(), None)
    with left:
        st.graphviz_chart(wiring_dot(wiring), width="stretch")
        st.caption(wiring.description)
    if right is not None:
        with right:
            st.markdown("**Forwards that fit these weights**, best first:")
            current = getattr(wiring, "name", "")
            for rank, alt in enumerate(alternatives, start=1):
                name = getattr(alt, "name", "") or f"forward {rank}"
                mark = " ← in use" if name == current else ""
                reason = getattr(alt, "reason", "")
                st.markdown(f"{rank}. **{name}**{mark}: {alt.description}")
                if reason:
                    st.caption(reason)


def rebuild(studio: state.Studio) -> None:
    st.subheader("Does it rebuild?")
    assert studio.opened is not None and studio.spec is not None
    status_ = state.rebuild_status(studio.opened, studio.spec)
    left, right = st.columns(2)
    with left:
        if status_.strict_load_ok:
            st.success(":material/check: Every weight fits the rebuilt network exactly.")
        else:
            st.error(":material/close: The weights do not fit the rebuilt network.")
            if status_.missing_keys:
                st.markdown("Missing: " + ", ".join(f"`{k}`" for k in status_.missing_keys[:20]))
            if status_.unexpected_keys:
                st.markdown(
                    "Unexpected: " + ", ".join(f"`{k}`" for k in status_.unexpected_keys[:20])
                )
    with right:
        if status_.forward_ok is None and not datasets.runnable(studio):
            st.info(ui.NO_FORWARD)
        elif datasets.ready(studio) and status_.strict_load_ok:
            # The data's own shapes decide: the same examples baseline and training use.
            ok, shape, error = studio.forward_on_data()
            if ok:
                shown = f"; output shape {fmt.shape(shape)}" if shape else ""
                st.success(f":material/check: It runs on two examples of your data{shown}.")
            else:
                ui.show(
                    ui.Problem(
                        ":material/close: It does not run on your data. Try other settings "
                        "above (for example the layout or the number of heads), or check "
                        "which entries feed the model in step 3.",
                        error,
                    )
                )
        elif status_.forward_ok:
            own = fmt.shape(status_.output_shape) if status_.output_shape else ""
            st.success(
                f":material/check: It runs on an example input of its own; output shape "
                f"{own}. Open data in step 3 to check it on your examples."
            )
        else:
            ui.show(
                ui.Problem(
                    ":material/close: It does not run on an example input of its own. Open "
                    "data in step 3 to check it on your examples, or try other settings.",
                    status_.error,
                )
            )


def code(studio: state.Studio) -> None:
    assert studio.spec is not None
    with ui.reported("writing the model code"):
        source = rc.generate_code(studio.spec)
        with st.expander("The model as Python code (standalone, only needs PyTorch)"):
            st.code(source, language="python")
        st.download_button(
            "Download the model code",
            source,
            file_name="recovered_model.py",
            mime="text/x-python",
            key="recover_download_code",
        )


def render() -> None:
    ui.header(
        2,
        "The file holds the numbers, not the settings that produced them. Settings fixed by "
        "a weight's shape are listed with that weight; the others could not be read from "
        "the numbers, so they are choices you (or your data) make.",
    )
    studio = state.studio()
    if studio.spec is None:
        return
    determined_table(studio.spec)
    free_choices(studio)
    search_panel(studio)
    with ui.reported("drawing how data flows"):
        data_flow(studio)
    with ui.reported("rebuilding the model"):
        rebuild(studio)
    code(studio)


render()
