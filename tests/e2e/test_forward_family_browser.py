"""The family forward recovery was made for, by clicking in a real browser.

A Linear shared by source and target, a bare `pe` buffer, a TransformerEncoder and a
TransformerDecoder under their own names, built batch_first=False and fed [batch, seq,
feature] as they come. Uploaded with its data: the dashboard finds the forward, shows how
data flows, trains the output layer, and the downloaded TorchScript file takes the
original weights, keeps every other tensor and fits the data better than the original.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from tests.dashboard.test_forward_family import check_retrained_family
from tests.e2e.harness import (
    TRAIN_SECONDS,
    choose_checkpoint,
    chromium,
    go_to,
    open_page,
    screenshot,
    wait_idle,
    wait_scored,
)
from tests.forward_zoo import FORWARD_BY_NAME

pytestmark = pytest.mark.e2e


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_the_seq2seq_family_recovered_by_clicking(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    case = FORWARD_BY_NAME["vector_seq2seq_fed_as_is"]
    original = case.make()
    data = case.data(original, 48)
    with chromium() as browser:
        page = open_page(browser, server)
        wait_scored(page)  # a file chosen while the demo's scoring redraws can be lost
        main, sidebar = page.get_by_test_id("stMain"), page.get_by_test_id("stSidebar")

        choose_checkpoint(page, [{"name": "family.pt", "mimeType": "application/octet-stream",
                                  "buffer": _saved(original.state_dict())}])  # fmt: skip
        expect(sidebar.get_by_text("family.pt").first).to_be_visible(timeout=60_000)
        wait_idle(page)
        go_to(page, "Data and baseline")
        uploads = main.locator("input[type=file]")
        if uploads.count() == 0:
            main.get_by_text("Use other data").click()
        main.locator("input[type=file]").first.set_input_files(
            files=[{"name": "family_data.pt", "mimeType": "application/octet-stream",
                    "buffer": _saved(data)}]
        )  # fmt: skip
        expect(main.get_by_text("Loss with the original weights")).to_be_visible(timeout=60_000)
        wait_scored(page)

        go_to(page, "Recover the model")
        wait_idle(page)
        expect(main.get_by_test_id("stGraphVizChart").first).to_be_visible(timeout=60_000)
        expect(main.get_by_text("found on your data").first).to_be_visible()
        screenshot(page, "family-recover")

        go_to(page, "Freeze and train")
        main.get_by_role("button", name="Only the output layer").click()
        wait_idle(page)
        head = main.get_by_test_id("stCheckbox").filter(has_text=re.compile(r"^out\b"))
        expect(head.get_by_role("checkbox")).to_be_checked()
        main.get_by_role("button", name="Start training").click()
        done = main.get_by_test_id("stAlertContainer").filter(has_text="Run 1")
        expect(done).to_be_visible(timeout=TRAIN_SECONDS * 1000)
        wait_idle(page)

        go_to(page, "Export")
        main.get_by_role("button", name="Export and verify").click()
        expect(main.get_by_text(re.compile(r"Every (required )?check passed"))).to_be_visible(
            timeout=180_000
        )
        button = main.get_by_test_id("stDownloadButton").filter(
            has_text=re.compile(r"^recovered\.pt ")
        )
        with page.expect_download() as info:
            button.get_by_role("button").click()
        target = tmp_path / "recovered.pt"
        info.value.save_as(target)
        page.context.close()

    check_retrained_family(target, original, data)
