"""Data new to the model: the search ranks with the output layer refitted and says so on
step 2; where it could not, the settings found are flagged after training."""

from __future__ import annotations

import torch

from tests.dashboard.test_app import (
    go,
    open_model_and_data,
    shown_key,
    studio,
    wait_for_run,
)

MIX = torch.tensor([[0.0, 2.0, -1.0], [1.5, 0.0, 0.5], [-1.0, 1.0, 3.0]])


def _trained_on(hidden: int, make_target):
    """An MLP with a Tanh between its Linears, trained by least squares on targets made
    from its outputs: the app, and the training page's flags."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(4, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3)
    )
    x = torch.randn(96, 4)
    with torch.no_grad():
        data = {"x": x, "y": make_target(mlp(x))}
    at = open_model_and_data(mlp.state_dict(), data)
    go(at, "train")
    at.selectbox(key=shown_key(at, "train_method")).set_value("lstsq").run()
    at.button(key="train_start").click().run()
    wait_for_run(at)
    assert studio(at).runs[0].result is not None
    return at, [w.value for w in at.warning if "Check the settings found" in w.value]


def test_on_data_new_to_the_model_the_search_refits_the_output_layer_and_says_so():
    # New targets (a mix of the outputs, which a retrained output layer fits exactly):
    # the original output layer cannot judge the layer kind between the Linears, so the
    # search ranks with it refitted, finds Tanh, and step 2 says why.
    at, flags = _trained_on(16, lambda out: out @ MIX + 1.0)
    search = studio(at).search
    assert search.refitted_head == "2" and search.best_values["1"] == "Tanh"
    assert flags == []  # the search judged the settings on this data already
    go(at, "recover")
    said = [e.value for e in [*at.success, *at.warning] if "new to this model" in e.value]
    assert said and "**2** refitted to your data" in said[0]


def test_settings_found_on_new_data_are_flagged_when_the_search_could_not_refit():
    # 33 weights per output need 132 rows to refit on; the data has 96. The search ranks
    # with the original weights, and after training the page must say those may be wrong.
    at, [flag] = _trained_on(32, lambda out: out @ MIX + 1.0)
    assert studio(at).search.refitted_head is None
    assert "the data is new to the model" in flag and "step 2" in flag


def test_data_the_model_fits_raises_no_such_flag():
    at, flags = _trained_on(16, lambda out: out + 0.01 * torch.randn_like(out))
    assert flags == [] and studio(at).search.new_task_losses is None
