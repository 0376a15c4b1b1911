"""Settings found on data the model was not trained for are flagged after training."""

from __future__ import annotations

import torch

from tests.dashboard.test_app import (
    go,
    open_model_and_data,
    shown_key,
    studio,
    wait_for_run,
)


def _trained_on(make_target) -> list[str]:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x = torch.randn(96, 4)
    with torch.no_grad():
        data = {"x": x, "y": make_target(mlp(x))}
    at = open_model_and_data(mlp.state_dict(), data)
    go(at, "train")
    at.selectbox(key=shown_key(at, "train_method")).set_value("lstsq").run()
    at.button(key="train_start").click().run()
    wait_for_run(at)
    assert studio(at).runs[0].result is not None
    return [w.value for w in at.warning if "Check the settings found" in w.value]


def test_settings_found_on_data_new_to_the_model_are_flagged_after_training():
    # The layer kind between the two Linears is found by how well the original weights
    # fit the data; on new targets (a mix of the outputs, which the retrained output layer
    # fits exactly) that ranking cannot be trusted, and the page must say so.
    mix = torch.tensor([[0.0, 2.0, -1.0], [1.5, 0.0, 0.5], [-1.0, 1.0, 3.0]])
    [warning] = _trained_on(lambda out: out @ mix + 1.0)
    assert "the data is new to the model" in warning and "step 2" in warning


def test_data_the_model_fits_raises_no_such_flag():
    assert _trained_on(lambda out: out + 0.01 * torch.randn_like(out)) == []
