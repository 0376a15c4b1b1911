"""Round trips over the zoo: build a model with known settings, take its state dict, infer."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
import torch
from torch import nn

from recovery_core.infer import infer_spec
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.model.spec import SOURCE_METADATA, SOURCE_SHAPE, ArchSpec, ModuleSpec
from tests.zoo import ZOO, ZOO_BY_NAME, ZooCase


def _refuse_to_read(name: str) -> torch.Tensor:
    raise AssertionError(f"inference read the values of {name}")


def checkpoint_of(case: ZooCase, **kw) -> Checkpoint:
    """The zoo model's checkpoint, made so that reading any tensor value fails the test."""
    checkpoint = Checkpoint.from_state_dict(case.make().state_dict(), **kw)
    return replace(checkpoint, _read=_refuse_to_read)


@pytest.fixture(scope="module", params=ZOO, ids=lambda case: case.name)
def inferred(request) -> tuple[ZooCase, Checkpoint, ArchSpec]:
    case = request.param
    checkpoint = checkpoint_of(case)
    return case, checkpoint, infer_spec(checkpoint)


def test_every_key_is_explained_exactly_once(inferred):
    _, checkpoint, spec = inferred
    owned = Counter(key for module in spec.modules() for key in module.keys)
    assert spec.unexplained_keys == ()
    assert owned == Counter(checkpoint.names)


def test_module_types_at_their_paths(inferred):
    case, _, spec = inferred
    found = {path: spec.module(path).type for path in case.types}
    assert found == dict(case.types)


def test_determined_hyperparameters_equal_the_constructor_settings(inferred):
    case, checkpoint, spec = inferred
    for name, value in case.determined.items():
        hp = spec.hyperparameter(name)
        assert (hp.value, hp.determined, hp.source) == (value, True, SOURCE_SHAPE), name
        assert checkpoint.info(hp.key).shape == hp.shape, name


def test_free_hyperparameters_offer_the_true_value(inferred):
    case, _, spec = inferred
    for name, true_value in case.hidden.items():
        hp = spec.hyperparameter(name)
        assert not hp.determined, name
        assert true_value in hp.candidates, (name, hp.candidates)
        assert hp.value in hp.candidates, name
        assert "not determined by the weights" in hp.evidence


def test_every_hidden_name_a_module_uses_is_a_hyperparameter(inferred):
    _, _, spec = inferred
    names = {hp.name for hp in spec.hyperparameters}
    for module in spec.modules():
        assert set(module.hidden) <= names, module.path


def test_wiring_kind(inferred):
    case, _, spec = inferred
    assert (spec.wiring.kind if spec.wiring else None) == case.wiring
    if spec.wiring is None:
        assert any("wiring" in note for note in spec.notes)


def test_wiring_roles_name_real_modules(inferred):
    _, _, spec = inferred
    if spec.wiring is None:
        return
    for path in spec.wiring.roles.values():
        spec.module(path)  # raises KeyError for a role pointing nowhere


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_wiring_example_inputs_run_through_the_original_model(inferred):
    case, _, spec = inferred
    if spec.wiring is None:
        return
    vocab = min(
        (m.args["num_embeddings"] for m in spec.modules() if m.type == "Embedding"), default=1
    )
    inputs = [
        torch.randint(0, vocab, i.shape) if i.dtype == "long" else torch.randn(i.shape)
        for i in spec.wiring.inputs
    ]
    assert [i.name for i in spec.wiring.inputs] and all(i.shape[0] == 2 for i in spec.wiring.inputs)
    with torch.no_grad():
        case.make()(*inputs)  # the original forward accepts the example shapes


def test_json_matches_the_cli_contract(inferred):
    _, checkpoint, spec = inferred
    data = json.loads(json.dumps(spec.to_json()))
    modules = {m["path"]: m for m in data["modules"]}
    for module in spec.modules():
        if module.keys:
            assert modules[module.path]["type"] == module.type
            assert set(modules[module.path]) >= {"path", "type", "args"}
    for hp in data["hyperparameters"]:
        assert set(hp) >= {"name", "value", "determined", "candidates", "evidence"}
    assert data["unexplained_keys"] == []


# torch constructors for the types whose args and hidden values name torch kwargs.
def _construct(module: ModuleSpec, spec: ArchSpec) -> nn.Module | None:
    args = dict(module.args)
    nhead = spec.value("nhead", None)  # not every model has one
    if module.type in ("Linear", "Embedding", "LayerNorm", "RMSNorm", "LSTM", "GRU", "RNN"):
        return getattr(nn, module.type)(**args)
    if module.type.startswith(("Conv", "BatchNorm")):
        return getattr(nn, module.type)(**args)
    if module.type == "GroupNorm":
        return nn.GroupNorm(spec.value("num_groups"), **args)
    if module.type == "MultiheadAttention":
        return nn.MultiheadAttention(num_heads=nhead, **args)
    if module.type in ("TransformerEncoderLayer", "TransformerDecoderLayer", "Transformer"):
        return getattr(nn, module.type)(nhead=nhead, **args)
    return None


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
def test_args_are_torch_constructor_arguments_that_reproduce_the_shapes(inferred):
    _, checkpoint, spec = inferred
    shapes = checkpoint.shapes
    checked = 0
    for module in spec.modules():
        built = _construct(module, spec)
        if built is None:
            continue
        prefix = f"{module.path}." if module.path else ""
        expected = {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}
        assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == expected, module.path
        checked += 1
    assert checked


def test_metadata_values_win_over_defaults():
    case = ZOO_BY_NAME["seq2seq_tutorial"]
    metadata = {"nhead": 4, "batch_first": True, "activation": "ReLU", "epochs": 3}
    spec = infer_spec(checkpoint_of(case, hyper_parameters=metadata))
    nhead = spec.hyperparameter("nhead")
    assert (nhead.value, nhead.determined, nhead.source) == (4, True, SOURCE_METADATA)
    assert "nhead" in nhead.evidence
    assert spec.hyperparameter("activation").value == "relu"
    assert spec.hyperparameter("batch_first").source == SOURCE_METADATA
    assert not spec.hyperparameter("norm_first").determined


def test_metadata_aliases_and_nested_entries_are_found():
    case = ZOO_BY_NAME["encoder_lm"]
    spec = infer_spec(checkpoint_of(case, hyper_parameters={"model": {"n_head": 2}}))
    assert spec.value("nhead") == 2
    assert spec.hyperparameter("nhead").source == SOURCE_METADATA


def test_invalid_metadata_is_ignored_with_a_note():
    case = ZOO_BY_NAME["encoder_lm"]
    spec = infer_spec(checkpoint_of(case, hyper_parameters={"nhead": 5}))
    assert not spec.hyperparameter("nhead").determined
    assert any("nhead=5" in note for note in spec.notes)


def test_nhead_candidates_are_the_divisors_of_d_model():
    spec = infer_spec(checkpoint_of(ZOO_BY_NAME["encoder_lm"]))
    assert spec.hyperparameter("nhead").candidates == (1, 2, 4, 8, 16, 32)
    assert spec.value("nhead") == 8


def test_free_values_can_be_set_through_the_spec():
    spec = infer_spec(checkpoint_of(ZOO_BY_NAME["encoder_decoder_modules"]))
    chosen = spec.with_values({"nhead": 2, "norm_first": True})
    assert (chosen.value("nhead"), chosen.value("norm_first")) == (2, True)
