"""Many identical blocks (`blocks.0` ... `blocks.N`) are inferred once per kind of block,
and give exactly the spec, rows and report that inferring every block on its own gives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recovery_core.infer import compose, infer_spec
from recovery_core.inspect import describe
from recovery_core.io.checkpoint import Checkpoint


class Block(nn.Module):
    """Stranger names; the norm reads as a GroupNorm beside a convolution."""

    def __init__(self, width: int, conv: bool = False) -> None:
        super().__init__()
        self.mixer = nn.Conv1d(width, width, 3) if conv else nn.Linear(width, width)
        self.act = nn.GELU()
        self.squash = nn.Linear(width, width)
        self.tidy = nn.LayerNorm(width)


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lookup = nn.Embedding(10, 8)
        kinds = [False] * 6 + [True] * 3 + [False] * 2
        self.blocks = nn.ModuleList(Block(8, conv) for conv in kinds)
        self.tail = nn.Sequential(  # gaps (activations) and buffers among numbered children
            *(m for _ in range(5) for m in (nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU()))
        )
        self.out = nn.Linear(8, 3)


def _tied() -> nn.Module:
    stack = nn.ModuleList(nn.Linear(4, 4) for _ in range(6))
    stack[3].weight = stack[1].weight
    return stack


def _weight_normed() -> nn.Module:
    norm = nn.utils.parametrizations.weight_norm
    return nn.Sequential(*(norm(nn.Linear(4, 4)) for _ in range(5)), nn.Linear(4, 2))


def _norms_by_neighbour() -> nn.Module:
    """The same norm keys read two ways: beside a convolution, and beside a Linear."""
    convs = (m for _ in range(3) for m in (nn.Conv1d(4, 4, 1), nn.GroupNorm(2, 4)))
    linears = (m for _ in range(3) for m in (nn.Linear(4, 4), nn.LayerNorm(4)))
    return nn.Sequential(*convs, *linears)


MODELS = {
    "stack": Stack,
    "tied": _tied,
    "weight_normed": _weight_normed,
    "norms_by_neighbour": _norms_by_neighbour,
}


def _inspect(model: nn.Module):
    inspection = describe(Checkpoint.from_state_dict(model.state_dict()))
    return inspection.spec, inspection.rows, inspection.to_text()


@pytest.mark.parametrize("make", MODELS.values(), ids=list(MODELS))
def test_grouped_blocks_give_the_same_inspection_as_blocks_inferred_one_by_one(make, monkeypatch):
    torch.manual_seed(0)
    model = make()
    grouped = _inspect(model)
    monkeypatch.setattr(compose, "GROUP_SIBLINGS_FROM", 10**9)  # every block on its own
    assert _inspect(model) == grouped


def test_identical_blocks_are_offered_to_the_detectors_once_per_kind(monkeypatch):
    calls = []

    def counting(detector):
        def detect(group):
            calls.append(group.path)
            return detector(group)

        return detect

    monkeypatch.setattr(compose, "DETECTORS", tuple(counting(d) for d in compose.DETECTORS))
    state = {}
    for i in range(2000):
        state[f"layers.{i}.inner.weight"] = torch.zeros(4, 4)
        state[f"layers.{i}.inner.bias"] = torch.zeros(4)
        state[f"layers.{i}.scale.weight"] = torch.ones(4)
    spec = infer_spec(Checkpoint.from_state_dict(state))
    asked = {path.split(".")[1] for path in calls if path.startswith("layers.")}
    assert len(asked) <= 3  # the first block, the second (its neighbour differs), no more
    assert len(spec.root.children[0].children) == 2000
    last = spec.root.children[0].children[-1]
    assert [m.path for m in last.walk()] == [
        "layers.1999",
        "layers.1999.inner",
        "layers.1999.scale",
    ]
    assert last.children[0].keys == ("layers.1999.inner.weight", "layers.1999.inner.bias")
