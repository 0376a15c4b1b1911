"""Step 6: write the retrained model to files, check each one, and download them."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import streamlit as st

import recovery_core as rc
from dashboard import format as fmt
from dashboard import state, status, ui

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


def export(studio: state.Studio, record: state.RunRecord) -> None:
    """Export one run with the data it trained on (not what step 3 shows now)."""
    mapping = record.mapping
    assert studio.opened is not None and mapping is not None
    result = record.outcome
    out_dir = Path(studio.workdir) / f"run-{record.number}"
    report = rc.session.recovery_report(
        checkpoint=studio.opened.source.label,
        data=record.data_name,
        mapping=mapping,
        spec=record.spec,
        plan=record.plan,
        training=result,
        states=record.states,
        details={
            "settings": [
                {**row, "state": record.states.get(row["name"], row["state"])}
                for row in rc.plan.settings_report(record.spec)
            ],
            "unverified_settings": list(record.unverified),
            "wiring": record.spec.wiring.description if record.spec.wiring else None,
            "evaluated_on": (
                f"{record.held_out:.0%} held out" if record.held_out else "training data"
            ),
        },
    )
    # The files take the data as the user gives it: the batch-major view is dropped.
    studio.exports[record.number] = rc.session.export_trained(
        rc.drop_batch_major(copy.deepcopy(result.model)),
        rc.from_batch_major(record.example_inputs, rc.batch_dims(record.spec)),
        out_dir,
        spec=record.spec,
        original=studio.opened.checkpoint.state_dict(),
        plan=record.plan,
        report=report,
        stem="recovered",
    )


def _mark(passed: bool, optional: bool = False) -> str:
    return ui.PASSED if passed else (ui.OPTIONAL if optional else ui.FAILED)


def checklist(bundle: rc.ExportBundle, record: state.RunRecord) -> None:
    """The four things that matter first (loss, each file, frozen layers), details below."""
    st.subheader("Checks")
    result = record.outcome
    below = result.final_loss < result.baseline_loss
    lines = [
        f"{_mark(below)} **Loss below the baseline**: {fmt.loss(result.final_loss)} after "
        f"training, {fmt.loss(result.baseline_loss)} before."
    ]
    for export in bundle.exports:
        words = KIND_WORDS.get(export.kind, (export.kind, ""))[0].split(":")[0]
        if export.passed:
            n = len(export.checks)
            summary = f"written, read back and checked ({n} check{'s' if n != 1 else ''} passed)."
        else:
            failed = next(c for c in export.checks if not c.passed)
            summary = f"failed the check '{failed.name}' ({failed.detail})"
            summary += "; it is optional, so it is not offered below." if export.optional else "."
        lines.append(f"{_mark(export.passed, export.optional)} **{words}**: {summary}")
    if bundle.frozen_check is not None:
        check = bundle.frozen_check
        lines.append(f"{_mark(check.passed)} **Frozen layers untouched**: {check.detail}.")
    if record.unverified:
        names = ", ".join(status.label(n) for n in record.unverified)
        lines.insert(
            0,
            f"{ui.FAILED} **Hidden settings checked on data**: no: {names} stayed unverified "
            "defaults (your choice); the report records it.",
        )
    else:
        lines.insert(0, f"{ui.PASSED} **Hidden settings checked on data**: yes.")
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


def downloads(bundle: rc.ExportBundle) -> None:
    """A button per file that passed its checks; a file that failed one is not offered."""
    st.subheader("Download")
    failed = {e.kind for e in bundle.exports if not e.passed}
    for kind, name in bundle.files.items():
        path = Path(name)
        if kind in failed or not path.is_file():
            continue
        words, mime = KIND_WORDS.get(kind, (kind, "application/octet-stream"))
        st.download_button(
            f"{path.name} · {fmt.size(os.path.getsize(path))} · {words}",
            path.read_bytes(),
            file_name=path.name,
            mime=mime,
            key=f"export_download_{kind}",
            width="stretch",
        )


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
    if st.button("Export and verify", type="primary", key="export_go"):
        with st.spinner("Writing and checking the files…"), ui.reported("exporting"):
            export(studio, record)
    bundle = studio.exports.get(record.number)
    if bundle is not None:
        checklist(bundle, record)
        downloads(bundle)


render()
