"""Small pieces every step uses: the step header and errors as one sentence."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
ERROR_ICON = ":material/error:"


# What each part of a recognised model does in its forward, in words.
ROLE_WORDS = {
    "head": "output layer",
    "tied_head": "output layer, the same weights",
    "embedding": "token embedding",
    "src_embedding": "input embedding",
    "tgt_embedding": "output embedding",
    "transformer": "the main network",
    "encoder": "reads the input",
    "decoder": "writes the output",
    "rnn": "the recurrent network",
    "final_norm": "final normalisation",
    "pos_table": "position table",
    "pos_embedding": "position embedding",
    "pos_encoding": "position encoding",
    "src_pos_encoding": "input position encoding",
    "tgt_pos_encoding": "output position encoding",
}


def roles_by_path(spec: rc.ArchSpec) -> dict[str, str]:
    """What each module the forward names does, in words; one module with two roles (an
    embedding shared by the input and the output) says both."""
    found: dict[str, list[str]] = {}
    for role, path in spec.wiring.roles.items() if spec.wiring is not None else ():
        found.setdefault(path, []).append(ROLE_WORDS.get(role, role.replace("_", " ")))
    return {path: " and ".join(words) for path, words in found.items()}


# Said wherever running the model is needed (scoring, baseline, training) and impossible.
NO_FORWARD = (
    "No forward pass was recognised for this model, so it cannot be run on data: scoring "
    "its settings, the baseline and training need one. Its weights and rebuilt code "
    "(step 2) can still be downloaded, to write the forward by hand."
)


def header(number: int, intro: str) -> None:
    """Where the person is (step n of 6) and, in plain words, what this step does."""
    st.caption(f"Step {number} of {len(STEPS)}")
    st.title(STEPS[number - 1])
    st.markdown(intro)


# What to try when something we did not foresee fails, by what was being done.
DEFAULT_HINT = "Try other settings (step 2), other data (step 3) or another file."


@dataclass(frozen=True)
class Problem:
    """A failure as a person reads it: what failed and what to try (`text`), and the
    technical message for whoever helps them (`detail`, shown folded)."""

    text: str
    detail: str | None = None

    def __str__(self) -> str:
        return self.text


def technical(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[:2000]}"


def sentence(exc: BaseException, doing: str, hint: str = DEFAULT_HINT) -> str:
    """One sentence for a person. Our own errors already are one; anything else is
    described by what failed and what to try (the technical message goes with `problem`)."""
    if isinstance(exc, rc.RecoveryError):
        return str(exc)
    log.exception("unexpected error while %s", doing)
    return f"{doing[:1].upper()}{doing[1:]} did not work. {hint}"


def problem(exc: BaseException, doing: str, prefix: str = "", hint: str = DEFAULT_HINT) -> Problem:
    return Problem(prefix + sentence(exc, doing, hint), technical(exc))


def show(p: Problem | str | None) -> None:
    """An error box with the plain sentence, the technical message folded beneath it."""
    if p is None:
        return
    if isinstance(p, str):
        p = Problem(p)
    st.error(p.text, icon=ERROR_ICON)
    if p.detail:
        with st.expander("Technical details"):
            st.code(p.detail, language=None, wrap_lines=True)


def disabled_reason(reason: str | None) -> None:
    """Beside a disabled button: why it cannot be used now."""
    if reason:
        st.caption(f":material/block: {reason}")


def missed_upload(key: str, handled: set[str]) -> bool:
    """An upload whose on_change never ran: Streamlit skips the callbacks of widgets outside
    a fragment that happens to be rerunning (the scoring's progress) when the file arrives."""
    uploaded = st.session_state.get(key)
    return uploaded is not None and uploaded.file_id not in handled


@contextmanager
def reported(doing: str, hint: str = DEFAULT_HINT) -> Iterator[None]:
    """Run a step's action; a failure is shown with what to try and the page goes on."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - shown to the person, logged for us
        show(problem(exc, doing, hint=hint))
