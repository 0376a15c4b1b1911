"""What the browser tests share: a real `streamlit run` server, Debian's Chromium, waits.

Debian's Chromium (/usr/bin/chromium) driven by Playwright for Python; no browser is
ever downloaded. Without Chromium the tests are skipped locally, but fail under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pytest

REPO = Path(__file__).resolve().parents[2]
# Screenshots go to a temporary folder, so a test run changes no tracked file;
# `make screenshots` points this at assets/screenshots/ to refresh the README's.
SHOTS = Path(
    os.environ.get("RECOVERY_SCREENSHOTS") or Path(tempfile.gettempdir()) / "recovery-screenshots"
)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}  # the window the issue asks to fit
STARTUP_SECONDS = 90
TRAIN_SECONDS = 180
Scope = Literal["module", "session"]


def missing(reason: str) -> None:
    """Skip on a developer machine, fail in CI: CI must run the browser test."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the browser test must run)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except OSError:
        return False


@contextlib.contextmanager
def streamlit_server(
    log: Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The dashboard as `make demo` starts it (`python -m dashboard.serve`, which is
    `streamlit run dashboard/app.py`) on 127.0.0.1 and a free port, until the block ends."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dashboard.serve",  # `streamlit run dashboard/app.py`, imports done first
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(port),
                *extra_args,
            ],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not become healthy:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A headless Debian Chromium driven by Playwright (skipped, or failed in CI, if missing)."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is not installed (scripts/ensure_browser.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright for Python is not installed in the virtualenv")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Server(str):
    """A running server's URL (use it as the URL) with its process (`proc`)."""

    proc: subprocess.Popen


def server_fixture(
    extra_args: Sequence[str] = (), env: dict[str, str] | None = None, scope: Scope = "module"
):
    """A fixture: one `streamlit run` server for the whole test module (or, with
    scope="session", every module that uses it), stopped after its last test. Assign it
    in the module: `server = server_fixture(["--server.maxUploadSize", "1"])`. A server
    with the default settings is shared by every module: `server` in conftest.py."""

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        log = tmp_path_factory.mktemp("streamlit") / "server.log"
        with streamlit_server(log, extra_args, env) as (url, proc):
            server = Server(url)
            server.proc = proc
            yield server

    return fixture


def open_page(browser, url: str):
    """A new browser session (its own context: its own Streamlit session) on the app."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    return page


def wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished running the script (its own "notRunning" state)."""
    page.wait_for_timeout(300)  # give the rerun a click asked for time to begin
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout
    )
    page.wait_for_timeout(300)  # let the last delta paint


def go_to(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=False).click()
    wait_idle(page)


def choose_checkpoint(page, files) -> None:
    """Choose `files` (a path, or Playwright's file payloads) in the sidebar's "Open another
    checkpoint" box. On a page whose demo is still being scored, `wait_scored` first: a
    file chosen while that progress redraws can be lost."""
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Open another checkpoint").click()
    # the checkpoint box (the sidebar may hold other uploaders)
    sidebar.get_by_test_id("stTabs").locator("input[type=file]").set_input_files(files)


def save_plan(page, path: Path) -> None:
    """Save this session's recovery plan (sidebar) to `path`, as a person downloads it."""
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Save / load recovery plan").click()
    with page.expect_download() as info:
        sidebar.get_by_role("button", name="Save recovery plan").click()
    info.value.save_as(path)


def wait_scored(page, timeout: float = 120_000) -> None:
    """Wait until the background scoring of the hidden settings has ended (the status box
    at the top of every page no longer shows its progress)."""
    page.wait_for_function(
        "() => !document.body.innerText.includes('Scoring the hidden settings on your data')",
        timeout=timeout,
    )
    wait_idle(page)


def in_view(page, locator) -> bool:
    """Entirely inside the window, without scrolling."""
    box = locator.bounding_box()
    size = page.viewport_size
    return (
        box is not None
        and box["y"] >= 0
        and box["x"] >= 0
        and box["y"] + box["height"] <= size["height"]
        and box["x"] + box["width"] <= size["width"]
    )


def screenshot(page, name: str, full: bool = True) -> Path:
    """The page into SHOTS. `full`: Streamlit scrolls inside its main block, so the window
    grows to fit it; otherwise what the window shows now."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    if not full:
        page.screenshot(path=str(path))
        return path
    before = page.viewport_size
    height = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": before["width"], "height": min(max(height, 600), 4000)})
    page.wait_for_timeout(500)  # charts re-lay out to the new size
    page.screenshot(path=str(path))
    page.set_viewport_size(before)
    return path
