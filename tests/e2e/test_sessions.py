"""Several people on one server at once: isolated sessions, and nothing left behind.

A real `streamlit run` server on 127.0.0.1, three browser sessions with different
checkpoints, two of them training at the same time. Bounded: three sessions, each wait
capped, the whole test a few minutes at most.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from tests.e2e.harness import (
    choose_checkpoint,
    chromium,
    go_to,
    healthy,
    open_page,
    server_fixture,
    wait_idle,
    wait_scored,
)

pytestmark = pytest.mark.e2e

SESSION_TTL = 2  # seconds Streamlit keeps a closed tab's session (default 120)
SETTLE_SECONDS = 90  # how long the server may take to drop closed sessions
MEMORY_SLACK = 200 * 2**20  # RSS allowed above the warmed-up start after all sessions close
UPLOAD_LIMIT_MB = 1  # small, so a too-big upload is cheap to make
BUSY = 0.5  # cores: a server with training threads running uses at least this much
IDLE = 0.15  # cores: an idle server uses less


def rss(pid: int) -> int:
    """Resident memory of a process in bytes, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_use(pid: int, seconds: float = 3.0) -> float:
    """Cores the process keeps busy over a few seconds: training threads show up here
    whatever Streamlit's own thread pool does (their count varies, their work does not)."""

    def cpu_time() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before, started = cpu_time(), time.monotonic()
    time.sleep(seconds)
    return (cpu_time() - before) / (time.monotonic() - started)


def settle(pid: int, memory_ceiling: float = float("inf")) -> float:
    """Wait until the server is idle (and, when given, its RSS under `memory_ceiling`), at
    most SETTLE_SECONDS; its CPU use over the last few seconds."""
    deadline = time.monotonic() + SETTLE_SECONDS
    idle = cpu_use(pid)
    while (idle > IDLE or rss(pid) > memory_ceiling) and time.monotonic() < deadline:
        idle = cpu_use(pid)
    return idle


server = server_fixture([
    "--server.disconnectedSessionTTL", str(SESSION_TTL),
    "--server.maxUploadSize", str(UPLOAD_LIMIT_MB),
])  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An MLP checkpoint with data for it, and an LSTM checkpoint (no data)."""
    folder = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = torch.randn(256, 16)
    with torch.no_grad():
        y = 2.0 * mlp(x) + 1.0  # a changed task: the output layer has something to learn
    torch.save(mlp.state_dict(), folder / "mlp.pt")
    torch.save({"x": x, "y": y}, folder / "mlp_data.pt")
    lstm = torch.nn.LSTM(8, 12, num_layers=2)
    torch.save(lstm.state_dict(), folder / "lstm.pt")
    return {
        "mlp": folder / "mlp.pt",
        "mlp_data": folder / "mlp_data.pt",
        "lstm": folder / "lstm.pt",
    }


def upload_checkpoint(page, path: Path) -> None:
    choose_checkpoint(page, str(path))
    page.get_by_test_id("stSidebar").get_by_text(path.name).first.wait_for()
    wait_idle(page)


def start_training(page) -> None:
    """Only the output layer with Adam (the closed form would end at once), and far more
    steps than the test waits for."""
    go_to(page, "Freeze and train")
    wait_scored(page)  # the hidden settings are scored first, then training may start
    main = page.get_by_test_id("stMain")
    main.get_by_role("button", name="Only the output layer").click()
    wait_idle(page)
    method = main.get_by_test_id("stSelectbox").filter(has_text="Method").get_by_role("combobox")
    # Its list opens below it: at the window's bottom edge it would have no room.
    method.evaluate("e => e.scrollIntoView({block: 'center'})")
    method.click()
    page.get_by_role("option", name="Adam", exact=True).click()
    wait_idle(page)
    # The most epochs the form allows, in batches of 4: the demo's 5,000 epochs in its
    # default batches ended in 13 s on a quiet machine, before the test had looked.
    for label, value in (("Epochs (passes over the data)", "10000"), ("Batch size", "4")):
        field = main.get_by_label(label)
        field.fill(value)
        field.press("Enter")
        wait_idle(page)
    main.get_by_role("button", name="Start training").click()
    main.get_by_role("button", name="Stop", exact=True).wait_for(timeout=60_000)


def test_sessions_are_isolated_and_release_their_threads_and_memory(server, files):
    from playwright.sync_api import expect

    url, pid = server, server.proc.pid
    with chromium() as browser:
        # Warm up: the first session pays for imports and the shared demo cache.
        warm = open_page(browser, url)
        wait_idle(warm)
        warm.context.close()
        settle(pid)  # the warm-up's work (the demo's scoring) has ended: memory's baseline
        start_rss = rss(pid)

        demo, mlp, lstm = (open_page(browser, url) for _ in range(3))
        for page in (demo, mlp, lstm):
            # Each opens on the demo, whose settings score themselves: the three wait for
            # one search. It took 80-110 s while Streamlit collected garbage after every
            # refresh of the three progress boxes (~250 ms each); ~15 s without.
            wait_scored(page, timeout=60_000)
        upload_checkpoint(mlp, files["mlp"])
        upload_checkpoint(lstm, files["lstm"])

        # The MLP session brings its own data.
        go_to(mlp, "Data and baseline")
        main = mlp.get_by_test_id("stMain")
        main.locator("input[type=file]").set_input_files(str(files["mlp_data"]))
        expect(main.get_by_text("Loss with the original weights")).to_be_visible(timeout=60_000)

        # Two sessions train at the same time.
        start_training(demo)
        start_training(mlp)
        for page in (demo, mlp):
            expect(
                page.get_by_test_id("stMain").get_by_role("button", name="Stop", exact=True)
            ).to_be_visible()
        busy = cpu_use(pid)

        # Nobody sees anybody else's checkpoint, freeze set or runs.
        sidebars = {name: p.get_by_test_id("stSidebar") for name, p in
                    (("demo", demo), ("mlp", mlp), ("lstm", lstm))}  # fmt: skip
        expect(sidebars["demo"]).to_contain_text("demo_checkpoint.pt")
        expect(sidebars["mlp"]).to_contain_text("mlp.pt")
        expect(sidebars["lstm"]).to_contain_text("lstm.pt")
        for name, sidebar in sidebars.items():
            for other in {"demo_checkpoint.pt", "mlp.pt", "lstm.pt"} - {
                {"demo": "demo_checkpoint.pt", "mlp": "mlp.pt", "lstm": "lstm.pt"}[name]
            }:
                expect(sidebar).not_to_contain_text(other)
        demo_main = demo.get_by_test_id("stMain")
        mlp_main = mlp.get_by_test_id("stMain")
        generator = demo_main.get_by_test_id("stCheckbox").filter(has_text="generator")
        expect(generator.get_by_role("checkbox")).to_be_checked()
        expect(mlp_main).not_to_contain_text("generator")
        go_to(lstm, "Compare runs")
        expect(lstm.get_by_test_id("stMain")).not_to_contain_text("Run 1")
        for page in (demo, mlp):
            go_to(page, "Compare runs")
            main = page.get_by_test_id("stMain")
            expect(main).to_contain_text("Run 1")
            expect(main).not_to_contain_text("Run 2")  # the other session's run is not here
        expect(demo.get_by_test_id("stMain")).not_to_contain_text("mlp.pt")

        # Close every tab while both still train: their threads must end, memory come back.
        tokens = [page.url.split("session=")[1].split("&")[0] for page in (demo, mlp)]
        for page in (demo, mlp, lstm):
            page.context.close()
        assert healthy(url)
        idle = settle(pid, memory_ceiling=start_rss + MEMORY_SLACK)
        report = (
            f"server CPU {busy:.2f} cores while two sessions trained, {idle:.2f} after all "
            f"closed; RSS {start_rss >> 20} MiB warmed up, {rss(pid) >> 20} MiB after"
        )
        print(report)
        assert busy >= BUSY, report
        assert idle <= IDLE, report
        assert rss(pid) <= start_rss + MEMORY_SLACK, report
        # Stopped because nobody watched (not ended on their own): a reload of either
        # session, later, finds its run stopped with its best weights kept.
        for token in tokens:
            again = open_page(browser, f"{url}/train?session={token}")
            wait_idle(again)
            expect(again.get_by_test_id("stMain")).to_contain_text("Run 1 stopped")
            again.context.close()


# Keeps every WebSocket the page opens, so the test can drop the app's connection the
# way a network blip does (the browser then reconnects to the same session by itself).
KEEP_SOCKETS = """
window.__sockets = [];
const Native = window.WebSocket;
window.WebSocket = function (...args) {
  const socket = new Native(...args);
  window.__sockets.push(socket);
  return socket;
};
window.WebSocket.prototype = Native.prototype;
Object.assign(window.WebSocket, Native);
"""


# Its own server: a reconnect time long enough that the browser's reconnection, however
# loaded the machine, comes back well within it.
BLIP_TTL = 10
blip_server = server_fixture(["--server.disconnectedSessionTTL", str(BLIP_TTL)])


def test_a_tab_back_after_a_network_blip_keeps_its_training(blip_server):
    """A dropped connection that comes back within the reconnect time is the same tab: its
    training goes on, although the page it shows (no live chart) does not run again."""
    from playwright.sync_api import expect

    url = blip_server
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_init_script(KEEP_SOCKETS)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        wait_scored(page)
        start_training(page)
        go_to(page, "Compare runs")  # a page with nothing that refreshes itself
        page.evaluate("() => window.__sockets.at(-1).close()")
        page.wait_for_function(
            "() => window.__sockets.length > 1 && window.__sockets.at(-1).readyState === 1"
        )
        page.wait_for_timeout((BLIP_TTL + 3) * 1000)  # past the grace a closed tab gets
        go_to(page, "Freeze and train")
        main = page.get_by_test_id("stMain")
        expect(main).not_to_contain_text("Run 1 stopped")
        main.get_by_role("button", name="Stop", exact=True).click()  # end it: not needed
        expect(main).to_contain_text("Run 1 stopped")
        context.close()


def test_an_upload_above_the_size_limit_is_refused_and_the_app_keeps_working(server, tmp_path):
    from playwright.sync_api import expect

    url = server
    big = tmp_path / "big.pt"
    big.write_bytes(b"\0" * (UPLOAD_LIMIT_MB * 2**20 + 1))
    with chromium() as browser:
        page = open_page(browser, url)
        wait_idle(page)
        sidebar = page.get_by_test_id("stSidebar")
        choose_checkpoint(page, str(big))
        expect(sidebar).to_contain_text(f"{UPLOAD_LIMIT_MB}.0MB or smaller")
        wait_idle(page)
        expect(sidebar).to_contain_text("demo_checkpoint.pt")  # the previous checkpoint stays
        main = page.get_by_test_id("stMain")
        expect(main.get_by_test_id("stDataFrame").first).to_be_visible()
        page.context.close()
    assert healthy(url)
