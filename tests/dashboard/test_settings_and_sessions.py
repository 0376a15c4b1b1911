"""Hidden settings nobody checked never give a green result; work survives a reload; a
recovery plan carries every choice to another session."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import recovery_core as rc
from dashboard import scoring, state
from tests.dashboard.test_app import (
    APP,
    export_and_wait,
    go,
    open_app,
    settled,
    shown_key,
    studio,
    wait_for_run,
)


@pytest.fixture()
def unscored(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The demo with its hidden settings left at their defaults (nothing scored)."""
    monkeypatch.setattr(scoring, "maybe_start", lambda studio: None)
    return open_app()


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_the_unscored_demo_says_so_on_every_page_and_waits(unscored):
    at = unscored
    assert studio(at).unchecked()  # the demo's defaults are not how it was built
    for step in ("explore", "recover", "data", "train", "compare", "export"):
        go(at, step)
        assert any("unverified default" in m.value for m in at.main.markdown), step
    go(at, "data")
    assert not at.metric  # no baseline on settings nobody checked
    assert any("waits for the hidden settings" in c.value for c in at.main.caption)
    go(at, "train")
    assert at.button(key="train_start").disabled
    assert any("unverified" in c.value for c in at.main.caption)


def test_unverified_settings_run_only_by_choice_and_never_end_green(unscored, tmp_path):
    at = unscored
    at.button(key="status_accept").click().run()
    go(at, "data")
    assert [m.label for m in at.metric] == ["Loss with the original weights"]
    go(at, "train")
    at.number_input(key=shown_key(at, "train_epochs")).set_value(2).run()
    assert not at.button(key="train_start").disabled
    at.button(key="train_start").click().run()
    wait_for_run(at)
    assert not [s for s in at.success if "Run 1" in s.value]
    assert any("unverified settings" in w.value for w in at.warning)
    go(at, "export")
    export_and_wait(at)
    assert not any("the files hold the model you trained" in s.value for s in at.success)
    assert any("built on unverified settings" in w.value for w in at.warning)
    report = json.loads(Path(studio(at).exports[1].report_path).read_text())
    assert set(report["unverified_settings"]) == set(studio(at).runs[0].unverified)
    states = {row["name"]: row["state"] for row in report["settings"]}
    assert states["nhead"] == rc.plan.UNVERIFIED


def test_scoring_starts_by_itself_and_gives_the_settings_the_data_found():
    at = open_app(settle=False)
    assert studio(at).scoring is not None or studio(at).search is not None
    settled(at)
    s = studio(at)
    assert not s.unchecked() and s.settings_ok()
    assert s.spec.value("nhead") == 4  # how the demo was built
    assert set(s.states().values()) <= {rc.plan.FOUND, rc.plan.UNVERIFIED}
    assert any("found on your data" in m.value for m in at.main.markdown)


def test_a_second_session_on_the_same_file_and_data_gets_the_ranking_without_a_search():
    first = open_app()
    second = open_app()
    assert studio(second).search is studio(first).search  # the kept ranking, not a new one
    assert studio(second).spec.value("nhead") == 4
    assert any("found on your data" in m.value for m in second.main.markdown)
    scoring.forget_results()
    third = open_app()
    assert studio(third).search is not studio(first).search  # scored again
    assert studio(third).search.best_values == studio(first).search.best_values


def test_stop_ends_the_scoring_and_it_does_not_start_again_by_itself():
    scoring.forget_results()  # a kept ranking would end the scoring before the Stop
    at = open_app(settle=False)
    job = studio(at).scoring
    assert job is not None
    job.stop()
    job.join(60)
    settled(at)
    assert studio(at).search is None or job.result is not None
    at.run()
    assert studio(at).scoring is None  # a Stop is respected for this data and settings


@pytest.fixture()
def held_search(monkeypatch: pytest.MonkeyPatch):
    """Searches wait at their start until the test lets them go; `runs` counts them."""
    import threading

    scoring.forget_results()
    started, gate, runs = threading.Event(), threading.Event(), []
    search_once = scoring._Flight.run

    def held(flight, search):
        runs.append(flight)
        started.set()
        gate.wait(60)
        search_once(flight, search)

    monkeypatch.setattr(scoring._Flight, "run", held)
    yield started, gate, runs
    gate.set()


def test_sessions_scoring_the_same_at_once_wait_for_one_search(held_search):
    started, gate, runs = held_search
    first = open_app(settle=False)
    assert started.wait(30)
    second = open_app(settle=False)  # the demo in a second tab while the first scores
    assert studio(second).scoring is not None and studio(second).scoring.running
    gate.set()
    deadline = time.monotonic() + 30
    while studio(second).scoring.total == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    second.run()
    # The demo's 2,304 combinations are walked by a beam: the bar does not pretend that
    # all of them will be scored.
    (bar,) = second.get("progress")
    assert "too many to score all 2,304" in bar.proto.text, bar.proto.text
    assert "its time budget: 60 s" in bar.proto.text
    settled(first)
    settled(second)
    assert len(runs) == 1
    assert studio(second).search is studio(first).search
    assert studio(second).spec.value("nhead") == 4
    assert any("found on your data" in m.value for m in second.main.markdown)


def test_a_stop_in_one_session_leaves_the_shared_search_to_the_other(held_search):
    started, gate, runs = held_search
    first = open_app(settle=False)
    assert started.wait(30)
    second = open_app(settle=False)
    stopped = studio(first).scoring
    stopped.stop()
    stopped.join(10)
    assert stopped.stopped and not stopped.running  # the person who pressed Stop sees it end
    gate.set()
    settled(second)
    assert len(runs) == 1 and studio(second).search is not None
    assert studio(second).spec.value("nhead") == 4
    # When everybody waiting has stopped, the search itself ends.
    scoring.forget_results()
    gate.clear()
    third, fourth = open_app(settle=False), open_app(settle=False)
    assert len(runs) == 2  # one search for both
    for at in (third, fourth):
        studio(at).scoring.stop()
    gate.set()
    flight = runs[-1]
    assert flight.finished.wait(30)
    assert flight.result is None and flight.error is None
    assert not scoring._flights


def test_the_scoring_progress_counts_combinations_or_for_a_beam_the_time_it_may_take():
    every = scoring.ScoringJob("spec", ("nhead",), automatic=True, done=3, total=48)
    assert every.counted() == "3 of 48 combinations"
    assert every.fraction == 3 / 48
    beam = scoring.ScoringJob("spec", ("nhead",), automatic=True, done=45, total=2304)
    beam.started -= scoring.BUDGET_SECONDS / 4
    assert beam.counted().startswith("45 combinations scored so far; too many to score all 2,304")
    assert 0.25 <= beam.fraction < 0.5  # a quarter of the budget spent, not 45 / 2,304


def test_a_reload_finds_the_session_with_its_checkpoint_choices_and_runs():
    at = open_app()
    go(at, "recover")
    next(s for s in at.selectbox if s.label == "Attention heads (nhead)").set_value(2).run()
    go(at, "train")
    at.number_input(key=shown_key(at, "train_epochs")).set_value(1).run()
    at.button(key="train_start").click().run()
    wait_for_run(at)
    token = at.query_params[state.SESSION_PARAM]
    token = token[0] if isinstance(token, list) else token
    before = studio(at)

    again = AppTest.from_file(APP, default_timeout=90)  # a reload: a new script session
    again.query_params[state.SESSION_PARAM] = token
    again.run()
    assert studio(again) is before
    assert studio(again).spec.value("nhead") == 2
    assert [r.name for r in studio(again).runs] == ["Run 1"]

    stranger = AppTest.from_file(APP, default_timeout=90)
    stranger.query_params[state.SESSION_PARAM] = "not-a-session"
    stranger.run()
    assert studio(stranger) is not before and not studio(stranger).runs


def test_an_expired_session_is_not_restored(monkeypatch):
    at = open_app(settle=False)
    token = studio(at).token
    monkeypatch.setattr(state, "SESSION_TTL_SECONDS", -1.0)  # expired however fast the clock
    again = AppTest.from_file(APP, default_timeout=90)
    again.query_params[state.SESSION_PARAM] = token
    again.run()
    assert studio(again).token != token


def test_a_saved_plan_loads_into_another_session():
    at = open_app()
    go(at, "recover")
    next(s for s in at.selectbox if s.label == "Attention heads (nhead)").set_value(2).run()
    go(at, "train")
    at.button(key="train_preset_everything").click().run()
    at.number_input(key=shown_key(at, "train_epochs")).set_value(7).run()
    (button,) = [b for b in at.get("download_button") if b.proto.label == "Save recovery plan"]
    from dashboard import plans

    text = plans.current_plan(studio(at)).to_json()
    plan = rc.plan.RecoveryPlan.from_json(text)
    assert plan.settings["nhead"] == 2 and plan.states["nhead"] == rc.plan.CHOSEN
    assert plan.training.epochs == 7 and len(plan.trainable) > 1

    other = open_app()
    other.sidebar.file_uploader(key=plans.UPLOAD_KEY).set_value(
        ("plan.json", text.encode(), "application/json")
    )
    settled(other.run())
    assert studio(other).spec.value("nhead") == 2
    assert studio(other).training.epochs == 7
    assert studio(other).trainable == set(plan.trainable)
    assert any("loaded" in s.value for s in other.sidebar.success)


def test_a_plan_for_another_checkpoint_is_refused_in_words():
    at = open_app()
    from dashboard import plans

    plan = plans.current_plan(studio(at))
    wrong = rc.plan.RecoveryPlan(**{**plan.__dict__, "checkpoint_sha256": "0" * 64})
    at.sidebar.file_uploader(key=plans.UPLOAD_KEY).set_value(
        ("plan.json", wrong.to_json().encode(), "application/json")
    )
    at.run()
    errors = _texts(at.sidebar.error)
    assert errors and "another checkpoint" in errors[0]


def test_the_data_flow_diagram_is_drawn_from_the_wiring():
    at = go(open_app(), "recover")
    wiring = studio(at).spec.wiring
    (diagram,) = at.get("graphviz_chart")
    dot = diagram.proto.spec
    steps = list(wiring.steps())  # the steps after the inputs, each one node
    assert all(f'label="{step}"' in dot for step in steps)
    assert dot.count("->") >= len(steps) - 1
    assert any("How data flows" in s.value for s in at.subheader)
