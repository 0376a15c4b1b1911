"""The dashboard's scoring of the hidden settings: the command line's search, shown as
soon as it ends."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from recovery_core.session import Recovery

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
DEMO = REPO / "assets" / "demo_checkpoint.pt"
DEMO_DATA = REPO / "assets" / "demo_data.pt"


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_demo_is_ranked_on_the_same_samples_and_losses_as_recovery_recover():
    """A plan found in the app and replayed by `recovery recover` must rest on the same
    ranking: the app scored the demo on 128 of its 256 samples and showed other losses."""
    from dashboard import scoring

    scoring.forget_results()  # this test's own search, not one kept by another test
    at = _run(AppTest.from_file(APP, default_timeout=120))
    studio = at.session_state["studio"]
    while studio.scoring is not None:  # poll as the page's refresh does
        studio.scoring.join(0.5)
        _run(at)
    shown = studio.search

    cli = Recovery.open(str(DEMO))
    cli.map_data(str(DEMO_DATA))
    found = cli.search()

    assert shown is not None and found is not None
    assert shown.best is not None and found.best is not None
    assert shown.best.samples == found.best.samples == cli.dataset.n_samples
    assert shown.best_values == found.best_values
    assert abs(shown.best.loss - found.best.loss) <= 1e-5 * abs(found.best.loss)


def test_a_search_the_shapes_refuse_is_reported_by_the_run_that_mapped_the_data():
    """A CNN that reads 3 channels given 5: the search ends in milliseconds, and the page
    the upload drew says so, without waiting for the progress's next refresh."""
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 3),
    )  # fmt: skip
    at = _run(AppTest.from_file(APP, default_timeout=120))
    studio = at.session_state["studio"]
    if studio.scoring is not None:  # the demo's own scoring is not what this is about
        studio.scoring.stop()
        studio.scoring.join()
    at.sidebar.file_uploader(key="source_upload").set_value(
        ("cnn.pt", _saved(cnn.state_dict()), "application/octet-stream")
    )
    _run(at)
    _run(at.switch_page("steps/data.py"))
    images = {"x": torch.randn(64, 5, 16, 16), "y": torch.randn(64, 3)}
    at.file_uploader(key="data_upload").set_value(
        ("i.pt", _saved(images), "application/octet-stream")
    )

    _run(at)  # maps the data and starts the search: one run, no refresh after it

    assert studio.scoring is None and studio.search is not None
    assert studio.search.scored == 0
    assert any("0 (Conv2d) cannot read (5, 16, 16) per sample" in e.value for e in at.error)
