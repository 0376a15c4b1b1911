"""One recovery as an object: open -> set_values -> map_data -> search -> train -> export.

`Recovery` holds the state of one recovery (the checkpoint, its spec with the person's
values, the data and its mapping, the search's result, the freeze plan, the training
result and the exported files) and runs each step on it. `recovery recover` is a short
script over it. The pieces the dashboard drives one by one (a model with the original
weights, the values the search must keep, the report, the export of a trained model, the
default layers to train) have their one home here too, as functions both use.

Nothing here flips a process-wide switch; progress goes to the `log` the caller gives.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from recovery_core import humanize
from recovery_core.errors import BuildError, DataError, TrainingError
from recovery_core.export.exporter import STEPS, ExportBundle, ExportCheck, Exporter, write_atomic
from recovery_core.fit.freeze import (
    FreezePlan,
    eval_mode,
    paths_matching,
    plan_freeze,
    preset_patterns,
)
from recovery_core.fit.head_refit import EXACT_FIT, NEW_TASK_FACTOR, mean_square
from recovery_core.fit.search import (
    Candidate,
    SearchResult,
    score_candidates,
    searchable_names,
    walks_a_beam,
)
from recovery_core.fit.train import TrainingResult, TrainingRun
from recovery_core.infer import infer_spec
from recovery_core.infer.wiring import output_module
from recovery_core.io.checkpoint import Checkpoint, load_checkpoint
from recovery_core.io.data import (
    DataMapping,
    Dataset,
    baseline_loss,
    default_loss,
    guess_mapping,
    load_dataset,
    loss_function,
    make_mapping,
    mapped_tensors,
    split_indices,
)
from recovery_core.io.data_file import CheckedFile
from recovery_core.model.budget import check_build_budget
from recovery_core.model.build import build_model, load_weights
from recovery_core.model.codegen import generate_code
from recovery_core.model.layout import (
    BatchDims,
    attach_batch_major,
    batch_dims,
    batch_major,
    drop_batch_major,
    first_steps,
    sequence_dims,
    take,
    to_batch_major,
)
from recovery_core.model.spec import SOURCE_DEFAULT, SOURCE_SEARCH, SOURCE_USER, WIRING, ArchSpec
from recovery_core.plan import TrainingSettings

Log = Callable[[str], None]
# Export checks run two samples, each sequence cut to this many steps: any prefix is a
# valid input, and a model that reads thousands of samples as one sequence is slow on all.
EXAMPLE_STEPS = 64
# Fewer held-out examples than this: evaluate on all the data (a loss on a handful says little).
MIN_HELD_OUT_SAMPLES = 8


def _quiet(line: str) -> None:
    """The default log: says nothing."""


# ---------------------------------------------------------------- the pieces both use


def choose_forward(spec: ArchSpec, name: str | None) -> ArchSpec:
    """The spec with the named forward (when given); a typed error when none fits."""
    if name is not None:
        wiring = spec.wiring_named(name)
        if WIRING in {hp.name for hp in spec.hyperparameters}:
            spec = spec.with_values({WIRING: wiring.name}, source=SOURCE_USER)
    if spec.wiring is None:
        why = next((n for n in spec.notes if "forward" in n), "")
        raise BuildError(
            "no forward could be found for these weights, so the model cannot be run on data"
            + (f" ({why.rstrip('.')})" if why else "")
            + "; use `recovery codegen` and write the forward by hand"
        )
    return spec


def loaded_model(spec: ArchSpec, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """The spec's model with these weights loaded strictly; a typed error when they do not fit."""
    model = build_model(spec)
    loaded = load_weights(model, weights)
    if not loaded.ok:
        raise BuildError(loaded.message)
    return model


def person_values(spec: ArchSpec, leave_out: Sequence[str] = ()) -> dict[str, Any]:
    """The free values the person set: the search keeps them (except those in `leave_out`,
    which the person asked to have scored)."""
    return {
        hp.name: hp.value
        for hp in spec.free
        if hp.source == SOURCE_USER and hp.name not in leave_out
    }


def finalists(result: SearchResult) -> list[Candidate]:
    """The combinations whose losses compare: scored without error on the same samples as
    the best (the others were screened on fewer)."""
    best = result.best
    if best is None:
        return []
    return [c for c in result.ranking if c.error is None and c.samples == best.samples]


def default_patterns(model: nn.Module, spec: ArchSpec) -> tuple[str, ...]:
    """What trains when nobody chose: the forward's output layer (else the model's last
    layer with parameters)."""
    head = output_module(spec.wiring)
    return (head,) if head else preset_patterns(model, "output_layer")[:1]


def freeze_json(plan: FreezePlan) -> dict[str, Any]:
    return {
        "patterns": list(plan.patterns),
        "trainable_modules": list(plan.trainable_modules),
        "trainable_params": plan.trainable_params,
        "total_params": plan.total_params,
    }


def recovery_report(
    *,
    checkpoint: str,
    data: str | None,
    mapping: DataMapping,
    spec: ArchSpec,
    plan: FreezePlan,
    training: TrainingResult,
    states: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report written beside the exports. With `states`, each hyperparameter
    carries its state (found / chosen / unverified); `details` come after the values."""
    hyperparameters = [hp.to_json() for hp in spec.hyperparameters]
    if states is not None:
        hyperparameters = [
            row | {"state": states.get(row["name"], "read from the weights")}
            for row in hyperparameters
        ]
    return {
        "checkpoint": checkpoint,
        "data": data,
        "mapping": {"inputs": list(mapping.inputs), "target": mapping.target, "loss": mapping.loss},
        "hyperparameters": hyperparameters,
        **(details or {}),
        "freeze": freeze_json(plan),
        "training": training.to_json(),
    }


def export_trained(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    out_dir: str | os.PathLike[str],
    *,
    spec: ArchSpec,
    original: Mapping[str, torch.Tensor],
    plan: FreezePlan,
    report: Mapping[str, Any],
    stem: str,
    read: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
) -> ExportBundle:
    """Write a trained model in every format, reload and verify each. `model` takes the
    data as the user gives it (no batch-major view); `example` is two samples of it."""
    return trained_exporter(
        model, example, out_dir, spec=spec, original=original, plan=plan, report=report,
        stem=stem, read=read, formats=formats,
    ).finish()  # fmt: skip


def trained_exporter(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    out_dir: str | os.PathLike[str],
    *,
    spec: ArchSpec,
    original: Mapping[str, torch.Tensor],
    plan: FreezePlan,
    report: Mapping[str, Any],
    stem: str,
    read: Sequence[str] | None = None,
    formats: Sequence[str] | None = None,
) -> Exporter:
    """`export_trained` one file at a time, TorchScript first (see export.Exporter): for a
    caller that offers each file as soon as it is verified."""
    return Exporter(
        model,
        first_steps(example, spec, EXAMPLE_STEPS),
        out_dir,
        original,
        code=generate_code(spec),
        report=dict(report),
        input_path=None if read is None else list(read),
        stem=stem,
        trainable_keys=plan.trainable_keys,
        batch_dim=batch_dims(spec).inputs,
        formats=formats,
    )


# ---------------------------------------------------------------- logging helpers


# A beam scores only a part of its combinations: a line per this many scored.
BEAM_LOG_EVERY = 50


def _search_progress(log: Log) -> Callable[[int, int], None]:
    """A line at every tenth of the combinations screened; for a beam (too many to score
    every one, so most are never scored), what it does once, then a line every
    BEAM_LOG_EVERY combinations."""

    def report(done: int, total: int) -> None:
        if walks_a_beam(total):
            if done == 1:
                log(
                    f"  {total:,} combinations: too many to score all, so the best ones are "
                    "refined one value at a time"
                )
            elif done % BEAM_LOG_EVERY == 0:
                log(f"  scored {done} combinations so far")
        elif done == total or done % max(total // 10, 1) == 0:
            log(f"  screened {done} of {total} combinations")

    return report


def _bar_line(run: TrainingRun, loss: float) -> bytes:
    fraction, eta = run.progress
    filled = int(fraction * 30)
    line = f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
    return (line + f"loss {humanize.loss(loss)} eta {humanize.seconds(eta or 0)}").encode()


def follow_run(run: TrainingRun, log: Log, bar: bool, poll_seconds: float = 0.2) -> None:
    """Until the run ends: a redrawn bar on stderr (a terminal), else one line per epoch."""
    seen = 0
    while True:
        done = not run.is_alive()
        events = run.events_since(seen)
        seen += len(events)
        for event in events:
            if not bar and event.eval_loss is not None:  # set once per epoch, at its end
                log(f"epoch {event.epoch}: loss {humanize.loss(event.eval_loss)}")
        if bar and events:
            os.write(2, _bar_line(run, events[-1].loss))
        if done:
            if bar:
                os.write(2, b"\n")
            return
        run.join(poll_seconds)  # wakes as soon as the run ends: nobody waits for a poll


def _log_forwards(spec: ArchSpec, log: Log) -> None:
    if len(spec.wirings) <= 1 or WIRING not in {hp.name for hp in spec.free}:
        return
    log(f"{len(spec.wirings)} forwards fit the weights; the data decides among them:")
    for rank, wiring in enumerate(spec.wirings, start=1):
        log(f"  {rank}. {wiring.name}")


def _mapping(
    dataset: Dataset,
    spec: ArchSpec,
    inputs: Sequence[str],
    target: str | None,
    loss: str | None,
    log: Log,
) -> DataMapping:
    """The entries chosen by the person; what they left open is guessed (and said)."""
    if inputs and target:  # chosen by the person: nothing to guess
        return make_mapping(dataset, tuple(inputs), target, loss=loss)
    guessed = guess_mapping(dataset, spec.wiring.inputs if spec.wiring is not None else None)
    if inputs or target:
        return make_mapping(
            dataset, tuple(inputs) or guessed.inputs, target or guessed.target, loss=loss
        )
    if loss:
        guessed = make_mapping(dataset, guessed.inputs, guessed.target, loss=loss)
    log(f"guessed: inputs {', '.join(guessed.inputs)}; target {guessed.target} ({guessed.reason})")
    return guessed


def _check_runs(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor,
                loss_fn: Callable[..., torch.Tensor], spec: ArchSpec) -> None:  # fmt: skip
    """A quick look at two batch-major samples (a prefix: it computes what the whole does
    there), each sequence cut to its first EXAMPLE_STEPS as the export checks cut it (a
    long one is slow, and training's first forward runs it whole), in eval mode: a
    BatchNorm's statistics must not move."""
    inputs, target = tuple(t[:2] for t in inputs), target[:2]
    seq = sequence_dims(spec)
    if seq is not None:  # batch-major, the sequence follows the batch (dimension 1)
        inputs = tuple(take(t, EXAMPLE_STEPS, 1) for t in inputs)
        target = target if seq[1] is None else take(target, EXAMPLE_STEPS, 1)
    try:
        with torch.no_grad(), eval_mode(model):
            loss_fn(model(*inputs), target)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise DataError(
            f"the model cannot run on this data ({str(exc).splitlines()[0]}); check which "
            "entries are the inputs and the target (--input, --target), or fix the layout "
            "with --set batch_first=..."
        ) from exc


# ---------------------------------------------------------------- the pipeline object


@dataclass
class RecoveryData:
    """The checkpoint, its spec with the person's values and the data mapped onto it: what
    every step reads. Also what the dashboard looks at between steps (a model with the
    original weights, the baseline, a forward on two examples), so it keeps none of its own."""

    checkpoint: Checkpoint
    spec: ArchSpec
    name: str  # the checkpoint's label in reports
    read: tuple[str, ...] = ()  # every file read: nothing may be written over them
    log: Log = _quiet
    fixed: dict[str, Any] = field(default_factory=dict)  # values the search keeps
    forward: str | None = None  # the forward named by the person: not scored again
    dataset: Dataset | None = None
    data_name: str | None = None
    mapping: DataMapping | None = None
    searched: SearchResult | None = None
    _reference: tuple[ArchSpec, nn.Module] | None = field(default=None, repr=False)

    @functools.cached_property
    def original(self) -> dict[str, torch.Tensor]:
        """The checkpoint's weights (read once)."""
        return self.checkpoint.state_dict()

    @property
    def dims(self) -> BatchDims:
        return batch_dims(self.spec)

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Fix hidden values the person knows: the search keeps them."""
        fixed = {**self.fixed, **values}
        if self.forward is not None:  # as named: not scored again
            fixed.pop(WIRING, None)
            fixed[WIRING] = self.forward
        self.fixed = fixed
        self.spec = self.spec.with_values(fixed, source=SOURCE_USER)

    def use_spec(self, spec: ArchSpec) -> None:
        """Go on from `spec` (a saved plan's): the values it marks as the person's stay fixed."""
        self.spec, self.fixed = spec, person_values(spec)

    def apply_search(self, result: SearchResult) -> None:
        """Keep a search's result and take its best values (when anything could be scored:
        else nothing is found); the names it scored are no longer the person's."""
        self.searched = result
        if result.best is not None:
            self.spec = result.apply(self.spec)
            self.fixed = {k: v for k, v in self.fixed.items() if k not in result.names}

    def use_data(self, dataset: Dataset, name: str | None = None) -> None:
        """Another dataset: how it feeds the model is decided again (`map`), and values a
        search found on other data are not found on this one (`_forget_found`)."""
        self.dataset, self.mapping = dataset, None
        self.data_name = name or dataset.source_name
        self._forget_found()

    def _forget_found(self) -> None:
        """Values a search found stay as they are but count as unchecked defaults again:
        they were found on other data, or on another mapping of it."""
        found = {hp.name: hp.value for hp in self.spec.free if hp.source == SOURCE_SEARCH}
        if found:
            self.spec = self.spec.with_values(found, source=SOURCE_DEFAULT)
        self.searched = None

    def map(
        self, inputs: Sequence[str] = (), target: str | None = None, loss: str | None = None
    ) -> DataMapping:
        """Which entries feed the model and which it is scored on: the person's choice, what
        they left open guessed (and said). A mapping that fails keeps the one before."""
        assert self.dataset is not None, "use_data first"
        before = self.mapping
        self.mapping = _mapping(self.dataset, self.spec, inputs, target, loss, self.log)
        if before is not None and fed_entries(before) != fed_entries(self.mapping):
            self._forget_found()  # other entries: other data (a loss alone scores the same)
        return self.mapping

    def tensors(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The mapped entries as the user gave them."""
        assert self.dataset is not None and self.mapping is not None, "map_data first"
        return mapped_tensors(self.dataset, self.mapping)

    def batch_major_tensors(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The mapped entries with the model's batch along dimension 0 (what `model()` takes)."""
        return to_batch_major(*self.tensors(), self.dims)

    def model(self) -> nn.Module:
        """A new model with the original weights, in eval mode, taking batch-major data: a
        model that reads dimension 0 as its sequence is then cut along its own batch."""
        return attach_batch_major(loaded_model(self.spec, self.original).eval(), self.dims)

    def reference_model(self) -> nn.Module:
        """`model()` for the current spec, built once: for baselines and what trains (a run
        trains a copy of it, so it keeps the original weights)."""
        if self._reference is None or self._reference[0] is not self.spec:
            self._reference = (self.spec, self.model())
        return self._reference[1]

    def held_out(self, wanted: float) -> float:
        """The part of the data held out for evaluation: `wanted`, else 0 when the data is
        too small to split or each sample depends on its place among the others."""
        if not self.dims.independent:
            return 0.0
        n = self.dataset.n_samples if self.dataset is not None else 0
        return wanted if wanted > 0 and n * wanted >= MIN_HELD_OUT_SAMPLES else 0.0

    def eval_tensors(
        self, fraction: float, seed: int
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The held-out examples, batch-major: the ones a run with this split evaluates on."""
        inputs, target = self.batch_major_tensors()
        if not fraction:
            return inputs, target
        _, val = split_indices(target.shape[0], fraction, seed)
        return tuple(t[val] for t in inputs), target[val]

    def baseline(self, fraction: float = 0.0, seed: int = 0) -> float:
        """The original weights' loss on the held-out part (all the data at 0)."""
        assert self.mapping is not None, "map first"
        inputs, target = self.eval_tensors(fraction, seed)
        loss_fn = loss_function(self.mapping)
        # Sample i at position i: the samples are evaluated whole (see BatchDims).
        whole = {} if self.dims.independent else {"batch_size": max(target.shape[0], 1)}
        value = baseline_loss(self.reference_model(), inputs, target, loss_fn, **whole)
        if not math.isfinite(value):
            raise DataError(
                f"The loss of the original weights on this data is {value}; check which "
                "entries are the inputs and the target, and the loss."
            )
        return value

    def runs_on_data(self) -> tuple[bool, tuple[int, ...] | None, str | None]:
        """Does the model run on two of the data's examples? (ok, output shape, the error
        in its own words)"""
        try:
            inputs, _ = self.batch_major_tensors()
            with torch.no_grad():
                out = self.reference_model()(*(t[:2] for t in inputs))
        except Exception as exc:  # noqa: BLE001 - the answer is "it does not run"
            return False, None, f"{type(exc).__name__}: {exc}"[:400]
        return True, tuple(out.shape) if isinstance(out, torch.Tensor) else None, None

    def scorer(self, names: Sequence[str], **options: Any) -> Callable[[], SearchResult]:
        """The search of `names` on the current spec and data (score_candidates' `options`),
        ready to run in another thread: it reads nothing of this object then. The values
        the person set and did not name stay fixed."""
        assert self.mapping is not None, "map first"
        choose_forward(self.spec, None)  # no forward: said at once, not by each combination
        inputs, target = self.tensors()
        return functools.partial(
            score_candidates, self.spec, self.original, inputs, target,
            loss_function(self.mapping), fixed=person_values(self.spec, leave_out=names),
            names=list(names), **options,
        )  # fmt: skip


@dataclass
class Recovery(RecoveryData):
    """The state of one recovery, and its steps in order. Each step reads what the ones
    before it left (`spec`, `mapping`, `freeze`, `result`) and logs what it did."""

    freeze: FreezePlan | None = None
    result: TrainingResult | None = None
    warnings: list[str] = field(default_factory=list)  # what the report must carry too
    bundle: ExportBundle | None = None

    @classmethod
    def open(
        cls,
        path: str,
        *,
        wiring: str | None = None,
        values: Mapping[str, Any] | None = None,
        writes: Sequence[str] = (),
        reads: Sequence[str] = (),
        log: Log = _quiet,
        checkpoint: Checkpoint | None = None,
    ) -> Recovery:
        """Load the checkpoint (refusing `writes` that are files it reads, its shards or
        `reads`), check its build budget, infer its spec with the named forward and fix
        the `values` the person knows. `checkpoint`: `path` loaded already."""
        from recovery_core.export.exporter import refuse_overwriting_input

        checkpoint = load_checkpoint(path) if checkpoint is None else checkpoint
        read = (path, *checkpoint.source_files, *reads)
        refuse_overwriting_input(list(writes), list(read))
        check_build_budget(checkpoint)  # declared sizes, before any model is built
        spec = choose_forward(infer_spec(checkpoint), wiring)
        assert spec.wiring is not None  # choose_forward refuses a spec without one
        named = wiring is not None and WIRING in {hp.name for hp in spec.free}
        forward = spec.wiring.name if named else None
        recovery = cls(checkpoint, spec, os.path.basename(path), read, log, forward=forward)
        recovery.set_values(values or {})
        log(f"checkpoint: {len(checkpoint.tensors)} tensors ({checkpoint.format})")
        _log_forwards(recovery.spec, log)
        return recovery

    def map_data(
        self,
        path: str,
        inputs: Sequence[str] = (),
        target: str | None = None,
        loss: str | None = None,
        *,
        checked: CheckedFile | None = None,
    ) -> DataMapping:
        """Read the dataset and decide which entries feed the model and which it is scored
        on. `checked`: the file's checks passed before torch was loaded (see load_dataset)."""
        self.use_data(load_dataset(path, checked=checked), os.path.basename(path))
        mapping = self.map(inputs, target, loss)
        self.log(
            f"loss: {mapping.loss}; evaluated on the same data it trains on (no validation split)"
        )
        return mapping

    def search(self, budget_seconds: float = 30.0) -> SearchResult | None:
        """Score the hidden values the data can decide (not the fixed ones); the best is
        applied to the spec. None when nothing is left to score."""
        assert self.mapping is not None, "map_data first"
        searchable = [n for n in searchable_names(self.spec) if n not in self.fixed]
        for hp in self.spec.free:
            if hp.name not in searchable and hp.name not in self.fixed:
                self.log(
                    f"warning: {hp.name} stays at its default {hp.value!r}: the data cannot "
                    "decide it (it does not change the loss in eval mode); fix it with --set "
                    "if you know it"
                )
        if not searchable:
            return None
        self.log(f"scoring hidden hyperparameters on the data: {', '.join(searchable)}")
        progress = _search_progress(self.log)
        search = self.scorer(searchable, budget_seconds=budget_seconds, progress=progress)()
        for rank, candidate in enumerate(search.ranking[:5], start=1):
            self.log(f"  #{rank} loss {humanize.loss(candidate.loss)}  {candidate.values}")
        self.log(f"  {search.message}")
        if search.best is None:
            raise BuildError(
                f"{search.message.rstrip('.')}; fix the values you know with --set, or pick "
                "another forward with --wiring"
            )
        self.apply_search(search)
        return search

    def train(
        self,
        settings: TrainingSettings,
        patterns: Sequence[str] = (),
        *,
        device: str = "auto",
        progress_bar: bool = False,
    ) -> TrainingResult:
        """Train the layers `patterns` name (default: the output layer) on batch-major data.
        The run measures the baseline itself, on its frozen-prefix cache when it has one."""
        assert self.spec.wiring is not None and self.mapping is not None
        self.log(f"forward: {self.spec.wiring.description}")
        dims = self.dims
        if dims.moved:
            self.log(f"layout: {dims.describe()}; every batch and split is cut along it")
        inputs, target = self.batch_major_tensors()
        model = loaded_model(self.spec, self.original)
        loss_fn = loss_function(self.mapping)
        with batch_major(model, dims):
            self.freeze = plan = plan_freeze(
                model, list(patterns) or list(default_patterns(model, self.spec))
            )
            self.log(
                f"training {', '.join(plan.trainable_modules)}: "
                f"{humanize.count(plan.trainable_params)} of "
                f"{humanize.count(plan.total_params)} parameters"
            )
            config = settings.config(device=device, samples_independent=dims.independent)
            run = TrainingRun(model, plan, inputs, target, loss_fn, config).start()
            try:
                self.result = _followed(run, self.log, progress_bar)
            except TrainingError:
                # Said in the data's terms when the model cannot run on it. Only then: the
                # run's first forward (its probe, two samples) is that check already.
                _check_runs(model, inputs, target, loss_fn, self.spec)
                raise
        drop_batch_major(self.result.model)
        searched = self.searched
        found = searched.names if searched and searched.best else ()
        refitted = searched.refitted_head if searched else None
        result, scale = self.result, mean_square(target)
        if warning := new_task_warning(
            found, result.baseline_loss, result.final_loss, scale, refitted
        ):
            self.warnings.append(
                f"{warning}: fix them with --set if you know them, or score them on data "
                "the original model was trained for"
            )
            self.log(f"warning: {self.warnings[-1]}")
        return self.result

    def report(self) -> dict[str, Any]:
        """The JSON report of what was done: values, forward, layout, search, freeze, training."""
        assert self.mapping is not None and self.freeze is not None and self.result is not None
        assert self.spec.wiring is not None
        dims = self.dims
        details = {
            "wiring": self.spec.wiring.to_json(),
            "layout": {
                "input_batch_dim": dims.inputs,
                "target_batch_dim": dims.target,
                "description": dims.describe(),
            },
            "search": None if self.searched is None else self.searched.to_json(),
            "warnings": list(self.warnings),
        }
        return recovery_report(
            checkpoint=self.name,
            data=self.data_name,
            mapping=self.mapping,
            spec=self.spec,
            plan=self.freeze,
            training=self.result,
            details=details,
        )

    def export(
        self,
        out_path: str,
        *,
        formats: Sequence[str] | None = None,
        report_path: str | None = None,
    ) -> ExportBundle:
        """Write TorchScript at `out_path` and the other formats beside it, each verified;
        the report also at `report_path` when given."""
        assert self.result is not None and self.freeze is not None
        out = Path(out_path)
        example = tuple(take(t, 2, self.dims.inputs) for t in self.tensors()[0])
        self.bundle = bundle = _in_own_thread(
            functools.partial(
                export_trained,
                self.result.model,
                example,
                out.parent,
                spec=self.spec,
                original=self.original,
                plan=self.freeze,
                report=self.report(),
                stem=out.stem,
                read=self.read,
                formats=formats,
            )
        )
        if report_path and os.path.realpath(report_path) != os.path.realpath(bundle.report_path):
            # Atomically, never through a symlink planted at the report's path.
            write_atomic(report_path, Path(bundle.report_path).read_bytes())
        return bundle


def fed_entries(mapping: DataMapping) -> tuple[tuple[str, ...], str]:
    """The entries a mapping feeds the model and scores it on."""
    return tuple(mapping.inputs), mapping.target


def new_task_warning(
    found: Sequence[str],
    before: float,
    after: float,
    target_scale: float = 1.0,
    refitted_head: str | None = None,
) -> str | None:
    """Why the values `found` by the search may be wrong, when training took the loss from
    `before` to `after`: the data is new to the model. The search ranks hidden values by
    how well the ORIGINAL weights fit the data, which data they were not trained for
    cannot judge. None otherwise. `target_scale`: the target's mean square (MSE), below a
    millionth of which the original weights fit exactly and only rounding is left.
    `refitted_head`: the search's (`SearchResult.refitted_head`); a search that ranked
    with the output layer refitted judged the values on this data, and says so itself."""
    if refitted_head is not None or not found:
        return None
    if not (math.isfinite(before) and math.isfinite(after)):
        return None
    if after * NEW_TASK_FACTOR > before or before <= EXACT_FIT * target_scale:
        return None
    return (
        f"the trained layers fit this data far better than the original weights did "
        f"(loss {humanize.loss(before)} -> {humanize.loss(after)}), so the data is new to "
        f"the model; the values found on it ({', '.join(found)}) were ranked by how well "
        "the original weights fit it, which such data cannot judge"
    )


def _in_own_thread(work: Callable[[], ExportBundle]) -> ExportBundle:
    """`work()` in a new thread, waited for; what it raises is raised here. After the
    training thread has ended, the export's checks ran slower in the calling thread for a
    while (the TorchScript check's first small forwards ~0.2 s each instead of ~2 ms on 2
    busy cores: torch's OpenMP workers) and not in a new one (BENCHMARKS.md 8b)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as it is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="export", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return cast(ExportBundle, outcome["value"])


def _followed(run: TrainingRun, log: Log, progress_bar: bool) -> TrainingResult:
    """Wait for a started run while its progress is logged; its result, or a typed error."""
    follower = threading.Thread(target=follow_run, args=(run, log, progress_bar), daemon=True)
    follower.start()
    run.join()
    follower.join()
    training = run.result
    if training is None:
        raise TrainingError(run.message or "training stopped without a result")
    log(f"baseline loss with the original weights: {humanize.loss(training.baseline_loss)}")
    if training.message:
        log(training.message)
    return training


__all__ = [
    "STEPS",
    "ExportCheck",
    "Exporter",
    "MIN_HELD_OUT_SAMPLES",
    "Recovery",
    "RecoveryData",
    "choose_forward",
    "default_loss",
    "default_patterns",
    "export_trained",
    "finalists",
    "follow_run",
    "freeze_json",
    "loaded_model",
    "paths_matching",
    "person_values",
    "recovery_report",
    "trained_exporter",
]
