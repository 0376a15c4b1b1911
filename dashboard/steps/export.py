"""Step 6: write the retrained model to files, check each one, and download them."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import streamlit as st

import recovery_core as rc
from dashboard import exporting, state, status, ui
from dashboard import format as fmt

# What each exported file is, in words, and its download type.
KIND_WORDS = {
    "torchscript": (
        "TorchScript model: load with torch.jit.load, no code needed",
        "application/octet-stream",
    ),
    "torch.export": (
        "torch.export program: PyTorch's newer format (torch.export.load)",
        "application/octet-stream",
    ),
    "state_dict": ("Weights only, PyTorch state dict", "application/octet-stream"),
    "safetensors": ("Weights only, safetensors format", "application/octet-stream"),
    "code": ("The model's Python code", "text/x-python"),
    "report": ("Report: settings, losses and every check", "application/json"),
}


# What each step of an export writes, in words, while it runs.
STEP_WORDS = {
    "torchscript": "TorchScript model",
    "torch.export": "torch.export program",
    "state_dict": "Weights only (state dict and safetensors)",
    "code": "The model's Python code",
}
RUNNING = ":blue[:material/progress_activity:]"
WAITING = ":gray[:material/schedule:]"


def _mark(passed: bool, optional: bool = False) -> str:
    return ui.PASSED if passed else (ui.OPTIONAL if optional else ui.FAILED)


def file_lines(exports: Sequence[rc.session.ExportCheck]) -> list[str]:
    """A line per verified file: written, read back and checked, or the check it failed."""
    lines = []
    for export in exports:
        words = KIND_WORDS.get(export.kind, (export.kind, ""))[0].split(":")[0]
        if export.passed:
            n = len(export.checks)
            summary = f"written, read back and checked ({n} check{'s' if n != 1 else ''} passed)."
        else:
            failed = next(c for c in export.checks if not c.passed)
            summary = f"failed the check '{failed.name}' ({failed.detail})"
            summary += "; it is optional, so it is not offered below." if export.optional else "."
        lines.append(f"{_mark(export.passed, export.optional)} **{words}**: {summary}")
    return lines


def settings_line(record: state.RunRecord) -> str:
    if record.unverified:
        names = ", ".join(status.label(n) for n in record.unverified)
        return (
            f"{ui.FAILED} **Hidden settings checked on data**: no: {names} stayed unverified "
            "defaults (your choice); the report records it."
        )
    return f"{ui.PASSED} **Hidden settings checked on data**: yes."


def loss_line(record: state.RunRecord) -> str:
    result = record.outcome
    below = result.final_loss < result.baseline_loss
    return (
        f"{_mark(below)} **Loss below the baseline**: {fmt.loss(result.final_loss)} after "
        f"training, {fmt.loss(result.baseline_loss)} before."
    )


def progress(job: exporting.ExportJob, record: state.RunRecord) -> None:
    """While the files are written: each verified file's line, the one being written with
    its time so far, the ones waiting; no verdict until every file is checked."""
    st.subheader("Checks")
    exporter = job.exporter
    done = job.exports
    now = time.monotonic()
    lines = [settings_line(record), loss_line(record), *file_lines(done)]
    for step in exporter.pending:
        if step == job.step:
            elapsed = fmt.seconds(now - job.step_started)
            lines.append(
                f"{RUNNING} **{STEP_WORDS[step]}**: being written and checked ({elapsed})…"
            )
        else:
            lines.append(f"{WAITING} **{STEP_WORDS[step]}**: waiting.")
    st.markdown("\n".join(f"- {line}" for line in lines))
    n, total = len(exporter.done), len(exporter.steps)
    st.progress(job.fraction, text=f"Writing and checking the files: {n} of {total} steps done")


def checklist(bundle: rc.ExportBundle, record: state.RunRecord) -> None:
    """The four things that matter first (loss, each file, frozen layers), details below."""
    st.subheader("Checks")
    result = record.outcome
    below = result.final_loss < result.baseline_loss
    lines = [settings_line(record), loss_line(record), *file_lines(bundle.exports)]
    if bundle.frozen_check is not None:
        check = bundle.frozen_check
        lines.append(f"{_mark(check.passed)} **Frozen layers untouched**: {check.detail}.")
    st.markdown("\n".join(f"- {line}" for line in lines))
    with st.expander("Every check in detail"):
        st.markdown(
            "\n".join(f"- {_mark(c.passed)} **{c.name}**: {c.detail}" for c in bundle.checks)
        )
    if bundle.passed and below and record.unverified:
        st.warning(
            "The files hold the model you trained, but it was built on unverified settings: "
            "it may be worse than the original weights correctly rebuilt. Score the settings "
            "(step 2) and train again to be sure."
        )
    elif bundle.passed and below:
        required = "required " if any(not e.passed for e in bundle.exports) else ""
        st.success(f"Every {required}check passed: the files hold the model you trained.")
    elif bundle.passed:
        st.warning("The files are correct, but this run did not beat the baseline.")
    else:
        st.error("Some checks failed: look at the crosses above before using these files.")


def downloads(files: Mapping[str, str], exports: Sequence[rc.session.ExportCheck]) -> None:
    """A button per file that passed its checks (the report once it is written); a file
    that failed one is not offered. The bytes are read when the button is pressed."""
    st.subheader("Download")
    verified = {e.kind for e in exports if e.passed}
    ready = [
        (kind, Path(name))
        for kind, name in files.items()
        if (kind in verified or kind == "report") and Path(name).is_file()
    ]
    if not ready:
        st.caption("Each file is offered here as soon as it is checked.")
    for kind, path in ready:
        words, mime = KIND_WORDS.get(kind, (kind, "application/octet-stream"))
        st.download_button(
            f"{path.name} · {fmt.size(os.path.getsize(path))} · {words}",
            path.read_bytes,
            file_name=path.name,
            mime=mime,
            key=f"export_download_{kind}",
            on_click="ignore",
            width="stretch",
        )


def live(studio: state.Studio, record: state.RunRecord) -> None:
    """This run's export: its progress while it is written (refreshed by itself), then
    the checks and the downloads.

    The downloads always stand outside the refreshing part: a download button is good
    until the part it is in is drawn again, so inside it a click could miss its file (the
    progress redraws twice a second, and a last tick of it can come after the export has
    ended). The page is drawn again when a file is verified, to offer it, and when the
    export ends."""
    job = studio.export_jobs.get(record.number)
    running = job is not None and job.running
    offered = job.exports if job is not None and running else ()

    @st.fragment(run_every=exporting.REFRESH_SECONDS if running else None)
    def panel() -> None:
        if exporting.collect(studio):
            st.rerun(scope="app")  # it ended: the whole page follows (the Export button)
        if any(ui.missed_upload(key, studio.handled_uploads) for key in status.UPLOAD_KEYS):
            st.rerun(scope="app")  # a file arrived during this refresh: open it now
        job = studio.export_jobs.get(record.number)
        bundle = studio.exports.get(record.number)
        if job is not None and job.running:
            if len(job.exports) != len(offered):
                st.rerun(scope="app")  # a file was verified: offer its download
            progress(job, record)
        elif job is not None and job.error is not None:
            ui.show(ui.problem(job.error, "exporting"))
        elif bundle is not None:
            checklist(bundle, record)

    with st.container(key="export_live"):
        panel()
    bundle = studio.exports.get(record.number)
    if job is not None and running:
        downloads(job.exporter.paths, offered)
    elif bundle is not None and (job is None or job.error is None):
        downloads(bundle.files, bundle.exports)


def render() -> None:
    ui.header(
        6,
        "Write the retrained model to files. Each file is read back and checked before you "
        "download it: same layer names and shapes as the original, frozen layers untouched, "
        "and the loss below the baseline.",
    )
    studio = state.studio()
    finished = studio.finished_runs()
    if not finished:
        st.info("Train a model in step 4 first; finished runs can be exported here.")
        return
    names = [r.name for r in finished]
    best = min(range(len(finished)), key=lambda i: finished[i].outcome.final_loss)
    choice = st.selectbox(
        "Run to export (the one with the lowest loss is chosen for you)",
        names,
        index=best,
        key="export_run",
        format_func=lambda n: (
            f"{n} · final loss {fmt.loss(finished[names.index(n)].outcome.final_loss)}"
        ),
    )
    record = finished[best if choice is None else names.index(choice)]
    busy = any(job.running for job in studio.export_jobs.values())
    cols = st.columns([1, 3], vertical_alignment="center")
    if cols[0].button(
        "Export and verify",
        type="primary",
        key="export_go",
        disabled=busy,
        help="Runs in the background: each file can be downloaded as soon as it is checked.",
    ):
        with ui.reported("exporting"):
            exporting.start(studio, record)
            st.rerun()  # the button greys out; the progress refreshes itself
    with cols[1]:
        ui.disabled_reason(
            "Files are being written: wait for them to be checked." if busy else None
        )
    live(studio, record)


render()
