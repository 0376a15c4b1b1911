"""Issue 11 on a real server: the file that killed the process (storage alignment 0) and
the file that read another session's memory (an uninitialised `torch.FloatTensor(N)`),
uploaded while another session is open. The server stays up, the other session keeps its
checkpoint and keeps working, and both files are refused in one sentence each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.e2e.harness import (
    choose_checkpoint,
    chromium,
    go_to,
    healthy,
    open_page,
    wait_idle,
    wait_scored,
)
from tests.hostile import _payloads as p

pytestmark = pytest.mark.e2e


def upload(page, path: Path) -> None:
    # The demo's settings are scored in the background at first: wait until it is done.
    wait_scored(page)
    choose_checkpoint(page, str(path))
    wait_idle(page)


def test_crashing_and_uninitialised_uploads_leave_the_server_and_other_sessions_alone(
    server, tmp_path
) -> None:
    from playwright.sync_api import expect

    url, proc = server, server.proc
    torch.manual_seed(0)
    other = tmp_path / "their_model.pt"
    torch.save(
        torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 2)).state_dict(), other
    )
    crash = p.with_record(tmp_path / "crash.pt", ".storage_alignment", b"0")
    leak = p.raw_data_pkl(tmp_path / "leak.pt", p.uninitialised_pickles(1 << 18)["FloatTensor(N)"])
    with chromium() as browser:
        theirs = open_page(browser, url)
        wait_idle(theirs)
        upload(theirs, other)
        their_sidebar = theirs.get_by_test_id("stSidebar")
        expect(their_sidebar).to_contain_text("their_model.pt")

        attacker = open_page(browser, url)
        wait_idle(attacker)
        sidebar = attacker.get_by_test_id("stSidebar")
        upload(attacker, crash)
        expect(sidebar).to_contain_text("Could not open crash.pt", timeout=60_000)
        assert healthy(url) and proc.poll() is None
        upload(attacker, leak)
        expect(sidebar).to_contain_text("Could not open leak.pt", timeout=60_000)
        expect(sidebar).to_contain_text("uninitialised memory")
        assert healthy(url) and proc.poll() is None

        # The other session still has its own checkpoint and still works.
        theirs.reload()
        wait_idle(theirs)
        expect(their_sidebar).to_contain_text("their_model.pt")
        go_to(theirs, "Explore")
        expect(theirs.get_by_test_id("stMain").get_by_test_id("stDataFrame").first).to_be_visible()
        expect(theirs.get_by_test_id("stMain")).to_contain_text("0.weight")
    assert healthy(url) and proc.poll() is None
