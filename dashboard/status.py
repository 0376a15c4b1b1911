"""The hidden settings' state, the same on every page: found on your data, chosen by you,
or unverified default; with the background scoring's progress and Stop, and the explicit
choice to go on with settings nobody checked."""

from __future__ import annotations

from collections import Counter

import streamlit as st

import recovery_core as rc
from dashboard import datasets, scoring, state, ui

WORDS = rc.plan.STATE_WORDS
# Every file box of the app: a file arriving while this box refreshes itself may be seen
# only here (Streamlit runs the fragment, not the page the box is on).
UPLOAD_KEYS = ("source_upload", "data_upload", "plan_upload")
REFRESH_SECONDS = 0.5


def _accept() -> None:
    studio = state.studio()
    studio.accept_unverified = True
    if studio.scoring is not None:
        studio.scoring.stop()


def _score_now() -> None:
    studio = state.studio()
    studio.accept_unverified = False
    if studio.spec is not None and studio.mapping is not None:
        scoring.start(studio, tuple(rc.searchable_names(studio.spec)), automatic=False)


def _stop() -> None:
    job = state.studio().scoring
    if job is not None:
        job.stop()


def summary(studio: state.Studio) -> str:
    counts = Counter(studio.states().values())
    return " · ".join(
        f"{counts[s]} {WORDS[s]}"
        for s in (rc.plan.FOUND, rc.plan.CHOSEN, rc.plan.UNVERIFIED)
        if counts[s]
    )


def banner(studio: state.Studio) -> None:
    """Top of every page. Refreshes itself while scoring runs and redraws the page when
    the scoring's result changes the settings."""
    if studio.spec is None or not studio.spec.free:
        return

    @st.fragment(run_every=REFRESH_SECONDS if studio.scoring_running else None)
    def panel() -> None:
        if scoring.collect(studio):
            st.rerun(scope="app")  # the job ended: redraw the page with its outcome
        if any(ui.missed_upload(key, studio.handled_uploads) for key in UPLOAD_KEYS):
            st.rerun(scope="app")  # a file arrived during this refresh: open it now
        job = studio.scoring
        with st.container(border=True, key="settings_status"):
            st.markdown(f"**Hidden settings:** {summary(studio)}")
            if job is not None and studio.scoring_running:
                what = "Scoring the hidden settings on your data"
                if job.automatic:
                    what += " (started by itself: they were unverified defaults)"
                left, right = st.columns([5, 1], vertical_alignment="center")
                left.progress(job.fraction, text=f"{what}: {job.counted()}")
                right.button("Stop scoring", key="status_stop_scoring", on_click=_stop)
                return
            ui.show(studio.scoring_error)
            unchecked = studio.unchecked()
            if not unchecked:
                return
            names = ", ".join(label(n) for n in unchecked)
            if not datasets.runnable(studio):  # nothing can check them, nothing waits on them
                st.info(f"Unverified defaults: {names}. {ui.NO_FORWARD}")
                return
            if studio.accept_unverified:
                st.warning(
                    f"You chose to use unverified settings ({names}). Results on them may come "
                    "from a wrongly rebuilt model; the export report says so.",
                    icon=":material/warning:",
                )
                if st.button("Score them on my data", key="status_score"):
                    _score_now()
                    st.rerun(scope="app")  # the whole page follows (a fragment redraws only itself)
                return
            st.warning(
                f"Unverified defaults: {names}. A model built on unchecked settings can be "
                "wrong while everything looks fine, so baseline, training and export wait "
                "until they are scored on your data, or until you choose to use them as they are.",
                icon=":material/warning:",
            )
            cols = st.columns([1, 1, 2])
            ready = datasets.ready(studio)
            if cols[0].button(
                "Score them on my data", key="status_score", disabled=not ready, type="primary"
            ):
                _score_now()
                st.rerun(scope="app")  # the whole page follows (a fragment redraws only itself)
            if cols[1].button("Use unverified settings", key="status_accept"):
                _accept()
                st.rerun(scope="app")
            if not ready:
                with cols[2]:
                    ui.disabled_reason("Map data in step 3 first: scoring needs examples.")

    panel()


# Values the shapes fix, for people; hidden values carry their own label, declared with
# them by their family (rc.families.setting_label).
ARCHITECTURE_LABELS = {
    "d_model": "Model width",
    "dim_feedforward": "Feed-forward width",
    "num_encoder_layers": "Encoder layers",
    "num_decoder_layers": "Decoder layers",
    "num_layers": "Layers",
    "hidden_size": "Hidden size",
    "bidirectional": "Reads both directions",
    "bias": "Bias terms",
}


def label(name: str, free: bool = True) -> str:
    """A setting's name for people, with its code name after it: "Attention heads (nhead)".
    A free value no family declares is a layer without weights, named by its path: which
    kind of layer it is (ReLU, Dropout, ...) is the choice."""
    plain = rc.families.setting_label(name) or ARCHITECTURE_LABELS.get(name)
    if plain is None and free:
        plain = f"Kind of layer {name}"
    return f"{plain} ({name})" if plain else name
