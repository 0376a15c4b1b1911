"""Step 2: every setting of the network, where it came from, and the free ones to choose."""

from __future__ import annotations

import time
from collections import Counter

import pandas as pd
import streamlit as st

import recovery_core as rc
from dashboard import charts, datasets, state, ui
from dashboard import format as fmt

SEARCH_BUDGET_SECONDS = 60.0
SEARCH_SAMPLES = 128  # enough examples to rank settings; more only makes the wait longer
# Off by default: it moves the loss only in the last digits, and scoring it triples the wait.
RARELY_MATTERS = ("layer_norm_eps",)

# What each free setting means, in a sentence a person who does not program can follow.
MEANINGS = {
    "nhead": "How many attention heads each attention layer splits its work into.",
    "batch_first": "Whether examples come first in the data's layout (yes) or the positions do (no).",
    "norm_first": "Whether each block normalises its input before (yes) or after (no) its main step.",
    "activation": "The bend applied inside each feed-forward layer.",
    "dropout": "How much is randomly switched off while training; no effect when evaluating.",
    "layer_norm_eps": "A tiny number that keeps normalisation from dividing by zero.",
    "scale_embedding": "Whether token vectors are multiplied by the square root of their size.",
    "causal_mask": "Whether the model may only look at earlier positions when writing output.",
}

SOURCE_WORDS = {
    "shape": "read from a weight's shape",
    "checkpoint metadata": "stored in the file",
    "default": "usual default (not in the weights)",
    "search": "chosen by scoring on your data",
    "user": "chosen by you",
}


def determined_table(spec: rc.ArchSpec) -> None:
    rows = [
        {
            "setting": hp.name,
            "value": fmt.value(hp.value),
            "where it came from": SOURCE_WORDS.get(hp.source, hp.source),
            "evidence": hp.evidence,
        }
        for hp in spec.hyperparameters
        if hp.determined
    ]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _choose(name: str, key: str) -> None:
    studio = state.studio()
    assert studio.spec is not None
    with ui.reported(f"setting {name}"):
        studio.set_spec(studio.spec.with_values({name: st.session_state[key]}))


def free_choices(studio: state.Studio) -> None:
    """One widget per free setting, limited to the values that fit the weights."""
    spec = studio.spec
    assert spec is not None
    free = [hp for hp in spec.free if hp.candidates]
    if not free:
        st.success("The weights determine every setting: nothing to choose.")
        return
    counts = Counter(SOURCE_WORDS.get(hp.source, hp.source) for hp in free)
    st.caption("Now: " + " · ".join(f"{n} {words}" for words, n in counts.items()))
    cols = st.columns(3)
    for i, hp in enumerate(free):
        key = f"recover_hp_{hp.name}_{studio.spec_version}"
        options = list(hp.candidates)
        cols[i % 3].selectbox(
            hp.name,
            options,
            index=options.index(hp.value) if hp.value in options else 0,
            format_func=fmt.value,
            key=key,
            on_change=_choose,
            args=(hp.name, key),
            help=f"{MEANINGS.get(hp.name, hp.evidence)} Now: {SOURCE_WORDS.get(hp.source, hp.source)}.",
        )


def _label(values: dict, names: list[str]) -> str:
    return ", ".join(f"{n}={fmt.value(values[n])}" for n in names if n in values) or "(defaults)"


def scoring(studio: state.Studio) -> None:
    st.subheader("Let your data choose")
    st.markdown(
        "Each combination of the free settings is tried with the original weights; the one "
        "whose loss on your data is lowest is most likely how the model was built."
    )
    if not datasets.ready(studio):
        st.info("Open a dataset in step 3 first; then come back to score the choices.")
        return
    assert studio.spec is not None
    searchable = list(rc.searchable_names(studio.spec))
    names = st.multiselect(
        "Settings to score",
        searchable,
        default=[n for n in searchable if n not in RARELY_MATTERS],
        key="recover_search_names",
        help="Only these are tried; the other settings keep the values shown above.",
    )
    if st.button(
        "Score the choices on data", type="primary", key="recover_score", disabled=not names
    ):
        spec = studio.spec
        assert studio.opened is not None
        fixed = {
            hp.name: hp.value for hp in spec.free if hp.source == "user" and hp.name not in names
        }
        bar = st.progress(0.0, text="Scoring…")
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            bar.progress(
                min(done / max(total, 1), 1.0), text=f"Scored {done} of {total} combinations"
            )

        with ui.reported("scoring the choices"):
            inputs, target = studio.tensors()
            result = rc.score_candidates(
                spec,
                studio.opened.checkpoint.state_dict(),
                inputs,
                target,
                rc.loss_function(studio.mapping),
                fixed=fixed,
                names=names,
                budget_seconds=SEARCH_BUDGET_SECONDS,
                max_samples=SEARCH_SAMPLES,
                progress=progress,
            )
            studio.search = result
            studio.set_spec(result.apply(spec))
            st.toast(f"Scored in {fmt.seconds(time.monotonic() - started)}")
            st.rerun()  # redraw the choices above with the values the data picked
        bar.empty()
    result = studio.search
    if result is None:
        return
    # Only losses measured on the same samples compare: the finalists, scored on them all
    # (the others were screened on fewer and would crowd the chart out of order).
    best = result.best
    comparable = [
        c
        for c in result.ranking
        if best is not None and c.error is None and c.samples == best.samples
    ]
    fig = charts.candidate_ranking(
        [_label(c.values, list(result.names)) for c in comparable],
        [c.loss for c in comparable],
    )
    st.plotly_chart(fig, width="stretch")
    if result.separable:
        st.success(result.message)
    else:
        st.warning(result.message)


def rebuild(studio: state.Studio) -> None:
    st.subheader("Does it rebuild?")
    assert studio.opened is not None and studio.spec is not None
    status = state.rebuild_status(studio.opened, studio.spec)
    left, right = st.columns(2)
    with left:
        if status.strict_load_ok:
            st.success(":material/check: Every weight fits the rebuilt network exactly.")
        else:
            st.error(":material/close: The weights do not fit the rebuilt network.")
            if status.missing_keys:
                st.markdown("Missing: " + ", ".join(f"`{k}`" for k in status.missing_keys[:20]))
            if status.unexpected_keys:
                st.markdown(
                    "Unexpected: " + ", ".join(f"`{k}`" for k in status.unexpected_keys[:20])
                )
    with right:
        if status.forward_ok is None:
            st.info(
                "No forward pass was recognised, so the model cannot be run on data here; "
                "its weights and code can still be downloaded."
            )
        elif status.forward_ok:
            shape = fmt.shape(status.output_shape) if status.output_shape else ""
            st.success(f":material/check: It runs on an example input; output shape {shape}.")
        else:
            st.error(
                f":material/close: It does not run yet: {status.error or 'no forward was recognised.'}"
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
    datasets.ensure_demo_data(studio)
    st.subheader("Settings read from the file")
    determined_table(studio.spec)
    st.subheader("Settings to choose")
    free_choices(studio)
    scoring(studio)
    with ui.reported("rebuilding the model"):
        rebuild(studio)
    code(studio)


render()
