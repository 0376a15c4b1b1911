"""Step 3 in a real browser: another dataset's entries replace the last one's in the boxes.

A browser sends every widget's value back with each run, so boxes kept under the same
keys put the previous dataset's entry names back (they showed 'src' for data with no such
entry, and the next run failed with "has no entry 'src'"); Streamlit's test runner does
not do that, hence a browser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.e2e.harness import REPO, chromium, go_to, open_page, wait_idle, wait_scored

pytestmark = pytest.mark.e2e


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
