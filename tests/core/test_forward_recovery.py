"""Forward recovery end to end: weights + data in, the right forward found, retrained, exported.

For every model of the forward zoo (tests/forward_zoo.py: unhelpful names, bare buffers,
a batch_first=False model fed [batch, seq, feature] as it comes, a tied head, pooling
between convolutions), `recover` runs with nothing fixed and no forward named. The
forward it chooses must reproduce the original model on held-out inputs within 1e-5;
the TorchScript file must take the original state dict with exactly its keys; every
tensor outside the retrained output layer must stay bit-identical.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from recovery_core.errors import BuildError, ExportError
from recovery_core.fit.prefix_cache import FEATURE_CHUNK
from recovery_core.fit.train import EVAL_BATCH
from recovery_core.infer import infer_spec
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.io.data import load_dataset
from recovery_core.model.build import build_model, load_weights
from recovery_core.recover import RecoverOptions, recover
from recovery_core.session import EXAMPLE_STEPS, Recovery
from tests.forward_zoo import FORWARD_BY_NAME, FORWARD_ZOO, ForwardCase, TokenSeq2Seq

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's fast-path notices

REPO = Path(__file__).resolve().parents[2]
SAMPLES = 64


def _files(case: ForwardCase, folder: Path) -> tuple[torch.nn.Module, Path, Path]:
    model = case.make()
    weights, data = folder / "weights.pt", folder / "data.pt"
    torch.save(model.state_dict(), weights)
    torch.save(case.data(model, SAMPLES), data)
    return model, weights, data


@pytest.mark.parametrize("case", FORWARD_ZOO, ids=repr)
def test_recover_finds_the_forward_retrains_and_exports(case: ForwardCase, tmp_path: Path):
    original, weights, data = _files(case, tmp_path)
    before = hashlib.sha256(weights.read_bytes()).hexdigest()

    result = recover(str(weights), str(data), str(tmp_path / "out" / "model.pt"), RecoverOptions())

    # The chosen forward is the original model's, on inputs it has never seen.
    held_out = case.data(original, 16, seed=99)
    inputs = tuple(v for k, v in held_out.items() if k != "y")
    rebuilt = build_model(result.spec).eval()
    assert load_weights(rebuilt, original.state_dict()).ok
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*inputs), original(*inputs), rtol=0, atol=1e-5)

    assert result.passed, result.summary()
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before  # input untouched
    scripted = torch.jit.load(str(tmp_path / "out" / "model.pt"))
    state = original.state_dict()
    assert set(scripted.state_dict()) == set(state)
    scripted.load_state_dict(state, strict=True)  # takes the original weights as they are
    trained = result.training.model.state_dict()
    head = f"{case.head}." if case.head else None
    for key, tensor in state.items():
        if head is None or not key.startswith(head):
            assert torch.equal(trained[key], tensor), f"{key} changed but does not train"


def test_the_headline_family_by_the_command_line(tmp_path: Path):
    """A Linear shared by source and target, a bare `pe` buffer, separately named encoder
    and decoder built batch_first=False and fed [batch, seq, feature]: MSE goes down."""
    case = FORWARD_BY_NAME["vector_seq2seq_fed_as_is"]
    original, weights, data = _files(case, tmp_path)
    before = weights.read_bytes()
    out = tmp_path / "recovered.pt"

    run = subprocess.run(
        [sys.executable, "-m", "recovery_core", "recover", str(weights), "--data", str(data),
         "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert "samples along dimension 1" in run.stderr  # the report says which dimension split
    scripted = torch.jit.load(str(out))
    state = original.state_dict()
    assert list(scripted.state_dict()) == list(state)
    for key, tensor in scripted.state_dict().items():
        if not key.startswith("out."):
            assert torch.equal(tensor, state[key]), key
    dataset = torch.load(data, weights_only=True)
    mse = torch.nn.functional.mse_loss
    with torch.no_grad():
        recovered = mse(scripted(dataset["src"], dataset["tgt"]), dataset["y"])
        before_training = mse(original(dataset["src"], dataset["tgt"]), dataset["y"])
    assert recovered < before_training, run.stderr[-3000:]
    scripted.load_state_dict(state, strict=True)  # and it takes the original weights
    assert weights.read_bytes() == before


def test_every_forward_that_fits_is_offered_and_named_in_the_json(tmp_path: Path):
    spec = infer_spec(
        Checkpoint.from_state_dict(FORWARD_BY_NAME["tiny_lm_tied"].make().state_dict())
    )

    data = spec.to_json()["wiring"]

    assert data["kind"] == "encoder" and data["name"] == spec.wiring.name
    assert len(data["candidates"]) == len(spec.wirings) > 1
    assert all(c["reason"] for c in data["candidates"])
    assert spec.hyperparameter("wiring").candidates == tuple(w.name for w in spec.wirings)


def test_a_named_forward_is_used_as_given(tmp_path: Path):
    case = FORWARD_BY_NAME["tiny_lm_tied"]
    _, weights, data = _files(case, tmp_path)
    spec = infer_spec(Checkpoint.from_state_dict(case.make().state_dict()))
    tied = next(w.name for w in spec.wirings if "tied_head" in w.roles)
    untied = next(w.name for w in spec.wirings if "tied_head" not in w.roles)

    result = recover(
        str(weights), str(data), str(tmp_path / "o" / "m.pt"), RecoverOptions(wiring=tied)
    )
    assert result.spec.wiring.name == tied and "wiring" not in result.search.names

    # Without its tied head the model puts out 16 features where the data has 24 classes:
    # the named forward is still the one tried, and the error says why it cannot run.
    with pytest.raises(BuildError, match="No combination could be scored"):
        recover(
            str(weights), str(data), str(tmp_path / "p" / "m.pt"), RecoverOptions(wiring=untied)
        )


def test_when_nothing_fits_the_message_names_the_parts_and_sizes():
    model = TokenSeq2Seq()
    state = model.state_dict()
    state["readout.weight"] = torch.zeros(20, 9)  # reads 9 features from a 16-wide core
    spec = infer_spec(Checkpoint.from_state_dict(state))

    assert spec.wiring is None
    note = next(n for n in spec.notes if "forward" in n)
    assert "readout" in note and "16" in note and "chain" in note
    with pytest.raises(BuildError, match="readout"):
        from recovery_core.recover import choose_forward

        choose_forward(spec, None)


def test_inspect_text_lists_the_forwards_that_fit(tmp_path: Path):
    case = FORWARD_BY_NAME["tiny_lm_tied"]
    weights = tmp_path / "lm.pt"
    torch.save(case.make().state_dict(), weights)

    from recovery_core.inspect import inspect_checkpoint

    text = inspect_checkpoint(str(weights)).to_text()

    assert "forwards fit the weights" in text and "--wiring NAME" in text
    assert "tied to wte (used)" in text


def test_formats_asked_for_are_the_only_files_written(tmp_path: Path):
    case = FORWARD_BY_NAME["mlp"]
    _, weights, data = _files(case, tmp_path)
    out = tmp_path / "out" / "m.pt"

    result = recover(str(weights), str(data), str(out), RecoverOptions(formats=("code",)))

    assert result.passed
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.pt", "m.py", "m_report.json"]
    assert [e.kind for e in result.bundle.exports] == ["torchscript", "code"]
    with pytest.raises(ExportError, match="unknown export format"):
        recover(
            str(weights),
            str(data),
            str(tmp_path / "o2" / "m.pt"),
            RecoverOptions(formats=("onnx",)),
        )


def _trunk_rows(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[tuple[int, ...]]]:
    """Counts the trunk's work: the batch entries of each encoder call the training run
    makes (its thread), and the shape of every call made outside it (checks, export)."""
    training: list[int] = []
    elsewhere: list[tuple[int, ...]] = []
    forward = torch.nn.TransformerEncoder.forward

    def counting(self, src, *args, **kwargs):
        if threading.current_thread().name == "training-run":
            training.append(int(src.shape[1 - int(self.layers[0].self_attn.batch_first)]))
        else:
            elsewhere.append(tuple(int(n) for n in src.shape))
        return forward(self, src, *args, **kwargs)

    monkeypatch.setattr(torch.nn.TransformerEncoder, "forward", counting)
    return training, elsewhere


def test_the_trunk_runs_over_the_data_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With the values known, recover runs the frozen trunk over every sample once: the
    training cache, which the baseline and the final loss reuse (and before it a probe of
    two samples finds the cut and the cache's layout). Outside training it only looks at
    two or three samples."""
    case = FORWARD_BY_NAME["vector_seq2seq_batch_first"]
    _, weights, data = _files(case, tmp_path)
    training, elsewhere = _trunk_rows(monkeypatch)
    known = {"nhead": 4, "batch_first": True, "causal_mask": True, "pos_dim": 1}
    known |= {"scale_embedding": False, "norm_first": False, "activation": "relu"}
    known |= {"layer_norm_eps": 1e-5}

    result = recover(
        str(weights),
        str(data),
        str(tmp_path / "o" / "m.pt"),
        RecoverOptions(fixed=known, formats=()),
    )

    assert result.search is None and result.training.final_loss < result.training.baseline_loss
    assert result.training.cached_prefix
    assert training == [2, SAMPLES]
    assert all(shape[0] <= 3 for shape in elsewhere), elsewhere


def test_a_model_reading_the_samples_as_one_sequence_runs_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Fed as it comes, a batch_first=False model reads all samples as one sequence, so
    every look at the data is as long as the whole: training still runs the trunk once
    over the model's batch entries (after its probe of two), and the check before training
    and the export's run on a prefix of the sequence (as long as the export's examples)."""
    case = FORWARD_BY_NAME["vector_seq2seq_fed_as_is"]
    model = case.make()
    weights, data = tmp_path / "weights.pt", tmp_path / "data.pt"
    torch.save(model.state_dict(), weights)
    steps = EXAMPLE_STEPS + 36  # longer than the prefix the checks look at
    torch.save(case.data(model, steps), data)
    dataset = torch.load(data, weights_only=True)
    entries = dataset["src"].shape[1]
    with torch.no_grad():
        truth = torch.nn.functional.mse_loss(model(dataset["src"], dataset["tgt"]), dataset["y"])
    training, elsewhere = _trunk_rows(monkeypatch)
    known = {"nhead": 4, "batch_first": False, "causal_mask": False, "pos_dim": 1}
    known |= {"scale_embedding": False, "norm_first": False, "activation": "relu"}
    known |= {"layer_norm_eps": 1e-5}

    result = recover(
        str(weights),
        str(data),
        str(tmp_path / "o" / "m.pt"),
        RecoverOptions(fixed=known, formats=()),
    )

    assert result.passed and result.training.final_loss < result.training.baseline_loss
    assert result.training.cached_prefix
    assert training == [2, entries]
    # The cache computes what the whole model does on the whole data.
    assert result.training.baseline_loss == pytest.approx(float(truth), rel=1e-4)
    assert all(shape[0] == EXAMPLE_STEPS for shape in elsewhere), elsewhere


def _positions_along_the_batch(tmp_path: Path) -> tuple[Path, Path, float, int]:
    """The fed-as-is seq2seq model (sample i at position i) with more batch entries than
    one piece of the cache or of an evaluation: its files, its loss and the entries."""
    case = FORWARD_BY_NAME["vector_seq2seq_fed_as_is"]
    model = case.make()
    width = case.data(model, 2)["src"].shape[-1]
    entries = max(FEATURE_CHUNK, EVAL_BATCH) + 44
    torch.manual_seed(1)
    src, tgt = torch.randn(6, entries, width), torch.randn(6, entries, width)
    with torch.no_grad():
        y = model(src, tgt) + 0.01 * torch.randn(6, entries, width)
        truth = float(torch.nn.functional.mse_loss(model(src, tgt), y))
    weights, data = tmp_path / "weights.pt", tmp_path / "data.pt"
    torch.save(model.state_dict(), weights)
    torch.save({"src": src, "tgt": tgt, "y": y}, data)
    return weights, data, truth, entries


FED_AS_IS_VALUES = {
    "nhead": 4, "batch_first": False, "causal_mask": False, "pos_dim": 1,
    "scale_embedding": False, "norm_first": False, "activation": "relu", "layer_norm_eps": 1e-5,
}  # fmt: skip


def test_positions_past_a_cache_chunk_are_those_of_the_whole_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The frozen-prefix cache of such a model is computed in one piece, so the baseline it
    gives is the whole model's loss on the whole data (in pieces, entries past the first
    got positions from 0 again: a loss 500 times too high)."""
    weights, data, truth, entries = _positions_along_the_batch(tmp_path)
    training, _ = _trunk_rows(monkeypatch)

    result = recover(
        str(weights), str(data), str(tmp_path / "o" / "m.pt"),
        RecoverOptions(fixed=FED_AS_IS_VALUES, formats=()),
    )  # fmt: skip

    assert result.training.cached_prefix
    assert training == [2, entries]  # the probe, then every entry in one piece
    assert result.training.baseline_loss == pytest.approx(truth, rel=1e-4)
    assert result.passed and result.training.final_loss < result.training.baseline_loss


def test_without_a_cache_such_a_model_trains_and_is_evaluated_on_the_whole_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Training its input layer leaves nothing to cache: each step and each evaluation
    then takes every entry, in order (a batch of 32 shuffled entries, or evaluation in
    pieces, would put them at other positions)."""
    weights, data, truth, entries = _positions_along_the_batch(tmp_path)
    training, _ = _trunk_rows(monkeypatch)

    result = recover(
        str(weights), str(data), str(tmp_path / "o" / "m.pt"),
        RecoverOptions(fixed=FED_AS_IS_VALUES, formats=(), unfreeze=("proj",), method="adam", epochs=2),
    )  # fmt: skip

    assert not result.training.cached_prefix
    assert set(training[1:]) == {entries}  # after the probe, every look is whole
    assert result.training.baseline_loss == pytest.approx(truth, rel=1e-4)
    assert result.passed
    # The dashboard's baseline (step 3) as well.
    recovery = Recovery.open(str(weights), values=FED_AS_IS_VALUES)
    recovery.use_data(load_dataset(str(data)))
    recovery.map()
    assert recovery.baseline() == pytest.approx(truth, rel=1e-4)
