"""Hidden hyperparameters found on data: rankings, margins, ties, fixed values, budgets."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from recovery_core.errors import HyperparameterError
from recovery_core.fit.search import RETUNABLE, score_candidates, searchable_names
from recovery_core.infer import infer_spec
from recovery_core.io.checkpoint import Checkpoint
from recovery_core.io.data import LossFunction
from recovery_core.model.build import (
    build_model,
    construct,
    example_inputs,
    load_weights,
    model_class,
)
from recovery_core.model.spec import SOURCE_SEARCH, SOURCE_USER
from tests.zoo import ZOO_BY_NAME, tokens

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's fast-path notices

TRANSFORMER_NAMES = ("nhead", "batch_first", "norm_first", "activation")


def own_outputs(case_name: str, *inputs: torch.Tensor):
    """A zoo model, its weights, its inferred spec and its own outputs on the inputs."""
    original = ZOO_BY_NAME[case_name].make()
    with torch.no_grad():
        target = original(*inputs)
    weights = original.state_dict()
    return original, weights, infer_spec(Checkpoint.from_state_dict(weights)), target


@pytest.fixture(scope="module")
def seq2seq():
    """The tutorial seq2seq model: nhead=4 and batch_first=True, neither the default."""
    torch.manual_seed(3)
    inputs = (tokens(40, 16, 8), tokens(30, 16, 8))
    return (*own_outputs("seq2seq_tutorial", *inputs), inputs)


def test_seq2seq_search_finds_nhead_and_batch_first(seq2seq):
    original, weights, spec, target, inputs = seq2seq
    assert spec.value("nhead") != 4  # the default guess is wrong; the data must correct it

    result = score_candidates(
        spec,
        weights,
        inputs,
        target,
        F.mse_loss,
        fixed={"scale_embedding": True, "causal_mask": True},
        names=TRANSFORMER_NAMES,
    )

    assert result.complete and result.scored == result.total == 6 * 2 * 2 * 2
    assert result.best_values == {
        "nhead": 4,
        "batch_first": True,
        "norm_first": False,
        "activation": "relu",
    }
    assert result.separable
    assert result.margin > 0 and result.relative_margin > 0
    assert result.ranking[0].loss < 1e-10
    best_by_nhead = dict(result.per_name["nhead"])
    assert min(best_by_nhead, key=best_by_nhead.get) == 4

    chosen = result.apply(spec)
    assert chosen.hyperparameter("nhead").source == SOURCE_SEARCH
    model = build_model(chosen)
    load_weights(model, weights)
    with torch.no_grad():
        diff = (model.eval()(*inputs) - original(*inputs)).abs().max().item()
    assert diff <= 1e-5


def test_encoder_search_finds_norm_first_and_gelu():
    torch.manual_seed(4)
    x = tokens(50, 16, 8)
    _, weights, spec, target = own_outputs("encoder_lm", x)
    assert (spec.value("norm_first"), spec.value("activation")) == (False, "relu")

    result = score_candidates(
        spec, weights, (x,), target, F.mse_loss, names=("nhead", "norm_first", "activation")
    )

    assert result.best_values == {"nhead": 4, "norm_first": True, "activation": "gelu"}
    assert result.separable and result.margin > 0


def test_values_the_data_cannot_separate_are_reported_and_kept():
    # Index 2 held a Dropout right after a ReLU: in eval mode Identity, Dropout, Flatten
    # (on 2-D input) and a second ReLU give the very same outputs.
    torch.manual_seed(5)
    x = torch.randn(16, 16)
    _, weights, spec, target = own_outputs("mlp_sequential", x)

    result = score_candidates(
        spec, weights, (x,), target, F.mse_loss, fixed={"1": "ReLU", "4": "Tanh"}, names=("2",)
    )

    assert not result.separable
    assert result.tied_names == ("2",)
    tied_values = {c.values["2"] for c in result.ranking[:4]}
    assert tied_values == {"Identity", "Dropout", "Flatten", "ReLU"}
    assert result.ranking[4].loss > result.ranking[0].loss  # GELU, Tanh, Sigmoid do differ
    assert "cannot tell apart" in result.message and "2" in result.message
    applied = result.apply(spec)
    assert applied.value("2") == spec.value("2")
    assert applied.hyperparameter("1").source == SOURCE_USER


def test_fixed_values_are_not_searched(seq2seq):
    _, weights, spec, target, inputs = seq2seq

    result = score_candidates(
        spec,
        weights,
        inputs,
        target,
        F.mse_loss,
        fixed={"nhead": 4, "scale_embedding": True, "causal_mask": True},
        names=("nhead", "batch_first"),
    )

    assert result.names == ("batch_first",)
    assert all(set(c.values) == {"batch_first"} for c in result.ranking)
    assert result.best_values == {"batch_first": True}
    assert result.apply(spec).value("nhead") == 4


def test_budget_stops_early_and_says_so(seq2seq):
    _, weights, spec, target, inputs = seq2seq
    calls: list[tuple[int, int]] = []

    result = score_candidates(
        spec,
        weights,
        inputs,
        target,
        F.mse_loss,
        names=TRANSFORMER_NAMES,
        max_combinations=3,
        progress=lambda done, total: calls.append((done, total)),
    )

    assert not result.complete
    assert (result.scored, result.total) == (3, 48)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert "3 of 48" in result.message

    timed_out = score_candidates(
        spec, weights, inputs, target, F.mse_loss, names=TRANSFORMER_NAMES, budget_seconds=0.0
    )
    assert not timed_out.complete and timed_out.scored < timed_out.total


def test_combinations_that_fail_are_ranked_last_with_their_reason():
    torch.manual_seed(6)
    inputs = (tokens(40, 8, 7), tokens(30, 8, 5))  # src and tgt of different lengths
    _, weights, spec, target = own_outputs("seq2seq_tutorial", *inputs)

    result = score_candidates(spec, weights, inputs, target, F.mse_loss, names=("batch_first",))

    # Read as (length, batch), the two inputs disagree on the batch size.
    assert result.best_values == {"batch_first": True}
    last = result.ranking[-1]
    assert last.values == {"batch_first": False}
    assert math.isinf(last.loss) and "batch" in last.error
    assert result.margin is None  # only one combination could be scored


def test_dropout_is_never_searched_and_unknown_names_are_refused(seq2seq):
    _, weights, spec, target, inputs = seq2seq

    assert "dropout" not in searchable_names(spec)
    assert set(TRANSFORMER_NAMES) <= set(searchable_names(spec))
    with pytest.raises(HyperparameterError, match="dropout"):
        score_candidates(spec, weights, inputs, target, F.mse_loss, names=("dropout",))


def test_only_the_first_max_samples_are_scored(seq2seq):
    _, weights, spec, target, inputs = seq2seq
    poisoned = target.clone()
    poisoned[4:] = float("nan")  # beyond the subset: must never be read

    result = score_candidates(
        spec,
        weights,
        inputs,
        poisoned,
        F.mse_loss,
        fixed={"scale_embedding": True, "causal_mask": True},
        names=("nhead",),
        max_samples=4,
    )

    assert all(c.error is None for c in result.ranking)
    assert result.best_values == {"nhead": 4}


def test_result_serialises_for_reports(seq2seq):
    _, weights, spec, target, inputs = seq2seq
    result = score_candidates(
        spec, weights, inputs, target, F.mse_loss, names=("nhead",), max_combinations=2
    )

    data = result.to_json()

    assert data["complete"] is False and data["names"] == ["nhead"]
    assert len(data["ranking"]) == 2
    assert json.loads(json.dumps(data, allow_nan=False)) == data


@pytest.mark.parametrize("case_name", ["seq2seq_tutorial", "encoder_lm", "lstm_bidirectional"])
def test_switching_a_built_model_matches_building_afresh(case_name):
    """Screening switches one model between values; it must equal a fresh build for each."""
    _assert_switching_matches_fresh(ZOO_BY_NAME[case_name].make().state_dict())


def test_switching_batch_first_moves_an_unbatched_positional_table():
    """An [L, d] table follows batch_first: switching it must move the table too."""
    d_model, length = 16, 12
    state = {
        "embedding.weight": torch.randn(20, d_model),
        "pos_encoding.pe": torch.randn(length, d_model),
        **{
            f"encoder.{k}": v
            for k, v in torch.nn.TransformerEncoder(
                torch.nn.TransformerEncoderLayer(d_model, 2, 32), 1, enable_nested_tensor=False
            )
            .state_dict()
            .items()
        },
        "head.weight": torch.randn(20, d_model),
        "head.bias": torch.randn(20),
    }
    _assert_switching_matches_fresh(state)


def _assert_switching_matches_fresh(state: dict[str, torch.Tensor]) -> None:
    """Every loss the search reports while screening (one built model switched between
    values) equals the loss of a model built afresh for those values."""
    spec = infer_spec(Checkpoint.from_state_dict(state))
    names = [n for n in searchable_names(spec) if n in RETUNABLE]
    assert names, "the case should have switchable hyperparameters"
    # Square [3, 3, ...] inputs: the first 3 samples along either of the first two
    # dimensions are all of them, whichever one a combination reads as its batch.
    inputs = tuple(t[:, :3] if t.dim() > 1 else t for t in example_inputs(spec, batch_size=3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is several times faster
    try:
        expected = _fresh_outputs(spec, state, names, inputs)
        shape = next(iter(expected.values())).shape
        target = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        result = score_candidates(
            spec, state, inputs, target, F.mse_loss, names=names,
            screen_samples=3, max_samples=3, finalists=1, exhaustive_up_to=10**6, threads=None,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert result.complete
    # A finalist is scored again on a fresh build; its screening loss is the switched one's.
    screened = {
        tuple(c.values[n] for n in names): c.loss if c.screen_loss is None else c.screen_loss
        for c in result.ranking
    }
    for combo, output in expected.items():
        assert output.shape == target.shape
        fresh_loss = F.mse_loss(output, target).item()
        assert screened[combo] == pytest.approx(fresh_loss, rel=1e-5, abs=1e-7), combo


def _fresh_outputs(spec, state, names, inputs) -> dict[tuple, torch.Tensor]:
    """Each combination's output from a model built for it (combinations that cannot
    run these inputs, e.g. lengths under batch_first=False, are left out)."""
    cls = model_class(spec)
    outputs = {}
    with torch.no_grad():
        for combo in itertools.product(*(spec.hyperparameter(n).candidates for n in names)):
            fresh = construct(cls, spec, dict(zip(names, combo, strict=True)))
            assert load_weights(fresh, state).ok
            try:
                outputs[combo] = fresh.eval()(*inputs)
            except Exception:  # noqa: BLE001 - invalid here; the search must rule it out too
                continue
    assert len(outputs) > 1, "at least two combinations should run"
    return outputs


def test_finalists_are_scored_on_every_sample_and_rank_first(seq2seq):
    _, weights, spec, target, inputs = seq2seq
    result = score_candidates(
        spec,
        weights,
        inputs,
        target,
        F.mse_loss,
        names=["nhead", "batch_first"],
        fixed={"scale_embedding": True, "causal_mask": True},
        screen_samples=4,
        finalists=3,
    )
    assert [c.samples for c in result.ranking[:3]] == [len(target)] * 3
    assert all(c.samples == 4 for c in result.ranking[3:] if c.error is None)
    assert result.best_values["nhead"] == 4


def test_long_sequences_are_screened_on_a_prefix_and_decided_whole():
    """A batch_first=False model fed [batch, seq, feature] as it comes reads its 300
    samples as one sequence of 300 steps: screening every combination on the whole of it
    would cost O(300²) each. Screening runs on a prefix of the sequence, the best climb to
    longer prefixes, and the finalists, the true values first, are scored on the whole."""
    from tests.forward_zoo import FORWARD_BY_NAME

    case = FORWARD_BY_NAME["vector_seq2seq_fed_as_is"]
    model = case.make()
    data = case.data(model, 300)
    weights = model.state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(weights))
    truth = {"nhead": 4, "batch_first": False, "norm_first": False, "causal_mask": False}

    result = score_candidates(
        spec,
        weights,
        (data["src"], data["tgt"]),
        data["y"],
        F.mse_loss,
        fixed={"activation": "relu", "scale_embedding": False, "layer_norm_eps": 1e-5},
    )

    assert result.best is not None and truth.items() <= result.best_values.items()
    whole = [c for c in result.ranking if c.error is None and c.screen_loss is not None]
    screened = [c for c in result.ranking if c.error is None and c.screen_loss is None]
    assert whole and all(c.steps is None for c in whole)
    assert result.best.loss < 2e-4  # whole sequences: the model's own outputs plus noise
    # Every combination in this layout screened in the same round was screened on the
    # same short prefix (a later round's prefix is longer).
    cuts = [
        {c.steps for c in screened if c.values["batch_first"] is False and c.rung == rung}
        for rung in sorted({c.rung for c in screened})
    ]
    assert all(len(cut) <= 1 for cut in cuts) and len(cuts[0]) == 1
    lengths = [next(iter(cut)) for cut in cuts if cut]
    assert lengths == sorted(lengths) and lengths[-1] < 300
    assert "screened on their first" in result.message


def test_data_no_setting_can_read_is_refused_by_shapes_before_any_forward():
    """A CNN that reads 3 channels, given 5: no stride, padding or pool changes that, and
    the search says where the shapes break without running a single combination."""
    torch.manual_seed(0)
    blocks = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 4),
    )  # fmt: skip
    weights = blocks.state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(weights))

    result = score_candidates(
        spec, weights, (torch.randn(16, 5, 16, 16),), torch.randn(16, 4), F.mse_loss
    )

    assert result.best is None and result.scored == 0
    assert "cannot pass through" in result.message and "(5, 16, 16)" in result.message
    assert "0 (Conv2d)" in result.message  # the layer where it breaks


@pytest.mark.parametrize("threads", [None, "auto"])
def test_the_thread_count_changes_only_when_the_caller_lets_the_search_choose(seq2seq, threads):
    """torch's thread count is process-wide: a server whose sessions score at once passes
    None and the search never touches it; "auto" (the CLI) uses one thread for a small
    model, and the count is restored afterwards."""
    _, weights, spec, target, inputs = seq2seq
    seen: list[int] = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        score_candidates(
            spec, weights, inputs, target, F.mse_loss, names=("nhead",),
            progress=lambda done, total: seen.append(torch.get_num_threads()),
            threads=threads,
        )  # fmt: skip
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == ({2} if threads is None else {1})


@pytest.fixture(scope="module")
def token_seq2seq():
    """A token seq2seq built from torch.nn constructors under names of its own (embed,
    blocks_a, blocks_b, readout): nhead=2, gelu, batch_first, a causal mask and scaled
    embeddings, none of them in the weights; 480 combinations to search."""
    from tests.forward_zoo import FORWARD_BY_NAME

    case = FORWARD_BY_NAME["token_seq2seq_shared_embedding"]
    model = case.make()
    data = case.data(model, 64)
    weights = model.state_dict()
    spec = infer_spec(Checkpoint.from_state_dict(weights))
    return spec, weights, (data["src"], data["tgt"]), data["y"]


TOKEN_TRUTH = {
    "nhead": 2,
    "activation": "gelu",
    "batch_first": True,
    "norm_first": False,
    "causal_mask": True,
    "scale_embedding": True,
}


def test_screening_in_rounds_keeps_the_truth_first_and_sends_fewer_to_the_full_set(
    token_seq2seq,
):
    """Every combination is screened on 2 samples, the better quarter on 8, the better
    quarter of those on the full 32: the true values still come first, the layer-norm eps
    the data cannot tell stays reported as tied, and the result says how many
    combinations each round saw. (Forward-only values screened apart: see
    test_forward_only_values_screened_apart_keep_the_ranking.)"""
    spec, weights, inputs, target = token_seq2seq
    result = score_candidates(
        spec, weights, inputs, target, F.mse_loss, budget_seconds=600, threads=1,
        factorise=False,
    )  # fmt: skip

    assert result.strategy == "every combination" and result.complete
    assert TOKEN_TRUTH.items() <= result.best_values.items()
    assert result.tied_names == ("layer_norm_eps",)
    rounds = result.screening
    assert [samples for samples, _ in rounds] == [2, 8, 32]
    assert rounds[0][1] == result.scored == result.total == 480
    assert rounds[0][1] > rounds[1][1] > rounds[2][1] == result.screened_fully >= 12
    assert sum(c.rung == 2 for c in result.ranking) == result.screened_fully
    assert all(c.samples <= 2 for c in result.ranking if c.rung == 0)
    # Losses compare only on the same samples: after the finalists, the furthest round first.
    screened = [c.rung for c in result.ranking if c.error is None and c.screen_loss is None]
    assert screened == sorted(screened, reverse=True) and screened[-1] == 0
    assert f"{result.screened_fully} reached the full screening set" in result.message
    report = json.loads(json.dumps(result.to_json(top=480)))
    assert report["screened_fully"] == result.screened_fully
    assert [(r["samples"], r["combinations"]) for r in report["screening"]] == list(rounds)
    assert {entry["rung"] for entry in report["ranking"]} == {0, 1, 2}


def test_screening_in_rounds_finds_what_screening_all_on_the_full_set_finds(token_seq2seq):
    """With as many finalists as a quarter of the combinations there is one round: every
    combination on the full screening set. It picks the same values and the same ties."""
    spec, weights, inputs, target = token_seq2seq
    common = dict(budget_seconds=600, threads=1)
    rounds = score_candidates(spec, weights, inputs, target, F.mse_loss, **common)
    one = score_candidates(spec, weights, inputs, target, F.mse_loss, finalists=120, **common)

    assert one.screening == ((32, 480),) and one.screened_fully == 480
    assert rounds.screened_fully < one.screened_fully
    assert rounds.best_values == one.best_values
    assert rounds.tied_names == one.tied_names
    # Each value's best loss is on the first round's samples, which every combination shares.
    assert min(dict(rounds.per_name["nhead"]).items(), key=lambda p: p[1])[0] == 2


def test_a_beam_screens_on_the_full_set_and_says_so(token_seq2seq):
    """Above `exhaustive_up_to` the beam refines one value at a time on the full screening
    set only: one round, every combination it tried in it, the true values still first."""
    spec, weights, inputs, target = token_seq2seq
    result = score_candidates(
        spec, weights, inputs, target, F.mse_loss, exhaustive_up_to=10, budget_seconds=600,
        threads=1,
    )  # fmt: skip

    assert result.strategy == "a beam refined one value at a time"
    assert result.screening == ((32, result.screened_fully),)
    assert result.scored == result.screened_fully < result.total
    assert all(c.rung == 0 for c in result.ranking)
    assert TOKEN_TRUTH.items() <= result.best_values.items()
    assert "Screened in rounds" not in result.message


def test_forward_only_values_screened_apart_keep_the_ranking(token_seq2seq):
    """causal_mask and scale_embedding change no built module: the first round screens
    every other combination with their current values, then every value of theirs with
    the better part of the others only. The best others agree on them here, so the rest
    is skipped, and the result says so; the truth, the ties and each value's best loss are
    those of screening every combination."""
    spec, weights, inputs, target = token_seq2seq
    common = dict(budget_seconds=600, threads=1)
    apart = score_candidates(spec, weights, inputs, target, F.mse_loss, **common)
    every = score_candidates(spec, weights, inputs, target, F.mse_loss, factorise=False, **common)

    assert apart.separated == ("causal_mask", "scale_embedding") and every.separated == ()
    assert apart.skipped > 0 and apart.scored + apart.skipped == apart.total == every.total
    assert apart.complete and apart.screening[0][1] == apart.scored < every.scored
    assert TOKEN_TRUTH.items() <= apart.best_values.items()
    assert apart.best_values == every.best_values and apart.tied_names == every.tied_names
    assert {n: min(p, key=lambda vl: vl[1])[0] for n, p in apart.per_name.items()} == {
        n: min(p, key=lambda vl: vl[1])[0] for n, p in every.per_name.items()
    }
    # Every first-round loss is the one screening every combination measured.
    first = {repr(c.values): c.first_loss for c in every.ranking}
    measured = [c for c in apart.ranking if c.first_loss is not None]
    assert len(measured) > apart.scored // 2
    assert all(c.first_loss == first[repr(c.values)] for c in measured)
    assert f"so {apart.skipped} other combinations were not screened" in apart.message
    report = json.loads(json.dumps(apart.to_json()))
    assert report["separated"] == ["causal_mask", "scale_embedding"]
    assert report["skipped"] == apart.skipped


def test_a_forward_only_value_switched_on_a_built_model_scores_as_a_fresh_build(
    token_seq2seq,
):
    """The search sets causal_mask and scale_embedding on a model it built once; each
    first-round loss equals the loss of a model built afresh with those values."""
    spec, weights, inputs, target = token_seq2seq
    result = score_candidates(spec, weights, inputs, target, F.mse_loss, threads=1)
    cls = model_class(spec)
    checked = 0
    for candidate in result.ranking:
        values = candidate.values
        if candidate.error is not None or not values["batch_first"] or values["nhead"] != 2:
            continue  # batch-first, nhead 2: the first round's samples are the first two rows
        fresh = construct(cls, spec, values)
        assert load_weights(fresh, weights).ok
        with torch.no_grad():
            loss = F.mse_loss(fresh.eval()(*(t[:2] for t in inputs)), target[:2]).item()
        assert candidate.first_loss == pytest.approx(loss, rel=1e-5, abs=1e-9), values
        checked += 1
    assert checked >= 8  # every causal_mask and scale_embedding value, a few others


def test_finalists_are_scored_on_the_model_screening_built(token_seq2seq, monkeypatch):
    """Every searched value of the token model can be switched on a built model, so the
    whole search, its twelve finalists included, builds the model once (finalists were
    built afresh each); the finalists still rank first with the truth on top."""
    spec, weights, inputs, target = token_seq2seq
    built: list[int] = []
    init = torch.nn.TransformerEncoder.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.TransformerEncoder, "__init__", counting)
    result = score_candidates(spec, weights, inputs, target, F.mse_loss, threads=1)

    assert result.fully_scored == 12 and len(built) == 1
    assert all(c.screen_loss is not None for c in result.ranking[:12])
    assert TOKEN_TRUTH.items() <= result.best_values.items()


def test_forward_only_values_that_interact_are_screened_with_every_combination(
    token_seq2seq,
):
    """Half the samples are what nhead=2 with a causal mask puts out, half what nhead=1
    without one: the best heads disagree on causal_mask, so the values interact and
    every combination is screened, as without factorising. With the targets of one
    model alone they agree, and the rest is skipped."""
    spec, weights, inputs, _ = token_seq2seq
    truth = TOKEN_TRUTH | {"layer_norm_eps": 1e-5}
    cls = model_class(spec)

    def outputs(**change):
        model = construct(cls, spec, truth | change)
        assert load_weights(model, weights).ok
        with torch.no_grad():
            return model.eval()(*inputs)

    mixed = outputs(nhead=2, causal_mask=True)
    mixed[1::2] = outputs(nhead=1, causal_mask=False)[1::2]
    fixed = {k: v for k, v in truth.items() if k not in ("nhead", "causal_mask")}
    common = dict(fixed=fixed, finalists=1, threads=1)
    interacting = score_candidates(spec, weights, inputs, mixed, F.mse_loss, **common)
    every = score_candidates(spec, weights, inputs, mixed, F.mse_loss, factorise=False, **common)
    alone = score_candidates(spec, weights, inputs, outputs(), F.mse_loss, **common)

    assert interacting.separated == () and interacting.skipped == 0
    assert interacting.scored == interacting.total == every.scored
    assert interacting.screening[0] == every.screening[0] == (2, interacting.total)
    assert interacting.best_values == every.best_values
    assert alone.separated == ("causal_mask",) and alone.skipped > 0
    assert alone.best_values["nhead"] == 2 and alone.best_values["causal_mask"] is True


def test_a_margin_over_a_best_that_fits_exactly_reads_in_words_not_a_huge_percentage():
    # Data made of the model's own outputs: the true layout's loss is 0 up to rounding, so
    # the runner-up's margin as a percentage of it was a number like 87442074.44 %.
    torch.manual_seed(0)
    tagger = torch.nn.Sequential()
    tagger.add_module("embed", torch.nn.Embedding(30, 8))
    rnn = torch.nn.GRU(8, 12, batch_first=True)
    ids = torch.randint(0, 30, (16, 9))
    with torch.no_grad():
        target = rnn(tagger(ids))[0]
    weights = {**tagger.state_dict(), **{f"rnn.{k}": v for k, v in rnn.state_dict().items()}}
    spec = infer_spec(Checkpoint.from_state_dict(weights))
    result = score_candidates(spec, weights, (ids,), target, F.mse_loss, names=["batch_first"])
    assert result.best is not None and result.best.values["batch_first"] is True
    assert result.best.loss < 1e-9
    assert "fits the data exactly, to rounding" in result.message
    assert "%" not in result.message


@pytest.mark.parametrize(
    "case_name",
    [
        "token_seq2seq_shared_embedding",
        "encoder_regressor",
        "first_token_classifier",
        "gru_last_step",
        "mlp",
    ],
)
def test_on_data_new_to_the_model_the_search_ranks_with_the_output_layer_refitted(case_name):
    """Targets the model was not trained for (its trunk read out by another output layer):
    the checkpoint's own head fits none of the combinations, and the one it fits least
    badly was a wrong one (nhead, batch_first, the pooling). The search sees a refitted
    head fit far better, ranks every combination with it refitted, and finds what it
    finds on the model's own outputs; it says so. On those own outputs nothing changes."""
    case, model, weights, spec = _zoo_model(case_name)

    def search(data):
        *inputs, target = data.values()
        return score_candidates(spec, weights, tuple(inputs), target, F.mse_loss, threads=1)

    own, new = search(case.data(model, 128)), search(case.new_task_data(model, 128))

    assert own.new_task_losses is None and "data is new to the model" not in own.message
    assert new.refitted_head == case.head
    original, refitted = new.new_task_losses
    assert original > 2 * refitted and new.message.startswith("The data is new to the model")
    decided = set(own.best_values) - set(own.tied_names) - set(new.tied_names)
    assert {n: new.best_values[n] for n in decided} == {n: own.best_values[n] for n in decided}
    assert new.best.loss < 2e-4  # the noise's level: the trunk is the true one
    assert json.loads(json.dumps(new.to_json()))["refitted_head"] == case.head
    # Refitting takes more samples per round than the nominal ones; the report says so.
    screened = [c for c in new.ranking if c.error is None and c.screen_loss is None]
    assert all(c.samples <= new.screening[c.rung][0] for c in screened)


@pytest.mark.parametrize(
    "case_name",
    ["first_token_classifier", "projected_transformer", "gru_last_step", "lstm_tagger"],
)
def test_on_class_labels_of_a_new_task_the_output_layer_is_refitted_by_logistic_regression(
    case_name,
):
    """Classes the model was not trained for (the most likely class of another output
    layer over the same trunk, per sample or per step): the original head's cross-entropy
    cannot judge the trunk. The search ranks with the output layer refitted by logistic
    regression and finds the values the model's own outputs give."""
    case, model, weights, spec = _zoo_model(case_name)

    def search(data, loss):
        *inputs, target = data.values()
        return score_candidates(spec, weights, tuple(inputs), target, loss, threads=1)

    own = search(case.data(model, 128), F.mse_loss)
    new = search(case.new_labels(model, 1024), LossFunction("cross_entropy"))

    assert new.refitted_head == case.head
    original, refitted = new.new_task_losses
    assert original > 2 * refitted
    assert new.message.startswith("The data is new to the model")
    assert "refitted by logistic regression" in new.message
    decided = set(own.best_values) - set(own.tied_names) - set(new.tied_names)
    assert {n: new.best_values[n] for n in decided} == {n: own.best_values[n] for n in decided}


def test_a_ranking_refitted_on_data_the_model_fits_finds_the_same_values_and_says_so():
    """The values first tried (a wrong guess: nhead, layout) can fit the model's own
    outputs far better with the output layer refitted, and the search then ranks with it
    refitted: its best is the one the original weights pick, it fits as well with them,
    and the message says the data is not new to the model."""
    case, model, weights, spec = _zoo_model("vector_seq2seq_fed_as_is")
    *inputs, target = case.data(model, 128).values()
    result = score_candidates(spec, weights, tuple(inputs), target, F.mse_loss, threads=1)

    assert result.refitted_head == "out" and result.new_task_losses is None
    assert "so the data is not new to the model" in result.message
    assert {"nhead": 4, "batch_first": False, "norm_first": False}.items() <= (
        result.best_values.items()
    )
    assert result.best.loss < 2e-4


def test_a_refit_that_fits_to_rounding_is_reported_not_a_division_by_zero(monkeypatch):
    # A refit can fit a task exactly: cross-entropy on labels nearly all of one class
    # rounds to 0 in float32. The message says so instead of dividing by it.
    import recovery_core.fit.search as search_module
    from recovery_core.fit.head_refit import Refitted

    real = search_module.forward_refitted

    def exact(model, inputs, target, screening=False):
        found = real(model, inputs, target, screening)
        if found.refitted is None:
            return found
        return Refitted(found.output, target.clone(), found.head, found.coefficients)

    monkeypatch.setattr(search_module, "forward_refitted", exact)
    case, model, weights, spec = _zoo_model("mlp")
    *inputs, target = case.new_task_data(model, 128).values()
    result = score_candidates(spec, weights, tuple(inputs), target, F.mse_loss, threads=1)
    assert result.best.loss == 0 and result.new_task_losses is not None
    assert "(∞× lower)" in result.message


def test_labels_under_a_loss_other_than_cross_entropy_are_not_refitted(monkeypatch):
    # A logistic refit minimises cross-entropy; under another loss on the same labels (a
    # multi-class hinge, say) it would rank by what that loss does not measure, so none
    # is fitted and the original weights rank.
    import recovery_core.fit.head_refit as head_refit

    fits = []

    def counted(*args, **kwargs):
        fits.append(1)
        return real(*args, **kwargs)

    real = head_refit.logistic_regression
    monkeypatch.setattr(head_refit, "logistic_regression", counted)
    case, model, weights, spec = _zoo_model("gru_last_step")
    *inputs, labels = case.new_labels(model, 1024).values()
    hinge = F.multi_margin_loss
    result = score_candidates(spec, weights, tuple(inputs), labels, hinge, threads=1)
    assert result.best is not None and result.refitted_head is None
    assert "refitted" not in result.message and fits == []


def _zoo_model(name: str):
    """A forward-zoo case, a model it makes, its weights and the spec they infer."""
    from tests.forward_zoo import FORWARD_BY_NAME

    case = FORWARD_BY_NAME[name]
    model = case.make()
    weights = model.state_dict()
    return case, model, weights, infer_spec(Checkpoint.from_state_dict(weights))


def _watch_scoring(monkeypatch, note) -> None:
    """Every combination the search scores is shown to `note(values, inputs, target,
    args, kwargs)` (`search._score`'s own arguments) before it is scored."""
    import recovery_core.fit.search as search_module

    real = search_module._score

    def watched(model, values, inputs, target, *args, **kwargs):
        note(values, inputs, target, args, kwargs)
        return real(model, values, inputs, target, *args, **kwargs)

    monkeypatch.setattr(search_module, "_score", watched)


def test_screening_refits_class_labels_on_a_class_share_of_the_samples_and_finalists_on_all(
    monkeypatch,
):
    """Screening scores hundreds of combinations: with class labels its refit fits each
    class apart (four labels per input of the output layer, times the square root of the
    classes but one), so each combination runs on a few samples; the finalists are
    refitted by logistic regression, on the samples it needs (four labels per input and
    class), and the message says both."""
    case, model, weights, spec = _zoo_model("first_token_classifier")
    *inputs, labels = case.new_labels(model, 1024).values()
    seen: dict[bool, set[int]] = {True: set(), False: set()}

    def note(values, inputs, target, args, kwargs):
        if kwargs.get("head") == "refitted" or "refitted" in args:  # finalists: positional
            seen[kwargs.get("screening", False)].add(len(target))

    _watch_scoring(monkeypatch, note)
    result = score_candidates(
        spec, weights, tuple(inputs), labels, LossFunction("cross_entropy"), threads=1
    )
    head = model.get_submodule(case.head)
    per_class = 4 * (head.in_features + 1)  # labels a class's weights need: one per sample
    assert result.refitted_head == case.head and result.new_task_losses is not None
    assert seen[True] and max(seen[True]) <= per_class * math.ceil(math.sqrt(head.out_features - 1))
    assert min(seen[False]) >= per_class * (head.out_features - 1)
    assert result.best.samples >= per_class * (head.out_features - 1)
    assert "Screening refitted it by least squares of each class" in result.message
    assert "the finalists by logistic regression" in result.message


def test_a_reading_of_the_samples_as_the_sequence_is_screened_on_the_first_ones_not_on_all(
    monkeypatch,
):
    """A batch_first=False reading of [batch, seq] data makes its sequence the samples:
    on all of them, each screened combination would cost attention over the whole data
    set. It is screened on as many of the first samples as a batch-first reading is, and
    the finalists climb back to all of them."""
    case, model, weights, spec = _zoo_model("vector_seq2seq_batch_first")
    *inputs, target = case.data(model, 512).values()
    lengths: dict[bool, set[int]] = {True: set(), False: set()}

    def note(values, inputs, target, args, kwargs):
        if values.get("batch_first") is False:
            lengths[kwargs.get("screening", False)].add(inputs[0].shape[0])

    _watch_scoring(monkeypatch, note)
    result = score_candidates(
        spec, weights, tuple(inputs), target, F.mse_loss, threads=1, screen_samples=32
    )
    assert lengths[True] and max(lengths[True]) <= 32
    assert result.best_values["batch_first"] is True and result.best.loss < 2e-4
    assert "first dimension as the sequence were screened on their first" in result.message
