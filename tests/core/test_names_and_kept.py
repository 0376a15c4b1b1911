"""Every key lands somewhere and any name works: kept tensors, odd names, codegen's promise."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from recovery_core.cli import main
from recovery_core.errors import BuildError
from recovery_core.infer import compose, infer_spec
from recovery_core.infer.detection import Detection
from recovery_core.infer.registry import TYPES
from recovery_core.inspect import describe
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model.build import build_model
from recovery_core.model.code_check import check_generated_code
from recovery_core.model.codegen import generate_code
from recovery_core.model.names import is_identifier, is_index, is_plain_attribute

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def rebuilt(state: dict[str, torch.Tensor]) -> nn.Module:
    """Infer, build, strict-load: the model `codegen`'s file would give."""
    spec = infer_spec(Checkpoint.from_state_dict(state))
    model = build_model(spec)
    model.load_state_dict(state, strict=True)
    return model


def import_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"generated_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_name_rules_are_ascii_strict():
    assert is_index("0") and is_index("12")
    assert not is_index("²") and not is_index("01") and not is_index("٣")  # Arabic-Indic 3
    assert is_identifier("query") and not is_identifier("class") and not is_identifier("naïve")
    assert not is_plain_attribute("forward") and not is_plain_attribute("training")
    assert is_plain_attribute("self")  # `obj.self` is plain Python


class Odd(nn.Module):
    """Children named as BERT (`self`), as Python keywords, after nn.Module's methods, with
    digit-like Unicode, and tensors directly on containers."""

    def __init__(self, method_named_child: bool = True):
        super().__init__()
        attention = nn.Module()
        attention.add_module("self", nn.Linear(4, 4))
        self.add_module("attention", attention)
        self.add_module("class", nn.Linear(4, 2))
        self.add_module("²", nn.LayerNorm(4))
        self.net = nn.Module()
        self.net.add_module("²", nn.Linear(4, 4))
        self.add_module("a-b", nn.Linear(4, 4))
        if method_named_child:  # what `self.forward = nn.Linear()` does; TorchScript refuses it
            self._modules["forward"] = nn.Linear(4, 4)
        self.register_parameter("lambda", nn.Parameter(torch.randn(3)))
        self.register_buffer("global", torch.arange(5))


def test_any_name_strict_loads_with_equal_values_and_scripts(tmp_path):
    original = Odd()
    state = original.state_dict()
    assert "net.².weight" in state and "attention.self.weight" in state

    model = rebuilt(state)  # `net.².weight` once raised a raw ValueError
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [n for n, _ in model.named_buffers()] == ["global"]
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in original.named_parameters()}

    path = tmp_path / "odd.py"
    path.write_text(generate_code(infer_spec(Checkpoint.from_state_dict(state))))
    loaded = import_file(path).RecoveredModel()
    loaded.load_state_dict(state, strict=True)

    scriptable = Odd(method_named_child=False).state_dict()
    path.write_text(generate_code(infer_spec(Checkpoint.from_state_dict(scriptable))))
    loaded = import_file(path).RecoveredModel()
    loaded.load_state_dict(scriptable, strict=True)
    scripted = torch.jit.script(loaded)  # `self`, `class`, `²`, `a-b` do not stop TorchScript
    assert set(scripted.state_dict()) == set(scriptable)


def test_a_name_that_is_nn_modules_own_state_is_refused_with_a_sentence():
    state = {"training.weight": torch.zeros(2, 2)}
    spec = infer_spec(Checkpoint.from_state_dict(state))
    with pytest.raises(BuildError, match="'training'"):
        generate_code(spec)


class Tokens(nn.Module):
    """A ViT-like root: tokens and tables directly on containers, an integer index buffer."""

    def __init__(self):
        super().__init__()
        self.class_token = nn.Parameter(torch.randn(1, 1, 8))
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, 8))
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.block = nn.Sequential(nn.Linear(8, 8), nn.GELU())
        self.block.layer_scale = nn.Parameter(torch.randn(8))
        self.register_buffer("relative_position_index", torch.randint(0, 9, (4, 4)))
        self.register_buffer("final_logits_bias", torch.zeros(1, 8))


def test_tensors_no_layer_explains_are_kept_with_their_kind_and_values():
    original = Tokens()
    state = original.state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(state))
    kinds = {t.name: t.kind for m in spec.modules() for t in m.kept}
    assert kinds == {
        "class_token": "parameter",
        "pos_embedding": "parameter",
        "logit_scale": "parameter",
        "layer_scale": "parameter",
        "relative_position_index": "buffer",
        "final_logits_bias": "buffer",
    }
    model = rebuilt(state)
    assert model.relative_position_index.dtype == torch.int64
    assert sorted(n for n, _ in model.named_buffers()) == sorted(
        n for n, _ in original.named_buffers()
    )
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_generated_code_check_passes_on_a_loadable_spec():
    state = Tokens().state_dict()
    checkpoint = Checkpoint.from_state_dict(state)
    assert check_generated_code(infer_spec(checkpoint), checkpoint).ok


def _lying_linear(group):
    """A deliberately wrong detector: every 2-D weight is a 3 → 3 Linear."""
    weight = group.direct.get("weight")
    if not group.is_leaf or weight is None or len(weight.shape) != 2:
        return None
    return Detection("Linear", {"in_features": 3, "out_features": 3, "bias": False}, "a lie")


def test_codegen_exits_1_naming_the_keys_when_its_file_would_not_load(
    tmp_path, capsys, monkeypatch
):
    path = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).state_dict(), path)
    monkeypatch.setattr(compose, "DETECTORS", (_lying_linear, *compose.DETECTORS))
    out = tmp_path / "model.py"
    code = main(["codegen", str(path), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "would not load" in err and "0.weight" in err
    assert not out.exists()


def test_tied_weights_are_shared_again_and_counted_once():
    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Embedding(30, 12)
            self.decoder = nn.Linear(12, 30)
            self.decoder.weight = self.encoder.weight

    original = LanguageModel()
    state = original.state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(state))
    assert spec.root.ties == (("decoder.weight", "encoder.weight"),)
    assert 'tie(self, "decoder.weight", "encoder.weight")' in generate_code(spec)
    model = rebuilt(state)
    assert model.decoder.weight is model.encoder.weight
    assert sum(p.numel() for p in model.parameters()) == 30 * 12 + 30

    inspection = describe(Checkpoint.from_state_dict(state), spec)
    assert inspection.parameter_count == 30 * 12 + 30
    assert inspection.module_parameter_count(spec.module("decoder")) == 30 * 12 + 30


def test_a_recognised_forward_reaches_children_whatever_their_names():
    original = nn.Module()
    original.add_module("class", nn.Linear(4, 4))
    original.add_module("²", nn.Linear(4, 3))
    state = original.state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(state))
    assert spec.wiring is not None and spec.wiring.kind == "sequential"
    model = rebuilt(state).eval()
    x = torch.randn(2, 4)
    expected = getattr(original, "²")(getattr(original, "class")(x))
    assert torch.equal(model(x), expected)
    assert torch.equal(torch.jit.script(model)(x), expected)


@pytest.mark.skipif("PReLU" not in TYPES, reason="no PReLU family is registered")
def test_codegen_set_chooses_a_runner_up_type(tmp_path, capsys):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.norm = nn.LayerNorm(8, bias=False)

    path, out = tmp_path / "model.pt", tmp_path / "model.py"
    torch.save(Model().state_dict(), path)
    assert main(["codegen", str(path), "-o", str(out), "--set", "norm=PReLU"]) == 0
    assert "nn.PReLU(num_parameters=8)" in out.read_text()
    assert main(["codegen", str(path), "-o", str(out), "--set", "norm=Embedding"]) == 2
    assert "the types its shapes allow" in capsys.readouterr().err
