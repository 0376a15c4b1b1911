"""Small pieces every step uses: the step header and errors as one sentence."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

import recovery_core as rc

STEPS = (
    "Explore the file",
    "Recover the model",
    "Data and baseline",
    "Freeze and train",
    "Compare runs",
    "Export",
)

log = logging.getLogger("dashboard")

# Marks drawn with Streamlit's bundled icon font, so they show on machines without emoji fonts.
PASSED = ":green[:material/check_circle:]"
FAILED = ":red[:material/cancel:]"
OPTIONAL = ":orange[:material/warning:]"
NOTE = ":blue[:material/info:]"
ERROR_ICON = ":material/error:"


def header(number: int, intro: str) -> None:
    """Where the person is (step n of 6) and, in plain words, what this step does."""
    st.caption(f"Step {number} of {len(STEPS)}")
    st.title(STEPS[number - 1])
    st.markdown(intro)


def sentence(exc: BaseException, doing: str) -> str:
    """One sentence for a person. Our own errors already are one; anything else is a bug
    we describe without a traceback (the traceback goes to the server log)."""
    if isinstance(exc, rc.RecoveryError):
        return str(exc)
    log.exception("unexpected error while %s", doing)
    return (
        f"Something unexpected went wrong while {doing} ({type(exc).__name__}). "
        "Try other settings or another file; the details are in the server log."
    )


@contextmanager
def reported(doing: str) -> Iterator[None]:
    """Run a step's action; a failure becomes an `st.error` sentence and the page goes on."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - shown to the person, logged for us
        st.error(sentence(exc, doing), icon=ERROR_ICON)
