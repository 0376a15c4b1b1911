"""Values set other than by their own widgets (new data, a loaded plan) show in them, in a
real browser.

A browser sends every widget's value back with each run, so a widget kept under the same
key puts the old value back: step 3's boxes showed 'src' for data with no such entry (the
next run failed with "has no entry 'src'"), and a loaded plan's epochs were replaced by
the box's. Streamlit's test runner does not send values back, hence a browser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.e2e.harness import REPO, chromium, go_to, open_page, save_plan, wait_idle, wait_scored

pytestmark = pytest.mark.e2e


def epochs_box(page):
    return page.get_by_test_id("stMain").get_by_label("Epochs (passes over the data)")


def set_epochs(page, epochs: int) -> None:
    epochs_box(page).fill(str(epochs))
    epochs_box(page).press("Enter")
    wait_idle(page)


def test_new_data_shows_its_own_entries_in_the_mapping_boxes(server, tmp_path: Path):
    from playwright.sync_api import expect

    demo = torch.load(REPO / "assets" / "demo_data.pt", weights_only=True)
    renamed = tmp_path / "renamed.pt"
    torch.save({"first": demo["src"], "second": demo["tgt"], "answer": demo["target"]}, renamed)
    with chromium() as browser:
        page = open_page(browser, server)
        wait_scored(page)
        go_to(page, "Data and baseline")
        main = page.get_by_test_id("stMain")
        main.locator("input[type=file]").set_input_files(str(renamed))
        expect(main).to_contain_text("renamed.pt")
        wait_idle(page)

        def shown(label: str):
            return main.get_by_role("combobox", name=label, exact=True)

        for visit in range(2):  # as opened, then after the page ran again
            expect(shown("Model input 'src'")).to_have_value("first")
            expect(shown("Model input 'tgt'")).to_have_value("second")
            expect(shown("Target (the right answers)")).to_have_value("answer")
            expect(main).not_to_contain_text("has no entry")
            expect(main.get_by_text("Loss with the original weights")).to_be_visible(
                timeout=120_000
            )
            if visit == 0:
                go_to(page, "Explore the file")
                go_to(page, "Data and baseline")
        page.context.close()


def test_a_loaded_plan_shows_its_training_settings_on_the_page_it_was_loaded_on(
    server, tmp_path: Path
):
    from playwright.sync_api import expect

    with chromium() as browser:
        page = open_page(browser, server)
        wait_scored(page)
        go_to(page, "Freeze and train")
        set_epochs(page, 3)
        plan = tmp_path / "plan.json"
        save_plan(page, plan)
        set_epochs(page, 7)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_test_id("stFileUploader").filter(has_text="Load a recovery plan").locator(
            "input[type=file]"
        ).set_input_files(str(plan))
        expect(sidebar).to_contain_text("training settings loaded")
        wait_idle(page)
        for visit in range(2):  # as loaded, then after the page ran again
            expect(epochs_box(page)).to_have_value("3")
            if visit == 0:
                go_to(page, "Explore the file")
                go_to(page, "Freeze and train")
        page.context.close()
