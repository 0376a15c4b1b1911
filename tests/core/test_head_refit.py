"""A model's output with its final Linear refitted by least squares, found by what ran."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recovery_core.fit.head_refit import forward_refitted, output_layer


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
    assert output_layer(model) == ("readout", 9)
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


def test_nothing_is_refitted_on_too_few_rows_or_on_class_labels():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        # 17 coefficients per output need 68 rows: 40 would fit noise.
        few = forward_refitted(mlp, (torch.randn(40, 4),), torch.randn(40, 3))
        labels = forward_refitted(mlp, (torch.randn(96, 4),), torch.randint(0, 3, (96,)))
        enough = forward_refitted(mlp, (torch.randn(96, 4),), torch.randn(96, 3))
    assert few.head == "2" and few.refitted is None
    assert labels.refitted is None
    assert enough.refitted is not None


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
