"""The app is safe by default wherever the server starts: no server-path input unless
enabled, and a server reachable from other machines (or without XSRF protection) refuses
to serve instead of trusting a config file it may not have read."""

from __future__ import annotations

import pytest
from streamlit import config

from dashboard import sources, state


@pytest.fixture
def option():
    yield config.set_option
    config.get_config_options(force_reparse=True)  # back to what the files and flags say


def test_server_paths_are_off_unless_enabled(monkeypatch) -> None:
    monkeypatch.delenv("RECOVERY_SERVER_PATHS", raising=False)
    assert not state.server_paths_allowed()
    monkeypatch.setenv("RECOVERY_SERVER_PATHS", "on")
    assert state.server_paths_allowed()


@pytest.mark.parametrize("address", ["", "0.0.0.0", "::", "192.168.1.20"])
def test_an_exposed_address_refuses_to_serve(option, monkeypatch, address) -> None:
    monkeypatch.delenv("RECOVERY_ALLOW_REMOTE", raising=False)
    option("server.address", address)
    problem = sources.exposure_problem()
    assert problem is not None and "--server.address 127.0.0.1" in problem
    monkeypatch.setenv("RECOVERY_ALLOW_REMOTE", "1")  # deliberate, behind a trusted proxy
    assert sources.exposure_problem() is None


def test_loopback_with_xsrf_serves_and_without_xsrf_does_not(option, monkeypatch) -> None:
    monkeypatch.delenv("RECOVERY_ALLOW_REMOTE", raising=False)
    option("server.address", "127.0.0.1")
    option("server.enableXsrfProtection", True)
    assert sources.exposure_problem() is None
    option("server.enableXsrfProtection", False)
    assert "XSRF" in (sources.exposure_problem() or "")
