"""The sidebar: which checkpoint is open, and how to open another one.

Three ways in: the bundled demo (opened without a click on the first visit), an upload
(limited by `server.maxUploadSize`), or a path on the server's disk for big files (read
lazily, never sent through the browser). A file that fails to open leaves the previous
checkpoint in place and says why in one sentence.
"""

from __future__ import annotations

import os

import streamlit as st

from dashboard import datasets, state, ui
from dashboard import format as fmt

UPLOAD_KEY = "source_upload"
PATH_KEY = "source_path"


# Addresses reachable only from this machine.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure_problem() -> str | None:
    """Why this server must not serve as it was started, or None.

    `.streamlit/config.toml` applies only when the server starts in the repository root;
    started elsewhere, Streamlit listens on every interface. The app reads untrusted
    files, so it checks the settings itself: loopback only (unless RECOVERY_ALLOW_REMOTE=1,
    for a deployment behind a proxy you trust) and XSRF protection on.
    """
    remote_ok = os.environ.get("RECOVERY_ALLOW_REMOTE", "").lower() in ("1", "on", "true", "yes")
    address = st.get_option("server.address") or ""
    if not remote_ok and address not in LOOPBACK:
        shown = address or "every network interface"
        return (
            f"This server listens on {shown}, so other machines could reach it. Start it with "
            "--server.address 127.0.0.1, or set RECOVERY_ALLOW_REMOTE=1 if a proxy you trust "
            "sits in front of it."
        )
    if not st.get_option("server.enableXsrfProtection"):
        return "XSRF protection is off; start the server with --server.enableXsrfProtection true."
    return None


def open_source(studio: state.Studio, source: state.Source) -> bool:
    """Open a checkpoint for this session; on failure keep the previous one."""
    try:
        opened = state.open_checkpoint(source)
    except Exception as exc:  # noqa: BLE001 - shown as a sentence, the app goes on
        studio.load_error = ui.problem(
            exc,
            "reading the file",
            prefix=f"Could not open {source.label}: ",
            hint="Check that it is a PyTorch or safetensors weights file, or open another one.",
        )
        return False
    studio.use(opened)
    datasets.remap(studio)  # the data this session kept, matched to the new model's inputs
    return True


def ensure_loaded(studio: state.Studio) -> None:
    """First visit: open the demo so there is something real to look at at once."""
    if studio.opened is None and studio.load_error is None:
        open_source(studio, state.demo_source())


def _on_upload() -> None:
    uploaded = st.session_state.get(UPLOAD_KEY)
    studio = state.studio()
    if uploaded is None:  # the file was removed from the box: so is its error
        studio.load_error = None
        return
    if uploaded.file_id in studio.handled_uploads:
        return
    studio.handled_uploads.add(uploaded.file_id)
    open_source(studio, state.upload_source(uploaded.name, uploaded.getvalue()))


def _on_path() -> None:
    path = (st.session_state.get(PATH_KEY) or "").strip()
    if path and state.server_paths_allowed():
        open_source(state.studio(), state.path_source(path))


def _on_demo() -> None:
    open_source(state.studio(), state.demo_source())


def sidebar(studio: state.Studio) -> None:
    opened = studio.opened
    if opened is not None:
        params = sum(t.numel for t in opened.checkpoint.tensors)
        st.markdown(f"**Open:** `{opened.source.label}`")
        st.caption(f"{len(opened.checkpoint.tensors)} tensors · {fmt.count(params)} numbers")
    else:
        st.markdown("**No checkpoint open.**")
    if studio.load_error:
        ui.show(studio.load_error)

    with st.expander("Open another checkpoint", expanded=opened is None or bool(studio.load_error)):
        names = ["Upload", "Server path", "Demo"]
        if not state.server_paths_allowed():
            names.remove("Server path")
        tabs = dict(zip(names, st.tabs(names), strict=True))
        with tabs["Upload"]:
            limit = st.get_option("server.maxUploadSize")
            st.file_uploader(
                "A state dict: .pt, .pth, .bin, .ckpt or .safetensors",
                key=UPLOAD_KEY,
                on_change=_on_upload,
                help=f"Up to {limit} MB. For bigger files use 'Server path'. "
                "Files are read without running any code in them.",
            )
            if ui.missed_upload(UPLOAD_KEY, studio.handled_uploads):
                _on_upload()
                st.rerun()
        if "Server path" in tabs:
            with tabs["Server path"]:
                path_input()
        with tabs["Demo"]:
            st.caption("A small translation-style transformer and a dataset for it.")
            st.button("Open the demo", on_click=_on_demo, key="source_open_demo")


def path_input() -> None:
    st.text_input(
        "Path of a checkpoint on this server",
        key=PATH_KEY,
        placeholder="/data/models/model.safetensors",
        help="Big files are read lazily from disk, without going through the browser.",
    )
    st.button("Open this file", on_click=_on_path, key="source_open_path")
