"""The dashboard's server does its heavy imports while it starts, not on a visitor's page."""

from __future__ import annotations

from tests.e2e.harness import streamlit_server


def _mapped(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_torch_and_pandas_are_loaded_before_the_first_visitor(tmp_path):
    # `streamlit run` runs no app code until a page is opened, so the first visitor
    # waited for torch's and pandas' imports (most of an 8-17 s first page). The server
    # `make demo` starts has them loaded as soon as it answers, before anyone visits.
    with streamlit_server(tmp_path / "server.log") as (_url, proc):
        maps = _mapped(proc.pid)
    assert "libtorch_cpu" in maps
    assert "pandas/_libs" in maps
