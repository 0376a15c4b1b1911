"""Training runs: closed form, gradient methods, caching, guards, background control."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recovery_core.errors import TrainingError
from recovery_core.fit.freeze import plan_freeze
from recovery_core.fit.train import TrainingConfig, TrainingRun
from recovery_core.io.data import LossFunction

MSE = LossFunction("mse")
CE = LossFunction("cross_entropy")


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


def regression(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    return x, torch.sin(x[:, :3]) + 0.1 * torch.randn(n, 3, generator=g)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(F.relu(self.bn(self.conv(x)))).flatten(1))


class LSTMTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(12, 8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embedding(tokens))[0])


def frozen_keys_unchanged(original: nn.Module, trained: nn.Module, trainable_keys) -> list[str]:
    before, after = original.state_dict(), trained.state_dict()
    return [k for k in before if k not in trainable_keys and not torch.equal(before[k], after[k])]


def test_closed_form_reaches_the_least_squares_optimum_and_leaves_the_callers_model_alone():
    model, (x, y) = mlp(), regression()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    plan = plan_freeze(model, ["5"])
    result = TrainingRun(model, plan, (x,), y, MSE).run()

    assert result.method_used == "lstsq (closed form)" and result.steps == 1
    model.eval()
    with torch.no_grad():
        features = model[:5](x).double()
    a = torch.cat([features, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    optimum = a @ torch.linalg.lstsq(a, y.double(), driver="gelsd").solution
    # ReLU features can be rank-deficient: the optimum is unique in output space.
    with torch.no_grad():
        fitted = result.model(x)
    torch.testing.assert_close(fitted, optimum.float(), atol=1e-4, rtol=1e-4)
    assert result.final_loss == pytest.approx(F.mse_loss(optimum, y.double()).item(), rel=1e-4)
    assert result.final_loss < result.baseline_loss
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert frozen_keys_unchanged(model, result.model, plan.trainable_keys) == []


@pytest.mark.parametrize("cache", [True, False])
def test_adam_on_a_cnn_head_beats_the_baseline_and_frozen_batchnorm_keeps_its_statistics(cache):
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():  # non-trivial running statistics, so a change would show
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(48, 1, 6, 6)
    y = torch.randint(0, 3, (48,))
    plan = plan_freeze(model, ["head"])
    config = TrainingConfig(method="adam", lr=0.05, epochs=8, batch_size=16, cache=cache)
    result = TrainingRun(model, plan, (x,), y, CE, config).run()

    assert result.final_loss < result.baseline_loss
    assert result.cached_prefix is cache
    assert frozen_keys_unchanged(model, result.model, plan.trainable_keys) == []
    assert not torch.equal(model.head.weight, result.model.head.weight)


def test_cached_and_uncached_training_give_the_same_losses_and_weights():
    model, (x, y) = mlp(), regression()
    plan = plan_freeze(model, ["3", "5"])  # a Sequential tail: 3, 4, 5
    runs = {}
    for cache in (True, False):
        config = TrainingConfig(method="adam", lr=1e-2, epochs=3, batch_size=16, cache=cache)
        run = TrainingRun(model, plan, (x,), y, MSE, config)
        runs[cache] = (run.run(), [e.loss for e in run.events_since(0)])
    (cached, cached_losses), (full, full_losses) = runs[True], runs[False]
    assert cached.cached_prefix and "frozen-prefix cache" in cached.method_used
    assert not full.cached_prefix and "full forward" in full.method_used
    assert len(cached_losses) == len(full_losses) == 12
    torch.testing.assert_close(
        torch.tensor(cached_losses), torch.tensor(full_losses), atol=1e-5, rtol=1e-5
    )
    for key, value in cached.model.state_dict().items():
        torch.testing.assert_close(value, full.model.state_dict()[key], atol=1e-5, rtol=1e-5)


def test_a_sequential_tail_is_cached_even_when_later_layers_are_frozen():
    model, (x, y) = mlp(), regression()
    plan = plan_freeze(model, ["3"])  # 4 and 5 run after it, frozen, in eval mode
    result = TrainingRun(model, plan, (x,), y, MSE, TrainingConfig(method="adam", epochs=1)).run()
    assert result.cached_prefix and "model[3:]" in result.method_used
    assert frozen_keys_unchanged(model, result.model, plan.trainable_keys) == []


def test_a_trainable_middle_layer_of_a_custom_forward_falls_back_to_the_full_forward():
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = torch.randn(32, 1, 6, 6), torch.randint(0, 3, (32,))
    plan = plan_freeze(model, ["bn"])  # the head after it is frozen and not a Sequential
    config = TrainingConfig(method="adam", epochs=1, batch_size=8)
    result = TrainingRun(model, plan, (x,), y, CE, config).run()
    assert not result.cached_prefix
    assert result.method_used.startswith("adam (full forward:")
    changed = [
        k
        for k in model.state_dict()
        if not torch.equal(model.state_dict()[k], result.model.state_dict()[k])
    ]
    assert set(changed) <= set(plan.trainable_keys) and "bn.weight" in changed


def test_lstm_sequence_head_trains_on_cached_features_with_cross_entropy():
    torch.manual_seed(0)
    model = LSTMTagger()
    tokens = torch.randint(0, 12, (32, 7))
    labels = tokens % 5  # learnable from the embedding alone
    plan = plan_freeze(model, ["head"])
    config = TrainingConfig(method="adam", lr=0.05, epochs=10, batch_size=8)
    result = TrainingRun(model, plan, (tokens,), labels, CE, config).run()
    assert result.method_used.startswith("adam with frozen-prefix cache")
    assert result.final_loss < 0.9 * result.baseline_loss


def test_a_cross_entropy_head_is_solved_exactly_by_logistic_regression():
    # Only the output layer trains under cross-entropy: a convex problem on the cached
    # features, solved to its optimum in one step where Adam takes epochs to approach it.
    torch.manual_seed(0)
    model = LSTMTagger()
    tokens = torch.randint(0, 12, (64, 7))
    labels = tokens % 5
    labels[:3, :2] = -100  # positions cross-entropy ignores
    original = {k: v.clone() for k, v in model.state_dict().items()}
    plan = plan_freeze(model, ["head"])
    solved = TrainingRun(model, plan, (tokens,), labels, CE).run()
    adam = TrainingRun(
        model, plan, (tokens,), labels, CE,
        TrainingConfig(method="adam", lr=0.05, epochs=30, batch_size=8),
    ).run()  # fmt: skip

    assert solved.method_used == "lstsq (closed form: logistic regression)"
    assert solved.steps == 1
    assert solved.final_loss < adam.final_loss < solved.baseline_loss
    # The gradient of the loss (with the fit's small ridge) vanishes at the solution.
    head = solved.model.head
    with torch.no_grad():
        features = model.rnn(model.embedding(tokens))[0].reshape(-1, 8)
    weight = head.weight.detach().clone().requires_grad_()
    bias = head.bias.detach().clone().requires_grad_()
    loss = F.cross_entropy(features @ weight.T + bias, labels.reshape(-1))
    grad_w, grad_b = torch.autograd.grad(loss, (weight, bias))
    assert float(grad_w.abs().max()) < 0.02 and float(grad_b.abs().max()) < 1e-3
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert frozen_keys_unchanged(model, solved.model, plan.trainable_keys) == []



def nan_after(run_steps: list[int], step: int):
    """MSE that turns NaN for training steps after `step` (evaluation stays finite)."""

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = F.mse_loss(out, target)
        if torch.is_grad_enabled():
            run_steps.append(1)
            if len(run_steps) > step:
                return value * float("nan")
        return value

    return loss


def test_nan_loss_stops_the_run_and_restores_the_best_weights():
    model, (x, y) = mlp(), regression()
    plan = plan_freeze(model, ["3", "5"])
    calls: list[int] = []
    config = TrainingConfig(method="adam", lr=1e-2, epochs=50, batch_size=32)  # 2 steps an epoch
    run = TrainingRun(model, plan, (x,), y, nan_after(calls, 6), config)
    result = run.run()

    assert run.status == "failed" and result.stopped_early
    assert "nan" in result.message.lower() and "best weights" in result.message
    assert result.best_step in (2, 4, 6) and result.steps == 6
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    result.model.eval()
    with torch.no_grad():
        recomputed = F.mse_loss(result.model(x), y).item()
    assert recomputed == pytest.approx(result.best_loss, rel=1e-5)
    assert result.final_loss == pytest.approx(result.best_loss, rel=1e-5)
    assert result.best_loss < result.baseline_loss


def test_best_weights_are_kept_not_the_last():
    model, (x, y) = mlp(), regression()
    plan = plan_freeze(model, ["5"])
    config = TrainingConfig(method="sgd", lr=3.0, epochs=6, batch_size=64)  # diverges
    run = TrainingRun(model, plan, (x,), y, MSE, config)
    result = run.run()
    eval_losses = [e.eval_loss for e in run.events_since(0) if e.eval_loss is not None]
    finite = [v for v in eval_losses if v == v and v != float("inf")]
    best = min([result.baseline_loss, *finite])
    assert result.final_loss == pytest.approx(best, rel=1e-5)
    assert 0 < result.best_step < result.steps  # the run went on past its best point


def test_stop_mid_run_leaves_a_usable_model():
    model, (x, y) = mlp(), regression()
    plan = plan_freeze(model, ["3", "5"])
    config = TrainingConfig(method="adam", lr=1e-3, epochs=100_000, batch_size=16)
    run = TrainingRun(model, plan, (x,), y, MSE, config).start()
    deadline = time.monotonic() + 10
    while len(run.events_since(0)) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run.status == "running" and 0 < run.progress.fraction < 1
    run.stop()
    assert run.join(timeout=10)
    result = run.result
    assert run.status == "stopped" and result.stopped_early and "Stopped" in result.message
    assert result.final_loss <= result.baseline_loss
    with torch.no_grad():
        assert torch.isfinite(result.model(x)).all()
    assert frozen_keys_unchanged(model, result.model, plan.trainable_keys) == []


def test_an_exception_inside_a_step_ends_the_run_with_a_message_and_the_best_weights():
    model, (x, y) = mlp(), regression()
    plan = plan_freeze(model, ["5"])
    steps: list[int] = []

    def flaky(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            steps.append(1)
            if len(steps) == 5:
                raise RuntimeError("device fell over")
        return F.mse_loss(out, target)

    config = TrainingConfig(method="adam", lr=1e-2, epochs=10, batch_size=32)
    run = TrainingRun(model, plan, (x,), y, flaky, config).start()
    assert run.join(timeout=30)
    assert run.status == "failed"
    assert "RuntimeError: device fell over" in run.message and "Traceback" not in run.message
    assert run.result is not None and run.result.steps == 4
    assert run.result.final_loss <= run.result.baseline_loss


def test_training_refuses_nan_data_and_an_empty_freeze_set():
    model, (x, y) = mlp(), regression()
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(TrainingError, match="NaN"):
        TrainingRun(model, plan_freeze(model, ["5"]), (bad,), y, MSE)
    with pytest.raises(TrainingError, match="Nothing is selected"):
        TrainingRun(model, plan_freeze(model, []), (x,), y, MSE)


def test_forcing_the_closed_form_where_it_does_not_apply_explains_why():
    model, (x, y) = mlp(), regression()
    run = TrainingRun(
        model, plan_freeze(model, ["3", "5"]), (x,), y, MSE, TrainingConfig(method="lstsq")
    )
    with pytest.raises(TrainingError, match="closed form does not apply"):
        run.run()
    assert run.status == "failed"


def test_validation_split_reports_validation_losses():
    model, (x, y) = mlp(), regression()
    config = TrainingConfig(method="adam", lr=1e-2, epochs=2, batch_size=16, val_fraction=0.25)
    run = TrainingRun(model, plan_freeze(model, ["5"]), (x,), y, MSE, config)
    run.run()
    events = run.events_since(0)
    assert [e.val_loss is not None for e in events] == [False, False, True] * 2
    assert events[-1].samples_seen == 2 * 48


def test_the_closed_form_solve_matches_the_svd_solution_even_with_rank_deficient_features():
    from recovery_core.fit.closed_form import solve_linear
    from recovery_core.fit.prefix_cache import CachedFeatures

    def solved(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        readout = nn.Linear(features.shape[1], target.shape[1], bias=False).double()
        solve_linear(readout, CachedFeatures({0: features}, {}, 1), target)
        return readout.weight.T

    torch.manual_seed(0)
    a = torch.randn(500, 20, dtype=torch.float64)
    y = torch.randn(500, 3, dtype=torch.float64)
    reference = torch.linalg.lstsq(a, y, driver="gelsd").solution
    torch.testing.assert_close(solved(a, y), reference, rtol=1e-9, atol=1e-9)
    # A duplicated column: no unique solution; the minimum-norm one is returned, where the
    # normal equations would fail or blow up.
    deficient = torch.cat([a, a[:, :1]], dim=1)
    expected = torch.linalg.lstsq(deficient, y, driver="gelsd").solution
    torch.testing.assert_close(solved(deficient, y), expected, rtol=1e-6, atol=1e-8)


def test_feature_chunks_grow_for_cheap_samples_and_stay_small_for_costly_ones():
    """A chunk's fixed cost (a Python call per module) dominates when a sample costs
    microseconds; a costly sample keeps the least chunk, and its memory."""
    from recovery_core.fit.prefix_cache import CHUNK_GROWTH, FEATURE_CHUNK, chunk_for

    small, tokens = nn.Linear(16, 16), [torch.zeros(20_000, 7, dtype=torch.long)]
    grown = chunk_for(small, tokens, FEATURE_CHUNK)
    assert FEATURE_CHUNK < grown <= FEATURE_CHUNK * CHUNK_GROWTH
    assert grown == chunk_for(small, tokens, FEATURE_CHUNK)  # the same data, the same chunks
    wide = nn.Linear(1024, 1024)  # a million parameters on 512 positions of 64 features
    assert chunk_for(wide, [torch.zeros(8, 512, 64)], FEATURE_CHUNK) == FEATURE_CHUNK
    long = [torch.zeros(8, 4096)]  # pairwise work alone (attention's scores) keeps it small
    assert chunk_for(nn.Linear(1, 1), long, FEATURE_CHUNK) == FEATURE_CHUNK


def test_a_cache_in_grown_chunks_gives_the_whole_models_losses(monkeypatch):
    """3,000 samples of a small MLP: its frozen prefix runs in a few chunks larger than
    the least, and the cached run's losses are the full forward's."""
    model, (x, y) = mlp(), regression(3000)
    plan = plan_freeze(model, ["5"])
    calls: list[int] = []
    forward = nn.Linear.forward

    def counting(self, inputs):
        if self.in_features == 4:  # the first layer (of the run's private copy)
            calls.append(inputs.shape[0])
        return forward(self, inputs)

    monkeypatch.setattr(nn.Linear, "forward", counting)
    runs = {}
    for cache in (True, False):
        config = TrainingConfig(method="adam", lr=1e-2, epochs=2, batch_size=64, cache=cache)
        run = TrainingRun(model, plan, (x,), y, MSE, config)
        runs[cache] = (run.run(), [e.loss for e in run.events_since(0)])
        if cache:
            chunks = [n for n in calls if n > 2]  # the probe's two samples aside
            assert sum(chunks) == 3000 and len(chunks) < 3000 / 256, chunks
    (cached, cached_losses), (full, full_losses) = runs[True], runs[False]
    assert cached.cached_prefix and not full.cached_prefix
    assert cached.baseline_loss == pytest.approx(full.baseline_loss, rel=1e-5)
    torch.testing.assert_close(
        torch.tensor(cached_losses), torch.tensor(full_losses), atol=1e-5, rtol=1e-5
    )
