"""Per-layer convolution settings and pooling between convolutions, found from the data.

Each model is built from torch.nn with unhelpful names; its weights and a dataset made of
its own outputs (plus a little noise) go through `recover` with nothing set. The chosen
forward must reproduce the model on held-out inputs and the export must strict-load.
The shape reasoning alone is checked first: the true settings must be among the
skeletons the data's shapes leave, and a deep stack must be enumerated in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from recovery_core.fit.search import score_candidates, searchable_names
from recovery_core.infer import infer_spec
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model import stack_shapes
from recovery_core.model.build import build_model, load_weights
from recovery_core.model.codegen import generate_code
from recovery_core.model.spec import ArchSpec
from recovery_core.recover import RecoverOptions, recover

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class StridedCNN(nn.Module):
    """Stride 2 then 1, padding 0 on the second convolution, MaxPool2d(3, stride=2)
    between them, global pooling to 2 × 2 and a flatten before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(8, 12, 3, padding=0),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.readout = nn.Linear(12 * 2 * 2, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.blocks(x))


class DilatedTCN(nn.Module):
    """A 1d stack, per-step outputs: the first convolution dilated by 2, no padding."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Sequential(
            nn.Conv1d(4, 8, 3, dilation=2),
            nn.ReLU(),
            nn.Conv1d(8, 8, 3),
            nn.Tanh(),
            nn.Conv1d(8, 2, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(x)


class Decoder(nn.Module):
    """A transposed convolution doubling 5 × 5 to 10 × 10 (stride 2, output padding 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            nn.ConvTranspose2d(6, 8, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 3, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], dict[str, object]]] = {
    "strided_cnn": (
        StridedCNN,
        (3, 24, 24),
        {"blocks.0.stride": 2, "blocks.3.padding": "valid", "blocks.2": "MaxPool2d(3, 2)"},
    ),
    "dilated_1d": (DilatedTCN, (4, 32), {"mix.0.dilation": 2, "mix.0.padding": "valid"}),
    "transposed_decoder": (
        Decoder,
        (6, 5, 5),
        {"blocks.0.stride": 2, "blocks.0.output_padding": 1, "blocks.0.padding": "same"},
    ),
}


def _make(name: str) -> nn.Module:
    torch.manual_seed(0)
    return CASES[name][0]().eval()


def _data(model: nn.Module, shape: tuple[int, ...], n: int, seed: int) -> dict[str, Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(n, *shape)
    with torch.no_grad():
        out = model(x)
    return {"x": x, "y": out + 0.01 * torch.randn_like(out)}


def _skeletons(
    spec: ArchSpec, data: dict[str, Tensor]
) -> tuple[tuple[str, ...], list[tuple[Any, ...]], float]:
    """The searched names, the skeletons of the data's shapes, and the seconds they took."""
    names = searchable_names(spec)
    candidates = [spec.hyperparameter(n).candidates for n in names]
    current = [spec.value(n) for n in names]
    started = time.perf_counter()
    found = stack_shapes.skeletons(
        spec,
        names,
        candidates,
        current,
        tuple(data["x"].shape[1:]),
        4096,
        tuple(data["y"].shape[1:]),
    )
    assert found is not None
    return names, found, time.perf_counter() - started


def test_each_convolution_has_its_own_settings_named_by_path():
    spec = infer_spec(Checkpoint.from_state_dict(_make("transposed_decoder").state_dict()))

    for setting, candidates, default in (
        ("stride", (1, 2), 1),
        ("padding", ("same", "valid"), "same"),
        ("dilation", (1, 2), 1),
        ("output_padding", (0, 1), 0),
    ):
        hp = spec.hyperparameter(f"blocks.0.{setting}")
        assert (hp.candidates, hp.value) == (candidates, default)
        assert "not determined by the weights" in hp.evidence
    assert {"blocks.0.stride", "blocks.2.stride"} <= set(searchable_names(spec))


def test_a_one_wide_kernel_has_only_a_stride():
    spec = infer_spec(Checkpoint.from_state_dict(_make("dilated_1d").state_dict()))
    assert "mix.4.stride" in searchable_names(spec)
    assert not {"mix.4.padding", "mix.4.dilation"} & {hp.name for hp in spec.hyperparameters}


def test_metadata_conv_stride_and_padding_set_every_layer():
    state = _make("strided_cnn").state_dict()
    metadata = {"conv_stride": 2, "conv_padding": "valid"}
    spec = infer_spec(Checkpoint.from_state_dict(state, hyper_parameters=metadata))

    for path in ("blocks.0", "blocks.3"):
        assert spec.hyperparameter(f"{path}.stride").value == 2
        assert spec.hyperparameter(f"{path}.stride").determined
        assert spec.hyperparameter(f"{path}.padding").value == "valid"
    assert not spec.hyperparameter("blocks.0.dilation").determined


@pytest.mark.parametrize("name", ["dilated_1d", "transposed_decoder"])
def test_the_true_settings_are_among_the_few_skeletons_the_shapes_leave(name: str):
    model = _make(name)
    spec = infer_spec(Checkpoint.from_state_dict(model.state_dict()))
    names, found, _ = _skeletons(spec, _data(model, CASES[name][1], 4, seed=1))

    assert 1 <= len(found) <= 16
    truth = CASES[name][2]
    assert any(
        all(dict(zip(names, c, strict=True))[k] == v for k, v in truth.items()) for c in found
    )


def test_generated_code_writes_each_setting_into_its_constructor():
    model = _make("strided_cnn")
    spec = infer_spec(Checkpoint.from_state_dict(model.state_dict()))
    chosen = spec.with_values(
        {"blocks.0.stride": 2, "blocks.3.padding": "valid", "blocks.2": "MaxPool2d(3, 2)"}
        | {"blocks.5": "AdaptiveAvgPool2d(2)", "blocks.6": "Flatten"}
    )
    code = generate_code(chosen)

    assert "stride=blocks_0_stride" in code and "blocks_0_stride: int = 2" in code
    assert "padding=padding_for((3, 3), blocks_3_padding, blocks_3_dilation)" in code
    rebuilt = build_model(chosen).eval()
    assert load_weights(rebuilt, model.state_dict()).ok
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=1e-6)


def test_a_deep_stack_is_enumerated_in_milliseconds():
    """Twelve convolutions with a slot after each: 8 settings per layer and 17 choices per
    slot, reasoned through from the input's shape to the target's."""
    layers: list[nn.Module] = []
    for i in range(12):
        layers += [nn.Conv2d(3 if i == 0 else 8, 8, 3, stride=2 if i in (3, 7) else 1, padding=1)]
        layers += [nn.MaxPool2d(2) if i in (5, 10) else nn.ReLU()]
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * 4 * 4, 3)).eval()
    spec = infer_spec(Checkpoint.from_state_dict(model.state_dict()))
    data = _data(model, (3, 64, 64), 2, seed=1)

    names, found, seconds = _skeletons(spec, data)

    # The cheapest way to 4 x 4 is one adaptive pool before the head; the search refines.
    assert len(names) == 12 * 3 + 13 and 1 <= len(found) <= stack_shapes.MAX_SKELETONS
    print(f"{len(found)} skeletons in {seconds * 1000:.1f} ms")
    assert seconds < 1.0, seconds  # milliseconds on an idle machine; a busy CI gets room


def test_the_data_tells_each_convolutions_stride_and_padding_and_the_pool_between():
    """Global pooling hides every size before it, so the shapes leave the strides, the
    paddings and the pool's geometry open: with the activations and the head's pooling
    as they are, the data's loss ranks the true per-layer settings first among all
    1,024 combinations (each convolution 8 ways, the slot 16)."""
    model = _make("strided_cnn")
    spec = infer_spec(Checkpoint.from_state_dict(model.state_dict()))
    data = _data(model, CASES["strided_cnn"][1], 32, seed=1)
    fixed = {"blocks.1": "ReLU", "blocks.4": "ReLU", "blocks.5": "AdaptiveAvgPool2d(2)"}
    fixed |= {"blocks.6": "Flatten"}
    names = [n for n in searchable_names(spec) if n not in fixed]

    result = score_candidates(
        spec,
        model.state_dict(),
        (data["x"],),
        data["y"],
        torch.nn.functional.mse_loss,
        fixed=fixed,
        names=names,
        budget_seconds=120,
    )

    truth = CASES["strided_cnn"][2] | {"blocks.0.padding": "same", "blocks.3.stride": 1}
    assert result.total == 8 * 8 * 15 and result.complete
    assert {k: result.best_values[k] for k in truth} == truth
    assert result.separable


@pytest.mark.parametrize("name", ["dilated_1d", "transposed_decoder"])
def test_recover_finds_per_layer_settings(name: str, tmp_path: Path):
    model = _make(name)
    shape = CASES[name][1]
    weights, data = tmp_path / "weights.pt", tmp_path / "data.pt"
    torch.save(model.state_dict(), weights)
    torch.save(_data(model, shape, 64, seed=1), data)
    out = tmp_path / "out" / "model.pt"

    result = recover(str(weights), str(data), str(out), RecoverOptions())

    held_out = _data(model, shape, 16, seed=99)["x"]
    rebuilt = build_model(result.spec).eval()
    assert load_weights(rebuilt, model.state_dict()).ok
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(held_out), model(held_out), rtol=0, atol=1e-5)
    scripted = torch.jit.load(str(out))
    scripted.load_state_dict(model.state_dict(), strict=True)
    assert set(scripted.state_dict()) == set(model.state_dict())
