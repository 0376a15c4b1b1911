"""Starts the dashboard: `.venv/bin/python -m dashboard.serve [Streamlit options]`.

`streamlit run dashboard/app.py` runs no app code until the first visitor, so the first
page paid for the imports of torch, pandas and Plotly: most of its 8-17 s on this
machine. Here they run while the server starts, before it prints its address.
Streamlit then runs app.py in this same process, so the first page finds them imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).resolve().with_name("app.py")


def preload() -> None:
    """Import what every page needs. The file reader's server starts first: it imports
    torch in a process of its own, at the same time as this one does."""
    from recovery_core.io import sandbox  # imports no torch

    sandbox.prestart()
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import torch  # noqa: F401

    import recovery_core  # noqa: F401


# Streamlit collects all garbage (`gc.collect(2)`) after every script run, the progress
# boxes' refreshes included (several a second per open tab). With torch, pandas and
# Plotly imported, one collection holds the GIL ~250 ms: three tabs of the demo scoring
# at once took 80-110 s, ~15-20 s without. Python's own collector still runs, and a closed
# tab's objects are collected when its session ends (`state._stop_if_unwatched`).
SETTINGS = ("--runner.postScriptGC", "false")


def main(argv: list[str]) -> None:
    preload()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *SETTINGS, *argv]
    cli.main(prog_name="streamlit")  # exits with the server's status, as `streamlit` does


if __name__ == "__main__":
    main(sys.argv[1:])
