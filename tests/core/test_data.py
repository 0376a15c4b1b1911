"""Datasets: safe loading of every supported format, mapping guesses, losses, split, baseline."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from recovery_core.errors import DataError
from recovery_core.io.data import (
    baseline_loss,
    dataset_from_tensors,
    guess_mapping,
    load_dataset,
    loss_function,
    make_mapping,
    split,
)
from recovery_core.model.spec import ModelInput

X = torch.randn(10, 3)
Y = torch.randint(0, 4, (10,))


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_torch_dict_from_a_file_and_from_uploaded_bytes(tmp_path):
    path = tmp_path / "data.pt"
    path.write_bytes(saved({"x": X, "y": Y, "note": "ignored"}))
    for dataset in (load_dataset(path), load_dataset(path.read_bytes(), name="up.pt")):
        assert dataset.names == ("x", "y") and dataset.n_samples == 10
        assert dataset.format == "torch-dict"
        assert torch.equal(dataset.tensors["x"], X)
    assert load_dataset(path.read_bytes()).source_name == "uploaded dataset"


def test_a_tuple_and_a_tensor_dataset_become_input_n_and_target():
    for obj, fmt in (
        ((X, X * 2, Y), "torch-sequence"),
        (TensorDataset(X, X * 2, Y), "torch-tensordataset"),
    ):
        dataset = load_dataset(saved(obj))
        assert dataset.format == fmt
        assert dataset.names == ("input_0", "input_1", "target")
        assert torch.equal(dataset.tensors["target"], Y)


def test_safetensors_and_npz_are_sniffed_from_content_not_the_name(tmp_path):
    save_file({"x": X.contiguous(), "y": Y}, str(tmp_path / "data.pt"))  # misleading name
    assert load_dataset(tmp_path / "data.pt").format == "safetensors"
    np.savez(tmp_path / "arrays.bin", x=X.numpy(), y=Y.numpy())
    dataset = load_dataset(tmp_path / "arrays.bin.npz")
    assert dataset.format == "npz" and torch.equal(dataset.tensors["y"], Y)


def test_npz_with_object_arrays_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="pickle"):
        load_dataset(tmp_path / "obj.npz")


class Payload:
    def __reduce__(self):
        return (os.system, ("touch canary",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = saved({"x": X, "evil": Payload()})
    with pytest.raises(DataError, match="could not be loaded safely") as error:
        load_dataset(data)
    assert not (tmp_path / "canary").exists()
    assert "weights_only=False" not in str(error.value)


def test_entries_that_disagree_on_the_sample_count_are_named_with_their_shapes():
    with pytest.raises(DataError, match=r"x \(10, 3\), y \(9,\)"):
        load_dataset(saved({"x": X, "y": Y[:9]}))


def test_garbage_and_empty_files_get_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a dataset"):
        load_dataset(b"just some text")
    with pytest.raises(DataError, match="empty"):
        load_dataset(b"")
    with pytest.raises(DataError, match="single tensor"):
        load_dataset(saved(X))


def test_nan_values_become_warnings():
    bad = X.clone()
    bad[0, 0] = float("inf")
    dataset = load_dataset(saved({"x": bad, "y": Y}))
    assert len(dataset.warnings) == 1 and "x contains 1 NaN or Inf" in dataset.warnings[0]


def test_seq2seq_guess_keeps_tgt_as_decoder_input_and_takes_tgt_y_as_target():
    src, tgt = torch.randint(0, 9, (10, 6)), torch.randint(0, 9, (10, 5))
    dataset = dataset_from_tensors({"tgt_y": tgt, "src": src, "tgt": tgt})
    specs = [
        ModelInput(name="src", dtype="long", shape=(2, 6)),
        ModelInput(name="tgt", dtype="long", shape=(2, 5)),
    ]
    mapping = guess_mapping(dataset, specs)
    assert mapping.inputs == ("src", "tgt") and mapping.target == "tgt_y"
    assert mapping.loss == "cross_entropy"
    assert "by its name" in mapping.reason


def test_guess_by_dtype_and_rank_when_names_do_not_match():
    tokens, values = torch.randint(0, 9, (10, 6)), torch.randn(10, 6, 4)
    dataset = dataset_from_tensors({"a": values, "b": tokens})
    mapping = guess_mapping(dataset, [ModelInput(name="x", dtype="long", shape=(2, 6))])
    assert mapping.inputs == ("b",) and mapping.target == "a" and mapping.loss == "mse"


def test_guess_without_model_inputs_uses_names():
    mapping = guess_mapping(dataset_from_tensors({"labels": Y, "inputs": X}))
    assert mapping.inputs == ("inputs",) and mapping.target == "labels"


def test_make_mapping_names_the_available_entries():
    dataset = dataset_from_tensors({"x": X, "y": Y})
    with pytest.raises(
        DataError, match=r"no entry 'z'; available: x float32 \(10, 3\), y int64 \(10,\)"
    ):
        make_mapping(dataset, ["z"], "y")
    with pytest.raises(DataError, match="Cross-entropy needs integer"):
        make_mapping(dataset, ["y"], "x", loss="cross_entropy")
    assert make_mapping(dataset, ["x"], "y").loss == "cross_entropy"


def test_cross_entropy_flattens_sequence_outputs_and_mse_accepts_a_flat_target():
    mapping = make_mapping(dataset_from_tensors({"x": X, "y": Y}), ["x"], "y")
    logits, labels = torch.randn(4, 7, 5), torch.randint(0, 5, (4, 7))
    expected = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1))
    assert torch.allclose(loss_function(mapping)(logits, labels), expected)

    mse = loss_function(make_mapping(dataset_from_tensors({"x": X, "t": X[:, 0]}), ["x"], "t"))
    assert torch.allclose(mse(X[:, :1], X[:, 0]), torch.tensor(0.0))
    with pytest.raises(DataError, match="output has shape"):
        mse(X, X[:, 0])


def test_split_is_disjoint_and_reproducible():
    dataset = dataset_from_tensors({"i": torch.arange(20), "y": torch.arange(20).float()})
    train, val = split(dataset, 0.25, seed=3)
    assert (train.n_samples, val.n_samples) == (15, 5)
    assert set(train.tensors["i"].tolist()).isdisjoint(val.tensors["i"].tolist())
    assert torch.equal(split(dataset, 0.25, seed=3)[1].tensors["i"], val.tensors["i"])
    with pytest.raises(DataError):
        split(dataset, 0.0)


def test_baseline_loss_is_the_eval_mode_loss_and_keeps_the_models_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 4))
    model.train()
    got = baseline_loss(
        model,
        (X,),
        Y,
        loss_function(make_mapping(dataset_from_tensors({"x": X, "y": Y}), ["x"], "y")),
        batch_size=3,
    )
    assert model.training and model[1].training
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(X), Y).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert model[1].num_batches_tracked.item() == 0  # eval mode: running stats untouched


def test_baseline_loss_puts_back_each_modules_own_mode():
    """A frozen layer in eval mode inside a training model stays in eval mode."""
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    model.train()
    model[1].eval()
    mapping = make_mapping(dataset_from_tensors({"x": X, "y": Y}), ["x"], "y")
    baseline_loss(model, (X,), Y, loss_function(mapping))
    assert model.training and model[0].training and not model[1].training


def test_a_compressed_torch_archive_is_refused_before_unpickling(tmp_path):
    import zipfile

    plain = tmp_path / "plain.pt"
    plain.write_bytes(saved({"x": X, "y": Y}))
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(DataError, match="compressed member"):
        load_dataset(deflated)
