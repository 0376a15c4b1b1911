"""End to end: a bare state dict and data in, searched, retrained, exported and verified out.

Each case builds a zoo model with known settings, keeps only its state dict, makes data from
its own outputs, and runs `recovery recover` as a user would.
"""

from __future__ import annotations

import json

import pytest
import torch

from recovery_core.cli import main
from recovery_core.errors import DataError, ExportError
from recovery_core.plan import unverified
from recovery_core.recover import RecoverOptions, recover
from tests.zoo import ZOO_BY_NAME, tokens

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's TorchScript notices


def save_case(tmp_path, name: str, inputs: dict[str, torch.Tensor], make_target):
    """The model's weights alone, and a dataset of (inputs, target from its outputs)."""
    model = ZOO_BY_NAME[name].make()
    with torch.no_grad():
        output = model(*inputs.values())
    weights = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    data = tmp_path / f"{name}_data.pt"
    torch.save({**inputs, "target": make_target(output)}, data)
    return model, weights, data


def reloaded_with_original_weights(path, original: torch.nn.Module) -> torch.jit.ScriptModule:
    scripted = torch.jit.load(str(path))
    scripted.load_state_dict(original.state_dict())
    return scripted.eval()


def test_seq2seq_search_finds_hidden_values_and_export_reproduces_the_original(tmp_path):
    torch.manual_seed(0)
    inputs = {"src": tokens(40, 48, 7), "tgt": tokens(30, 48, 5)}
    original, weights, data = save_case(tmp_path, "seq2seq_tutorial", inputs, lambda out: out)
    out = tmp_path / "out" / "recovered.pt"

    result = recover(
        str(weights), str(data), str(out), RecoverOptions(epochs=1, search_budget_seconds=60)
    )

    assert result.spec.value("nhead") == 4 and result.spec.value("batch_first") is True
    assert result.spec.hyperparameter("nhead").source == "search"
    assert result.search.separable is False or result.search.margin > 0
    assert result.passed
    scripted = reloaded_with_original_weights(out, original)
    with torch.no_grad():
        diff = (scripted(inputs["src"], inputs["tgt"]) - original(*inputs.values())).abs().max()
    assert diff <= 1e-5


def test_encoder_with_norm_first_and_gelu_is_found(tmp_path):
    torch.manual_seed(1)
    inputs = {"tokens": tokens(50, 48, 9)}
    original, weights, data = save_case(tmp_path, "encoder_lm", inputs, lambda out: out)
    out = tmp_path / "lm.pt"

    result = recover(str(weights), str(data), str(out), RecoverOptions(epochs=1))

    assert result.spec.value("norm_first") is True
    assert result.spec.value("activation") == "gelu"
    assert result.passed
    scripted = reloaded_with_original_weights(out, original)
    with torch.no_grad():
        assert (scripted(inputs["tokens"]) - original(inputs["tokens"])).abs().max() <= 1e-5


def test_mlp_head_is_solved_in_closed_form_below_the_baseline(tmp_path):
    torch.manual_seed(2)
    inputs = {"x": torch.randn(64, 16)}
    # The task changed since training: the head must learn a new scale and offset.
    _, weights, data = save_case(tmp_path, "mlp_sequential", inputs, lambda out: 1.5 * out + 0.3)

    # The target is not the model's own output, so the search cannot tell the activations
    # apart by the loss of the untrained head; the person knows them.
    known = {"1": "ReLU", "2": "Dropout", "4": "Tanh"}
    result = recover(str(weights), str(data), str(tmp_path / "mlp.pt"), RecoverOptions(fixed=known))

    assert result.training.method_used.startswith("lstsq")
    assert result.training.final_loss < result.training.baseline_loss * 0.01
    assert result.passed


def test_cnn_with_batchnorm_trains_its_head_and_keeps_frozen_statistics(tmp_path):
    torch.manual_seed(3)
    inputs = {"x": torch.randn(32, 3, 8, 8)}
    original, weights, data = save_case(
        tmp_path, "cnn_batchnorm2d", inputs, lambda out: out.argmax(dim=1).roll(1)
    )
    known = {k: v for k, v in ZOO_BY_NAME["cnn_batchnorm2d"].hidden.items() if k != "eps"}
    options = RecoverOptions(unfreeze=("7",), method="adam", epochs=15, lr=1e-2, fixed=known)

    result = recover(str(weights), str(data), str(tmp_path / "cnn.pt"), options)

    assert result.training.final_loss < result.training.baseline_loss
    assert result.passed  # includes: every frozen tensor (BatchNorm statistics too) bit-identical
    trained = result.training.model.state_dict()
    for key in ("1.running_mean", "1.running_var", "4.running_mean"):
        assert torch.equal(trained[key], original.state_dict()[key])


def test_lstm_model_recovers_through_the_command_line(tmp_path, capsys):
    torch.manual_seed(4)
    inputs = {"tokens": tokens(30, 40, 6)}
    _, weights, data = save_case(
        tmp_path, "embedding_lstm", inputs, lambda out: (out.argmax(dim=-1) + 1) % 30
    )
    out, report = tmp_path / "lstm.pt", tmp_path / "report.json"

    code = main([
        "recover", str(weights), "--data", str(data), "--out", str(out),
        "--unfreeze", "head", "--epochs", "10", "--lr", "0.05", "--report", str(report),
    ])  # fmt: skip

    printed, log = capsys.readouterr()
    assert code == 0, log
    assert "guessed: inputs tokens; target target" in log
    assert "all checks passed" in printed
    saved = json.loads(report.read_text())
    assert saved["verification"]["passed"] is True
    assert saved["training"]["final_loss"] < saved["training"]["baseline_loss"]
    assert saved["freeze"]["trainable_modules"] == ["head"]


def test_recover_refuses_to_overwrite_its_input(tmp_path, capsys):
    torch.manual_seed(5)
    inputs = {"x": torch.randn(16, 16)}
    _, weights, data = save_case(tmp_path, "mlp_sequential", inputs, lambda out: out)
    before = weights.read_bytes()

    code = main(["recover", str(weights), "--data", str(data), "--out", str(weights)])

    _, err = capsys.readouterr()
    assert code == 2 and "it is the checkpoint you loaded" in err
    assert "guessed" not in err  # refused before any work
    assert weights.read_bytes() == before


def test_recover_refuses_a_report_path_that_is_its_input(tmp_path, capsys):
    torch.manual_seed(5)
    inputs = {"x": torch.randn(16, 16)}
    _, weights, data = save_case(tmp_path, "mlp_sequential", inputs, lambda out: out)
    before = weights.read_bytes()

    code = main([
        "recover", str(weights), "--data", str(data), "--out", str(tmp_path / "m.pt"),
        "--report", str(weights),
    ])  # fmt: skip

    _, err = capsys.readouterr()
    assert code == 2 and "it is the checkpoint you loaded" in err
    assert weights.read_bytes() == before


def test_a_mapping_given_in_full_is_used_without_guessing(tmp_path):
    """Sequence inputs (N, T, 16) fit the Linear but not the guess's (N, 16): no guess needed."""
    torch.manual_seed(6)
    inputs = {"x": torch.randn(24, 5, 16)}
    _, weights, data = save_case(tmp_path, "mlp_sequential", inputs, lambda out: 2 * out)
    out = tmp_path / "mlp.pt"
    options = RecoverOptions(inputs=("x",), target="target", epochs=2)

    # The report asked for at the bundle's own report path: written once, no copy onto itself.
    result = recover(
        str(weights), str(data), str(out), options, report_path=str(tmp_path / "mlp_report.json")
    )

    assert result.training.final_loss < result.training.baseline_loss
    assert result.passed


def test_a_model_that_cannot_run_on_the_data_is_refused_in_the_datas_terms(tmp_path):
    """The reason names the entries to check: the training run's own first forward finds
    that the model does not run (no separate look before it), then the data is blamed."""
    torch.manual_seed(2)
    _, weights, _ = save_case(tmp_path, "mlp_sequential", {"x": torch.randn(16, 16)}, lambda o: o)
    data = tmp_path / "seven_features.pt"
    torch.save({"x": torch.randn(16, 7), "target": torch.randn(16, 4)}, data)
    known = {"1": "ReLU", "2": "Dropout", "4": "Tanh"}

    with pytest.raises(DataError, match=r"cannot run on this data .*--input, --target"):
        recover(str(weights), str(data), str(tmp_path / "o.pt"), RecoverOptions(fixed=known))

    assert not (tmp_path / "o.pt").exists()


def test_recover_never_writes_over_the_dataset(tmp_path):
    torch.manual_seed(2)
    _, weights, data = save_case(
        tmp_path, "mlp_sequential", {"x": torch.randn(16, 16)}, lambda o: o
    )
    before = data.read_bytes()

    with pytest.raises(ExportError, match="the dataset"):
        recover(str(weights), str(data), str(tmp_path / "o.pt"), report_path=str(data))

    assert data.read_bytes() == before


def test_a_rebuild_above_the_build_budget_is_refused_before_allocating():
    from recovery_core.errors import LimitExceededError
    from recovery_core.infer import infer_spec
    from recovery_core.io.checkpoint import Checkpoint
    from recovery_core.model.build import check_rebuild

    huge = {"proj.weight": torch.empty(40_000, 40_000, device="meta")}  # 6.4 GB declared
    checkpoint = Checkpoint.from_state_dict(huge)

    with pytest.raises(LimitExceededError):
        check_rebuild(infer_spec(checkpoint), checkpoint)


def test_the_pipeline_pieces_keep_the_persons_values_and_match_layer_paths():
    from recovery_core.infer import infer_spec
    from recovery_core.io.checkpoint import Checkpoint
    from recovery_core.plan import TrainingSettings
    from recovery_core.session import paths_matching, person_values

    spec = infer_spec(
        Checkpoint.from_state_dict(ZOO_BY_NAME["seq2seq_tutorial"].make().state_dict())
    )
    chosen = spec.with_values({"nhead": 2, "activation": "gelu"})

    assert person_values(spec) == {}
    assert person_values(chosen) == {"nhead": 2, "activation": "gelu"}
    assert person_values(chosen, leave_out=("nhead",)) == {"activation": "gelu"}
    units = ["encoder.layers.0", "encoder.layers.1", "encoder.norm", "head"]
    assert paths_matching(units, ["encoder.layers"]) == units[:2]
    assert paths_matching(units, ["encoder.layers.1.linear1", "head"]) == units[1:2] + ["head"]
    assert paths_matching(units, ["*"]) == units
    config = TrainingSettings(method="sgd", lr=0.5, epochs=3, val_fraction=0.2).config(
        device="cpu", val_fraction=0.0
    )
    assert (config.method, config.lr, config.epochs, config.device) == ("sgd", 0.5, 3, "cpu")
    assert config.val_fraction == 0.0


@pytest.mark.parametrize("seed_global_rng", [True, False])
def test_seeding_torchs_global_generator_is_the_callers_choice(seed_global_rng):
    from recovery_core.fit.freeze import plan_freeze
    from recovery_core.fit.train import TrainingConfig, TrainingRun

    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    config = TrainingConfig(method="sgd", epochs=1, seed=7, seed_global_rng=seed_global_rng)
    run = TrainingRun(model, plan_freeze(model, ["weight"]), (x,), y, torch.nn.MSELoss(), config)
    torch.manual_seed(123)
    expected = torch.rand(1)  # the next draw after seeding 123
    torch.manual_seed(123)

    run.run()

    assert torch.equal(torch.rand(1), expected) is not seed_global_rng


def test_scoring_a_model_with_no_forward_is_refused_in_one_sentence_before_any_forward(tmp_path):
    # What the dashboard holds for such a file: a Recovery made from the inferred spec
    # (Recovery.open refuses it already). Each combination once failed on its own forward.
    from recovery_core import Checkpoint, infer_spec, load_dataset, searchable_names
    from recovery_core.errors import BuildError
    from recovery_core.session import Recovery
    from tests.real_world_zoo import bare_transformer_decoder

    checkpoint = Checkpoint.from_state_dict(bare_transformer_decoder().state_dict())
    spec = infer_spec(checkpoint)
    torch.save({"x": torch.randn(8, 5, 16), "y": torch.randn(8, 5, 16)}, tmp_path / "d.pt")
    recovery = Recovery(checkpoint, spec, "decoder.pt")
    recovery.use_data(load_dataset(str(tmp_path / "d.pt")))
    recovery.map()
    assert spec.wiring is None and list(searchable_names(spec))
    with pytest.raises(BuildError, match="no forward could be found for these weights"):
        recovery.scorer(list(searchable_names(spec)))


def _recovered_on(tmp_path, name: str, inputs: dict, make_target) -> tuple[dict, list[str]]:
    """recover on encoder_lm's weights and data made by `make_target` from its outputs:
    the report, and the log's warnings that the data is new to the model."""
    (tmp_path / name).mkdir()
    _, weights, data = save_case(tmp_path / name, "encoder_lm", inputs, make_target)
    lines: list[str] = []
    out = str(tmp_path / name / "out.pt")
    recover(str(weights), str(data), out, RecoverOptions(formats=()), log=lines.append)
    report = json.loads((tmp_path / name / "out_report.json").read_text())
    return report, [w for w in lines if w.startswith("warning:") and "new to the model" in w]


def test_data_new_to_the_model_is_searched_with_the_output_layer_refitted(tmp_path):
    # The original weights' output layer cannot judge the hidden values on a task the
    # model was not trained for (here its outputs mixed into new targets, which a
    # retrained output layer fits exactly): the search sees that, ranks them with that
    # layer refitted, finds the values the model's own outputs show, and says so.
    torch.manual_seed(2)
    inputs = {"tokens": tokens(50, 48, 9)}
    mix = torch.randn(50, 50) / 7

    own, own_said = _recovered_on(tmp_path, "own", inputs, lambda out: out)
    new, new_said = _recovered_on(tmp_path, "new", inputs, lambda out: out @ mix + 3.0)

    assert own["search"]["new_task_losses"] is None and own_said == []
    search = new["search"]
    assert search["refitted_head"] == "head"
    assert search["message"].startswith("The data is new to the model")
    assert new_said == [] and new["warnings"] == []  # the search judged them
    decided = set(own["search"]["best_values"]) - {"layer_norm_eps"}
    assert {n: search["best_values"][n] for n in decided} == {
        n: own["search"]["best_values"][n] for n in decided
    }
    assert new["training"]["final_loss"] < 1e-9  # the retrained head fits the mix exactly


def test_data_new_to_the_model_warns_when_the_search_could_not_refit_its_output_layer(
    tmp_path, monkeypatch
):
    # Where no output layer can be refitted (here: never enough rows), the search ranks
    # with the original weights, and the person must be told that the values found on
    # this data may be wrong, not shown "(search)" as if the data had decided.
    monkeypatch.setattr("recovery_core.fit.head_refit.ROWS_PER_COEFFICIENT", 10**9)
    torch.manual_seed(2)
    inputs = {"tokens": tokens(50, 48, 9)}
    mix = torch.randn(50, 50) / 7

    report, [warning] = _recovered_on(tmp_path, "new", inputs, lambda out: out @ mix + 3.0)

    assert report["search"]["refitted_head"] is None
    assert warning.startswith("warning: the trained layers fit this data far better")
    assert "nhead" in warning and "--set" in warning
    # The report, read later by someone who never saw the log, says it too.
    assert [f"warning: {w}" for w in report["warnings"]] == [warning]


def test_values_found_on_one_dataset_are_unchecked_again_on_another(tmp_path):
    # A search's values describe the data it scored; once other data (or another mapping
    # of it) is used they are kept as the starting values, not as values found on it.
    from recovery_core.io.data import load_dataset
    from recovery_core.session import Recovery

    torch.manual_seed(0)
    inputs = {"tokens": tokens(50, 32, 9)}
    _, weights, data = save_case(tmp_path, "encoder_lm", inputs, lambda out: out)
    recovery = Recovery.open(str(weights))
    recovery.use_data(load_dataset(str(data)))
    recovery.map()
    result = recovery.search()
    found = {hp.name: hp.value for hp in recovery.spec.free if hp.source == "search"}
    assert result is not None and found

    recovery.use_data(load_dataset(str(data)), "the same file, opened again")

    assert recovery.searched is None
    assert [hp.name for hp in recovery.spec.free if hp.source == "search"] == []
    assert {n: recovery.spec.value(n) for n in found} == found  # kept as the start
    assert set(found) <= set(unverified(recovery.spec))


def test_the_search_log_says_when_a_beam_scores_only_a_part_of_the_combinations():
    from recovery_core.session import BEAM_LOG_EVERY, _search_progress

    lines: list[str] = []
    report = _search_progress(lines.append)
    for done in range(1, 3 * BEAM_LOG_EVERY + 11):  # a beam ends far short of 2,304
        report(done, 2304)
    assert lines[0] == (
        "  2,304 combinations: too many to score all, so the best ones are refined one "
        "value at a time"
    )
    assert lines[1:] == [f"  scored {n * BEAM_LOG_EVERY} combinations so far" for n in (1, 2, 3)]
    lines.clear()
    for done in range(1, 49):  # every combination: a line at every tenth
        report(done, 48)
    assert lines[0] == "  screened 4 of 48 combinations" and lines[-1].endswith(
        "48 of 48 combinations"
    )
