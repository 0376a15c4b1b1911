"""Find the hidden hyperparameters on data: score every combination of candidates.

The weights cannot show nhead, batch_first, norm_first, the activation, whether
embeddings are scaled or the target masked. Each combination of candidate values is
built, loaded with the original weights and scored by its loss in eval mode without
gradients; the ranking and the margin between the best and the runner-up say how sure
the choice is. Names whose values the loss cannot separate are reported, not picked.

Speed: the generated class is compiled once; a model is built and loaded once per
combination of the values that change its modules, and the forward-only settings
(scale_embedding, causal_mask) are switched on that model. Only the first
`max_samples` samples are scored, in two stages: every combination is first screened on
the first `screen_samples` samples, then the `finalists` best are scored again on all
`max_samples`; the ranking and the margin come from that second, comparable scoring.
Screening itself runs in rounds (successive halving, `_Scorer`): every combination on a
few samples, the better part of each round on more, so only the close ones pay for all
`screen_samples`; the result says how many each round saw (`SearchResult.screening`).
The first round screens the forward-only values apart from the others (`_separated`):
every value with the better part of the other combinations only, when the best of those
agree on them (`SearchResult.separated` and `skipped` say what that left out).

Data new to the model (a task it was not trained for) is ranked with each combination's
output layer refitted (`head_refit`: least squares on values, logistic regression on
class labels; `_Pass.ranked`): the original head fits none of them there, and cannot
judge the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch.nn import functional as F

from recovery_core import humanize
from recovery_core.errors import HyperparameterError
from recovery_core.fit.head_refit import (
    REFIT_GAIN,
    ROWS_PER_COEFFICIENT,
    chance_loss,
    fits_exactly,
    forward_refitted,
    output_layer,
    refit_method,
    screening_method,
)
from recovery_core.infer.registry import RETUNABLE_NAMES, RETUNABLE_TYPES
from recovery_core.infer.unknown import shape_class
from recovery_core.model import stack_shapes
from recovery_core.model.build import check_fit, model_class
from recovery_core.model.codegen import FORWARD_ONLY, hidden_arguments
from recovery_core.model.layout import batch_dims, prune_by_data, sequence_dims, take
from recovery_core.model.spec import SOURCE_SEARCH, SOURCE_USER, WIRING, ArchSpec

# Hyperparameters that cannot change an eval-mode forward, so the data cannot find them.
NO_EFFECT_IN_EVAL = frozenset({"dropout"})

# Below this many parameters one thread scores faster: handing tiny matrix products to a
# second thread costs more than it saves (measured on the seq2seq zoo model, 2 shared
# cores: 7 ms per forward on one thread, 196 ms on two).
SINGLE_THREAD_BELOW = 5_000_000
EXPENSIVE_SECONDS = 0.05  # a combination slower than this is scored on every thread

# Values that torch.nn's transformer, attention, norm and RNN modules read from plain
# attributes at forward time: screening switches one built model between them instead of
# building one per value (a build costs ~20 ms, a screening forward ~5 ms). Finalists are
# scored on the screened model while it is held (`_Group.finalist`); a test holds
# switched and fresh models to equal outputs.
RETUNABLE = RETUNABLE_NAMES  # each family says which of its values it can switch
# (torch class, how to switch it) per family type that can; the first match applies.
_RETUNERS = tuple((getattr(torch.nn, t.name), t.retune) for t in RETUNABLE_TYPES)
_RETUNABLE_TYPES = tuple(cls for cls, _ in _RETUNERS)

# Up to this many combinations every one is screened; beyond, a beam search (`_beam`).
# Screening in rounds costs about a small forward per combination: all the demo's 1,152
# take 0.6x the beam's 334 on the full set (its 2,304 with the forward searched, 1.3x the
# beam's 312: there the beam stays; benchmarks/search_rounds.py). The pace check still
# hands a slow search to the beam.
EXHAUSTIVE_UP_TO = 2048
BEAM_START = 48  # combinations a beam starts from per forward hypothesis
MAX_BEAM_WIDTH = 32  # combinations kept between refinements, when they are cheap
MAX_SKELETONS = 4096  # shape skeletons a stack's beam may start from
# Samples are screened and scored within this many input elements each (at least one).
ELEMENTS_PER_SAMPLE = 1024
# A sample longer than that is screened on a prefix of its sequence, this many steps at
# least; finalists are then scored on RUNG_GROWTH times longer prefixes, the better half
# going on each time, until whole sequences decide (successive halving).
MIN_SCREEN_STEPS = 16
RUNG_GROWTH = 4
FINAL_KEEP = 4  # combinations that reach whole sequences (when the budget allows)
FAR_BEHIND = 4.0  # a leader this many times the best's loss on a prefix stops climbing
MODELS_PER_GROUP = 4  # built models kept per forward hypothesis while screening
# Screening in rounds (successive halving, `_Scorer.climb`): each round has SCREEN_GROWTH
# times the samples of the one before (and cuts long sequences SCREEN_GROWTH times longer)
# and screens the better 1/SCREEN_GROWTH of it; the first has SCREEN_START samples. A combination within TIE_KEEP
# (relative) of a round's best always goes on: it may end tied with the best.
SCREEN_GROWTH = 4
SCREEN_START = 2
TIE_KEEP = 0.05
# Forward-only values screened apart (`_separated`): the rest of their combinations is
# skipped only when this many of the best other combinations all do best with the same.
AGREE_HEADS = 4

# A best combination that leaves more than this share of the target's variance unexplained
# is ranked again with its output layer refitted (`_worth_refitting`); the refitted
# ranking is kept only when it fits REFIT_GAIN times better (`_Refit.new`).
POOR_FIT = 0.1
# For class labels: a cross-entropy above this share of the classes' entropy (the loss of
# predicting each class's frequency). Own labels of a model that does well sit below it;
# labels of a task it was not trained for sit near or above the entropy itself.
POOR_FIT_LABELS = 0.5
PROBES = 16  # combinations `_probe` tries at most for one that runs

RELATIVE_TIE = 1e-4  # losses closer than this (relative to the best) count as tied
ABSOLUTE_TIE = 1e-9  # and this, for a best loss at or near zero
NOISE_TIE = 0.01  # a gap above this (relative) is never put down to noise

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
# What `_retune` switches in a built model (see `_retune_plan`).
_Plan = tuple[list[tuple[torch.nn.Module, Callable[..., None]]], list[torch.nn.Module]]
Threads = int | Literal["auto"] | None
# Which output layer a combination is scored with (see `_score`).
Head = Literal["original", "refitted", "measure"]
_Pair = tuple[tuple[int, tuple[Any, ...]], "Candidate"]  # (group index, values), result


@dataclass(frozen=True)
class Candidate:
    values: dict[str, Any]
    loss: float  # math.inf when the combination failed
    error: str | None = None  # why it failed: cannot load, forward raised, loss not finite
    samples: int = 0  # how many samples the loss is measured on (finalists: all scored)
    steps: int | None = None  # each sample's sequence cut to its first `steps` (None: whole)
    screen_loss: float | None = None  # a finalist's loss on the screening samples
    # A finalist's loss on each sample, in order: tells a real difference from noise.
    sample_losses: tuple[float, ...] | None = field(default=None, repr=False, compare=False)
    # Successive halving: the screening round it reached (0 first; see `_Scorer.rungs`) and
    # its loss on the first round's samples, which every combination screened shares.
    rung: int = 0
    first_loss: float | None = None
    # The loss with the output layer refitted to the same samples (`head_refit`), where
    # it was measured (finalists) and could be (a final nn.Linear, enough rows).
    refit_loss: float | None = field(default=None, compare=False)
    # Scored with the output layer refitted: the loss with the original one beside it.
    original_loss: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SearchResult:
    names: tuple[str, ...]  # the hyperparameters that were searched
    ranking: tuple[Candidate, ...]  # scored combinations best first, then the failed ones
    best_values: dict[str, Any]
    margin: float | None  # runner-up loss - best loss (None with fewer than two scored)
    relative_margin: float | None  # margin / |best loss|
    separable: bool  # False when the runner-up is within the tie tolerance of the best
    tied_names: tuple[str, ...]  # names whose values differ among the tied best combinations
    per_name: dict[str, tuple[tuple[Any, float], ...]]  # name -> (value, best loss with it)
    scored: int  # combinations tried (including failed ones)
    total: int  # combinations there are
    complete: bool  # False when the budget or the count stopped the search early
    seconds: float
    message: str
    fixed: dict[str, Any] = field(default_factory=dict)  # values the person set; not searched
    strategy: str = "every combination"  # or "a beam refined one value at a time"
    fully_scored: int = 0  # finalists scored on every sample (the rest on the screening ones)
    # Per screening round, first to last: (samples each combination is screened on at
    # most, combinations screened on them); the better part of each round goes on.
    screening: tuple[tuple[int, int], ...] = ()
    screened_fully: int = 0  # combinations that reached the last round (all screen samples)
    # Forward-only names the first round screened apart from the others (`factorise`), and
    # the combinations that left unscreened: the best others agreed on their values.
    separated: tuple[str, ...] = ()
    skipped: int = 0
    # The output layer every combination was scored with refitted to the data (`_Refit`;
    # None: the original weights), and when that is because the data is new to the model,
    # the best's loss with the original weights and with the layer refitted.
    refitted_head: str | None = None
    new_task_losses: tuple[float, float] | None = None

    @property
    def best(self) -> Candidate | None:
        first = self.ranking[0] if self.ranking else None
        return first if first is not None and first.error is None else None

    def to_json(self, top: int = 20) -> dict[str, Any]:
        """Plain JSON values (failed losses as null) for reports; the first `top` ranked."""

        def number(x: float | None) -> float | None:
            return x if x is not None and math.isfinite(x) else None

        return {
            "names": list(self.names),
            "fixed": dict(self.fixed),
            "best_values": dict(self.best_values),
            "margin": number(self.margin),
            "relative_margin": number(self.relative_margin),
            "separable": self.separable,
            "tied_names": list(self.tied_names),
            "scored": self.scored,
            "total": self.total,
            "complete": self.complete,
            "seconds": self.seconds,
            "message": self.message,
            "strategy": self.strategy,
            "fully_scored": self.fully_scored,
            "screening": [{"samples": n, "combinations": k} for n, k in self.screening],
            "screened_fully": self.screened_fully,
            "separated": list(self.separated),
            "skipped": self.skipped,
            "refitted_head": self.refitted_head,
            "new_task_losses": None if self.new_task_losses is None else list(self.new_task_losses),
            "ranking": [
                {
                    "values": dict(c.values),
                    "loss": number(c.loss),
                    "error": c.error,
                    "samples": c.samples,
                    "steps": c.steps,
                    "rung": c.rung,
                }
                for c in self.ranking[:top]
            ],
            "per_name": {
                name: [[value, number(loss)] for value, loss in pairs]
                for name, pairs in self.per_name.items()
            },
        }

    def apply(self, spec: ArchSpec) -> ArchSpec:
        """The spec with the chosen values. Where the data cannot separate some names, the
        tied combination that keeps the most of their current values is taken (the guess
        stands where the data cannot overrule it): always a combination that was scored."""
        spec = spec.with_values(self.fixed, source=SOURCE_USER)
        chosen = dict(self.best_values)
        if self.tied_names and self.best is not None:
            best = self.best
            current = {n: spec.value(n) for n in self.tied_names}
            tied = [
                c
                for c in self.ranking
                if c.error is None and c.screen_loss is not None and _tied(c, best)
            ]
            # The tied combination that keeps the most current values (the guess stands
            # where the data cannot overrule it); among equals, the better ranked.
            keeps = [sum(c.values.get(n) == v for n, v in current.items()) for c in tied]
            if tied:
                chosen = dict(tied[keeps.index(max(keeps))].values)
        if WIRING in chosen:  # the forward first: the other names may belong to it alone
            spec = spec.with_values({WIRING: chosen.pop(WIRING)}, source=SOURCE_SEARCH)
        return spec.with_values(chosen, source=SOURCE_SEARCH)


def walks_a_beam(total: int, exhaustive_up_to: int = EXHAUSTIVE_UP_TO) -> bool:
    """Does a search reporting `total` combinations to its `progress` walk a beam, so
    that it scores only a part of them? (A search under the bound that screens too
    slowly turns to a beam as well; that is known only as it runs.)"""
    return total > exhaustive_up_to


def searchable_names(spec: ArchSpec) -> tuple[str, ...]:
    """Free hyperparameters with a choice to make that change the eval-mode forward."""
    used = {h.name for h in hidden_arguments(spec)} | {WIRING}
    return tuple(
        hp.name
        for hp in spec.free
        if hp.name in used and hp.name not in NO_EFFECT_IN_EVAL and len(hp.candidates) > 1
    )


@dataclass
class _Group:
    """The combinations of one forward hypothesis: one class, models cached by build key."""

    spec: ArchSpec
    names: tuple[str, ...]  # searched, structural names varying slowest
    candidates: list[tuple[Any, ...]]
    wiring: str | None  # the "wiring" value these combinations carry, when it is searched
    weights: Mapping[str, torch.Tensor]
    cls: type[torch.nn.Module] = field(init=False)
    arguments: dict[str, str] = field(init=False)
    structural: tuple[str, ...] = field(init=False)
    rebuild_on: tuple[str, ...] = field(init=False)
    models: dict[tuple[Any, ...], tuple[torch.nn.Module | None, str | None]] = field(
        default_factory=dict
    )
    plans: dict[tuple[Any, ...], tuple[torch.nn.Module, _Plan]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cls = model_class(self.spec)
        self.arguments = {h.name: h.argument for h in hidden_arguments(self.spec)}
        self.structural = tuple(n for n in self.names if n not in FORWARD_ONLY)
        # Parameter-less slots hold no weights: a built model swaps them in place.
        self.slots = frozenset(n for n in self.names if _is_slot(self.spec, n))
        self.rebuild_on = tuple(
            n for n in self.structural if n not in RETUNABLE and n not in self.slots
        )

    @property
    def total(self) -> int:
        return math.prod(len(c) for c in self.candidates)

    def values(self, combo: tuple[Any, ...]) -> dict[str, Any]:
        values = dict(zip(self.names, combo, strict=True))
        return values if self.wiring is None else {WIRING: self.wiring} | values

    def model(self, values: Mapping[str, Any]) -> tuple[torch.nn.Module | None, str | None]:
        """A loaded model switched to these values (built once per build key)."""
        key = tuple(values[n] for n in self.rebuild_on)
        if key not in self.models:
            if len(self.models) >= MODELS_PER_GROUP:
                self.models.pop(next(iter(self.models)))
            self.models[key] = _build_and_load(
                self.cls, self.arguments, values, self.structural, self.weights
            )
            model = self.models[key][0]
            if model is not None and not _retunable(model):
                # Something else reads these: build each (slots are still swapped).
                self.rebuild_on = tuple(n for n in self.structural if n not in self.slots)
        model, error = self.models[key]
        if model is not None:
            # Which modules to switch, found once per built model (a walk over every
            # module per combination cost about a forward of a small model); a model
            # whose slots are swapped is walked each time.
            plan = self.plans.get(key) if not self.slots else None
            if plan is None or plan[0] is not model:
                plan = (model, _retune_plan(model))
                self.plans[key] = plan
            _retune(model, values, plan[1])
            _set_forward_only(model, self.arguments, values)
            self._swap_slots(model, values)
        return model, error

    def _swap_slots(self, model: torch.nn.Module, values: Mapping[str, Any]) -> None:
        for name in self.slots & values.keys():
            make = self.cls.__init__.__globals__["parameter_free_layer"]  # the generated helper
            parent, _, child = name.rpartition(".")
            model.get_submodule(parent)._modules[child] = make(values[name]).eval()

    def finalist(self, values: Mapping[str, Any]) -> torch.nn.Module | None:
        """A model for a finalist: the screened model built for its build key switched to
        its values while the group still holds it (a test holds switched models equal to
        fresh ones), else a fresh build (holding every screened model could cost many
        copies)."""
        if tuple(values[n] for n in self.rebuild_on) in self.models:
            return self.model(values)[0]
        return self.fresh(values)

    def fresh(self, values: Mapping[str, Any]) -> torch.nn.Module | None:
        """A model built for exactly these values, nothing switched (finalists)."""
        model, _ = _build_and_load(self.cls, self.arguments, values, self.structural, self.weights)
        if model is not None:
            _set_forward_only(model, self.arguments, values)
        return model


@dataclass
class _Data:
    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor
    samples: int = 0  # along the model's batch dimension
    steps: int | None = None  # each sequence cut to its first `steps` (None: whole)

    def size(
        self,
        spec: ArchSpec,
        values: Mapping[str, Any],
        count: int,
        cut: bool = True,
        elements: int = ELEMENTS_PER_SAMPLE,
        dimension_zero: bool = True,
    ) -> tuple[int, int | None]:
        """`count` samples, fewer when each is larger than ELEMENTS_PER_SAMPLE, and (with
        `cut`) how long a prefix of each sequence when even one sample is larger than
        `elements` (None: whole): an early screening round cuts sequences shorter and
        keeps its count of samples. A model that reads dimension 0 as its sequence sees
        the whole of it in every sample (see layout.py): with `dimension_zero`, that
        sequence is cut to `count` steps, so that it is screened on the data's first
        `count` entries along dimension 0, as a model that reads them as samples is (the
        whole could be thousands of steps, each attending to all the others). A cut
        sequence is a cheap stand-in for screening; finalists climb back to whole ones."""
        dims = batch_dims(spec, values)
        per_sample = sum(
            t.numel() // max(1, t.shape[dims.inputs]) if t.dim() > dims.inputs else 1
            for t in self.inputs
        )
        length = None
        seq = sequence_dims(spec, values)
        if cut and seq is not None:
            steps = _steps(self.inputs, seq[0])
            per_step = per_sample / max(1, steps)
            fits = steps
            if per_sample > elements:
                fits = max(MIN_SCREEN_STEPS, int(elements / per_step))
            if dimension_zero and seq[0] == 0:
                fits = min(fits, max(MIN_SCREEN_STEPS, count))
            if fits < steps:
                length, per_sample = fits, math.ceil(per_step * fits)
        return max(1, min(count, count * ELEMENTS_PER_SAMPLE // max(1, per_sample))), length

    def first(
        self,
        spec: ArchSpec,
        values: Mapping[str, Any],
        count: int,
        length: int | None = None,
        rows: int = 0,
    ) -> _Data:
        """The first `count` samples along the model's batch dimension for these values,
        each sequence cut to its first `length` steps when given; more until their target
        holds `rows` rows for an output layer's refit (when every sample is in, longer
        prefixes of a cut sequence), or all there are."""
        part = self._first(spec, values, count, length)
        while _rows(part.target) < rows:
            per_sample = _rows(part.target) / max(1, part.samples)
            count = max(count + 1, math.ceil(rows / per_sample) if per_sample else 2 * count)
            more = self._first(spec, values, count, length)
            if more.samples <= part.samples and length is not None:
                per_step = _rows(part.target) / length
                length = max(length + 1, math.ceil(rows / per_step) if per_step else 2 * length)
                more = self._first(spec, values, count, length)
            if _rows(more.target) <= _rows(part.target):
                break
            part = more
        return part

    def _first(
        self, spec: ArchSpec, values: Mapping[str, Any], count: int, length: int | None
    ) -> _Data:
        dims = batch_dims(spec, values)
        inputs = tuple(take(t, count, dims.inputs) for t in self.inputs)
        target = take(self.target, count, dims.target)
        seq = sequence_dims(spec, values)
        if length is not None and seq is not None:
            inputs = tuple(take(t, length, seq[0]) for t in inputs)
            if seq[1] is not None:
                target = take(target, length, seq[1])
        samples = target.shape[dims.target] if target.dim() > dims.target else len(target)
        cut = length is not None and seq is not None and length < _steps(self.inputs, seq[0])
        return _Data(inputs, target, samples, length if cut else None)


class _Scorer:
    """Screens combinations within the budget and remembers each one's latest result.

    Screening runs in rounds (successive halving, `rungs`: samples and elements per sample
    of each, the last the full screening set): every combination on the first round's few
    samples, then the better part of each round on the next, larger one (`climb`). A wrong
    nhead, layout or norm placement is far off from the first samples; only the close
    ones pay for the full set."""

    def __init__(
        self,
        groups: list[_Group],
        data: _Data,
        loss_fn: LossFn,
        limits: tuple[float, float, int, int],  # started, budget seconds, max count, samples
        progress: Callable[[int, int], None] | None,
        finalists: int,
        refit_rows: int = 0,
    ) -> None:
        self.groups, self.data, self.loss_fn, self.progress = groups, data, loss_fn, progress
        # With the output layer refitted to each round's samples (`_Pass.ranked`), by the
        # screening refit (`head_refit.forward_refitted`): at least this many rows to fit
        # on (0: scored with the original weights).
        self.refit_rows = refit_rows
        self.started, self.budget, self.max_count, samples = limits
        self.to_score = min(sum(g.total for g in groups), self.max_count)
        self.rungs = _rungs(samples, self.to_score, finalists)
        self.rung = 0
        self.results: dict[tuple[int, tuple[Any, ...]], Candidate] = {}
        self.earlier: dict[tuple[int, tuple[Any, ...]], Candidate] = {}  # set aside (beam)
        self.counts = [0] * len(self.rungs)  # combinations screened at each round
        self.widest = [0] * len(self.rungs)  # samples a round took at most (refits: more)
        # Forward-only names screened apart from the others, and the combinations that
        # left unscreened (`_separated`).
        self.separated: dict[str, None] = {}
        self.skipped = 0

    def first_round_loss(self, index: int, combo: tuple[Any, ...]) -> Candidate | None:
        """A combination's result so far (None: not screened)."""
        return self.results.get((index, combo))

    def spent(self) -> bool:
        return time.monotonic() - self.started > self.budget

    def score(self, index: int, combo: tuple[Any, ...]) -> Candidate | None:
        """Screen one combination at the current round (once); None when the budget is
        spent."""
        known = self.results.get((index, combo))
        if known is not None and (known.error is not None or known.rung >= self.rung):
            return known
        if (known is None and len(self.results) >= self.max_count) or self.spent():
            return None
        group = self.groups[index]
        values = group.values(combo)
        model, error = group.model(values)
        if model is None:
            candidate = Candidate(values, math.inf, error, rung=self.rung)
        else:
            part, steps = self._part(group, values)
            self.widest[self.rung] = max(self.widest[self.rung], part.samples)
            candidate = _score(
                model, values, part.inputs, part.target, self.loss_fn, part.samples,
                head="refitted" if self.refit_rows else "original", screening=True,
            )  # fmt: skip
            first = candidate.loss if known is None else known.first_loss
            candidate = dataclasses.replace(
                candidate, steps=steps, rung=self.rung, first_loss=first
            )
        self.results[(index, combo)] = candidate
        self.counts[self.rung] += 1
        if known is None and self.progress is not None:
            self.progress(len(self.results), self.to_score)
        return candidate

    def _part(self, group: _Group, values: Mapping[str, Any]) -> tuple[_Data, int | None]:
        """The current round's samples for these values, and the steps each sequence is
        cut to (None: whole); with a refitted head, more samples until they hold
        `refit_rows` rows, or all there are."""
        samples, elements = self.rungs[self.rung]
        count, steps = self.data.size(group.spec, values, samples, elements=elements)
        part = self.data.first(group.spec, values, count, steps, self.refit_rows)
        return part, part.steps

    def climb(self, keep_at_least: int) -> None:
        """Each round's better 1/SCREEN_GROWTH (never fewer than `keep_at_least`, and
        every one within TIE_KEEP of the round's best: it may end tied with it) screened
        again on the next round's larger set, until the last."""
        while self.rung + 1 < len(self.rungs):
            ranked = sorted(
                (c.loss, n)
                for n, c in enumerate(self.results.values())
                if c.error is None and c.rung == self.rung
            )
            if not ranked:
                return
            keep = max(math.ceil(len(ranked) / SCREEN_GROWTH), keep_at_least)
            near = ranked[0][0] + max(TIE_KEEP * abs(ranked[0][0]), ABSOLUTE_TIE)
            chosen = {n for rank, (loss, n) in enumerate(ranked) if rank < keep or loss <= near}
            # In screening order: one built model serves the combinations that share it.
            going = [key for n, key in enumerate(self.results) if n in chosen]
            self.rung += 1
            for index, combo in going:
                if self.score(index, combo) is None:
                    return

    def for_beam(self) -> None:
        """A beam screens on the full set only: the earlier rounds' results are set aside
        (they stay in the ranking, below) so that it ranks comparable losses; with none,
        the full set is the only round."""
        top = len(self.rungs) - 1
        if not self.results:
            self.rungs, self.counts = self.rungs[top:], self.counts[top:]
            self.widest = self.widest[top:]
            return
        self.earlier = {k: c for k, c in self.results.items() if c.error is None and c.rung < top}
        for key in self.earlier:
            del self.results[key]
        self.rung = top

    def screened(self) -> list[tuple[tuple[int, tuple[Any, ...]], Candidate]]:
        """Every combination's latest result."""
        aside = [(k, c) for k, c in self.earlier.items() if k not in self.results]
        return list(self.results.items()) + aside

    def screening(self) -> tuple[tuple[int, int], ...]:
        """(samples at most, combinations screened) per round, a candidate's `rung` its
        index; nothing when no combination ran."""
        if not any(self.counts):
            return ()
        return tuple(
            (max(r[0], w), n) for r, n, w in zip(self.rungs, self.counts, self.widest, strict=True)
        )

    def runs(self, index: int, combo: tuple[Any, ...]) -> bool:
        """A dry run on one sample: do the shapes chain? (A failure is recorded as scored.)"""
        if (index, combo) in self.results:
            return self.results[(index, combo)].error is None
        if self.spent():
            return False
        group = self.groups[index]
        values = group.values(combo)
        model, error = group.model(values)
        if model is not None:
            part = self.data.first(group.spec, values, *self.data.size(group.spec, values, 1))
            tried = _score(model, values, part.inputs, part.target, self.loss_fn, part.samples)
            if tried.error is None:
                return True
            error = tried.error
        self.results[(index, combo)] = Candidate(values, math.inf, error, rung=self.rung)
        return False


def _steps(inputs: tuple[torch.Tensor, ...], dim: int) -> int:
    """The longest sequence among the inputs, whose sequences run along `dim`."""
    return max((t.shape[dim] for t in inputs if t.dim() > dim), default=0)


def _rows(target: torch.Tensor) -> int:
    """Rows an output layer is fitted on: the target's values per output, or its labels."""
    if not target.is_floating_point():
        return target.numel()
    return target.numel() // max(1, target.shape[-1]) if target.dim() else 1


def _rungs(screen: int, combinations: int, finalists: int) -> tuple[tuple[int, int], ...]:
    """The screening rounds (samples, elements per sample a sequence is cut to), first
    to last: the last is the full screening set; each before it 1/SCREEN_GROWTH of the
    next in both, down to SCREEN_START samples. One round when there are few combinations to tell apart."""
    rungs = [(screen, ELEMENTS_PER_SAMPLE)]
    if combinations > SCREEN_GROWTH * finalists:
        while rungs[0][0] // SCREEN_GROWTH >= SCREEN_START:
            samples, elements = rungs[0]
            rungs.insert(0, (samples // SCREEN_GROWTH, max(1, elements // SCREEN_GROWTH)))
    return tuple(rungs)


def score_candidates(
    spec: ArchSpec,
    state_dict: Mapping[str, torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    loss_fn: LossFn,
    *,
    fixed: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None,
    budget_seconds: float = 30.0,
    max_combinations: int = 16384,
    max_samples: int = 256,
    screen_samples: int = 32,
    finalists: int = 12,
    exhaustive_up_to: int = EXHAUSTIVE_UP_TO,
    progress: Callable[[int, int], None] | None = None,
    threads: Threads = "auto",
    factorise: bool = True,
) -> SearchResult:
    """Score combinations of candidate values by loss_fn(model(*inputs), target).

    Up to `exhaustive_up_to` combinations every one is screened; beyond that a beam of
    the best combinations is refined one value at a time (see `_beam`), so the cost grows
    with the number of values, not with their product. `threads`, torch's process-wide
    thread count: "auto" lets the search choose (a process of its own, the CLI); a number
    holds it; None leaves it alone (a server whose sessions all score at once).
    `factorise`: forward-only values screened apart where they do not interact (`_separated`).
    """
    started = time.monotonic()
    fixed = dict(fixed or {})
    base = spec.with_values(fixed, source=SOURCE_USER)
    weights = _float_weights(state_dict)
    groups = _groups(base, names, fixed, prune_by_data(base, inputs, target), weights)
    total = sum(g.total for g in groups)
    sample = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else None
    out = tuple(target.shape[1:]) if target.is_floating_point() else None  # not class labels
    union = _union(groups)
    impossible = _no_way_through(groups, sample, out)
    if impossible is not None:  # the shapes alone tell: no forward needs to run
        return _summarise(
            tuple(union), list(union.values()), [], total, fixed, time.monotonic() - started,
            base, "shapes only", impossible,
        )  # fmt: skip
    search = _Pass(
        groups, _Data(tuple(inputs), target), loss_fn, (sample, out), progress,
        (started, budget_seconds, max_combinations, screen_samples, max_samples),
        (finalists, exhaustive_up_to, factorise),
    )  # fmt: skip
    small = sum(v.numel() for v in weights.values()) < SINGLE_THREAD_BELOW
    choose = _ThreadChoice(threads)
    with warnings.catch_warnings(), torch.no_grad(), choose(1 if small else None):
        warnings.simplefilter("ignore")  # torch's fast-path notices, once per combination
        (scorer, strategy, final), refit = search.ranked(choose)
    result = _summarise(
        tuple(union), list(union.values()), final, total, fixed, time.monotonic() - started,
        base, strategy, None, scorer.screening(), (tuple(scorer.separated), scorer.skipped),
    )  # fmt: skip
    return result if refit is None else refit.told(result)


@dataclass
class _Pass:
    """One search over every group: screening (`_screen`), then the finalists scored on
    every sample (`_rescore_finalists`)."""

    groups: list[_Group]
    data: _Data
    loss_fn: LossFn
    shapes: tuple[tuple[int, ...] | None, tuple[int, ...] | None]  # a sample in and out
    progress: Callable[[int, int], None] | None
    limits: tuple[float, float, int, int, int]  # started, budget, count, screen, samples
    how: tuple[int, int, bool]  # finalists, exhaustive_up_to, factorise

    def run(
        self, choose: _ThreadChoice, refit_rows: tuple[int, int] = (0, 0)
    ) -> tuple[_Scorer, str, list[Candidate]]:
        """Screen, then score the finalists; with `refit_rows` (rows a screening refit and
        a finalist's need: `_refit_rows`), each with its output layer refitted."""
        started, budget, count, screen, samples = self.limits
        finalists, exhaustive_up_to, factorise = self.how
        screening = (started, budget, count, min(screen, samples))
        scorer = _Scorer(
            self.groups, self.data, self.loss_fn, screening, self.progress, finalists,
            refit_rows[0],
        )  # fmt: skip
        strategy = _screen(scorer, exhaustive_up_to, self.shapes, choose, finalists, factorise)
        with choose(choose.every if strategy != "every combination" else None):
            final = _rescore_finalists(  # the best always scored, the others by the deadline
                scorer.screened(), self.groups, finalists, self.data, (screen, samples),
                self.loss_fn, started + budget,
                "refitted" if refit_rows[1] else "measure" if self.refits else "original",
                refit_rows[1],
            )  # fmt: skip
        return scorer, strategy, final

    @property
    def refits(self) -> bool:
        """Can the output layer be refitted to this loss: least squares on values, a
        logistic regression on class labels under cross-entropy (labels under another
        loss, a multi-class hinge say, have no refit here that minimises it)."""
        if self.data.target.is_floating_point():
            return True
        return self.loss_fn is F.cross_entropy or (
            getattr(self.loss_fn, "name", None) == "cross_entropy"
        )

    def ranked(
        self, choose: _ThreadChoice
    ) -> tuple[tuple[_Scorer, str, list[Candidate]], _Refit | None]:
        """The ranking with the original weights, or, when the data is new to the model,
        with each combination's output layer refitted (`_Refit`). The values first tried
        tell (`_probe`): when they fit far better with the layer refitted, that ranking
        runs alone (valid on data the model fits too: its best then fits as well with the
        original weights, and the message says the data is not new). Else the original
        one runs, and the refitted one after it when its finalists show the data may be
        new (`_worth_refitting`), kept when its best fits REFIT_GAIN times better so."""
        if not self.refits:
            return self.run(choose), None
        probed = _probe(self)
        if probed is not None:
            again = self.run(choose, _refit_rows(probed[:3]))
            refit = _Refit.of(probed[0], again[2], self.data.target, probed[3])
            if refit is not None:
                return again, refit
        first = self.run(choose)
        head = _worth_refitting(first[2], self.groups, self) if probed is None else None
        if head is None:
            return first, None
        again = self.run(choose, _refit_rows(head))
        refit = _Refit.of(head[0], again[2], self.data.target)
        return (again, refit) if refit is not None and refit.new else (first, None)


def _refit_rows(layer: tuple[str, int, int]) -> tuple[int, int]:
    """Rows to refit the output layer on (`head_refit.output_layer`: its name, weights
    per row, and per row of a screening refit): in screening, and for the finalists."""
    return ROWS_PER_COEFFICIENT * layer[2], ROWS_PER_COEFFICIENT * layer[1]


@dataclass(frozen=True)
class _Refit:
    """A ranking made with each combination's output layer refitted, and its best's loss
    with the original weights and refitted. The data is new to the model when the second
    is REFIT_GAIN times below the first (`new`)."""

    head: str
    original: float  # the best combination's loss with the original weights
    refitted: float  # and with its output layer refitted
    method: str  # how the layer was refitted (`head_refit.refit_method`)
    first_tried: float = 0.0  # how much better refitted the values first tried fit (probe)
    screened_by: str = ""  # how in screening, when another way (`screening_method`)

    @classmethod
    def of(
        cls, head: str, ranked: list[Candidate], target: torch.Tensor, first_tried: float = 0.0
    ) -> _Refit | None:
        best = _best_scored(ranked)
        if best is None or best.original_loss is None:
            return None
        method, screening = refit_method(target), screening_method(target)
        screened_by = "" if screening == method else screening
        return cls(head, best.original_loss, best.loss, method, first_tried, screened_by)

    @property
    def new(self) -> bool:
        return self.original > REFIT_GAIN * self.refitted

    def _screening(self) -> str:
        if not self.screened_by:
            return ""
        return (
            f" Screening refitted it by {self.screened_by}, which needs fewer samples "
            f"than {self.method}; the finalists by {self.method}."
        )

    def told(self, result: SearchResult) -> SearchResult:
        """The refitted ranking's result, saying why it ranked with the layer refitted."""
        head = f"its output layer {self.head!r}" if self.head else "the model (one Linear)"
        if self.new:  # first: it says what the losses are
            lower = humanize.times(self.original, self.refitted)
            note = (
                f"The data is new to the model: with the original weights the best's loss "
                f"is {self.original:.6g}, with {head} refitted by {self.method} "
                f"{self.refitted:.6g} ({lower} lower), and the "
                "original output layer cannot judge the rest. So every combination was "
                f"ranked with {head} refitted to the samples it was scored on, as training "
                f"that layer would; the losses are those.{self._screening()} "
            )
            message = note + result.message
        else:
            note = (
                f" Every combination was ranked with {head} refitted by {self.method} to "
                f"the samples it was scored on (the values first tried fit this data "
                f"{humanize.times(self.first_tried, 1.0)} better so); the best fits it as "
                f"well with the original weights (loss {self.original:.6g} against "
                f"{self.refitted:.6g}), "
                f"so the data is not new to the model.{self._screening()}"
            )
            message = result.message + note
        return dataclasses.replace(
            result,
            message=message,
            refitted_head=self.head,
            new_task_losses=(self.original, self.refitted) if self.new else None,
        )


def _probe(search: _Pass) -> tuple[str, int, int, float] | None:
    """The output layer (`head_refit.output_layer`, and how much better refitted) to rank
    with refitted when the values first tried already show the data is new to the model:
    on the screening samples they fit REFIT_GAIN times better with it refitted than with
    the original weights, or better refitted while the original weights fit worse than
    the best constant prediction (`head_refit.chance_loss`). The values tried are the
    current ones, else the first of their one-value changes that runs (a guessed layout
    may not read the data at all), up to PROBES. None when they fit, none runs, or no
    output layer can be refitted."""
    group = search.groups[0]
    for values in itertools.islice(_neighbourhood(group), PROBES):
        model, _ = group.model(values)
        if model is None:
            continue
        # As screening sees them: a layout that reads the samples as one long sequence
        # is cut short, not run over thousands of steps.
        count, steps = search.data.size(group.spec, values, search.limits[3])
        part = search.data.first(group.spec, values, count, steps)
        tried = _score(model, values, part.inputs, part.target, search.loss_fn, head="measure")
        if tried.error is not None:
            continue
        found = output_layer(model, part.target)
        if tried.refit_loss is None and found is not None:
            # The layer was found, on too few rows to refit (a label or a pooled output
            # per sample): as screening will, on as many samples as the refit needs.
            part = search.data.first(
                group.spec, values, count, steps, ROWS_PER_COEFFICIENT * found[1]
            )
            tried = _score(model, values, part.inputs, part.target, search.loss_fn, head="measure")
            if tried.error is not None:  # a layout that reads the samples as one sequence
                continue
        if tried.refit_loss is None or fits_exactly(tried.loss, part.target):
            return None
        # Worse than the best constant prediction (the mean, each class's frequency) with
        # the original weights, better refitted: they were not made for this data.
        below_chance = tried.refit_loss < tried.loss > chance_loss(part.target)
        if not (tried.loss > REFIT_GAIN * tried.refit_loss or below_chance) or found is None:
            return None
        return (*found, tried.loss / tried.refit_loss if tried.refit_loss > 0 else math.inf)
    return None


def _neighbourhood(group: _Group) -> Iterator[dict[str, Any]]:
    """The group's current values, then each of their one-value changes."""
    current = tuple(_current(group))
    yield group.values(current)
    for position, candidates in enumerate(group.candidates):
        for value in candidates:
            if value != current[position]:
                yield group.values(current[:position] + (value,) + current[position + 1 :])


def _best_scored(final: list[Candidate]) -> Candidate | None:
    """The finalist with the least loss on every sample (None: none ran)."""
    scored = [c for c in final if c.error is None and c.screen_loss is not None]
    return min(scored, key=lambda c: c.loss) if scored else None


def _worth_refitting(
    final: list[Candidate], groups: list[_Group], search: _Pass
) -> tuple[str, int, int] | None:
    """The output layer (`head_refit.output_layer`) to rank again with, refitted, when the
    data may be new to the model: a finalist's loss with that layer refitted (measured
    beside its scoring: `head_refit`) is REFIT_GAIN times below the best's with the
    original weights, or the best leaves more than POOR_FIT of the target's variance
    unexplained (POOR_FIT_LABELS of the classes' entropy for labels: its truth may not
    have reached the finalists, or the finalists' samples were too few to refit on).
    None when the original weights fit (within a millionth of the target's mean square
    only rounding is left), or when no output layer can be refitted."""
    best = _best_scored(final)
    target = search.data.target
    if best is None or fits_exactly(best.loss, target):
        return None
    refits = [c for c in final if c.screen_loss is not None and c.refit_loss is not None]
    closest = min(refits, key=lambda c: cast(float, c.refit_loss)) if refits else None
    gain = closest is not None and best.loss > REFIT_GAIN * cast(float, closest.refit_loss)
    share = POOR_FIT if target.is_floating_point() else POOR_FIT_LABELS
    if not (gain or best.loss > share * chance_loss(target)):
        return None
    chosen = closest if closest is not None else best
    group = next(g for g in groups if g.wiring == chosen.values.get(WIRING, g.wiring))
    model = group.finalist(chosen.values)
    if model is not None and output_layer(model, target) is None:  # a fresh build: look again
        part = search.data.first(group.spec, chosen.values, chosen.samples)
        forward_refitted(model, part.inputs, part.target)
    found = output_layer(model, target) if model is not None else None
    # Not when all the data holds too few rows to refit on: the ranking would be the same.
    return found if found is not None and _rows(target) >= ROWS_PER_COEFFICIENT * found[1] else None


def _float_weights(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().float() if v.is_floating_point() else v.detach()
        for k, v in state_dict.items()
    }


def _screen(
    scorer: _Scorer,
    exhaustive_up_to: int,
    shapes: tuple[tuple[int, ...] | None, tuple[int, ...] | None],
    choose: _ThreadChoice,
    finalists: int,
    factorise: bool = True,
) -> str:
    """Screen every combination in rounds (`_Scorer.climb`), or, when there are too many
    or they are too slow, a beam (see `_beam`); the strategy taken, in words. With
    `factorise`, the first round screens forward-only values apart (`_separated`)."""
    groups, total = scorer.groups, sum(g.total for g in scorer.groups)
    # Forward-only values are screened apart only where there are rounds to screen in.
    keep = finalists if factorise and len(scorer.rungs) > 1 else None
    if not walks_a_beam(total, exhaustive_up_to) and _exhaustive(groups, scorer, keep):
        scorer.climb(finalists)
        return "every combination"
    scorer.for_beam()
    cost = _cost(groups, scorer.score, scorer.results)
    # A small model on long inputs (one sequence of thousands of steps) is slow per
    # combination: then every thread helps more than it costs.
    with choose(choose.every if cost > EXPENSIVE_SECONDS else None):
        _beam(groups, scorer.score, scorer.runs, scorer.results, cost, scorer.budget, *shapes)
    return "a beam refined one value at a time"


def _cost(
    groups: list[_Group],
    score: Callable[[int, tuple[Any, ...]], Candidate | None],
    results: Mapping[tuple[int, tuple[Any, ...]], Candidate],
) -> float:
    """Seconds one combination takes: timed on the current values of each forward (the
    first model of a group is built then, so the time is of a switch and a forward)."""
    times = []
    for index, group in enumerate(groups):
        combo = tuple(_current(group))
        if (index, combo) in results:
            continue
        score(index, combo)  # builds the group's first model
        alternative = list(combo)
        for position, candidates in enumerate(group.candidates):
            others = [c for c in candidates if c != combo[position]]
            name = group.names[position]
            if others and (name in RETUNABLE | FORWARD_ONLY or name in group.slots):
                alternative[position] = others[0]
                break
        started = time.monotonic()
        score(index, tuple(alternative))
        times.append(time.monotonic() - started)
    import statistics  # here: with decimal and fractions ~12 ms to import, for one median

    return statistics.median(times) if times else 0.001


def _exhaustive(groups: list[_Group], scorer: _Scorer, keep: int | None = None) -> bool:
    """Screen every combination (with `keep`, forward-only values apart: `_separated`);
    False (stopped early) as soon as doing so would take more than half the budget at the
    pace so far, so the beam can take over. The pace leaves out the first combination: it
    pays for the first build and torch's first calls."""
    total = sum(_planned(g, keep) for g in groups)
    done, warm = 0, math.inf
    for index, group in enumerate(groups):
        if keep is not None and _planned(group, keep) < group.total:
            combos: Iterable[tuple[Any, ...]] = _separated(group, index, scorer, keep)
        else:
            combos = itertools.product(*group.candidates)
        for combo in combos:
            if scorer.score(index, combo) is None:
                return True  # the budget or the count is spent: say so, as before
            done += 1
            now = time.monotonic()
            warm = now if done == 1 else warm
            projected = now - scorer.started + (now - warm) / max(1, done - 1) * (total - done)
            if done >= 4 and done < total and projected > scorer.budget / 2:
                return False
    return True


def _tail(group: _Group) -> int:
    """How many of the group's last names are forward-only (they vary fastest)."""
    count = 0
    for name in reversed(group.names):
        if name not in FORWARD_ONLY:
            break
        count += 1
    return count if count < len(group.names) else 0


def _planned(group: _Group, keep: int | None) -> int:
    """Combinations the first round screens: all of them, or with forward-only values
    apart, the others once and the better part of them with every forward-only value."""
    tail = _tail(group) if keep is not None else 0
    tails = math.prod(len(c) for c in group.candidates[len(group.names) - tail :])
    if not tail or tails < 2:
        return group.total
    heads = group.total // tails
    return heads + min(heads, max(math.ceil(heads / SCREEN_GROWTH), cast(int, keep))) * (tails - 1)


def _separated(group: _Group, index: int, scorer: _Scorer, keep: int) -> Iterator[tuple[Any, ...]]:
    """The first round with the forward-only values (which change no built module) screened
    apart from the others: every combination of the others ("heads") with the current
    forward-only values, then every forward-only combination ("tails") with the better
    part of the heads (as a round keeps them) and the heads whose forward failed; when a
    tail beats the current one, every head again with it. When the best heads agree on
    their tail the rest is not screened (the count goes to `scorer.skipped`); when they
    disagree the values interact, and every combination is screened."""
    split = len(group.names) - _tail(group)
    heads = list(itertools.product(*group.candidates[:split]))
    tails = list(itertools.product(*group.candidates[split:]))
    loss = scorer.first_round_loss
    tried: list[tuple[Any, ...]] = []
    probed: dict[tuple[Any, ...], None] = {}
    best = tuple(_current(group)[split:])
    while best not in tried:
        tried.append(best)
        yield from (head + best for head in heads)
        for head in _leaders({h: loss(index, h + best) for h in heads}, keep):
            if head not in probed:
                probed[head] = None
                yield from (head + tail for tail in tails)
        best = _best_tail(index, list(probed), tails, loss, best)
    if not _tails_agree(index, list(probed), tails, loss, best):
        yield from itertools.product(*group.candidates)  # screened ones are not run again
        return
    scorer.separated.update(dict.fromkeys(group.names[split:]))
    scorer.skipped += (len(heads) - len(probed)) * (len(tails) - len(tried))


def _leaders(
    losses: Mapping[tuple[Any, ...], Candidate | None], keep: int
) -> list[tuple[Any, ...]]:
    """The heads a round would keep (the better 1/SCREEN_GROWTH, at least `keep`, every
    one within TIE_KEEP of the best), and those whose forward failed: another forward-only
    value may make it run."""
    ok = sorted(
        (c.loss, n) for n, c in enumerate(losses.values()) if c is not None and c.error is None
    )
    heads = list(losses)
    failed = [
        heads[n]
        for n, c in enumerate(losses.values())
        if c is not None and c.error is not None and not c.error.startswith("cannot ")
    ]
    if not ok:
        return failed
    count = max(math.ceil(len(ok) / SCREEN_GROWTH), keep)
    near = ok[0][0] + max(TIE_KEEP * abs(ok[0][0]), ABSOLUTE_TIE)
    return [heads[n] for rank, (c, n) in enumerate(ok) if rank < count or c <= near] + failed


def _ran(
    index: int,
    heads: list[tuple[Any, ...]],
    tails: list[tuple[Any, ...]],
    loss: Callable[[int, tuple[Any, ...]], Candidate | None],
) -> Iterator[tuple[float, tuple[Any, ...], tuple[Any, ...]]]:
    """(loss, head, tail) of each screened (head, tail) combination whose forward ran."""
    for head in heads:
        for tail in tails:
            c = loss(index, head + tail)
            if c is not None and c.error is None:
                yield c.loss, head, tail


def _best_tail(
    index: int,
    heads: list[tuple[Any, ...]],
    tails: list[tuple[Any, ...]],
    loss: Callable[[int, tuple[Any, ...]], Candidate | None],
    current: tuple[Any, ...],
) -> tuple[Any, ...]:
    """The tail of the best screened (head, tail) combination (`current` when none ran)."""
    found = [(value, tail) for value, _, tail in _ran(index, heads, tails, loss)]
    return min(found, key=lambda pair: pair[0])[1] if found else current


def _tails_agree(
    index: int,
    heads: list[tuple[Any, ...]],
    tails: list[tuple[Any, ...]],
    loss: Callable[[int, tuple[Any, ...]], Candidate | None],
    best: tuple[Any, ...],
) -> bool:
    """Do the best AGREE_HEADS heads all do best (within TIE_KEEP) with the best tail?
    Then the forward-only values do not interact with the others where it matters."""
    least_of: dict[tuple[Any, ...], float] = {}
    for value, head, _ in _ran(index, heads, tails, loss):
        least_of[head] = min(value, least_of.get(head, math.inf))
    for least, head in sorted((least, head) for head, least in least_of.items())[:AGREE_HEADS]:
        with_best = loss(index, head + best)
        limit = least + max(TIE_KEEP * abs(least), ABSOLUTE_TIE)
        if with_best is None or with_best.error is not None or with_best.loss > limit:
            return False
    return True


def _groups(
    base: ArchSpec,
    names: Sequence[str] | None,
    fixed: Mapping[str, Any],
    pruned: Mapping[str, tuple[Any, ...]],
    weights: Mapping[str, torch.Tensor],
) -> list[_Group]:
    """One group per forward hypothesis to score (one when the forward is fixed)."""
    searched = _names_to_search(base, names, fixed)
    specs: list[tuple[str | None, ArchSpec]]
    if WIRING in searched:
        specs = [(w.name, base.with_values({WIRING: w.name})) for w in base.wirings]
    else:
        specs = [(None, base)]
    groups = []
    for wiring, spec in specs:
        own = searchable_names(spec) if wiring is not None else searched
        own = tuple(n for n in own if n not in fixed and n != WIRING)
        if names is not None:
            own = tuple(n for n in own if n in names)
        candidates = [pruned.get(n, spec.hyperparameter(n).candidates) for n in own]
        # Structural names vary slowest, so one built model serves every forward-only setting.
        order = sorted(range(len(own)), key=lambda i: (own[i] in FORWARD_ONLY, own[i] in RETUNABLE))
        groups.append(
            _Group(
                spec=spec,
                names=tuple(own[i] for i in order),
                candidates=[candidates[i] for i in order],
                wiring=wiring,
                weights=weights,
            )
        )
    return groups


def _union(groups: list[_Group]) -> dict[str, tuple[Any, ...]]:
    """Every searched name with every candidate it took in some group ("wiring" first)."""
    union: dict[str, list[Any]] = {}
    if any(g.wiring is not None for g in groups):
        union[WIRING] = [g.wiring for g in groups]
    for group in groups:
        for name, candidates in zip(group.names, group.candidates, strict=True):
            known = union.setdefault(name, [])
            known.extend(c for c in candidates if c not in known)
    return {name: tuple(values) for name, values in union.items()}


def _no_way_through(
    groups: list[_Group], input_shape: tuple[int, ...] | None, output_shape: tuple[int, ...] | None
) -> str | None:
    """Why no combination can run, when the shapes alone tell it for every forward
    hypothesis (stacks of layers: stack_shapes); None when something may run."""
    if input_shape is None or not groups:
        return None
    reasons = []
    for group in groups:
        reason = stack_shapes.why_nothing_chains(
            group.spec, group.names, group.candidates, _current(group), input_shape, output_shape
        )
        if reason is None:
            return None
        reasons.append(reason)
    return "; ".join(dict.fromkeys(reasons))


def _current(group: _Group) -> list[Any]:
    current = []
    for name, candidates in zip(group.names, group.candidates, strict=True):
        value = group.spec.value(name)
        current.append(value if value in candidates else candidates[0])
    return current


def _is_slot(spec: ArchSpec, name: str) -> bool:
    try:
        return spec.module(name).type == "Unknown"
    except KeyError:
        return False


def _skeletons(
    group: _Group, input_shape: tuple[int, ...] | None, output_shape: tuple[int, ...] | None = None
) -> list[tuple[Any, ...]] | None:
    """For a stack with parameter-less slots: every way their shapes can go (keep, pool,
    flatten: one representative value each) crossed with the other constructor values of
    few candidates (stride, padding). Only combinations whose shapes chain run, and a
    beam that starts from every one of them can reach pooling placements one value at a
    time could not. None when there are no slots or too many skeletons."""
    slots = [i for i, n in enumerate(group.names) if n in group.slots]
    if not slots and not any(stack_shapes.is_shape_name(n) for n in group.names):
        return None
    current = _current(group)
    if input_shape is not None:  # shapes reasoned through: only what chains (stack_shapes)
        chained = stack_shapes.skeletons(
            group.spec,
            group.names,
            group.candidates,
            current,
            input_shape,
            MAX_SKELETONS,
            output_shape,
        )
        if chained is not None:
            return chained
    axes: list[list[tuple[int, Any]]] = []
    for i, (name, candidates) in enumerate(zip(group.names, group.candidates, strict=True)):
        if i in slots:
            by_class: dict[str, Any] = {}
            for value in [current[i], *candidates]:
                by_class.setdefault(shape_class(value), value)
            axes.append([(i, v) for v in by_class.values()])
        elif stack_shapes.is_shape_name(name):  # a convolution's stride, padding, ...
            axes.append([(i, v) for v in candidates])
    if math.prod(len(a) for a in axes) > MAX_SKELETONS:
        return None
    starts = []
    for choice in itertools.product(*axes):
        combo = list(current)
        for i, value in choice:
            combo[i] = value
        starts.append(tuple(combo))
    return starts


def _start(group: _Group, limit: int = BEAM_START) -> list[tuple[Any, ...]]:
    """Where a beam starts (without skeletons): every value of the names with the most
    candidates (up to `limit` combinations), the rest at the spec's current values (which
    come first)."""
    current = _current(group)
    widest = sorted(range(len(group.names)), key=lambda i: -len(group.candidates[i]))
    varied: list[int] = []
    for i in widest:
        if math.prod(len(group.candidates[j]) for j in [*varied, i]) <= limit:
            varied.append(i)
    starts = [tuple(current)]
    for values in itertools.product(*(group.candidates[i] for i in varied)):
        combo = list(current)
        for i, value in zip(varied, values, strict=True):
            combo[i] = value
        starts.append(tuple(combo))
    return starts


def _distinct(
    ranked: list[tuple[int, tuple[Any, ...]]],
    results: Mapping[tuple[int, tuple[Any, ...]], Candidate],
) -> list[tuple[int, tuple[Any, ...]]]:
    """One combination per loss: equal losses are (almost surely) the same function reached
    by equivalent choices (ReLU before or after a max pool, a flatten here or there); a
    beam full of them would see nothing else."""
    seen: set[float] = set()
    kept = []
    for key in ranked:
        loss = results[key].loss
        if loss not in seen:
            seen.add(loss)
            kept.append(key)
    return kept


def _settle_slots(
    group: _Group,
    index: int,
    combo: tuple[Any, ...],
    score: Callable[[int, tuple[Any, ...]], Candidate | None],
) -> bool:
    """One pass over a skeleton's shape-keeping slots, each set to its best shape-keeping
    value in turn: a skeleton is judged by its best activations, not by the guessed ones
    (a right placement with a wrong activation can look worse than a wrong placement).
    False when the budget is spent."""
    best = combo
    for position, name in enumerate(group.names):
        if name not in group.slots or shape_class(best[position]) != "keep":
            continue
        for value in group.candidates[position]:
            if shape_class(value) != "keep" or value == best[position]:
                continue
            trial = best[:position] + (value,) + best[position + 1 :]
            result, current = score(index, trial), score(index, best)
            if result is None or current is None:
                return False
            if result.error is None and result.loss < current.loss:
                best = trial
    return True


def _beam(
    groups: list[_Group],
    score: Callable[[int, tuple[Any, ...]], Candidate | None],
    runs: Callable[[int, tuple[Any, ...]], bool],
    results: Mapping[tuple[int, tuple[Any, ...]], Candidate],
    cost: float,
    budget: float,
    input_shape: tuple[int, ...] | None = None,
    output_shape: tuple[int, ...] | None = None,
) -> None:
    """Keep the best few combinations; try every one-value change of each; repeat until
    the beam stops changing. A wrong value costs its own few neighbours, not the product
    of everything else. Where one combination costs much (`cost` seconds so far), the
    beam starts from fewer combinations and keeps fewer (down to coordinate descent)."""
    affordable = budget / max(cost, 1e-6)
    limit = int(min(BEAM_START, max(2, affordable / (4 * len(groups)))))
    # A wider beam sees more of the near-ties (equal-loss variants crowd a narrow one);
    # each state costs its neighbours per round, so the width follows what is affordable.
    neighbours = max(sum(len(c) - 1 for c in g.candidates) for g in groups)
    width = int(min(MAX_BEAM_WIDTH, max(1, affordable / (8 * neighbours * len(groups)))))
    for index, group in enumerate(groups):
        skeletons = _skeletons(group, input_shape, output_shape)
        for combo in skeletons if skeletons is not None else _start(group, limit):
            # Most skeletons' shapes do not chain: a one-sample dry run tells, cheaply.
            if skeletons is not None and not runs(index, combo):
                continue
            if score(index, combo) is None:
                return
            if skeletons is not None and not _settle_slots(group, index, combo, score):
                return
    beam: list[tuple[int, tuple[Any, ...]]] = []
    walked: set[tuple[int, tuple[Any, ...]]] = set()
    while True:
        ranked = sorted(
            (key for key, c in results.items() if c.error is None), key=lambda k: results[k].loss
        )
        # While nothing runs, the failures not yet walked from seed the beam: their
        # neighbours (another layout, another reduction) are the likeliest to run, and a
        # combination that runs may lie several values away (a layout and the table's
        # dimension both to change once more samples than the table's length are scored).
        failed = [key for key, c in results.items() if c.error is not None and key not in walked]
        new_beam = _distinct(ranked, results)[:width] if ranked else failed[:width]
        if new_beam == beam or not new_beam:
            return
        beam = new_beam
        walked.update(beam)
        for index, combo in beam:
            group = groups[index]
            for position, candidates in enumerate(group.candidates):
                for value in candidates:
                    if value == combo[position]:
                        continue
                    neighbour = combo[:position] + (value,) + combo[position + 1 :]
                    if score(index, neighbour) is None:
                        return


def _retunable(model: torch.nn.Module) -> bool:
    """True when only known torch.nn modules (and the root's own flags) hold tuned values."""
    return any(isinstance(m, _RETUNABLE_TYPES) for m in model.modules())


def _retune_plan(model: torch.nn.Module) -> _Plan:
    """The modules `_retune` switches: (module, how) per known torch.nn module, and the
    generated PositionalEncodings whose [L, d] table picks its sequence dimension from
    batch_first when built ([1, L, d] / [L, 1, d] fix it)."""
    known, tables = [], []
    for m in model.modules():
        retune = next((fn for cls, fn in _RETUNERS if isinstance(m, cls)), None)
        if retune is not None:
            known.append((m, retune))
        elif hasattr(m, "seq_dim"):
            table = next(m.buffers(recurse=False), None)
            if table is not None and table.dim() == 2:
                tables.append(m)
    return known, tables


def _retune(model: torch.nn.Module, values: Mapping[str, Any], plan: _Plan | None = None) -> None:
    """Switch a built model to other values of the RETUNABLE names, in place."""
    known, tables = _retune_plan(model) if plan is None else plan
    for m, retune in known:
        retune(m, values)
    if "batch_first" in values:
        for m in tables:
            cast(Any, m).seq_dim = 1 if values["batch_first"] else 0  # a plain int, no Tensor
    if "batch_first" in values and hasattr(model, "batch_first"):
        model.batch_first = values["batch_first"]


def _set_forward_only(
    model: torch.nn.Module, arguments: Mapping[str, str], values: Mapping[str, Any]
) -> None:
    for name, value in values.items():
        if name in FORWARD_ONLY:
            setattr(model, arguments[name], value)


def _rescore_finalists(
    screened: list[tuple[tuple[int, tuple[Any, ...]], Candidate]],
    groups: list[_Group],
    finalists: int,
    data: _Data,
    samples: tuple[int, int],
    loss_fn: LossFn,
    deadline: float = math.inf,
    head: Head = "original",
    refit_rows: int = 0,
) -> list[Candidate]:
    """The best screened combinations scored on every sample (`samples`: screening and
    final counts), ahead of the rest (the best always; the others while the deadline
    allows). Combinations screened on cut sequences first climb rungs of longer prefixes,
    the better half going on each time (never fewer than FINAL_KEEP), so that only a few
    pay for whole sequences. A refitted output layer is fitted on `refit_rows` rows at
    least (more samples when they have fewer)."""
    # The furthest round first: only losses on the same samples compare.
    ok = sorted(
        (pair for pair in screened if pair[1].error is None),
        key=lambda p: (-p[1].rung, p[1].loss),
    )
    rest = [c for _, c in screened if c.error is not None]
    leaders = ok[:finalists]
    dropped: list[_Pair] = []
    rung = 1
    while len(leaders) > 1 and time.monotonic() <= deadline:
        climbing = [
            (pair, _rung_length(groups[pair[0][0]], pair[1].values, data, samples[0], rung))
            for pair in leaders
        ]
        if all(length is None for _, length in climbing):
            break  # every leader is at whole sequences: the final scoring decides
        rescored = []
        for (key, candidate), length in climbing:
            group = groups[key[0]]
            count = data.size(group.spec, candidate.values, samples[0], cut=False)[0]
            part = data.first(group.spec, candidate.values, count, length, refit_rows)
            model = group.finalist(candidate.values)
            assert model is not None, "a leader was built once already"
            rung_loss = _score(
                model, candidate.values, part.inputs, part.target, loss_fn,
                head="refitted" if head == "refitted" else "original",
            ).loss  # fmt: skip
            rescored.append(((key, candidate), rung_loss))
        rescored.sort(key=lambda pair: pair[1])
        # Far behind the best on a longer prefix, a leader cannot come back to tie it on
        # whole sequences: beyond the first two (the margin needs a runner-up) it stops.
        close = sum(loss <= FAR_BEHIND * rescored[0][1] + ABSOLUTE_TIE for _, loss in rescored)
        keep = min(max(FINAL_KEEP, len(rescored) // 2), max(2, close))
        leaders = [pair for pair, _ in rescored[:keep]]
        dropped += [pair for pair, _ in rescored[keep:]]
        rung += 1
    dropped.sort(key=lambda pair: pair[1].loss)
    reserve = dropped + ok[finalists:]
    finals = _score_finals(
        leaders, reserve, groups, data, samples, loss_fn, deadline, (head, refit_rows)
    )
    return finals + rest


def _score_finals(
    leaders: list[_Pair],
    reserve: list[_Pair],
    groups: list[_Group],
    data: _Data,
    samples: tuple[int, int],
    loss_fn: LossFn,
    deadline: float,
    head: tuple[Head, int],
) -> list[Candidate]:
    """The leaders scored on every sample (the first always, the others while the
    deadline allows), then the reserve as screened. A leader whose forward fails on whole
    sequences or every sample (a layout that reads a cut one but not a whole one) makes
    room: the reserve's best are scored after the leaders until two have run, so that
    the ranking does not end empty while screened combinations ran."""
    final: list[Candidate] = []
    waiting, reserve = list(leaders), list(reserve)
    while waiting:
        if final and time.monotonic() > deadline:
            break
        (index, _), candidate = waiting.pop(0)
        final.append(_score_finalist(groups[index], candidate, data, samples, loss_fn, head))
        if not waiting and reserve and sum(c.error is None for c in final) < 2:
            waiting.append(reserve.pop(0))
    return final + [c for _, c in waiting + reserve]


def _score_finalist(
    group: _Group,
    candidate: Candidate,
    data: _Data,
    samples: tuple[int, int],
    loss_fn: LossFn,
    head: tuple[Head, int] = ("original", 0),
) -> Candidate:
    """A finalist on whole sequences and every sample (when they are long, as many
    samples as screening had elements), with each sample's loss. `head`: as `_score`
    has it, and the rows a refitted output layer needs (more samples when fewer)."""
    model = group.finalist(candidate.values)
    assert model is not None, "a finalist was built once already"
    long = data.size(group.spec, candidate.values, samples[0], dimension_zero=False)[1]
    cut = long is not None
    count = data.size(group.spec, candidate.values, samples[0 if cut else 1], cut=False)[0]
    part = data.first(group.spec, candidate.values, count, rows=head[1])
    dims = batch_dims(group.spec, candidate.values)
    scored = _score(
        model, candidate.values, part.inputs, part.target, loss_fn, part.samples, dims.target,
        head[0],
    )  # fmt: skip
    return dataclasses.replace(
        scored, screen_loss=candidate.loss, rung=candidate.rung, first_loss=candidate.first_loss
    )


def _rung_length(
    group: _Group, values: Mapping[str, Any], data: _Data, count: int, rung: int
) -> int | None:
    """The prefix a combination screened on cut sequences is scored on at `rung` (None:
    whole sequences)."""
    length = data.size(group.spec, values, count)[1]
    if length is None:
        return None
    longer = length * RUNG_GROWTH**rung
    seq = sequence_dims(group.spec, values)
    assert seq is not None  # only sequences are cut
    return longer if longer < _steps(data.inputs, seq[0]) else None


class _ThreadChoice:
    """torch's intra-op thread count for a while (a process-wide setting): changed only
    when the caller asked for "auto" or a number; None leaves it to the caller."""

    def __init__(self, threads: Threads) -> None:
        self.threads = threads
        self.every = torch.get_num_threads() if threads == "auto" else None

    @contextlib.contextmanager
    def __call__(self, count: int | None) -> Iterator[None]:
        if self.threads is None or (self.threads == "auto" and count is None):
            yield
            return
        wanted = count if self.threads == "auto" else self.threads
        before = torch.get_num_threads()
        torch.set_num_threads(cast(int, wanted))
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _names_to_search(
    spec: ArchSpec, names: Sequence[str] | None, fixed: Mapping[str, Any]
) -> tuple[str, ...]:
    available = searchable_names(spec)
    if names is None:
        return tuple(n for n in available if n not in fixed)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise HyperparameterError(
            f"{', '.join(unknown)} cannot be searched; searchable here: "
            f"{', '.join(available) or 'nothing'}."
        )
    return tuple(n for n in names if n not in fixed)


def _build_and_load(
    cls: type[torch.nn.Module],
    arguments: Mapping[str, str],
    values: Mapping[str, Any],
    structural: tuple[str, ...],
    weights: Mapping[str, torch.Tensor],
) -> tuple[torch.nn.Module | None, str | None]:
    """A model for these values with the weights in place, or why there is none."""
    kwargs = {arguments[n]: values[n] for n in structural}
    try:
        # Not on the meta device: its random init pulls in torch._dynamo (seconds, once).
        model = cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure is a result to show, not a crash
        return None, f"cannot be built: {exc}"
    fit = check_fit(model, weights, strict=True)
    if not fit.ok:
        return None, f"cannot load the weights: {fit.message}"
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        return None, f"cannot load the weights: {exc}"
    return model.eval(), None


def _score(
    model: torch.nn.Module,
    values: dict[str, Any],
    inputs: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    loss_fn: LossFn,
    samples: int | None = None,
    per_sample_dim: int | None = None,
    head: Head = "original",
    screening: bool = False,
) -> Candidate:
    """The loss of one combination; with `per_sample_dim` (finalists) also each sample's.
    `head`: the loss with the original output layer, with it refitted to these samples
    (`head_refit`, by its screening refit with `screening`) where it can be, or the first
    with the second measured beside it."""
    samples = len(target) if samples is None else samples
    refit_loss = original_loss = None
    try:
        if head == "original":
            output = model(*inputs)
        else:
            found = forward_refitted(model, inputs, target, screening)
            output = found.output
            if found.refitted is not None:
                original_loss = float(loss_fn(found.output, target))
                refit_loss = float(loss_fn(found.refitted, target))
                output = found.refitted if head == "refitted" else output
        loss = float(loss_fn(output, target))
        each = None
        if per_sample_dim is not None and math.isfinite(loss):
            out_dim = per_sample_dim if output.dim() > per_sample_dim else 0
            each = tuple(
                float(loss_fn(output.narrow(out_dim, i, 1), target.narrow(per_sample_dim, i, 1)))
                for i in range(min(output.shape[out_dim], target.shape[per_sample_dim]))
            )
    except Exception as exc:  # noqa: BLE001 - a failing combination is ruled out, with its reason
        return Candidate(values, math.inf, f"the forward or the loss failed: {exc}", samples)
    if not math.isfinite(loss):
        return Candidate(values, math.inf, f"the loss is not finite ({loss})", samples)
    return Candidate(
        values, loss, None, samples, sample_losses=each, refit_loss=refit_loss,
        original_loss=original_loss,
    )  # fmt: skip


def _tied(candidate: Candidate, best: Candidate) -> bool:
    """True when the data cannot tell `candidate` from `best`: the difference is within
    RELATIVE_TIE, or it is small (within NOISE_TIE) and, both being scored on the same
    samples, within two standard errors of the per-sample differences: noise in the
    data, not a worse model."""
    gap = candidate.loss - best.loss
    if gap <= max(RELATIVE_TIE * abs(best.loss), ABSOLUTE_TIE):
        return True
    a, b = candidate.sample_losses, best.sample_losses
    if gap > NOISE_TIE * abs(best.loss) or a is None or b is None or len(a) != len(b):
        return False
    if len(a) < 8:
        return False
    differences = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    standard_error = float(differences.std()) / math.sqrt(len(differences))
    return float(differences.mean()) <= 2 * standard_error


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{n}={v!r}" for n, v in values.items()) or "(nothing to choose)"


def _summarise(
    names: tuple[str, ...],
    candidates: list[tuple[Any, ...]],
    results: list[Candidate],
    total: int,
    fixed: dict[str, Any],
    seconds: float,
    spec: ArchSpec,
    strategy: str,
    impossible: str | None = None,
    screening: tuple[tuple[int, int], ...] = (),
    separated: tuple[tuple[str, ...], int] = ((), 0),
) -> SearchResult:
    # Losses compare on the same samples: finalists, then screened only (furthest round first)
    ok = [c for c in results if c.error is None]
    scored = sorted((c for c in ok if c.screen_loss is not None), key=lambda c: c.loss)
    screened_only = sorted((c for c in ok if c.screen_loss is None), key=_screened_order)
    failed = [c for c in results if c.error is not None]
    complete, fully = len(results) + separated[1] == total, screening[-1][1] if screening else 0
    note = _progress_note(results, total - separated[1], strategy, impossible is not None)
    note += _separated_note(*separated) + _halving_note(screening) + _length_note(ok, spec)
    per_name = _per_name(names, candidates, ok)
    if not scored:
        reason = failed[0].error if failed else "there was nothing to score"
        if impossible is not None:
            reason = f"the data's shapes cannot pass through the model: {impossible}"
        return SearchResult(
            names, tuple(failed), {}, None, None, False, (), per_name, len(results), total,
            complete, seconds, f"No combination could be scored: {reason}.{note}", fixed,
            strategy, 0, screening, fully, *separated,
        )  # fmt: skip
    best = scored[0]
    margin = scored[1].loss - best.loss if len(scored) > 1 else None
    relative = None if margin is None else margin / max(abs(best.loss), ABSOLUTE_TIE)
    group = [c for c in scored if _tied(c, best)]
    tied = tuple(n for n in names if len({repr(c.values.get(n)) for c in group}) > 1)
    message = _verdict(best, len(group), tied, margin, relative)
    message += f" {len(failed)} combinations failed and are ranked last." if failed else ""
    return SearchResult(
        names=names,
        ranking=tuple(scored + screened_only + failed),
        best_values=dict(best.values),
        margin=margin,
        relative_margin=relative,
        separable=len(group) == 1,
        tied_names=tied,
        per_name=per_name,
        scored=len(results),
        total=total,
        complete=complete,
        seconds=seconds,
        message=message + note,
        fixed=fixed,
        strategy=strategy,
        fully_scored=len(scored),
        screening=screening,
        screened_fully=fully,
        separated=separated[0],
        skipped=separated[1],
    )


def _screened_order(candidate: Candidate) -> tuple[int, float]:
    return -candidate.rung, candidate.loss


def _per_name(
    names: tuple[str, ...], candidates: list[tuple[Any, ...]], ok: list[Candidate]
) -> dict[str, tuple[tuple[Any, float], ...]]:
    """Per value, the best loss on the first round's samples, which every combination
    screened shares."""
    screen_losses = [
        (c.values, c.first_loss if c.first_loss is not None else c.screen_loss or c.loss)
        for c in ok
    ]
    return {
        name: tuple(
            (
                value,
                min((loss for v, loss in screen_losses if v.get(name) == value), default=math.inf),
            )
            for value in values
        )
        for name, values in zip(names, candidates, strict=True)
    }


def _progress_note(results: list[Candidate], total: int, strategy: str, impossible: bool) -> str:
    """How much of the search ran, when not all of it."""
    if len(results) == total or impossible:
        return ""
    if strategy == "every combination":
        return (
            f" Scored {len(results)} of {total} combinations before the time budget or the "
            "limit on combinations stopped the search."
        )
    return (
        f" Scored {len(results)} of {total} combinations: the best ones refined one value "
        "at a time, not every combination."
    )


def _separated_note(names: tuple[str, ...], skipped: int) -> str:
    """What screening the forward-only values apart left out, when it did."""
    if not names:
        return ""
    return (
        f" {', '.join(names)} (forward-only) were screened apart from the other names: "
        "every combination of the others with the current values (and with the best found, "
        "where it differs), and every value with the better part of them; the best agreed "
        f"on them, so {skipped} other combinations were not screened."
    )


def _halving_note(screening: tuple[tuple[int, int], ...]) -> str:
    """How many combinations each screening round saw, when there were several."""
    if len(screening) < 2:
        return ""
    rounds = ", then ".join(f"{count} on up to {samples}" for samples, count in screening)
    return (
        f" Screened in rounds, the better part of each going on: {rounds} samples each; "
        f"{screening[-1][1]} reached the full screening set."
    )


def _length_note(ok: list[Candidate], spec: ArchSpec) -> str:
    """How long sequences were screened, when they were cut: a long one, or the data's
    first dimension read as the sequence (`_Data.size`)."""
    whole = sum(c.screen_loss is not None for c in ok)  # the finalists
    cut = [c for c in ok if c.steps is not None]
    if not cut or not whole:
        return ""
    first = sum(_reads_dimension_zero(spec, c.values) for c in cut)
    what = (
        "Readings of the data's first dimension as the sequence were"
        if first == len(cut)
        else "Long sequences (and readings of the data's first dimension as the sequence) were"
        if first
        else "Long sequences were"
    )
    shortest = min(cast(int, c.steps) for c in cut)
    return (
        f" {what} screened on their first {shortest} steps; the best climbed to longer ones, "
        f"and {whole} were scored on whole sequences."
    )


def _reads_dimension_zero(spec: ArchSpec, values: Mapping[str, Any]) -> bool:
    seq = sequence_dims(spec, values)
    return seq is not None and seq[0] == 0


def _verdict(
    best: Candidate,
    tied_count: int,
    tied: tuple[str, ...],
    margin: float | None,
    relative: float | None,
) -> str:
    """What the ranking says: tied combinations, a lone one, or the best and its margin."""
    if tied_count > 1:
        return (
            f"The data cannot tell apart {tied_count} combinations (their losses differ by less "
            f"than the noise between samples, from the best {best.loss:.6g}); tied: "
            f"{', '.join(tied) or 'none of the searched names'} (the current values are kept "
            "where they are among the tied, else the first)."
        )
    if margin is None or relative is None:
        return (
            f"Only one combination could be scored: {_describe(best.values)} "
            f"(loss {best.loss:.6g})."
        )
    return (
        f"Best: {_describe(best.values)} (loss {best.loss:.6g}); the runner-up is "
        f"{margin:.3g} higher ({_how_much(best.loss, relative)})."
    )


def _how_much(best: float, relative: float) -> str:
    """A margin against the best's loss in words that stay readable when the best is at
    or near zero (a percentage of 1e-15 read as 87442074.44 %)."""
    if abs(best) <= ABSOLUTE_TIE:
        return "the best fits the data exactly, to rounding"
    if relative < 10:
        return f"{relative:.2%}"
    return f"{1 + relative:.3g}× the best's loss"
