"""Freezing: patterns to a trainable set, counts, train/eval modes, presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recovery_core.errors import TrainingError
from recovery_core.fit.freeze import apply_freeze, plan_freeze, preset_patterns, set_train_mode


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 8)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
        self.norm = nn.BatchNorm1d(8)
        self.output_layer = nn.Linear(8, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embedding(tokens))
        return self.output_layer(self.norm(hidden.transpose(1, 2)).transpose(1, 2))


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_an_exact_module_path_trains_that_module_and_everything_below():
    model = Encoder()
    plan = plan_freeze(model, ["encoder.layers.1"])
    assert plan.trainable_params == count(model.encoder.layers[1])
    assert plan.total_params == count(model)
    assert all(k.startswith("encoder.layers.1.") for k in plan.trainable_keys)
    assert "encoder.layers.1.self_attn" in plan.trainable_modules
    assert "encoder.layers.1.dropout" in plan.trainable_modules  # parameter-less child trains too


def test_a_glob_matches_module_paths_and_parameter_names():
    model = Encoder()
    plan = plan_freeze(model, ["encoder.layers.2.*"])
    assert plan.trainable_params == count(model.encoder.layers[2])
    biases = plan_freeze(model, ["*.bias"])
    assert all(n.endswith(".bias") for n in biases.trainable_param_names)
    assert "output_layer.bias" in biases.trainable_param_names


def test_a_parameter_name_trains_only_that_tensor():
    plan = plan_freeze(Encoder(), ["output_layer.bias"])
    assert plan.trainable_param_names == ("output_layer.bias",) and plan.trainable_params == 10


def test_a_pattern_that_matches_nothing_names_close_module_paths():
    with pytest.raises(TrainingError, match="output_layer"):
        plan_freeze(Encoder(), ["output_layr"])
    with pytest.raises(TrainingError, match="matches no module"):
        plan_freeze(Encoder(), ["decoder.*"])


def test_apply_freeze_and_train_mode_keep_frozen_batchnorm_in_eval():
    model = Encoder()
    plan = plan_freeze(model, ["output_layer"])
    apply_freeze(model, plan)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "output_layer.weight",
        "output_layer.bias",
    ]
    model.train()
    set_train_mode(model, plan)
    assert model.output_layer.training
    assert not model.norm.training and not model.encoder.layers[0].dropout.training
    before = model.norm.running_mean.clone()
    model(torch.randint(0, 10, (4, 5)))
    assert torch.equal(model.norm.running_mean, before)


def test_a_trainable_batchnorm_lists_its_running_statistics_as_trainable_keys():
    plan = plan_freeze(Encoder(), ["norm"])
    assert set(plan.trainable_keys) == {
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
    }


def test_tied_weights_are_counted_once_and_train_under_either_name():
    model = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 6))
    model[1].weight = model[0].weight
    plan = plan_freeze(model, ["1"])
    assert plan.total_params == 6 * 4 + 6
    assert plan.trainable_params == 6 * 4 + 6
    apply_freeze(model, plan)
    assert model[0].weight.requires_grad


def test_presets():
    model = Encoder()
    assert preset_patterns(model, "only the output layer") == ("output_layer",)
    assert preset_patterns(model, "last_blocks", n=2) == (
        "encoder.layers.1",
        "encoder.layers.2",
        "output_layer",
    )
    everything = plan_freeze(model, preset_patterns(model, "everything"))
    assert everything.trainable_params == everything.total_params
    mlp = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    assert preset_patterns(mlp, "last_blocks", n=1) == ("4",)
    with pytest.raises(TrainingError, match="Unknown preset"):
        preset_patterns(model, "half")
