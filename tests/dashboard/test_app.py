"""The dashboard driven step by step with Streamlit's AppTest (no browser, real core)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

import recovery_core as rc

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
DEMO = REPO / "assets" / "demo_checkpoint.pt"


def open_app(settle: bool = True) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if settle:
        settled(at)
    return at


def studio(at: AppTest):
    return at.session_state["studio"]


def shown_key(at: AppTest, name: str) -> str:
    """The key of a widget that shows a value set elsewhere too, as the page has it now."""
    from dashboard.state import widget_key

    return widget_key(studio(at), name)


def settled(at: AppTest, timeout: float = 120) -> AppTest:
    """Rerun as the browser's refresh does until the background scoring has ended and
    its result is applied."""
    deadline = time.monotonic() + timeout
    while studio(at).scoring is not None:
        assert time.monotonic() < deadline, "scoring did not end in time"
        job = studio(at).scoring
        if job.running:
            job.join(0.2)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, step: str) -> AppTest:
    at.switch_page(f"steps/{step}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return settled(at)


def wait_for_run(at: AppTest, timeout: float = 120) -> None:
    """Poll as the browser does: rerun until the background run has ended."""
    deadline = time.monotonic() + timeout
    while (record := studio(at).active_run) is not None:
        assert time.monotonic() < deadline, "training did not end in time"
        record.run.join(0.3)  # returns as soon as the run's thread ends
        at.run()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def export_and_wait(at: AppTest, timeout: float = 180) -> None:
    """Click Export and poll as the browser does until every file is written and checked."""
    at.button(key="export_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    deadline = time.monotonic() + timeout
    while jobs := [j for j in studio(at).export_jobs.values() if j.running]:
        assert time.monotonic() < deadline, "the export did not end in time"
        jobs[0].join(0.3)
        at.run()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def start_training(at: AppTest, epochs: int, method: str | None = None) -> None:
    go(at, "train")
    if method is not None:  # else the page's own choice ("auto")
        at.selectbox(key=shown_key(at, "train_method")).set_value(method).run()
    at.number_input(key=shown_key(at, "train_epochs")).set_value(epochs).run()
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def mapping_box(at: AppTest, box: str):
    """One of step 3's entry boxes ("input_0", "target", "loss") as the page shows it now."""
    return at.selectbox(key=shown_key(at, f"data_{box}"))


def test_the_demo_opens_on_the_first_run_with_its_tensor_table():
    at = open_app()
    assert at.title[0].value == "Explore the file"
    table = at.dataframe[0].value
    assert "src_tok_emb.weight" in set(table["name"])
    assert set(table["kind"]) == {"parameter", "buffer"}  # the positional table is a buffer
    assert any("demo_checkpoint.pt" in m.value for m in at.sidebar.markdown)
    assert not at.error


def test_clicking_a_tensor_shows_its_statistics_and_histogram():
    at = open_app()
    at.session_state["explore_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert any("Values of" in s.value for s in at.subheader)
    assert [m.label for m in at.metric][:2] == ["mean", "spread (std)"]


def test_a_click_on_any_cell_of_a_row_selects_that_row():
    at = open_app()
    name = at.dataframe[0].value["name"].iloc[2]
    at.session_state["explore_table"] = {
        "selection": {"rows": [], "columns": [], "cells": [(2, "shape")]}
    }
    at.run()
    assert any(f"Values of `{name}`" in s.value for s in at.subheader)


def test_ticking_a_checkbox_neither_rereads_the_file_nor_reinfers(monkeypatch):
    calls = {"load": 0, "infer": 0}
    load, infer = rc.load_checkpoint, rc.infer_spec

    def counted_load(*args, **kwargs):
        calls["load"] += 1
        return load(*args, **kwargs)

    def counted_infer(*args, **kwargs):
        calls["infer"] += 1
        return infer(*args, **kwargs)

    monkeypatch.setattr(rc, "load_checkpoint", counted_load)
    monkeypatch.setattr(rc, "infer_spec", counted_infer)
    st.cache_resource.clear()
    at = go(open_app(), "train")
    assert calls == {"load": 1, "infer": 1}
    box = next(c for c in at.checkbox if c.label.startswith("encoder.layers.0"))
    # Its tooltip says what such a layer does, in its family's words.
    assert box.help.endswith(rc.families.meaning("TransformerEncoderLayer")), box.help
    box.check().run()
    assert "transformer.encoder.layers.0" in studio(at).trainable
    assert calls == {"load": 1, "infer": 1}


def test_changing_nhead_rebuilds_the_model():
    at = go(open_app(), "recover")
    nhead = next(s for s in at.selectbox if s.label == "Attention heads (nhead)")
    nhead.set_value(2).run()
    assert studio(at).spec.value("nhead") == 2
    assert studio(at).spec.hyperparameter("nhead").source == "user"
    texts = [s.value for s in at.success]
    assert any("Every weight fits" in t for t in texts)
    # Checked on the data's own examples (the demo's targets are 8 tokens long).
    assert any("runs on two examples of your data; output shape (2, 8, 16)" in t for t in texts)
    # The code shown for download follows the new value.
    assert "nhead: int = 2," in at.code[0].value


def test_scoring_ranks_the_candidates_and_finds_the_demo_settings():
    at = go(open_app(), "recover")
    at.multiselect(key="recover_search_names").set_value(["nhead", "scale_embedding"]).run()
    at.button(key="recover_score").click().run()
    settled(at)
    result = studio(at).search
    losses = [c.loss for c in result.ranking if c.error is None]
    assert len(losses) == 12 and losses == sorted(losses)
    # The demo was trained with nhead=4 and scaled embeddings: the data says so.
    assert studio(at).spec.value("nhead") == 4
    assert studio(at).spec.value("scale_embedding") is True
    assert any("Best:" in s.value for s in at.success)


def test_training_runs_to_the_end_below_the_baseline():
    at = open_app()
    start_training(at, epochs=3)
    assert studio(at).active_run is not None
    wait_for_run(at)
    record = studio(at).runs[0]
    assert record.run.status == "finished"
    assert record.losses, "no loss was published"
    assert record.result.final_loss < record.baseline
    assert any("Run 1 finished" in s.value for s in at.success)
    go(at, "compare")
    assert at.dataframe[0].value["run"].tolist() == ["Run 1"]


def test_a_running_training_can_be_stopped():
    at = open_app()
    # Adam: only the output layer trains, which "auto" solves exactly in one step.
    start_training(at, epochs=5000, method="adam")
    # Looking at other steps and ticking boxes meanwhile does not end the run.
    go(at, "compare")
    go(at, "train")
    next(c for c in at.checkbox if c.label.startswith("decoder.norm")).check().run()
    assert studio(at).runs[0].running
    at.button(key="train_stop").click().run()
    wait_for_run(at, timeout=60)
    record = studio(at).runs[0]
    assert record.run.status == "stopped"
    assert record.result is not None  # the best weights are kept
    assert record.result.steps < 5000 * 8


def test_export_writes_files_that_pass_verification(tmp_path):
    at = open_app()
    start_training(at, epochs=2)
    wait_for_run(at)
    go(at, "export")
    at.button(key="export_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # In the background, TorchScript first: its download is offered while the others are
    # still written, and the verdict waits for all of them.
    job = studio(at).export_jobs[1]
    deadline = time.monotonic() + 120
    while "torchscript" not in job.exporter.done and job.running:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    if job.running:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        labels = [b.label for b in at.get("download_button")]
        assert any(label.startswith("recovered.pt ") for label in labels), labels
        assert not any("check passed" in s.value for s in at.success)
        assert at.button(key="export_go").disabled  # one export at a time
    go(at, "train")  # the other pages stay usable meanwhile
    go(at, "export")
    while job.running:
        job.join(0.3)
        at.run()
    at.run()
    # TorchScript first (~3 s alone on 2 cores; the time itself is a benchmark's to hold).
    assert job.ready_after["torchscript"] == min(job.ready_after.values())
    assert any("check passed: the files hold the model" in s.value for s in at.success)
    labels = [b.label for b in at.get("download_button")]
    assert any(label.startswith("recovered.pt ") for label in labels)
    bundle = studio(at).exports[1]
    model = torch.jit.load(bundle.files["torchscript"])
    data = torch.load(REPO / "assets" / "demo_data.pt", weights_only=True)
    with torch.no_grad():
        assert model(data["src"][:3], data["tgt"][:3]).shape == (3, 8, 16)


@pytest.mark.parametrize(
    "content",
    [b"not a checkpoint at all", DEMO.read_bytes()[:5000], b""],
    ids=["text", "truncated", "empty"],
)
def test_a_bad_upload_explains_itself_and_keeps_the_previous_checkpoint(content):
    at = open_app()
    before = studio(at).opened
    at.sidebar.file_uploader(key="source_upload").set_value(
        ("../../x.pt", content, "application/octet-stream")
    )
    settled(at.run())
    assert not at.exception
    assert studio(at).opened is before
    (error,) = at.sidebar.error
    assert error.value.startswith("Could not open x.pt")
    assert "Traceback" not in error.value and str(REPO) not in error.value
    assert any("demo_checkpoint.pt" in m.value for m in at.sidebar.markdown)
    assert at.dataframe[0].value["name"].iloc[0] == "src_tok_emb.weight"  # still usable
    at.sidebar.file_uploader(key="source_upload").set_value(None).run()  # removing the file
    assert not at.sidebar.error  # ... removes its message too


def test_an_upload_opens_for_this_session_only():
    first, second = open_app(), open_app()
    first.sidebar.file_uploader(key="source_upload").set_value(
        ("mine.pt", DEMO.read_bytes(), "application/octet-stream")
    )
    first.run()
    assert studio(first).opened.source.label == "mine.pt"
    second.run()
    assert studio(second).opened.source.label == "demo_checkpoint.pt"
    assert studio(first) is not studio(second)


def test_a_model_without_a_forward_is_not_scored_and_each_page_says_why():
    # A Transformer decoder on its own reads a memory nobody supplies: no forward fits.
    from tests.real_world_zoo import bare_transformer_decoder

    at = open_app()  # the demo's data stays mapped
    at.sidebar.file_uploader(key="source_upload").set_value(
        ("decoder.pt", _saved(bare_transformer_decoder().state_dict()), "application/octet-stream")
    )
    at.run()
    assert studio(at).spec.wiring is None and studio(at).spec.free
    assert studio(at).scoring is None  # once, 1,639 failing forwards before saying so
    banner = [i.value for i in at.main.info]
    assert any("No forward pass was recognised" in text for text in banner), banner
    for step in ("recover", "train"):
        go(at, step)
        page = [i.value for i in at.main.info] + [c.value for c in at.main.caption]
        assert any("No forward pass was recognised" in text for text in page), (step, page)
        assert studio(at).scoring is None


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def open_model_and_data(weights: dict, data: dict) -> AppTest:
    """A fresh app with `weights` uploaded as the checkpoint and `data` on step 3."""
    at = open_app()
    at.sidebar.file_uploader(key="source_upload").set_value(
        ("model.pt", _saved(weights), "application/octet-stream")
    )
    settled(at.run())
    go(at, "data")
    at.file_uploader(key="data_upload").set_value(
        ("data.pt", _saved(data), "application/octet-stream")
    )
    return settled(at.run())


def test_an_uploaded_model_and_dataset_go_through_every_step():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = torch.randn(64, 4)
    with torch.no_grad():  # a changed task the output layer can learn (held-out data shows it)
        data = {"x": x, "y": 2.0 * mlp(x) + 1.0}
    at = open_model_and_data(mlp.state_dict(), data)
    assert studio(at).mapping.inputs == ("x",) and studio(at).mapping.target == "y"
    assert [m.label for m in at.metric] == ["Loss with the original weights"]
    go(at, "train")
    at.selectbox(key=shown_key(at, "train_method")).set_value("lstsq").run()
    at.button(key="train_start").click().run()
    wait_for_run(at)
    result = studio(at).runs[0].result
    assert result.method_used.startswith("lstsq")
    assert result.final_loss < result.baseline_loss
    go(at, "export")
    export_and_wait(at)
    assert any("check passed: the files hold the model" in s.value for s in at.success)


def test_data_kept_across_checkpoints_is_matched_to_the_new_model():
    torch.manual_seed(0)
    first = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    second = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = {"x": torch.randn(64, 4), "y": torch.randn(64, 3)}
    at = open_app()
    upload = at.sidebar.file_uploader(key="source_upload")
    settled(
        upload.set_value(("first.pt", _saved(first.state_dict()), "application/octet-stream")).run()
    )
    go(at, "data")
    at.file_uploader(key="data_upload").set_value(
        ("d.pt", _saved(data), "application/octet-stream")
    )
    settled(at.run())

    upload = at.sidebar.file_uploader(key="source_upload")
    settled(
        upload.set_value(
            ("second.pt", _saved(second.state_dict()), "application/octet-stream")
        ).run()
    )
    go(at, "data")

    assert studio(at).opened.source.label == "second.pt"
    assert studio(at).mapping.inputs == ("x",) and studio(at).mapping.target == "y"
    assert [m.label for m in at.metric] == ["Loss with the original weights"]

    # A CNN that reads 3 channels, given 5: no setting lets the shapes through. The search
    # says where they break at once, and nothing counts as found.
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 3),
    )  # fmt: skip
    upload = at.sidebar.file_uploader(key="source_upload")
    settled(
        upload.set_value(("cnn.pt", _saved(cnn.state_dict()), "application/octet-stream")).run()
    )
    go(at, "data")
    images = {"x": torch.randn(64, 5, 16, 16), "y": torch.randn(64, 3)}
    at.file_uploader(key="data_upload").set_value(
        ("i.pt", _saved(images), "application/octet-stream")
    )
    settled(at.run())  # mapped, scored and shown
    assert studio(at).mapping is not None and studio(at).search.best is None
    assert studio(at).search.scored == 0  # the shapes told: not one forward ran
    banner = studio(at).scoring_error.text
    assert "0 (Conv2d) cannot read (5, 16, 16) per sample" in banner, banner
    assert any(banner in e.value for e in at.error)
    assert rc.plan.FOUND not in studio(at).states().values()


def test_data_the_guess_cannot_map_is_kept_for_the_person_to_map():
    """Sequences (N, T, 4) suit the Linear but not the guessed (N, 4) input: map by hand."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    data = {"x": torch.randn(64, 5, 4), "y": torch.randn(64, 5, 3)}
    at = open_app()
    upload = at.sidebar.file_uploader(key="source_upload")
    settled(
        upload.set_value(("mlp.pt", _saved(mlp.state_dict()), "application/octet-stream")).run()
    )
    go(at, "data")
    at.file_uploader(key="data_upload").set_value(
        ("d.pt", _saved(data), "application/octet-stream")
    )
    settled(at.run())
    assert studio(at).dataset.source_name == "d.pt" and studio(at).mapping is None
    assert "could not be guessed" in at.main.error[0].value

    settled(at.button(key="data_use_mapping").click().run())

    assert studio(at).mapping.inputs == ("x",) and studio(at).mapping.target == "y"
    assert studio(at).mapping.loss == "mse" and not at.main.error
    assert [m.label for m in at.metric] == ["Loss with the original weights"]


def test_an_export_reports_the_data_its_run_trained_on():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    data = {"x": torch.randn(64, 4), "x2": torch.randn(64, 4), "y": torch.randn(64, 3)}
    at = open_app()
    upload = at.sidebar.file_uploader(key="source_upload")
    settled(
        upload.set_value(("mlp.pt", _saved(mlp.state_dict()), "application/octet-stream")).run()
    )
    go(at, "data")
    at.file_uploader(key="data_upload").set_value(
        ("d.pt", _saved(data), "application/octet-stream")
    )
    settled(at.run())
    assert studio(at).mapping.inputs == ("x",)
    start_training(at, epochs=1)
    wait_for_run(at)
    go(at, "data")
    settled(mapping_box(at, "input_0").set_value("x2").run())  # step 3 changes after the run
    assert studio(at).mapping.inputs == ("x2",)

    go(at, "export")
    export_and_wait(at)

    bundle = studio(at).exports[1]
    report = json.loads(Path(bundle.report_path).read_text())
    assert report["data"] == "d.pt"
    assert report["mapping"] == {"inputs": ["x"], "target": "y", "loss": "mse"}


def test_a_bad_dataset_upload_explains_itself_and_keeps_the_demo_data():
    at = go(open_app(), "data")
    before = studio(at).dataset
    at.file_uploader(key="data_upload").set_value(
        ("d.pt", b"\x00garbage", "application/octet-stream")
    )
    settled(at.run())
    assert studio(at).dataset is before
    assert [e.value for e in at.main.error][0].startswith("Could not use d.pt")
    assert at.metric[0].label == "Loss with the original weights"  # the page still works


class _TouchesCanary:
    """Unpickling this would run `touch <canary>`: the upload must never get that far."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.canary}",))


def test_an_unsafe_pickle_upload_runs_no_code_and_keeps_the_previous_checkpoint(tmp_path):
    canary = tmp_path / "canary"
    at = open_app()
    before = studio(at).opened
    payload = _saved({"weight": torch.zeros(2), "evil": _TouchesCanary(canary)})
    at.sidebar.file_uploader(key="source_upload").set_value(
        ("evil.pt", payload, "application/octet-stream")
    )
    settled(at.run())
    assert not canary.exists()
    assert studio(at).opened is before
    (error,) = at.sidebar.error
    assert "weights_only=False" not in error.value


def test_choosing_the_target_updates_the_mapping_or_explains_why_not():
    at = go(open_app(), "data")
    before = studio(at).mapping
    mapping_box(at, "target").set_value("src").run()  # also an input: refused
    assert studio(at).mapping == before
    assert any("cannot be both an input and the target" in e.value for e in at.main.error)
    mapping_box(at, "target").set_value("target").run()
    assert studio(at).mapping.target == "target" and not at.main.error
    # Mean squared error cannot compare token scores with token ids: the baseline says so.
    mapping_box(at, "loss").set_value("mse").run()
    assert studio(at).mapping.loss == "mse"
    (error,) = at.main.error
    assert "shape" in error.value and "Traceback" not in error.value
    # A dead end is closed with its reason beside it, not left to fail again.
    settled(at.switch_page("steps/train.py").run())
    assert at.button(key="train_start").disabled
    assert any("cannot be evaluated on this data" in c.value for c in at.main.caption)


def test_a_path_on_the_server_opens_lazily_and_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("RECOVERY_SERVER_PATHS", "on")  # off by default
    at = open_app()
    at.sidebar.text_input(key="source_path").set_value(str(DEMO)).run()
    at.sidebar.button(key="source_open_path").click().run()
    assert studio(at).opened.source.kind == "path"
    assert not at.sidebar.error
    monkeypatch.setenv("RECOVERY_SERVER_PATHS", "off")
    at.run()
    assert not [t for t in at.sidebar.text_input if t.key == "source_path"]


def test_nan_and_infinite_weights_load_with_a_visible_warning():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    state = model.state_dict()
    state["0.weight"][0, 0] = float("nan")
    state["2.bias"][1] = float("inf")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    at = open_app()
    assert not at.warning  # the demo's values are all finite
    at.sidebar.file_uploader(key="source_upload").set_value(
        ("broken.pt", buffer.getvalue(), "application/octet-stream")
    )
    settled(at.run())
    assert not at.exception
    (warning,) = [w for w in at.main.warning if "not numbers" in w.value]
    assert warning.value.startswith("2 tensors hold values that are not numbers or are infinite")
    assert "`0.weight` (1 NaN, 0 infinite)" in warning.value
    assert "`2.bias` (0 NaN, 1 infinite)" in warning.value


def test_a_requested_value_scan_stays_shown_after_other_clicks(monkeypatch):
    from dashboard import state

    monkeypatch.setattr(state, "VALUE_SCAN_BYTES", 0)  # every file is "big": scanned on request
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    weights = model.state_dict()
    weights["0.weight"][0, 0] = float("nan")
    at = open_app()
    upload = at.sidebar.file_uploader(key="source_upload")
    upload.set_value(("broken.pt", _saved(weights), "application/octet-stream")).run()
    scan = f"explore_scan:{studio(at).opened.source.key}"

    def nan_warnings() -> int:
        return len([w for w in at.main.warning if "not numbers" in w.value])

    assert not nan_warnings()
    at.button(key=scan).click().run()
    assert nan_warnings() == 1
    at.text_input(key="explore_filter").set_value("0").run()

    assert nan_warnings() == 1
    assert not [b for b in at.button if b.key == scan]
