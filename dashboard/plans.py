"""Save and load a recovery plan: every choice of this session in one JSON file, which
`recovery recover --plan plan.json` (or another session) replays exactly."""

from __future__ import annotations

import functools
from dataclasses import replace

import streamlit as st

import recovery_core as rc
from dashboard import state, ui

UPLOAD_KEY = "plan_upload"


@functools.cache
def _sha_of_file(path: str, key: str) -> str:
    """A file's SHA-256, once per version of it (the key changes with size and mtime)."""
    return rc.plan.file_sha256(path)


def checkpoint_sha(opened: state.Opened) -> str:
    source = opened.source
    if source.kind == "upload":  # its key is the SHA-256 of the bytes that were sent
        return source.key.split(":", 1)[1]
    assert isinstance(source.payload, str), "demo and path sources keep their path"
    return _sha_of_file(source.payload, source.key)


def current_plan(studio: state.Studio) -> rc.plan.RecoveryPlan:
    assert studio.opened is not None and studio.spec is not None
    mapping = studio.mapping
    data = (
        None
        if mapping is None
        else rc.plan.DataSettings(
            mapping.inputs,
            mapping.target,
            mapping.loss,
            name=studio.dataset.source_name if studio.dataset is not None else None,
        )
    )
    plan = rc.plan.make_plan(
        studio.spec,
        checkpoint_sha(studio.opened),
        sorted(studio.trainable or ()),
        studio.training,
        data,
        checkpoint_name=studio.opened.source.label,
    )
    # The states as this session sees them (a setting the data could not tell apart
    # counts as checked), so a replay shows the same.
    return replace(plan, states=studio.states())


def apply_plan(studio: state.Studio, plan: rc.plan.RecoveryPlan) -> str:
    """Put a plan's choices into this session; returns what was done, in words."""
    assert studio.opened is not None and studio.recovery is not None
    plan.check_checkpoint(checkpoint_sha(studio.opened))
    studio.stop_all()
    studio.recovery.use_spec(plan.apply(studio.opened.spec))
    studio.trainable = set(plan.trainable)
    studio.freeze_version += 1
    studio.training = plan.training
    studio.values_version += 1  # the training boxes and step 3's show the plan's values
    studio.accept_unverified = False
    done = "Settings, layers to train and training settings loaded"
    if plan.data is not None and studio.dataset is not None:
        studio.recovery.map(plan.data.inputs, plan.data.target, plan.data.loss)
        done += f"; data mapped as {', '.join(plan.data.inputs)} → {plan.data.target}"
    elif plan.data is not None:
        done += f"; open the data it was made with ({plan.data.name or 'its dataset'}) in step 3"
    return done + "."


def _on_upload() -> None:
    uploaded = st.session_state.get(UPLOAD_KEY)
    studio = state.studio()
    if uploaded is None:
        studio.plan_message = None
        return
    studio.handled_uploads.add(uploaded.file_id)
    try:
        message = apply_plan(studio, rc.plan.RecoveryPlan.from_json(uploaded.getvalue()))
        studio.plan_message = ("ok", message)
    except Exception as exc:  # noqa: BLE001 - shown as a sentence, the session goes on
        studio.plan_message = (
            "error",
            ui.problem(exc, "loading the plan", hint="Choose a plan saved by this program."),
        )


def sidebar(studio: state.Studio) -> None:
    if studio.opened is None or studio.spec is None:
        return
    with st.expander("Save / load recovery plan"):
        st.caption(
            "One JSON file with every choice: the settings, how data flows, what trains, "
            "the training settings and the data mapping. `recovery recover --plan` replays it."
        )
        try:
            text = current_plan(studio).to_json()
        except Exception as exc:  # noqa: BLE001 - the reason replaces the button
            ui.show(ui.problem(exc, "writing the plan"))
        else:
            st.download_button(
                "Save recovery plan",
                text,
                file_name="recovery_plan.json",
                mime="application/json",
                key="plan_save",
                width="stretch",
            )
        st.file_uploader(
            "Load a recovery plan", type=["json"], key=UPLOAD_KEY, on_change=_on_upload
        )
        if ui.missed_upload(UPLOAD_KEY, studio.handled_uploads):
            _on_upload()
            st.rerun()
        kind, payload = studio.plan_message or (None, None)
        if kind == "ok":
            st.success(payload)
        elif kind == "error":
            ui.show(payload)
