"""Settings are named for people, with the code name after it."""

from __future__ import annotations

import torch

import recovery_core as rc
from dashboard.status import label
from dashboard.ui import roles_by_path
from tests.forward_zoo import FORWARD_BY_NAME


def test_a_convolutions_own_settings_are_named_by_its_layer():
    assert label("blocks.0.stride") == "Stride of blocks.0 (blocks.0.stride)"
    assert label("up.3.output_padding") == "Output padding of up.3 (up.3.output_padding)"
    assert label("0.stride") == "Stride of layer 0 (0.stride)"  # a Sequential's first child


def test_known_settings_read_plainly_and_unknown_ones_keep_their_name():
    assert label("nhead") == "Attention heads (nhead)"
    # A layer without weights whose kind is the choice (ReLU, Dropout, ...).
    assert label("stem.1") == "Kind of layer stem.1 (stem.1)"
    assert label("vocab_size", free=False) == "vocab_size"  # read from a shape, no label


def test_every_hidden_value_a_family_declares_reads_plainly():
    # The label comes with the value's declaration, so a new family's values need no
    # dashboard edit; these two once showed their bare code names.
    assert label("num_groups") == "Groups per GroupNorm (num_groups)"
    assert label("rnn_nonlinearity") == "RNN activation (rnn_nonlinearity)"
    assert label("mix.2.groups") == "Channel groups of mix.2 (mix.2.groups)"
    assert label("d_model") == "Model width (d_model)"  # fixed by the shapes


def test_a_module_with_two_parts_in_the_forward_says_both():
    def roles(case: str) -> dict[str, str]:
        model = FORWARD_BY_NAME[case].make()
        return roles_by_path(rc.infer_spec(rc.Checkpoint.from_state_dict(model.state_dict())))

    shared = roles("token_seq2seq_shared_embedding")
    assert shared["embed"] == "input embedding and output embedding"
    assert shared["readout"] == "output layer"
    assert roles("tiny_lm_tied")["wte"] == "token embedding and output layer, the same weights"
    assert roles("vector_seq2seq_batch_first")["pe"] == "position table"  # a kept tensor


def test_the_training_page_names_each_plain_layer_by_its_kind():
    # A Sequential's children have only numbers for names: without their kind, "0 · 80
    # parameters" does not say whether layer 0 is a convolution or a norm.
    from tests.dashboard.test_app import go, open_model_and_data

    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3),
        torch.nn.BatchNorm1d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(24, 3),
    )
    x = torch.randn(32, 2, 8)
    with torch.no_grad():
        data = {"x": x, "y": model(x)}
    at = open_model_and_data(model.state_dict(), data)
    go(at, "train")
    labels = [c.label for c in at.checkbox]
    assert "0 · Conv1d · 28 parameters" in labels, labels
    assert "1 · BatchNorm1d · 8 parameters" in labels, labels
