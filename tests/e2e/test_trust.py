"""In a real browser: unverified settings never reach a green export without the person's
explicit choice; at 800 px nothing is cut; a saved plan replayed by the command line gives
the same final loss."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.e2e.harness import (
    REPO,
    chromium,
    go_to,
    open_page,
    save_plan,
    screenshot,
    server_fixture,
    wait_idle,
    wait_scored,
)

pytestmark = pytest.mark.e2e

NARROW = {"width": 800, "height": 900}
STEPS = (
    "Explore the file",
    "Recover the model",
    "Data and baseline",
    "Freeze and train",
    "Compare runs",
    "Export",
)
# Text that must never be cut: widget labels, checkbox and button texts, markdown lines.
CUT_CHECK = """() => {
  const sel = "[data-testid='stWidgetLabel'] p, [data-testid='stCheckbox'] label p, " +
    "button p, [data-testid='stMarkdownContainer'] p, [data-testid='stCaptionContainer'] p, " +
    "[data-testid='stSelectbox'] [data-baseweb='select'] div[value], h1, h2, h3";
  const cut = [];
  for (const el of document.querySelectorAll(sel)) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;  // hidden (a closed expander, a tab)
    if (el.scrollWidth > el.clientWidth + 1) cut.push(el.innerText.slice(0, 60));
  }
  return cut;
}"""


# Scoring by a click only, so the demo stays on its unverified defaults.
unscored_server = server_fixture(env={"RECOVERY_AUTO_SCORE": "off"})


def _train(page, epochs: int) -> None:
    main = page.get_by_test_id("stMain")
    go_to(page, "Freeze and train")
    field = main.get_by_label("Epochs (passes over the data)")
    field.fill(str(epochs))
    field.press("Enter")
    wait_idle(page)
    main.get_by_role("button", name="Start training").click()
    page.get_by_test_id("stMain").get_by_text(re.compile(r"Run \d+ (finished|stopped)")).wait_for(
        timeout=180_000
    )
    wait_idle(page)


def test_unverified_settings_reach_no_green_export_without_the_explicit_choice(unscored_server):
    from playwright.sync_api import expect

    with chromium() as browser:
        page = open_page(browser, unscored_server)
        wait_idle(page)
        main = page.get_by_test_id("stMain")
        status = main.locator(".st-key-settings_status")
        expect(status).to_contain_text("unverified default")
        # Baseline and training wait, and say why.
        go_to(page, "Data and baseline")
        expect(main.get_by_text("Loss with the original weights")).to_have_count(0)
        expect(main.get_by_text("The baseline waits for the hidden settings")).to_be_visible()
        go_to(page, "Freeze and train")
        expect(main.get_by_role("button", name="Start training")).to_be_disabled()
        expect(main.get_by_text("Some hidden settings are unverified")).to_be_visible()
        go_to(page, "Export")
        expect(main.get_by_role("button", name="Export and verify")).to_have_count(0)

        # The explicit choice: then everything runs, and nothing ends green.
        status.get_by_role("button", name="Use unverified settings").click()
        wait_idle(page)
        _train(page, epochs=2)
        expect(main.get_by_test_id("stAlertContentSuccess")).to_have_count(0)
        expect(main.get_by_text("Trained on unverified settings")).to_be_visible()
        go_to(page, "Export")
        main.get_by_role("button", name="Export and verify").click()
        expect(main.get_by_text("built on unverified settings")).to_be_visible(timeout=180_000)
        expect(main.get_by_text(re.compile(r"Every (required )?check passed"))).to_have_count(0)
        wait_idle(page)
        screenshot(page, "09-unverified-export")
        page.context.close()


PAGES = ("", "recover", "data", "train", "compare", "export")


def test_at_800_px_nothing_is_cut(server):
    from playwright.sync_api import expect

    with chromium() as browser:
        context = browser.new_context(viewport=NARROW)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(server)
        wait_idle(page)
        wait_scored(page)
        session = page.url.split("session=")[1].split("&")[0]
        sidebar = page.get_by_test_id("stSidebar")
        for path in PAGES:  # each page by its address: a reload, restored by the token
            page.goto(f"{server}/{path}?session={session}")
            wait_idle(page)
            # The sidebar gives the main column its room back.
            expect(sidebar).to_have_attribute("data-collapsed", "true")
            assert page.evaluate(CUT_CHECK) == [], f"text cut on /{path}"
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= NARROW["width"], f"/{path} is wider than the window ({width} px)"
        screenshot(page, "10-narrow", full=False)
        context.close()


def test_a_saved_plan_replayed_by_the_command_line_gives_the_same_final_loss(server, tmp_path):
    from playwright.sync_api import expect

    with chromium() as browser:
        page = open_page(browser, server)
        wait_idle(page)
        wait_scored(page)
        _train(page, epochs=3)
        main = page.get_by_test_id("stMain")
        # The exact final loss, from the dashboard's own export report.
        go_to(page, "Export")
        main.get_by_role("button", name="Export and verify").click()
        report_button = main.get_by_test_id("stDownloadButton").filter(
            has_text=re.compile(r"^recovered_report\.json ")
        )
        expect(report_button).to_be_visible(timeout=180_000)
        with page.expect_download() as info:
            report_button.get_by_role("button").click()
        info.value.save_as(tmp_path / "dashboard_report.json")
        plan_path = tmp_path / "plan.json"
        save_plan(page, plan_path)
        page.context.close()
    plan = json.loads(plan_path.read_text())
    assert plan["training"]["epochs"] == 3
    shown = json.loads((tmp_path / "dashboard_report.json").read_text())["training"]["final_loss"]

    out = tmp_path / "out" / "replayed.pt"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recovery_core",
            "recover",
            str(REPO / "assets" / "demo_checkpoint.pt"),
            "--data",
            str(REPO / "assets" / "demo_data.pt"),
            "--plan",
            str(plan_path),
            "--out",
            str(out),
            "--report",
            str(tmp_path / "report.json"),
            "--formats",
            "",  # the TorchScript file is enough to compare losses
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        # The app runs torch on one thread per operation; so does the replay, so that the
        # sums are taken in the same order (more threads may differ in the last bits).
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["training"]["final_loss"] == pytest.approx(shown, abs=1e-6)
