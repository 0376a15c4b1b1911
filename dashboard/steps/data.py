"""Step 3: the examples to train on, which entries go where, and the loss to beat."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

import recovery_core as rc
from dashboard import datasets, state, ui
from dashboard import format as fmt

UPLOAD_KEY = "data_upload"
PATH_KEY = "data_path"
LOSS_WORDS = {"cross_entropy": "cross-entropy", "mse": "mean squared error"}


def _on_upload() -> None:
    uploaded = st.session_state.get(UPLOAD_KEY)
    studio = state.studio()
    if uploaded is not None and uploaded.file_id not in studio.handled_uploads:
        studio.handled_uploads.add(uploaded.file_id)
        datasets.open_data(studio, state.upload_source(uploaded.name, uploaded.getvalue()))


def _on_path() -> None:
    path = (st.session_state.get(PATH_KEY) or "").strip()
    if path and state.server_paths_allowed():
        datasets.open_data(state.studio(), state.path_source(path))


def _on_demo() -> None:
    datasets.open_data(state.studio(), state.demo_data_source())


def choose_source(studio: state.Studio) -> None:
    with st.expander("Use other data", expanded=studio.dataset is None):
        names = ["Upload", "Server path", "Demo data"]
        if not state.server_paths_allowed():
            names.remove("Server path")
        tabs = dict(zip(names, st.tabs(names), strict=True))
        with tabs["Upload"]:
            st.file_uploader(
                "A dict of tensors (.pt), a .safetensors or a .npz file",
                key=UPLOAD_KEY,
                on_change=_on_upload,
                help="Samples along the first dimension; names such as x / y or src / tgt / target.",
            )
            if ui.missed_upload(UPLOAD_KEY, studio.handled_uploads):
                _on_upload()
                st.rerun()
        if "Server path" in tabs:
            with tabs["Server path"]:
                st.text_input("Path of a dataset on this server", key=PATH_KEY)
                st.button("Open this dataset", on_click=_on_path, key="data_open_path")
        with tabs["Demo data"]:
            st.button("Use the demo data", on_click=_on_demo, key="data_open_demo")
    if studio.data_error:
        ui.show(studio.data_error)


def describe(dataset: rc.Dataset) -> None:
    st.markdown(f"**{dataset.source_name}**: {dataset.n_samples:,} examples.")
    described = dataset.describe()
    st.dataframe(
        pd.DataFrame({"entry": list(described), "type and shape": list(described.values())}),
        hide_index=True,
    )
    for warning in dataset.warnings:
        st.warning(warning)


def _set_mapping(input_keys: list[str], target_key: str, loss_key: str) -> None:
    studio = state.studio()
    recovery = studio.recovery
    assert recovery is not None and recovery.dataset is not None
    if target_key != state.widget_key(studio, "data_target"):
        # A box drawn for the data before (its keys are older): a browser can send its
        # value after other data was opened, in a run another run interrupted. It must
        # not map the new data by the old entries' names.
        return
    inputs = [st.session_state[key] for key in input_keys]
    before = recovery.mapping
    try:
        recovery.map(inputs, st.session_state[target_key], st.session_state[loss_key])
        studio.data_error = None
        fed = [rc.session.fed_entries(m) if m else None for m in (before, recovery.mapping)]
        if fed[0] != fed[1]:  # other entries: what they checked is unchecked again
            studio.scored_names.clear()
    except Exception as exc:  # noqa: BLE001 - the previous mapping stays; the sentence says why
        studio.data_error = ui.problem(
            exc, "choosing the data", hint="Choose other entries or another loss."
        )


def mapping(studio: state.Studio) -> None:
    """Which entry feeds which model input, and which is the answer."""
    dataset, current = studio.dataset, studio.mapping
    assert studio.spec is not None and dataset is not None
    names = list(dataset.names)
    wanted = studio.spec.wiring.inputs if studio.spec.wiring else ()
    keys = (
        [state.widget_key(studio, f"data_input_{i}") for i in range(len(wanted))],
        state.widget_key(studio, "data_target"),
        state.widget_key(studio, "data_loss"),
    )
    cols = st.columns(len(wanted) + 2)
    for i, model_input in enumerate(wanted):
        chosen = current.inputs[i] if current and i < len(current.inputs) else names[0]
        cols[i].selectbox(
            f"Model input '{model_input.name}'",
            names,
            index=names.index(chosen) if chosen in names else 0,
            key=keys[0][i],
            on_change=_set_mapping,
            args=keys,
            help=f"The model expects {model_input.dtype} values shaped like {fmt.shape(model_input.shape)}.",
        )
    target = current.target if current else names[-1]
    cols[-2].selectbox(
        "Target (the right answers)",
        names,
        index=names.index(target) if target in names else len(names) - 1,
        key=keys[1],
        on_change=_set_mapping,
        args=keys,
    )
    losses = list(LOSS_WORDS)
    # Without a guess: mean squared error for number targets, cross-entropy for classes.
    loss = current.loss if current else "cross_entropy"
    if current is None and target in names:
        loss = rc.session.default_loss(dataset.tensors[target])
    cols[-1].selectbox(
        "Loss",
        losses,
        index=losses.index(loss) if loss in losses else 0,
        format_func=lambda loss: LOSS_WORDS[loss],
        key=keys[2],
        help="Cross-entropy when the answers are classes or tokens; mean squared error "
        "when they are numbers.",
        on_change=_set_mapping,
        args=keys,
    )
    if current is not None:
        st.caption(f"How this was chosen: {current.reason}.")
    else:  # no guess fitted: the entries shown are only a starting point
        st.button("Use these entries", key="data_use_mapping", on_click=_set_mapping, args=keys)


def _on_held_out(key: str) -> None:
    studio = state.studio()
    percent = int(st.session_state[key])
    studio.training = replace(studio.training, val_fraction=percent / 100)


def held_out(studio: state.Studio) -> None:
    st.number_input(
        "Examples held out for evaluation (%)",
        0,
        50,
        round(studio.training.val_fraction * 100),
        step=5,
        key=(key := state.widget_key(studio, "data_held_out")),
        on_change=_on_held_out,
        args=(key,),
        help="Training never sees these examples; the baseline, the chart's main line and "
        "the verdict are all the loss on them. 0 evaluates on the training examples.",
    )
    if studio.training.val_fraction and not studio.held_out:
        st.caption(
            f"Too few examples to hold some out (fewer than {rc.session.MIN_HELD_OUT_SAMPLES}): "
            "the loss is measured on all of them."
        )


def baseline(studio: state.Studio) -> None:
    st.subheader("Baseline")
    held_out(studio)
    if not studio.settings_ok():
        ui.disabled_reason(
            "The baseline waits for the hidden settings: a model built on unverified "
            "defaults can give a wrong number. Score them or choose to use them (top of the page)."
        )
        return
    with ui.reported(
        "computing the baseline",
        hint="Check which entries are the inputs and the target above, or try other settings in step 2.",
    ):
        value = studio.baseline()
        st.metric("Loss with the original weights", fmt.loss(value))
        where = (
            f"the {studio.held_out:.0%} of the examples held out for evaluation"
            if studio.held_out
            else "all the examples (the ones training uses)"
        )
        st.caption(
            f"Measured on {where}, in evaluation mode: the same measure as the training "
            "chart's main line and the verdict. Lower is better; a good retraining ends below it."
        )


def render() -> None:
    ui.header(
        3,
        "Training needs examples: inputs the model reads and the answers (targets) it "
        "should give. The **baseline** is the loss of the recovered model, with its original "
        "weights, on these examples: the number retraining has to beat.",
    )
    studio = state.studio()
    choose_source(studio)
    if studio.dataset is None:
        st.info("Open a dataset to continue.")
        return
    describe(studio.dataset)
    if datasets.runnable(studio):
        mapping(studio)
        if studio.mapping is not None:
            baseline(studio)
    else:
        st.warning(ui.NO_FORWARD)


render()
