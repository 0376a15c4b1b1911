"""Model Recovery Studio: from a bare state dict to a retrained, verified, exported model.

Run from the repository root:  .venv/bin/python -m dashboard.serve  (what `make demo` runs;
`.venv/bin/python -m streamlit run dashboard/app.py` works too, with a slower first page)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The steps import `dashboard.*`; Streamlit only puts this file's folder on the path.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import streamlit as st  # noqa: E402

from recovery_core.io import sandbox  # noqa: E402 - imports no torch

if "torch" not in sys.modules:  # this process's first run
    # The file reader's server imports torch in its own process: it starts now, so that
    # import runs while this process imports its own (the first page waited for both).
    sandbox.prestart()
import torch  # noqa: E402

from dashboard import datasets, layout, plans, scoring, sources, state, status, ui  # noqa: E402

# One server trains for several sessions at once, each in its own thread; letting every
# tensor operation fan out over all cores as well oversubscribes the CPU (on a busy 2-core
# machine, training the demo's output layer took 11-12 s with 2 threads per operation
# against 0.3-3 s with 1).
# Set RECOVERY_TORCH_THREADS to give big models more.
torch.set_num_threads(int(os.environ.get("RECOVERY_TORCH_THREADS", "1")))

st.set_page_config(page_title="Model Recovery Studio", page_icon="🛠️", layout="wide")

# Hardening that holds wherever the server starts (config.toml is read only from the
# working directory): visitors never see tracebacks, and an exposed server does not serve.
st.set_option("client.showErrorDetails", "none")
if (_exposed := sources.exposure_problem()) is not None:
    st.error(_exposed)
    st.stop()

layout.narrow_window_rules()
studio = state.studio()
# A scoring that ended is applied before anything is drawn, so this run draws its outcome
# (the progress's own refresh applies it, then draws the whole page again).
scoring.collect(studio)
sources.ensure_loaded(studio)
datasets.ensure_demo_data(studio)
scoring.maybe_start(studio)  # unverified settings and mapped data: score them meanwhile

_ICONS = (
    ":material/search:",
    ":material/build:",
    ":material/dataset:",
    ":material/model_training:",
    ":material/compare_arrows:",
    ":material/download:",
)
_FILES = ("explore", "recover", "data", "train", "compare", "export")
pages = [
    st.Page(f"steps/{name}.py", title=f"{n}. {title}", icon=icon, default=n == 1)
    for n, (name, title, icon) in enumerate(zip(_FILES, ui.STEPS, _ICONS, strict=True), start=1)
]
page = st.navigation(pages)

with st.sidebar:
    sources.sidebar(studio)
    plans.sidebar(studio)

if studio.opened is None:
    st.title("Model Recovery Studio")
    st.info("Open a checkpoint in the sidebar to begin.")
else:
    try:
        status.banner(studio)
        page.run()
    except BaseException:  # a rerun or stop asked for by the page: no wait
        scoring.release(studio)  # a scoring started by this run begins now
        raise
    # A scoring started by this run begins now; one that ends at once (the shapes told, or
    # a kept ranking) is shown at once, not at the next refresh of its progress.
    if scoring.release(studio, wait=scoring.QUICK_SECONDS):
        st.rerun()
