"""The demo flow in a real browser against a real `streamlit run` server.

Each step leaves a screenshot in assets/screenshots/ (the README shows them).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import (
    REPO,
    SHOTS,
    TRAIN_SECONDS,
    VIEWPORT,
    chromium,
    go_to,
    healthy,
    open_page,
    streamlit_server,
    wait_idle,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with streamlit_server(tmp_path_factory.mktemp("streamlit") / "server.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(server: str) -> Iterator[object]:
    with chromium() as browser:
        pg = open_page(browser, server)
        yield pg
        pg.context.close()


def shot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the window to fit."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, 600), 4000)})
    page.wait_for_timeout(500)  # charts re-lay out to the new size
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size(VIEWPORT)


def _losses(text: str) -> tuple[float, float]:
    match = re.search(r"loss ([0-9.e+-]+) → ([0-9.e+-]+)", text)
    assert match, f"no 'loss a → b' in {text!r}"
    return float(match.group(1)), float(match.group(2))


def _points(page) -> int:
    """How many points the live loss line has (counted from the Plotly SVG path)."""
    path = page.locator("[data-testid='stPlotlyChart'] .scatterlayer path.js-line").first
    if path.count() == 0:
        return 0
    d = path.get_attribute("d") or ""
    return d.count("L") + (1 if d.startswith("M") else 0)


def test_demo_flow_from_table_to_a_loadable_torchscript_file(
    page, server: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # 1. The demo is open without a click: its tensor table and layer tree are there.
    wait_idle(page)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text("Explore the file", exact=True)).to_be_visible()
    expect(main.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_text("demo_checkpoint.pt")).to_be_visible()
    # Click the first row's selection box (the grid is a canvas: click by position).
    table = main.get_by_test_id("stDataFrame").first.bounding_box()
    page.mouse.click(table["x"] + 14, table["y"] + 35 + 16)
    expect(main.get_by_text("Values of")).to_be_visible(timeout=30_000)
    wait_idle(page)
    shot(page, "01-explore")

    # 2. Recover: the rebuild works, and the data picks the free settings.
    go_to(page, "Recover the model")
    main.get_by_role("button", name="Score the choices on data").click()
    expect(main.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=120_000)
    wait_idle(page, timeout=120_000)
    expect(main.get_by_text("Every weight fits the rebuilt network exactly")).to_be_visible()
    shot(page, "02-recover")

    # 3. Data and baseline.
    go_to(page, "Data and baseline")
    expect(main.get_by_text("Loss with the original weights")).to_be_visible()
    shot(page, "03-data")

    # 4. Tick the output layer only, train, and watch the chart grow.
    go_to(page, "Freeze and train")
    main.get_by_role("button", name="Only the output layer").click()
    wait_idle(page)
    head = main.get_by_test_id("stCheckbox").filter(has_text="generator")
    expect(head.get_by_role("checkbox")).to_be_checked()
    epochs = main.get_by_label("Epochs (passes over the data)")
    epochs.fill("5000")  # far longer than the test waits: it stops the run itself
    epochs.press("Enter")
    wait_idle(page)
    main.get_by_role("button", name="Start training").click()
    stop = main.get_by_role("button", name="Stop")
    expect(stop).to_be_visible(timeout=30_000)
    page.wait_for_function(
        "() => document.querySelectorAll(\"[data-testid='stPlotlyChart'] .scatterlayer path.js-line\").length > 0",
        timeout=30_000,
    )
    first = _points(page)
    deadline = time.monotonic() + TRAIN_SECONDS
    while _points(page) <= first:  # the chart refreshes about once a second
        assert time.monotonic() < deadline, "the live loss chart never grew while training"
        page.wait_for_timeout(250)
    page.wait_for_timeout(2000)  # a little more training, then Stop keeps the best weights
    shot(page, "04-train-running")
    stop.click()
    done = main.get_by_test_id("stAlertContentSuccess").filter(has_text="Run 1 stopped")
    expect(done).to_be_visible(timeout=30_000)
    baseline, final = _losses(done.inner_text())
    assert final < baseline
    wait_idle(page)
    shot(page, "05-train-done")

    # A second run that also retrains the last decoder block, to compare with the first.
    main.get_by_role("button", name="Last N blocks").click()
    block = main.get_by_test_id("stCheckbox").filter(has_text="decoder.layers.1")
    expect(block.get_by_role("checkbox")).to_be_checked()
    wait_idle(page)
    epochs.fill("20")
    epochs.press("Enter")
    wait_idle(page)
    main.get_by_role("button", name="Start training").click()
    second = main.get_by_test_id("stAlertContainer").filter(has_text="Run 2")
    expect(second).to_be_visible(timeout=TRAIN_SECONDS * 1000)
    wait_idle(page)

    # 5. Compare runs.
    go_to(page, "Compare runs")
    expect(main.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(main.locator("[data-testid='stPlotlyChart'] .scatterlayer .trace")).to_have_count(2)
    shot(page, "06-compare")

    # 6. Export, check, download the TorchScript file and load it.
    go_to(page, "Export")
    main.get_by_role("button", name="Export and verify").click()
    passed = re.compile(r"Every (required )?check passed")
    expect(main.get_by_text(passed)).to_be_visible(timeout=180_000)
    wait_idle(page)
    shot(page, "07-export")
    button = main.get_by_test_id("stDownloadButton").filter(has_text=re.compile(r"^recovered\.pt "))
    with page.expect_download() as info:
        button.get_by_role("button").click()
    target = tmp_path / "recovered.pt"
    info.value.save_as(target)

    import torch

    model = torch.jit.load(str(target))
    data = torch.load(REPO / "assets" / "demo_data.pt", weights_only=True)
    with torch.no_grad():
        out = model(data["src"][:4], data["tgt"][:4])
    assert tuple(out.shape) == (4, data["tgt"].shape[1], 16)

    # 7. A bad upload: one sentence in the sidebar, the server stays healthy, the demo stays open.
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Open another checkpoint").click()
    sidebar.locator("input[type=file]").set_input_files(
        files=[{"name": "../../x.pt", "mimeType": "application/octet-stream", "buffer": b"junk"}]
    )
    expect(sidebar.get_by_test_id("stAlertContentError")).to_contain_text("Could not open x.pt")
    assert healthy(server)
    expect(sidebar.get_by_text("demo_checkpoint.pt")).to_be_visible()
    expect(main.get_by_text(passed)).to_be_visible()  # this session's work is still there
    wait_idle(page)
    shot(page, "08-bad-upload")
