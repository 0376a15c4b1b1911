"""The spec's typed contract: sources decide `determined`, unknown names raise, kinds are closed."""

from __future__ import annotations

from dataclasses import replace
from typing import get_args

import pytest

from recovery_core.errors import HyperparameterError
from recovery_core.fit.train import METHODS, RunStatus
from recovery_core.infer import infer_spec
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.io.data import LOSSES
from recovery_core.model.spec import (
    SOURCE_DEFAULT,
    SOURCE_METADATA,
    SOURCE_SEARCH,
    SOURCE_SHAPE,
    SOURCE_USER,
    SOURCES,
    WIRING_KINDS,
    Hyperparameter,
)
from tests.zoo import ZOO, ZOO_BY_NAME


@pytest.fixture(scope="module")
def spec():
    weights = ZOO_BY_NAME["encoder_lm"].make().state_dict()
    return infer_spec(Checkpoint.from_state_dict(weights))


def test_the_contract_strings_are_unchanged():
    # They appear in JSON reports, plans, the CLI and the dashboard.
    assert SOURCES == ("shape", "checkpoint metadata", "default", "search", "user")
    assert WIRING_KINDS == ("sequential", "encoder", "rnn", "seq2seq")
    assert LOSSES == ("mse", "cross_entropy")
    assert METHODS == ("auto", "lstsq", "adam", "adamw", "sgd")
    assert get_args(RunStatus) == ("idle", "running", "finished", "stopped", "failed")


@pytest.mark.parametrize(
    ("source", "determined"),
    [
        (SOURCE_SHAPE, True),
        (SOURCE_METADATA, True),
        (SOURCE_DEFAULT, False),
        (SOURCE_SEARCH, False),
        (SOURCE_USER, False),
    ],
)
def test_determined_is_read_from_the_source(source, determined):
    hp = Hyperparameter(name="nhead", value=2, source=source, evidence="test")
    assert hp.determined is determined
    assert hp.to_json()["determined"] is determined
    assert replace(hp, source=SOURCE_DEFAULT).determined is False


def test_an_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown hyperparameter source"):
        Hyperparameter(name="nhead", value=2, source="guess", evidence="test")  # type: ignore[arg-type]


def test_setting_values_never_makes_them_determined(spec):
    assert not spec.hyperparameter("nhead").determined
    chosen = spec.with_values({"nhead": 2}, source=SOURCE_SEARCH)
    assert chosen.hyperparameter("nhead").source == SOURCE_SEARCH
    assert not chosen.hyperparameter("nhead").determined
    with pytest.raises(ValueError, match="not determined"):
        spec.with_values({"nhead": 2}, source=SOURCE_SHAPE)


def test_value_of_an_unknown_name_raises_naming_the_known_ones(spec):
    assert spec.value("nhead") in spec.hyperparameter("nhead").candidates
    with pytest.raises(HyperparameterError, match="'nhaed'.*nhead"):
        spec.value("nhaed")


def test_value_with_an_explicit_default_returns_it(spec):
    assert spec.value("nhaed", None) is None
    assert spec.value("nhaed", default=3) == 3
    assert spec.value("nhead", default=3) == spec.hyperparameter("nhead").value


def test_every_inferred_wiring_kind_is_one_of_the_kinds():
    for case in ZOO:
        inferred = infer_spec(Checkpoint.from_state_dict(case.make().state_dict()))
        assert {w.kind for w in inferred.wirings} <= set(WIRING_KINDS), case.name
