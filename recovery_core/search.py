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
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from recovery_core.build import check_fit, model_class
from recovery_core.codegen import FORWARD_ONLY, hidden_arguments
from recovery_core.errors import HyperparameterError
from recovery_core.spec import SOURCE_SEARCH, SOURCE_USER, ArchSpec

# Hyperparameters that cannot change an eval-mode forward, so the data cannot find them.
NO_EFFECT_IN_EVAL = frozenset({"dropout"})

# Below this many parameters one thread scores faster: handing tiny matrix products to a
# second thread costs more than it saves (measured on the seq2seq zoo model, 2 shared
# cores: 7 ms per forward on one thread, 196 ms on two).
SINGLE_THREAD_BELOW = 5_000_000

# Values that torch.nn's transformer, attention, norm and RNN modules read from plain
# attributes at forward time: screening switches one built model between them instead of
# building one per value (a build costs ~20 ms, a screening forward ~5 ms). Finalists are
# always built fresh, and a test holds switched and fresh models to equal outputs.
RETUNABLE = frozenset({"nhead", "batch_first", "norm_first", "activation", "layer_norm_eps"})
_RETUNABLE_TYPES = (
    torch.nn.MultiheadAttention,
    torch.nn.TransformerEncoderLayer,
    torch.nn.TransformerDecoderLayer,
    torch.nn.TransformerEncoder,
    torch.nn.TransformerDecoder,
    torch.nn.Transformer,
    torch.nn.LayerNorm,
    torch.nn.RMSNorm,
    torch.nn.RNNBase,
)

RELATIVE_TIE = 1e-4  # losses closer than this (relative to the best) count as tied
ABSOLUTE_TIE = 1e-9  # and this, for a best loss at or near zero

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Candidate:
    values: dict[str, Any]
    loss: float  # math.inf when the combination failed
    error: str | None = None  # why it failed: cannot load, forward raised, loss not finite
    samples: int = 0  # how many samples the loss is measured on (finalists: all scored)
    screen_loss: float | None = None  # a finalist's loss on the screening samples


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
            "ranking": [
                {
                    "values": dict(c.values),
                    "loss": number(c.loss),
                    "error": c.error,
                    "samples": c.samples,
                }
                for c in self.ranking[:top]
            ],
            "per_name": {
                name: [[value, number(loss)] for value, loss in pairs]
                for name, pairs in self.per_name.items()
            },
        }

    def apply(self, spec: ArchSpec) -> ArchSpec:
        """The spec with the chosen values; names the data cannot separate stay as they are."""
        chosen = {n: v for n, v in self.best_values.items() if n not in self.tied_names}
        return spec.with_values(self.fixed, source=SOURCE_USER).with_values(
            chosen, source=SOURCE_SEARCH
        )


def searchable_names(spec: ArchSpec) -> tuple[str, ...]:
    """Free hyperparameters with a choice to make that change the eval-mode forward."""
    used = {h.name for h in hidden_arguments(spec)}
    return tuple(
        hp.name
        for hp in spec.free
        if hp.name in used and hp.name not in NO_EFFECT_IN_EVAL and len(hp.candidates) > 1
    )


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
    max_combinations: int = 4096,
    max_samples: int = 256,
    screen_samples: int = 32,
    finalists: int = 12,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Score every combination of candidate values by loss_fn(model(*inputs), target)."""
    started = time.monotonic()
    fixed = dict(fixed or {})
    base = spec.with_values(fixed, source=SOURCE_USER)
    searched = _names_to_search(base, names, fixed)
    candidates = [base.hyperparameter(n).candidates for n in searched]
    # Structural names vary slowest, so one built model serves every forward-only setting.
    order = sorted(
        range(len(searched)),
        key=lambda i: (searched[i] in FORWARD_ONLY, searched[i] in RETUNABLE),
    )
    searched = tuple(searched[i] for i in order)
    candidates = [candidates[i] for i in order]
    structural = tuple(n for n in searched if n not in FORWARD_ONLY)  # constructor arguments
    rebuild_on = tuple(n for n in structural if n not in RETUNABLE)  # the rest are switched
    total = math.prod(len(c) for c in candidates)
    to_score = min(total, max_combinations)

    inputs = tuple(t[:max_samples] for t in inputs)
    target = target[:max_samples]
    # Screening on a few samples ranks combinations almost as well as all of them and
    # costs a fraction; the finalists are then compared on every sample.
    screen = min(screen_samples, len(target))
    screen_inputs = tuple(t[:screen] for t in inputs)
    screen_target = target[:screen]
    weights = {
        k: v.detach().float() if v.is_floating_point() else v.detach()
        for k, v in state_dict.items()
    }
    cls = model_class(base)
    arguments = {h.name: h.argument for h in hidden_arguments(base)}

    results: list[Candidate] = []
    model: torch.nn.Module | None = None
    built_for: tuple[Any, ...] | None = None
    build_error: str | None = None
    small = sum(v.numel() for v in weights.values()) < SINGLE_THREAD_BELOW
    with warnings.catch_warnings(), torch.no_grad(), _threads(1 if small else None):
        warnings.simplefilter("ignore")  # torch's fast-path notices, once per combination
        for combo in itertools.product(*candidates):
            if len(results) >= max_combinations or time.monotonic() - started > budget_seconds:
                break
            values = dict(zip(searched, combo, strict=True))
            key = tuple(values[n] for n in rebuild_on)
            if key != built_for:
                built_for = key
                model, build_error = _build_and_load(cls, arguments, values, structural, weights)
                if model is not None and not _retunable(model):
                    rebuild_on = structural  # something else reads these values: build each
            if model is None:
                results.append(Candidate(values, math.inf, build_error))
            else:
                _retune(model, values)
                _set_forward_only(model, arguments, values)
                results.append(_score(model, values, screen_inputs, screen_target, loss_fn))
            if progress is not None:
                progress(len(results), to_score)
        if screen < len(target):
            build = functools.partial(
                _build_and_load, cls, arguments, structural=structural, weights=weights
            )
            results = _rescore_finalists(
                results, finalists, build, arguments, inputs, target, loss_fn
            )
    return _summarise(searched, candidates, results, total, fixed, time.monotonic() - started, base)


def _retunable(model: torch.nn.Module) -> bool:
    """True when only known torch.nn modules (and the root's own flags) hold tuned values."""
    return any(isinstance(m, _RETUNABLE_TYPES) for m in model.modules())


def _retune(model: torch.nn.Module, values: Mapping[str, Any]) -> None:
    """Switch a built model to other values of the RETUNABLE names, in place."""
    activation = values.get("activation")
    for m in model.modules():
        if isinstance(m, torch.nn.MultiheadAttention):
            if "nhead" in values:
                m.num_heads = values["nhead"]
                m.head_dim = m.embed_dim // values["nhead"]
            if "batch_first" in values:
                m.batch_first = values["batch_first"]
        elif isinstance(m, torch.nn.TransformerEncoderLayer | torch.nn.TransformerDecoderLayer):
            if "norm_first" in values:
                m.norm_first = values["norm_first"]
            if activation is not None:
                m.activation = _ACTIVATIONS[activation]
                m.activation_relu_or_gelu = 1 if activation == "relu" else 2
        elif isinstance(m, torch.nn.TransformerEncoder):
            m.use_nested_tensor = False  # decided at build time from the layer's settings
        elif isinstance(m, torch.nn.LayerNorm | torch.nn.RMSNorm) and "layer_norm_eps" in values:
            m.eps = values["layer_norm_eps"]
        elif isinstance(m, torch.nn.Transformer | torch.nn.RNNBase) and "batch_first" in values:
            m.batch_first = values["batch_first"]
        elif hasattr(m, "seq_dim") and "batch_first" in values:
            # The generated PositionalEncoding: an [L, d] table picks its sequence
            # dimension from batch_first when built ([1, L, d] / [L, 1, d] fix it).
            table = next(m.buffers(recurse=False))
            if table.dim() == 2:
                m.seq_dim = 1 if values["batch_first"] else 0
    if "batch_first" in values and hasattr(model, "batch_first"):
        model.batch_first = values["batch_first"]


_ACTIVATIONS = {"relu": torch.nn.functional.relu, "gelu": torch.nn.functional.gelu}


def _set_forward_only(
    model: torch.nn.Module, arguments: Mapping[str, str], values: Mapping[str, Any]
) -> None:
    for name, value in values.items():
        if name in FORWARD_ONLY:
            setattr(model, arguments[name], value)


def _rescore_finalists(
    results: list[Candidate],
    finalists: int,
    build: Callable[..., tuple[torch.nn.Module | None, str | None]],
    arguments: Mapping[str, str],
    inputs: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    loss_fn: LossFn,
) -> list[Candidate]:
    """The best screened combinations scored on every sample, ahead of the rest."""
    screened = sorted((c for c in results if c.error is None), key=lambda c: c.loss)
    rest = [c for c in results if c.error is not None]
    final = []
    # Rebuilt rather than kept: holding every screened model could cost many copies.
    for candidate in screened[:finalists]:
        model, _ = build(values=candidate.values)
        assert model is not None, "a finalist was built once already"
        _set_forward_only(model, arguments, candidate.values)
        scored = _score(model, candidate.values, inputs, target, loss_fn)
        final.append(dataclasses.replace(scored, screen_loss=candidate.loss))
    return final + screened[finalists:] + rest


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Use `count` intra-op threads for a while (process-wide in torch), then restore."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
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
) -> Candidate:
    samples = len(target)
    try:
        loss = float(loss_fn(model(*inputs), target))
    except Exception as exc:  # noqa: BLE001 - a failing combination is ruled out, with its reason
        return Candidate(values, math.inf, f"the forward or the loss failed: {exc}", samples)
    if not math.isfinite(loss):
        return Candidate(values, math.inf, f"the loss is not finite ({loss})", samples)
    return Candidate(values, loss, None, samples)


def _tied(loss: float, best: float) -> bool:
    return loss - best <= max(RELATIVE_TIE * abs(best), ABSOLUTE_TIE)


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
) -> SearchResult:
    # Losses are comparable only on the same samples: the finalists (scored on the most
    # samples) rank first, the screened-only combinations after them.
    ok = [c for c in results if c.error is None]
    most = max((c.samples for c in ok), default=0)
    scored = sorted((c for c in ok if c.samples == most), key=lambda c: c.loss)
    screened_only = sorted((c for c in ok if c.samples != most), key=lambda c: c.loss)
    failed = [c for c in results if c.error is not None]
    complete = len(results) == total
    # Per value, the best loss on the screening samples, which every combination shares.
    screen_losses = [(c.values, c.loss if c.screen_loss is None else c.screen_loss) for c in ok]
    per_name = {
        name: tuple(
            (value, min((loss for v, loss in screen_losses if v[name] == value), default=math.inf))
            for value in values
        )
        for name, values in zip(names, candidates, strict=True)
    }
    progress_note = (
        ""
        if complete
        else f" Scored {len(results)} of {total} combinations before the time budget or the "
        "limit on combinations stopped the search."
    )
    if not scored:
        reason = failed[0].error if failed else "there was nothing to score"
        return SearchResult(
            names, tuple(failed), {}, None, None, False, (), per_name, len(results), total,
            complete, seconds, f"No combination could be scored: {reason}.{progress_note}", fixed,
        )  # fmt: skip
    best = scored[0]
    margin = relative = None
    if len(scored) > 1:
        margin = scored[1].loss - best.loss
        relative = margin / max(abs(best.loss), ABSOLUTE_TIE)
    group = [c for c in scored if _tied(c.loss, best.loss)]
    tied = tuple(n for n in names if len({repr(c.values[n]) for c in group}) > 1)
    separable = len(group) == 1
    if not separable:
        kept = ", ".join(f"{n} (stays {spec.value(n)!r})" for n in tied)
        message = (
            f"The data cannot tell apart {len(group)} combinations within {RELATIVE_TIE:g} of the "
            f"best loss {best.loss:.6g}; tied: {kept or 'none of the searched names'}."
        )
    elif margin is None:
        message = f"Only one combination could be scored: {_describe(best.values)} (loss {best.loss:.6g})."
    else:
        message = (
            f"Best: {_describe(best.values)} (loss {best.loss:.6g}); the runner-up is "
            f"{margin:.3g} higher ({relative:.2%})."
        )
    if failed:
        message += f" {len(failed)} combinations failed and are ranked last."
    return SearchResult(
        names=names,
        ranking=tuple(scored + screened_only + failed),
        best_values=dict(best.values),
        margin=margin,
        relative_margin=relative,
        separable=separable,
        tied_names=tied,
        per_name=per_name,
        scored=len(results),
        total=total,
        complete=complete,
        seconds=seconds,
        message=message + progress_note,
        fixed=fixed,
    )
