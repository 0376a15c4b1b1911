"""A type chosen by hand gets the hidden values it needs with the candidates and default
inference would give them (`--set norm=GroupNorm`, `--set up=ConvTranspose2d`)."""

from __future__ import annotations

from torch import nn

from recovery_core.infer import infer_spec
from recovery_core.infer.retype import choose_type
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model.build import build_model


class Named(nn.Module):
    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


def _chosen(model: nn.Module, path: str, type_name: str):
    state = model.state_dict()
    checkpoint = Checkpoint.from_state_dict(state, module_paths=())
    spec = choose_type(infer_spec(checkpoint), path, type_name, checkpoint.shapes)
    build_model(spec).load_state_dict(state, strict=True)
    return spec


def test_a_groupnorm_chosen_by_hand_offers_the_divisors_of_its_channels():
    spec = _chosen(Named(fc=nn.Linear(4, 48), norm=nn.LayerNorm(48)), "norm", "GroupNorm")
    groups = spec.hyperparameter("num_groups")
    assert groups.candidates == (1, 2, 3, 4, 6, 8, 12, 16, 24, 48)
    assert groups.value == 24  # 32 when it divides the channels, else the largest below
    assert not groups.determined and "GroupNorm" in groups.evidence


def test_a_transposed_convolution_chosen_by_hand_adds_its_output_padding():
    spec = _chosen(Named(up=nn.Conv2d(4, 6, 3, bias=False)), "up", "ConvTranspose2d")
    padding = spec.hyperparameter("up.output_padding")
    assert padding.candidates == (0, 1) and padding.value == 0
    assert spec.hyperparameter("up.stride").candidates == (1, 2)  # kept from the Conv2d
