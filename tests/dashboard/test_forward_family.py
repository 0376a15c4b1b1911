"""The family forward recovery was made for, by clicking through the dashboard (AppTest).

A Linear shared by source and target, a bare `pe` buffer, a TransformerEncoder and a
TransformerDecoder under their own names, built batch_first=False and fed [batch, seq,
feature] as they come. Uploaded with its data, the dashboard must find that forward and
layout by itself, train the output layer, and export a TorchScript file that takes the
original weights, keeps every other tensor, and fits the data better than the original.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from tests.dashboard.test_app import (
    _saved,
    export_and_wait,
    go,
    open_app,
    settled,
    shown_key,
    studio,
    wait_for_run,
)
from tests.forward_zoo import FORWARD_BY_NAME

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_the_seq2seq_family_is_recovered_trained_and_exported_by_clicking():
    case = FORWARD_BY_NAME["vector_seq2seq_fed_as_is"]
    original = case.make()
    data = case.data(original, 48)
    weights = _saved(original.state_dict())
    digest = hashlib.sha256(weights).hexdigest()

    at = open_app()
    at.sidebar.file_uploader(key="source_upload").set_value(
        ("family.pt", weights, "application/octet-stream")
    )
    settled(at.run())
    go(at, "data")
    at.file_uploader(key="data_upload").set_value(
        ("d.pt", _saved(data), "application/octet-stream")
    )
    settled(at.run())  # the unverified settings are scored by themselves

    spec = studio(at).spec
    assert spec.value("batch_first") is False and spec.value("pos_dim") == 1  # fed as is
    assert spec.wiring.roles["src_embedding"] == spec.wiring.roles["tgt_embedding"] == "proj"
    go(at, "train")
    at.selectbox(key=shown_key(at, "train_method")).set_value("lstsq").run()
    at.button(key="train_start").click().run()
    wait_for_run(at)
    record = studio(at).runs[0]
    assert record.result.final_loss < record.result.baseline_loss
    go(at, "export")
    export_and_wait(at)

    bundle = studio(at).exports[record.number]
    assert bundle.passed
    check_retrained_family(bundle.files["torchscript"], original, data)
    assert hashlib.sha256(weights).hexdigest() == digest


def check_retrained_family(path, original: torch.nn.Module, data: dict) -> None:
    """The exported TorchScript file keeps every tensor but the output layer's, fits the
    data (exactly as the user gave it) better than the original, and takes its weights."""
    scripted = torch.jit.load(str(path))
    state = original.state_dict()
    assert list(scripted.state_dict()) == list(state)
    for key, tensor in scripted.state_dict().items():
        if not key.startswith("out."):
            assert torch.equal(tensor, state[key]), key
    mse = torch.nn.functional.mse_loss
    with torch.no_grad():
        ours = mse(scripted(data["src"], data["tgt"]), data["y"])
        before = mse(original(data["src"], data["tgt"]), data["y"])
    assert ours < before
    scripted.load_state_dict(state, strict=True)
