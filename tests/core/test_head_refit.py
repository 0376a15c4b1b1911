"""A model's output with its final Linear refitted (least squares on values, logistic
regression on class labels), found by what ran."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recovery_core.fit.head_refit import chance_loss, forward_refitted, output_layer


class SequenceFirst(nn.Module):
    """Reads [seq, batch, feature] and hands back [batch, seq, out]: its output is a
    transposed view of the readout's, under names a stranger would choose."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.GRU(5, 8)
        self.readout = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.mix(x)
        return self.readout(h).transpose(0, 1)


def _optimum(features: Tensor, target: Tensor) -> float:
    """The least-squares loss of a Linear with a bias on these rows, solved independently."""
    a = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(a, target.double(), driver="gelsd").solution
    return float(F.mse_loss(a @ solution, target.double()))


def test_the_output_layer_is_found_by_what_ran_and_refitted_to_the_least_squares_optimum():
    torch.manual_seed(0)
    model = SequenceFirst().eval()
    x = torch.randn(7, 20, 5)  # 7 steps of 20 samples: 140 rows for 9 coefficients
    target = torch.randn(20, 7, 3)
    with torch.no_grad():
        found = forward_refitted(model, (x,), target)
        features = model.mix(x)[0]  # [seq, batch, 8], the rows the readout saw

    assert found.head == "readout" and found.coefficients == 9
    assert output_layer(model, target) == ("readout", 9, 9)  # the same in screening
    assert found.refitted is not None and found.refitted.shape == target.shape
    rows = features.reshape(-1, 8)
    aligned = target.transpose(0, 1).reshape(-1, 3)  # the target laid out as the readout's
    refitted = float(F.mse_loss(found.refitted.double(), target.double()))
    assert abs(refitted - _optimum(rows, aligned)) < 1e-6
    assert refitted < float(F.mse_loss(found.output, target))
    # The model itself is untouched: its next output is the original one.
    with torch.no_grad():
        assert torch.equal(model(x), found.output)


def test_nothing_is_refitted_when_the_output_is_computed_after_the_last_linear():
    torch.manual_seed(0)
    squashed = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2), nn.Tanh()).eval()
    with torch.no_grad():
        found = forward_refitted(squashed, (torch.randn(64, 4),), torch.randn(64, 2))
    assert found.refitted is None and found.head is None


def test_nothing_is_refitted_on_too_few_rows():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        # 17 coefficients per output need 68 rows: 40 would fit noise.
        few = forward_refitted(mlp, (torch.randn(40, 4),), torch.randn(40, 3))
        enough = forward_refitted(mlp, (torch.randn(96, 4),), torch.randn(96, 3))
        # One label is a row for every class: 3 classes solve for 2 x 17 weights together,
        # 136 labels at least.
        labels = forward_refitted(mlp, (torch.randn(96, 4),), torch.randint(0, 3, (96,)))
        more = forward_refitted(mlp, (torch.randn(136, 4),), torch.randint(0, 3, (136,)))
    assert few.head == "2" and few.refitted is None
    assert enough.refitted is not None
    assert labels.head == "2" and labels.refitted is None and labels.coefficients == 34
    assert more.refitted is not None


def _new_labels(model: SequenceFirst, x: Tensor) -> Tensor:
    """Labels of another readout of the same trunk: a task the model was not trained for,
    laid out as the model's output ([batch, seq])."""
    generator = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(3, 8, generator=generator), torch.randn(3, generator=generator)
    with torch.no_grad():
        return (model.mix(x)[0] @ weight.T + bias).argmax(-1).transpose(0, 1)


def test_class_labels_of_a_new_task_are_refitted_by_logistic_regression():
    # Cross-entropy reads the classes on the output's last dimension, one label per row;
    # here the output is a transposed view of the readout's, so the labels' rows must be
    # matched to the readout's rows, not taken in memory order.
    torch.manual_seed(0)
    model = SequenceFirst().eval()
    x = torch.randn(7, 60, 5)  # 420 labels for 2 x 9 weights
    labels = _new_labels(model, x)
    with torch.no_grad():
        found = forward_refitted(model, (x,), labels)
    assert found.head == "readout" and found.coefficients == 18
    assert found.refitted is not None and found.refitted.shape == found.output.shape
    original = float(F.cross_entropy(found.output.reshape(-1, 3), labels.reshape(-1)))
    refitted = float(F.cross_entropy(found.refitted.reshape(-1, 3), labels.reshape(-1)))
    # The labels are a linear readout of these features: a refit separates them.
    assert refitted < 0.1 < original / 5
    assert (found.refitted.argmax(-1) == labels).float().mean() > 0.98
    # Rows cross-entropy ignores (-100) are left out of the fit, and still predicted.
    ignored = labels.clone()
    ignored[:, :2] = -100
    with torch.no_grad():
        partly = forward_refitted(model, (x,), ignored)
    assert partly.refitted is not None
    kept = ignored.reshape(-1) != -100
    hits = partly.refitted.argmax(-1).reshape(-1)[kept] == ignored.reshape(-1)[kept]
    assert hits.float().mean() > 0.98


def test_screening_refits_labels_on_the_rows_one_class_needs_and_ranks_features_as_the_full_fit():
    # Screening scores hundreds of combinations: its refit of class labels fits each
    # class apart (least squares, then one softmax scale), so it needs four labels per
    # input, not per input and class, and runs on a fraction of the samples. It must
    # still tell features that hold the labels from features that do not.
    torch.manual_seed(0)
    model = SequenceFirst().eval()
    x = torch.randn(7, 10, 5)  # 70 labels: enough for 4 x 13 screening weights, not 4 x 18
    with torch.no_grad():  # three even classes: thirds of a direction of the features
        along = (model.mix(x)[0] @ torch.randn(8)).transpose(0, 1).contiguous()
    labels = torch.bucketize(along, along.reshape(-1).quantile(torch.tensor([1 / 3, 2 / 3])))
    with torch.no_grad():
        full = forward_refitted(model, (x,), labels)
        quick = forward_refitted(model, (x,), labels, screening=True)
    assert full.refitted is None and full.coefficients == 18
    assert quick.coefficients == 13 and quick.refitted is not None
    assert output_layer(model, labels) == ("readout", 18, 13)  # 9 x sqrt(2), rounded up

    def cross_entropy(output: Tensor) -> float:
        return float(F.cross_entropy(output.reshape(-1, 3), labels.reshape(-1)))

    fitted = cross_entropy(quick.refitted)
    assert fitted < chance_loss(labels) / 2 and fitted < cross_entropy(quick.output) / 2
    # The scale into the softmax is the one that minimises the cross-entropy.
    assert fitted <= min(cross_entropy(quick.refitted * f) for f in (0.8, 0.95, 1.05, 1.25))
    # Labels the features do not hold (the same ones shuffled across rows) fit far worse.
    shuffled = labels.reshape(-1)[torch.randperm(labels.numel())].reshape(labels.shape)
    with torch.no_grad():
        worse = forward_refitted(model, (x,), shuffled, screening=True)
    assert worse.refitted is not None
    noise = float(F.cross_entropy(worse.refitted.reshape(-1, 3), shuffled.reshape(-1)))
    assert noise > 1.5 * fitted  # 2.0-2.3x over eight seeds


def test_labels_are_not_refitted_where_the_output_does_not_hold_the_classes_last():
    class ClassesFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 6)
            self.readout = nn.Linear(6, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.readout(self.proj(x)).transpose(0, 1)  # [3, batch]

    torch.manual_seed(0)
    with torch.no_grad():
        found = forward_refitted(ClassesFirst().eval(), (torch.randn(3, 4),), torch.arange(3))
    assert found.head == "readout" and found.refitted is None


def test_the_loss_of_a_constant_prediction():
    assert abs(chance_loss(torch.tensor([1.0, 3.0])) - 2.0) < 1e-12  # the variance
    # The entropy of the classes' frequencies; ignored labels left out.
    labels = torch.tensor([0, 0, 1, 1, -100])
    assert abs(chance_loss(labels) - math.log(2)) < 1e-12


def test_a_refit_too_large_to_solve_whole_solves_on_spaced_rows_within_its_budget(
    monkeypatch,
):
    # A large vocabulary on long sequences must not double the forward's memory: past
    # REFIT_VALUES the refit solves on evenly spaced rows and still predicts every row.
    torch.manual_seed(0)
    model = SequenceFirst().eval()
    x = torch.randn(7, 40, 5)  # 280 rows of 8 features, 3 outputs
    with torch.no_grad():
        weight, bias = torch.randn(3, 8), torch.randn(3)
        target = (model.mix(x)[0] @ weight.T + bias).transpose(0, 1)  # a new readout
        target += 0.01 * torch.randn_like(target)
        whole = forward_refitted(model, (x,), target)
        monkeypatch.setattr("recovery_core.fit.head_refit.REFIT_VALUES", 12 * 60)
        spaced = forward_refitted(model, (x,), target)  # 60 rows of 12 values each
        monkeypatch.setattr("recovery_core.fit.head_refit.REFIT_VALUES", 12 * 30)
        too_few = forward_refitted(model, (x,), target)  # 30 rows: under 4 per weight

    assert whole.refitted is not None and spaced.refitted is not None
    assert spaced.refitted.shape == target.shape
    optimum = float(F.mse_loss(whole.refitted, target))
    assert optimum < 2e-4  # the noise's level: the new readout is recovered
    assert float(F.mse_loss(spaced.refitted, target)) < 1.5 * optimum
    assert too_few.refitted is None and too_few.head == "readout"


def test_few_and_many_weights_reach_the_same_logistic_optimum(monkeypatch):
    # Few weights take Newton steps, many L-BFGS ones; a ranking must not depend on which.
    torch.manual_seed(0)
    model = SequenceFirst().eval()
    x = torch.randn(7, 60, 5)
    labels = _new_labels(model, x)
    losses = []
    for newton_up_to in (10**6, 0):
        monkeypatch.setattr("recovery_core.fit.closed_form.NEWTON_UP_TO", newton_up_to)
        with torch.no_grad():
            found = forward_refitted(model, (x,), labels)
        assert found.refitted is not None
        losses.append(float(F.cross_entropy(found.refitted.reshape(-1, 3), labels.reshape(-1))))
    assert abs(losses[0] - losses[1]) < 1e-2 * losses[0]  # L-BFGS stops after 20 steps
