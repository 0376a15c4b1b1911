"""The live evaluation line: taken at every epoch end and between them on long epochs,
shown without changing which weights are kept; a time-left estimate that does not swing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recovery_core.fit import train
from recovery_core.fit.freeze import plan_freeze
from recovery_core.fit.train import TrainingConfig, TrainingRun
from recovery_core.io.data import LossFunction

MSE = LossFunction("mse")


def _run(monkeypatch: pytest.MonkeyPatch, eval_seconds: float) -> TrainingRun:
    monkeypatch.setattr(train, "EVAL_SECONDS", eval_seconds)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.Dropout(0.2), nn.Tanh(), nn.Linear(12, 2))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(96, 5, generator=g)
    y = torch.cos(x[:, :2]) * 2
    plan = plan_freeze(model, ["*"])
    config = TrainingConfig(method="adam", lr=1e-2, epochs=4, batch_size=16, val_fraction=0.25)
    run = TrainingRun(model, plan, (x,), y, MSE, config)
    run.run()
    return run


def test_every_epoch_end_has_the_evaluation_loss_and_long_epochs_have_more(monkeypatch):
    run = _run(monkeypatch, 0.0)  # "long epochs": every step is past the interval
    events = run.events_since(0)
    ends = [e for e in events if e.eval_loss is not None]
    assert len(ends) == 4
    assert all(e.monitor_loss == e.eval_loss for e in ends)
    between = [e for e in events if e.eval_loss is None and e.monitor_loss is not None]
    assert len(between) == len(events) - 4  # every other step was evaluated too
    assert all(math.isfinite(e.monitor_loss) for e in events)


def test_points_between_epochs_do_not_change_the_kept_weights(monkeypatch):
    often = _run(monkeypatch, 0.0).result
    rarely = _run(monkeypatch, math.inf).result
    assert often.final_loss == rarely.final_loss
    assert often.best_step == rarely.best_step


def test_a_short_epoch_is_evaluated_only_at_its_end(monkeypatch):
    events = _run(monkeypatch, math.inf).events_since(0)
    assert [e.step for e in events if e.monitor_loss is not None] == [
        e.step for e in events if e.eval_loss is not None
    ]


def test_the_verdict_uses_the_measure_of_the_line(monkeypatch):
    run = _run(monkeypatch, 0.0)
    result = run.result
    ends = [e.eval_loss for e in run.events_since(0) if e.eval_loss is not None]
    assert result.best_loss == min([result.baseline_loss, *ends])
    assert result.final_loss == pytest.approx(result.best_loss, rel=1e-6)
