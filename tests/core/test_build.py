"""Rebuilding: every zoo model comes back with its keys, shapes, values and forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recovery_core.errors import BuildError
from recovery_core.infer import infer_spec
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model import names
from recovery_core.model.build import (
    build_model,
    check_rebuild,
    example_inputs,
    load_weights,
    model_class,
)
from recovery_core.model.codegen import generate_code
from recovery_core.model.spec import (
    SOURCE_DEFAULT,
    ArchSpec,
    Hyperparameter,
    ModelInput,
    ModuleSpec,
    Wiring,
)
from tests.zoo import ZOO, ZOO_BY_NAME, ZooCase

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # torch's fast-path notices
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]


def recovered(case: ZooCase) -> tuple[nn.Module, dict[str, torch.Tensor], ArchSpec]:
    """The original model, its weights, and the inferred spec set to the true hidden values."""
    original = case.make()
    weights = original.state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(weights))
    known = {hp.name for hp in spec.free}
    return original, weights, spec.with_values({k: v for k, v in case.hidden.items() if k in known})


@pytest.mark.parametrize("case", ZOO, ids=repr)
def test_rebuilt_zoo_model_loads_strictly_with_equal_values(case: ZooCase):
    original, weights, spec = recovered(case)
    model = build_model(spec)

    report = load_weights(model, weights, strict=True)

    assert report.ok, report.message
    rebuilt = model.state_dict()
    assert list(rebuilt) == list(weights)
    for key, value in weights.items():
        assert torch.equal(rebuilt[key], value), key
    # Parameters train and buffers do not: the split must match the original's.
    assert {k for k, _ in model.named_parameters()} == {k for k, _ in original.named_parameters()}
    assert {k for k, _ in model.named_buffers()} == {k for k, _ in original.named_buffers()}


@pytest.mark.parametrize("case", [c for c in ZOO if c.inputs is not None], ids=repr)
def test_rebuilt_forward_reproduces_the_original_and_scripts(case: ZooCase):
    original, weights, spec = recovered(case)
    assert spec.wiring is not None and spec.wiring.kind == case.wiring
    model = build_model(spec)
    load_weights(model, weights)
    model.eval()
    inputs = case.example_inputs()

    with torch.no_grad():
        expected = original(*inputs)
        got = model(*inputs)
        scripted = torch.jit.script(model)(*inputs)

    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5
    assert torch.equal(scripted, got)


@pytest.mark.parametrize("case", [c for c in ZOO if c.wiring is not None], ids=repr)
def test_example_inputs_run_through_the_rebuilt_model(case: ZooCase):
    _, weights, spec = recovered(case)

    status = check_rebuild(spec, Checkpoint.from_state_dict(weights))

    assert status.strict_load_ok and status.forward_ok, status.error
    assert status.output_shape is not None and status.output_shape[0] == 2


def test_example_token_ids_stay_inside_each_vocabulary():
    _, _, spec = recovered(ZOO_BY_NAME["seq2seq_tutorial"])  # vocabularies 40 (src) and 30 (tgt)

    src, tgt = example_inputs(spec, batch_size=64)

    assert src.dtype == tgt.dtype == torch.long
    assert src.shape[0] == tgt.shape[0] == 64
    assert 0 <= int(src.min()) and int(src.max()) < 40
    assert 0 <= int(tgt.min()) and int(tgt.max()) < 30


def test_hidden_values_reach_the_torch_modules():
    _, _, spec = recovered(ZOO_BY_NAME["encoder_lm"])
    spec = spec.with_values({"nhead": 8, "layer_norm_eps": 1e-6, "norm_first": True})

    model = build_model(spec)

    layer = model.encoder.layers[0]
    assert layer.self_attn.num_heads == 8
    assert layer.norm_first is True
    assert layer.norm1.eps == 1e-6


def test_load_weights_reports_mismatches_instead_of_raising():
    _, weights, spec = recovered(ZOO_BY_NAME["mlp_sequential"])
    model = build_model(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    broken = dict(weights)
    broken.pop("0.bias")
    broken["extra.weight"] = torch.zeros(3)
    broken["5.weight"] = torch.zeros(7, 7)

    report = load_weights(model, broken, strict=True)

    assert not report.ok
    assert report.missing_keys == ("0.bias",)
    assert report.unexpected_keys == ("extra.weight",)
    assert report.shape_mismatches == (("5.weight", (4, 32), (7, 7)),)
    assert "0.bias" in report.message and "5.weight" in report.message
    # A strict load that does not fit changes nothing.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_non_strict_load_takes_the_keys_that_fit():
    _, weights, spec = recovered(ZOO_BY_NAME["mlp_sequential"])
    model = build_model(spec)
    partial = {k: v for k, v in weights.items() if k.startswith("0.")}

    report = load_weights(model, partial, strict=False)

    assert report.ok
    assert set(report.missing_keys) == set(weights) - set(partial)
    assert torch.equal(model.state_dict()["0.weight"], weights["0.weight"])


def test_check_rebuild_shows_keys_the_model_cannot_take():
    _, weights, spec = recovered(ZOO_BY_NAME["mlp_no_bias"])
    checkpoint = Checkpoint.from_state_dict({**weights, "stray": torch.zeros(2)})

    status = check_rebuild(spec, checkpoint)

    assert not status.strict_load_ok
    assert status.unexpected_keys == ("stray",)
    assert status.forward_ok is None
    assert "stray" in status.error


def test_check_rebuild_reports_a_failing_forward():
    # batch_first=False reads (batch, length) as (length, batch); src and tgt then
    # disagree on the batch size and nn.Transformer refuses them.
    _, weights, spec = recovered(ZOO_BY_NAME["seq2seq_tutorial"])
    spec = spec.with_values({"batch_first": False})

    status = check_rebuild(spec, Checkpoint.from_state_dict(weights))

    assert status.strict_load_ok
    assert status.forward_ok is False
    assert "forward" in status.error


def test_values_that_do_not_fit_raise_a_build_error():
    _, _, spec = recovered(ZOO_BY_NAME["encoder_lm"])
    hps = tuple(
        Hyperparameter(name="nhead", value=5, source=SOURCE_DEFAULT, evidence="test")
        if hp.name == "nhead"
        else hp
        for hp in spec.hyperparameters
    )

    with pytest.raises(BuildError, match="nhead=5|divisible"):
        build_model(ArchSpec(root=spec.root, hyperparameters=hps, wiring=spec.wiring))


def linear_spec(name: str, module_type: str = "Linear") -> ArchSpec:
    child = ModuleSpec(
        path=name,
        type=module_type,
        args={"in_features": 2, "out_features": 2, "bias": True},
        keys=(f"{name}.weight",),
    )
    wiring = Wiring(
        kind="sequential",
        roles={},
        inputs=(ModelInput(name="x", dtype="float", shape=(2, 2)),),
        description="x -> stack",
    )
    root = ModuleSpec(path="", type="Module", children=(child,))
    return ArchSpec(root=root, hyperparameters=(), wiring=wiring)


@pytest.mark.parametrize("name", ["os; import os", "a b", "lambda", "self", "²"])
def test_names_that_cannot_be_attributes_are_kept_exactly_and_never_become_code(name: str):
    spec = linear_spec(name)
    source = generate_code(spec)
    if not names.is_plain_attribute(name):  # only ever inside a string literal
        assert repr(name) in source.replace('"', "'") and f"self.{name}" not in source
    model = build_model(spec)
    assert list(model.state_dict()) == [f"{name}.weight", f"{name}.bias"]
    assert model(torch.randn(2, 2)).shape == (2, 2)


@pytest.mark.parametrize("name", ["__class__", "forward", "state_dict"])
def test_a_forward_refuses_children_named_like_nn_modules_own_attributes(name: str):
    with pytest.raises(BuildError, match="nn.Module itself answers"):
        build_model(linear_spec(name))


def test_unknown_module_types_are_refused_with_the_supported_list():
    with pytest.raises(BuildError, match="supported types"):
        build_model(linear_spec("fc", module_type="os.system"))


def test_example_inputs_need_a_wiring():
    _, _, spec = recovered(ZOO_BY_NAME["mha_packed"])
    with pytest.raises(BuildError, match="no forward"):
        example_inputs(spec)


def test_building_twice_gives_independent_models():
    _, weights, spec = recovered(ZOO_BY_NAME["mlp_no_bias"])
    first, second = build_model(spec), build_model(spec)
    load_weights(first, weights)
    with torch.no_grad():
        first.fc1.weight.add_(1.0)
    assert not torch.equal(first.fc1.weight, second.fc1.weight)
    assert type(first) is type(second)


class SequenceFirstLM(nn.Module):
    """A sequence-first encoder whose positional table is [L, 1, d] or [L, d]."""

    def __init__(self, layout: str):
        super().__init__()
        self.embedding = nn.Embedding(20, 16)
        table = torch.randn(12, 16)
        self.pos = nn.Module()
        self.pos.register_buffer("pe", table.unsqueeze(1) if layout == "L1d" else table)
        layer = nn.TransformerEncoderLayer(16, 2, 32)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 20)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)  # (length, batch, d): data is fed as it is
        pe = self.pos.pe[: x.size(0)]
        x = x + (pe if pe.dim() == 3 else pe.unsqueeze(1))
        return self.head(self.encoder(x))


@pytest.mark.parametrize("layout", ["L1d", "Ld"])
def test_sequence_first_positional_tables_are_added_along_dimension_0(layout: str):
    torch.manual_seed(0)
    original = SequenceFirstLM(layout).eval()
    spec = infer_spec(Checkpoint.from_state_dict(original.state_dict()))
    spec = spec.with_values({"nhead": 2, "batch_first": False})
    model = build_model(spec)
    assert load_weights(model, original.state_dict()).ok
    tokens = torch.randint(0, 20, (5, 3))

    with torch.no_grad():
        assert (model.eval()(tokens) - original(tokens)).abs().max().item() <= 1e-6


def test_a_root_module_list_stack_gets_a_forward_that_calls_its_items_in_order():
    layers = torch.nn.ModuleList(
        [torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)]
    )
    checkpoint = Checkpoint.from_state_dict(layers.state_dict())
    spec = infer_spec(checkpoint)
    model = build_model(spec)
    assert load_weights(model, layers.state_dict()).ok
    x = torch.randn(5, 4)
    expected = layers[2](layers[1](layers[0](x)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)


def test_generated_sources_leave_linecache_with_their_classes(tmp_path):
    """A server builds many models: a generated source stays in linecache (tracebacks and
    TorchScript read it there) while a class compiled from it lives, then goes, instead
    of piling up for the process's life."""
    import gc
    import linecache

    def spec_of(width: int) -> ArchSpec:
        layer = torch.nn.Linear(width, 97)  # sizes no other test builds
        return infer_spec(Checkpoint.from_state_dict(layer.state_dict()))

    def sources_after(widths: range) -> int:
        for width in widths:
            model_class(spec_of(width))
        gc.collect()
        return len({n for n in linecache.cache if n.startswith("<recovered-model-")} - before)

    kept = build_model(spec_of(1000))
    before = set(linecache.cache)
    first = sources_after(range(1, 101))
    # Another hundred classes: the sources kept stay as many (the cached classes'), not every one.
    assert first < 100 and sources_after(range(101, 201)) <= first
    # A model whose class left the cache still scripts: its source is still there.
    torch.jit.script(kept).save(str(tmp_path / "kept.pt"))
