"""Settings found on one dataset are not "found on your data" once other data is opened:
they are scored again on it."""

from __future__ import annotations

import torch

from tests.dashboard.test_app import _saved, open_model_and_data, settled, studio

MIX = torch.tensor([[0.0, 2.0, -1.0], [1.5, 0.0, 0.5], [-1.0, 1.0, 3.0]])


def test_settings_found_on_other_data_are_scored_again_on_the_new_data():
    # A model's own outputs first, then a task it was not trained for (a mix of its
    # outputs): the layer kind found on the first must not stay "found on your data" for
    # the second; the second's own scoring decides (here, with the output layer refitted).
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x = torch.randn(96, 4)
    with torch.no_grad():
        own = {"x": x, "y": mlp(x) + 0.01 * torch.randn(96, 3)}
        new = {"x": x, "y": mlp(x) @ MIX + 1.0}
    at = open_model_and_data(mlp.state_dict(), own)
    first = studio(at).search
    assert first is not None and first.new_task_losses is None  # the data is the model's
    assert studio(at).states()["1"] == "found"

    at.file_uploader(key="data_upload").set_value(("new.pt", _saved(new), "application/octet-stream"))
    settled(at.run())

    second = studio(at).search
    assert second is not None and second is not first
    assert second.refitted_head == "2" and second.new_task_losses is not None
    assert second.best_values["1"] == "Tanh"
    assert studio(at).states()["1"] == "found"


def test_a_scoring_of_the_data_before_is_not_applied_to_data_opened_meanwhile():
    # A checkpoint opened while the demo's data is still loaded is scored on that data at
    # once; data opened before that scoring is applied must not receive its values.
    from tests.dashboard.test_app import open_app
    from tests.forward_zoo import FORWARD_BY_NAME

    case = FORWARD_BY_NAME["token_seq2seq_shared_embedding"]
    model = case.make()
    at = open_app()
    upload = ("translator.pt", _saved(model.state_dict()), "application/octet-stream")
    at.sidebar.file_uploader(key="source_upload").set_value(upload).run()
    assert studio(at).mapping is not None  # the demo's data, matched to the new model
    at.switch_page("steps/data.py").run()  # not settled: the scoring is still on
    data = ("new.pt", _saved(case.new_task_data(model, 128)), "application/octet-stream")
    at.file_uploader(key="data_upload").set_value(data)
    settled(at.run())

    result = studio(at).search
    assert studio(at).mapping.target == "y"
    assert result is not None and result.refitted_head == "readout"  # scored on the new data
    assert result.best.loss < 1e-3
