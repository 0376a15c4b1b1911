"""The whole job in one call: checkpoint + data -> searched, retrained, exported, verified.

This is what `recovery recover` runs; the dashboard drives the same steps one by one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recovery_core import humanize
from recovery_core.budget import check_build_budget
from recovery_core.build import build_model, load_weights
from recovery_core.checkpoint import load_checkpoint
from recovery_core.codegen import generate_code
from recovery_core.data import (
    guess_mapping,
    load_dataset,
    loss_function,
    make_mapping,
)
from recovery_core.errors import BuildError, DataError, ExportError, TrainingError
from recovery_core.export import (
    ExportBundle,
    export_all,
    export_paths,
    formats_to_write,
    refuse_overwriting_input,
    write_atomic,
)
from recovery_core.freeze import FreezePlan, eval_mode, plan_freeze, preset_patterns
from recovery_core.infer import infer_spec
from recovery_core.infer.wiring import output_module
from recovery_core.layout import (
    batch_dims,
    batch_major,
    drop_batch_major,
    take,
    to_batch_major,
)
from recovery_core.search import SearchResult, score_candidates, searchable_names
from recovery_core.spec import SOURCE_USER, WIRING, ArchSpec
from recovery_core.train import Method, TrainingConfig, TrainingResult, TrainingRun

Log = Callable[[str], None]


@dataclass(frozen=True)
class RecoverOptions:
    inputs: tuple[str, ...] = ()  # dataset entries fed to the model; guessed when empty
    target: str | None = None  # guessed when None
    unfreeze: tuple[str, ...] = ()  # module patterns; default: only the output layer
    fixed: Mapping[str, Any] = field(
        default_factory=dict
    )  # hidden hyperparameters set by the person
    method: Method = "auto"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.0  # part of the data held out for evaluation (a dashboard plan)
    loss: str | None = None  # "mse" | "cross_entropy"; guessed from the target when None
    search_budget_seconds: float = 30.0
    wiring: str | None = None  # the forward to use (a name from spec.wirings); scored when None
    formats: tuple[str, ...] | None = None  # export.FORMATS to write besides TorchScript; None: all


@dataclass(frozen=True)
class RecoverResult:
    spec: ArchSpec
    search: SearchResult | None
    training: TrainingResult
    bundle: ExportBundle
    out_path: str

    @property
    def passed(self) -> bool:
        return self.bundle.passed

    def summary(self) -> str:
        lines = ["hyperparameters:"]
        for hp in self.spec.hyperparameters:
            if not hp.determined:
                lines.append(f"  {hp.name} = {hp.value!r} ({hp.source})")
        t = self.training
        lines.append(
            f"loss: baseline {humanize.loss(t.baseline_loss)} -> final {humanize.loss(t.final_loss)}"
            f" ({t.method_used}, {humanize.seconds(t.seconds)})"
        )
        lines.append("verification:")
        for check in self.bundle.checks:
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"  [{mark}] {check.name}: {check.detail}")
        verdict = "all checks passed" if self.passed else "SOME CHECKS FAILED"
        lines.append(f"{verdict}; wrote {self.out_path}")
        return "\n".join(lines)


def _search_progress(log: Log) -> Callable[[int, int], None]:
    """A line at every tenth of the combinations screened."""

    def report(done: int, total: int) -> None:
        if done == total or done % max(total // 10, 1) == 0:
            log(f"  screened {done} of {total} combinations")

    return report


def _progress_printer(log: Log, bar: bool) -> Callable[[TrainingRun], None]:
    """Poll a running job: a redrawn bar on a terminal, one line per epoch otherwise."""

    def follow(run: TrainingRun) -> None:
        seen = 0
        while True:
            done = not run.is_alive()
            events = run.events_since(seen)
            seen += len(events)
            for event in events:
                if not bar and event.eval_loss is not None:  # set once per epoch, at its end
                    log(f"epoch {event.epoch}: loss {humanize.loss(event.eval_loss)}")
            if bar and events:
                fraction, eta = run.progress
                filled = int(fraction * 30)
                line = f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
                line += f"loss {humanize.loss(events[-1].loss)} eta {humanize.seconds(eta or 0)}"
                os.write(2, line.encode())
            if done:
                if bar:
                    os.write(2, b"\n")
                return
            time.sleep(0.2)

    return follow


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


def _log_forwards(spec: ArchSpec, log: Log) -> None:
    if len(spec.wirings) <= 1 or WIRING not in {hp.name for hp in spec.free}:
        return
    log(f"{len(spec.wirings)} forwards fit the weights; the data decides among them:")
    for rank, wiring in enumerate(spec.wirings, start=1):
        log(f"  {rank}. {wiring.name}")


def _train(
    model: torch.nn.Module,
    head: str | None,
    inputs: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    loss_fn: Callable,
    options: RecoverOptions,
    log: Log,
    progress_bar: bool,
) -> tuple[TrainingResult, FreezePlan]:
    """Freeze plan and the training run, on batch-major data. The run measures the
    baseline itself, on its frozen-prefix cache when it has one: the trunk runs over the
    data once, not once for the baseline and again for the cache."""
    try:
        # A quick look at two samples (a prefix: it computes what the whole does there),
        # in eval mode: a BatchNorm's statistics must not move.
        with torch.no_grad(), eval_mode(model):
            loss_fn(model(*(t[:2] for t in inputs)), target[:2])
    except (RuntimeError, ValueError, IndexError) as exc:
        raise DataError(
            f"the model cannot run on this data ({str(exc).splitlines()[0]}); check which "
            "entries are the inputs and the target (--input, --target), or fix the layout "
            "with --set batch_first=..."
        ) from exc
    patterns = list(options.unfreeze) or [
        head or preset_patterns(model, "only the output layer")[0]
    ]
    plan = plan_freeze(model, patterns)
    log(
        f"training {', '.join(plan.trainable_modules)}: "
        f"{humanize.count(plan.trainable_params)} of {humanize.count(plan.total_params)} parameters"
    )
    config = TrainingConfig(
        method=options.method,
        lr=options.lr,
        epochs=options.epochs,
        batch_size=options.batch_size,
        seed=options.seed,
        device=options.device,
        val_fraction=options.val_fraction,
    )
    run = TrainingRun(model, plan, inputs, target, loss_fn, config)
    run.start()
    follower = threading.Thread(
        target=_progress_printer(log, progress_bar), args=(run,), daemon=True
    )
    follower.start()
    run.join()
    follower.join()
    training = run.result
    if training is None:
        raise TrainingError(run.message or "training stopped without a result")
    log(f"baseline loss with the original weights: {humanize.loss(training.baseline_loss)}")
    if training.message:
        log(training.message)
    return training, plan


def recover(
    checkpoint_path: str,
    data_path: str,
    out_path: str,
    options: RecoverOptions = RecoverOptions(),
    *,
    report_path: str | None = None,
    log: Log = lambda line: None,
    progress_bar: bool = False,
) -> RecoverResult:
    out = Path(out_path)
    if out.suffix != ".pt":
        raise ExportError(f"--out should name a TorchScript file ending in .pt, got {out.name!r}")
    formats_to_write(options.formats)  # an unknown format is refused before any work
    # Refuse before any work: nothing may overwrite a file that is read (the checkpoint,
    # its shards and index, the dataset); checked again once the shards are known.
    written = [*export_paths(out.parent, out.stem, with_code=True).values()]
    written += [report_path] if report_path else []
    refuse_overwriting_input(written, [checkpoint_path, data_path])
    checkpoint = load_checkpoint(checkpoint_path)
    read = [checkpoint_path, *checkpoint.source_files, data_path]
    refuse_overwriting_input(written, read)
    check_build_budget(checkpoint)  # declared sizes, before any model is built
    spec = choose_forward(infer_spec(checkpoint), options.wiring)
    forward = spec.wiring
    assert forward is not None  # choose_forward refuses a spec without one
    fixed = dict(options.fixed)
    if options.wiring is not None and WIRING in {hp.name for hp in spec.free}:
        fixed[WIRING] = forward.name  # as named: not scored again
    spec = spec.with_values(fixed, source=SOURCE_USER)
    log(f"checkpoint: {len(checkpoint.tensors)} tensors ({checkpoint.format})")
    _log_forwards(spec, log)

    dataset = load_dataset(data_path)
    if options.inputs and options.target:  # chosen by the person: nothing to guess
        mapping = make_mapping(dataset, options.inputs, options.target, loss=options.loss)
    elif options.inputs or options.target:
        guessed = guess_mapping(dataset, forward.inputs)
        mapping = make_mapping(
            dataset,
            options.inputs or guessed.inputs,
            options.target or guessed.target,
            loss=options.loss,
        )
    else:
        mapping = guess_mapping(dataset, forward.inputs)
        if options.loss:
            mapping = make_mapping(dataset, mapping.inputs, mapping.target, loss=options.loss)
        log(
            f"guessed: inputs {', '.join(mapping.inputs)}; target {mapping.target} ({mapping.reason})"
        )
    loss_fn = loss_function(mapping)
    inputs = tuple(dataset.tensors[name] for name in mapping.inputs)
    target = dataset.tensors[mapping.target]
    log(f"loss: {mapping.loss}; evaluated on the same data it trains on (no validation split)")

    original = checkpoint.state_dict()
    search = None
    searchable = [n for n in searchable_names(spec) if n not in fixed]
    for hp in spec.free:
        if hp.name not in searchable and hp.name not in fixed:
            log(
                f"warning: {hp.name} stays at its default {hp.value!r}: the data cannot decide it "
                "(it does not change the loss in eval mode); fix it with --set if you know it"
            )
    if searchable:
        log(f"scoring hidden hyperparameters on the data: {', '.join(searchable)}")
        search = score_candidates(
            spec,
            original,
            inputs,
            target,
            loss_fn,
            fixed=fixed,
            budget_seconds=options.search_budget_seconds,
            progress=_search_progress(log),
        )
        for rank, candidate in enumerate(search.ranking[:5], start=1):
            log(f"  #{rank} loss {humanize.loss(candidate.loss)}  {candidate.values}")
        log(f"  {search.message}")
        if search.best is None:
            raise BuildError(
                f"{search.message.rstrip('.')}; fix the values you know with --set, or pick "
                "another forward with --wiring"
            )
        spec = search.apply(spec)

    assert spec.wiring is not None
    log(f"forward: {spec.wiring.description}")
    dims = batch_dims(spec)
    if dims.moved:
        log(f"layout: {dims.describe()}; every batch and split is cut along it")
    given_inputs = inputs
    inputs, target = to_batch_major(inputs, target, dims)
    model = build_model(spec)
    loaded = load_weights(model, original)
    if not loaded.ok:
        raise BuildError(loaded.message)
    with batch_major(model, dims):
        training, plan = _train(
            model,
            output_module(spec.wiring),
            inputs,
            target,
            loss_fn,
            options,
            log,
            progress_bar,
        )
    drop_batch_major(training.model)

    report = {
        "checkpoint": os.path.basename(checkpoint_path),
        "data": os.path.basename(data_path),
        "mapping": {"inputs": list(mapping.inputs), "target": mapping.target, "loss": mapping.loss},
        "hyperparameters": [hp.to_json() for hp in spec.hyperparameters],
        "wiring": spec.wiring.to_json(),
        "layout": {
            "input_batch_dim": dims.inputs,
            "target_batch_dim": dims.target,
            "description": dims.describe(),
        },
        "search": None if search is None else search.to_json(),
        "freeze": {
            "patterns": list(plan.patterns),
            "trainable_modules": list(plan.trainable_modules),
            "trainable_params": plan.trainable_params,
            "total_params": plan.total_params,
        },
        "training": training.to_json(),
    }
    example = tuple(take(t, 2, dims.inputs) for t in given_inputs)
    bundle = export_all(
        training.model,
        example,
        out.parent,
        original,
        code=generate_code(spec),
        report=report,
        input_path=read,
        stem=out.stem,
        trainable_keys=plan.trainable_keys,
        batch_dim=dims.inputs,
        formats=options.formats,
    )
    if report_path and os.path.realpath(report_path) != os.path.realpath(bundle.report_path):
        # Atomically, never through a symlink planted at the report's path.
        write_atomic(report_path, Path(bundle.report_path).read_bytes())
    return RecoverResult(spec, search, training, bundle, str(out))


__all__ = ["RecoverOptions", "RecoverResult", "recover"]
