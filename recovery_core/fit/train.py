"""A training run as an object: background thread, events per step, stop, best-weights guard.

The run trains a private copy of the model (the caller's model and the original weights
are never touched). It picks the closed-form solve where it applies and trains on cached
features of the frozen prefix where it can. Every step publishes a `StepEvent`; a UI polls
`events_since(i)` from another thread. No UI code here.

Reproducibility: the run seeds torch's global generator (dropout has no other), so two
runs with the same seed agree when they do not run at the same time; that is a
process-wide switch, so it is the caller's choice (`TrainingConfig.seed_global_rng`).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from recovery_core.errors import DataError, RecoveryError, TrainingError
from recovery_core.fit.closed_form import closed_form_blocker, solve_linear
from recovery_core.fit.freeze import FreezePlan, apply_freeze, set_train_mode
from recovery_core.fit.prefix_cache import (
    FEATURE_CHUNK,
    CachedFeatures,
    Suffix,
    cache_features,
    cached_forward,
    chunk_for,
    find_suffix,
    full_forward,
)
from recovery_core.io.data import split_indices

# The names below appear in the CLI, plans, reports and the dashboard: a contract.
Method = Literal["auto", "lstsq", "adam", "adamw", "sgd"]
METHODS: tuple[Method, ...] = get_args(Method)
# A run's life: idle, then running, then finished, stopped (by request) or failed.
RunStatus = Literal["idle", "running", "finished", "stopped", "failed"]
DEVICES = ("auto", "cpu", "cuda")
EVAL_BATCH = 256  # evaluation's least chunk (`chunk_for`): no gradients, bigger batches
# A watcher's chart must move on long epochs: the evaluation loss is also taken between
# epoch ends, at most this many seconds apart (those points are shown, never kept as the
# best weights: what is kept stays a function of the seed, not of the machine's speed).
EVAL_SECONDS = 1.0
ETA_SMOOTHING = 0.2  # weight of the newest step rate in the time-left estimate
SGD_MOMENTUM = 0.9  # plain SGD without momentum is rarely what anyone wants

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TrainingConfig:
    method: Method = "auto"  # "auto": the closed form where it applies, else Adam
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when available
    weight_decay: float = 0.0
    val_fraction: float = 0.0  # 0: evaluate on the training data itself
    cache: bool = True  # train on cached frozen-prefix features where that is exact
    # False when sample i sits at position i of one sequence (layout.BatchDims.independent):
    # the frozen prefix then runs over all samples in one piece, since a piece that does
    # not start at the first sample would give its samples the wrong positions.
    samples_independent: bool = True
    # Seed torch's global generator at the start (dropout draws from no other): a
    # process-wide switch, so the caller chooses. Off, runs sharing a process cannot
    # reseed each other's dropout, and a run with trainable dropout is not reproducible.
    seed_global_rng: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TrainingError(f"Unknown method {self.method!r}; choose one of {list(METHODS)}.")
        if self.device not in DEVICES:
            raise TrainingError(f"Unknown device {self.device!r}; choose one of {list(DEVICES)}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"The learning rate must be a positive number, not {self.lr}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainingError("Epochs and batch size must be at least 1.")
        if self.weight_decay < 0:
            raise TrainingError(f"Weight decay cannot be negative ({self.weight_decay}).")
        if not 0.0 <= self.val_fraction < 1.0:
            raise TrainingError(
                f"The validation fraction must be in [0, 1), not {self.val_fraction}."
            )


@dataclass(frozen=True)
class StepEvent:
    step: int
    epoch: int  # 1-based: the first epoch is 1
    loss: float  # this step's training loss (train mode, one batch)
    val_loss: float | None  # at the end of an epoch, when there is a validation set
    elapsed: float  # seconds since the run started
    samples_seen: int
    # At the end of an epoch: eval-mode loss on the evaluation set (validation set if
    # present, else the training data) - the number the best weights are chosen by.
    eval_loss: float | None = None
    # The same measure, set at every epoch end and at least every EVAL_SECONDS in between:
    # what a live chart draws as its main line.
    monitor_loss: float | None = None


class Progress(NamedTuple):
    fraction: float
    eta_seconds: float | None


@dataclass(frozen=True)
class TrainingResult:
    baseline_loss: float  # original weights, eval mode, evaluation set
    final_loss: float  # the returned model, same measure
    best_loss: float
    best_step: int  # 0: the original weights were never beaten
    steps: int
    seconds: float
    method_used: str
    cached_prefix: bool
    model: nn.Module  # the trained copy, best weights restored, eval mode, on the CPU
    stopped_early: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        """Everything but the model, for reports."""
        return {
            "baseline_loss": self.baseline_loss,
            "final_loss": self.final_loss,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "method_used": self.method_used,
            "cached_prefix": self.cached_prefix,
            "stopped_early": self.stopped_early,
            "message": self.message,
        }


class _Stop(Exception):
    """Ends the loop early; carries the status and message."""

    def __init__(self, status: RunStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class TrainingRun:
    """Train the plan's trainable part of a private copy of `model`.

    `inputs` are the forward's arguments (samples along dimension 0), `target` the
    target. `val` is an optional `(inputs, target)` validation set; without one (and
    with `config.val_fraction == 0`) the run is evaluated on the training data itself.
    """

    def __init__(
        self,
        model: nn.Module,
        plan: FreezePlan,
        inputs: Sequence[Tensor],
        target: Tensor,
        loss_fn: LossFn,
        config: TrainingConfig | None = None,
        val: tuple[Sequence[Tensor], Tensor] | None = None,
    ):
        self.config = config or TrainingConfig()
        self.plan = plan
        self.loss_fn = loss_fn
        inputs, target = tuple(inputs), target
        _check_tensors(inputs, target, "training")
        if val is None and self.config.val_fraction > 0:
            (inputs, target), val = _split(
                inputs, target, self.config.val_fraction, self.config.seed
            )
        if val is not None:
            _check_tensors(tuple(val[0]), val[1], "validation")
        if not plan.trainable_param_names:
            raise TrainingError("Nothing is selected to train; unfreeze at least one module.")
        self.device = _device(self.config.device)
        self.inputs = tuple(t.to(self.device) for t in inputs)
        self.target = target.to(self.device)
        self.val = (
            None
            if val is None
            else (tuple(t.to(self.device) for t in val[0]), val[1].to(self.device))
        )
        # The private copy: the caller's model is never modified.
        self.model = copy.deepcopy(model).to(self.device)
        apply_freeze(self.model, plan)

        self._lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._events: list[StepEvent] = []
        self._status: RunStatus = "idle"
        self._message = ""
        self._result: TrainingResult | None = None
        self._thread: threading.Thread | None = None
        self._steps_done = 0
        self._total_steps = 0
        self._started_at = 0.0
        self._rate: float | None = None  # smoothed seconds per step, for the time left
        self._rate_mark: tuple[float, int] | None = None  # (time, step) of the last update
        self.baseline: float | None = None

    # ------------------------------------------------------------ control

    def start(self) -> TrainingRun:
        """Run in a daemon background thread; poll `events_since`, `status`, `progress`."""
        with self._lock:
            if self._status != "idle":
                raise TrainingError(
                    "This run has already started; create a new run to train again."
                )
            self._status = "running"
        self._thread = threading.Thread(target=self._execute, name="training-run", daemon=True)
        self._thread.start()
        return self

    def run(self) -> TrainingResult:
        """Run in the caller's thread and return the result."""
        with self._lock:
            if self._status != "idle":
                raise TrainingError(
                    "This run has already started; create a new run to train again."
                )
            self._status = "running"
        self._execute()
        if self._result is None:
            raise TrainingError(self._message)
        return self._result

    def stop(self) -> None:
        """Stop at the next step; the best weights seen are kept."""
        self._stop_requested.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background thread; True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return self._status not in ("running",)

    def is_alive(self) -> bool:
        """True while the background thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ polling

    def events_since(self, index: int) -> list[StepEvent]:
        with self._lock:
            return self._events[index:]

    @property
    def status(self) -> RunStatus:
        """ "idle", "running", "stopped", "finished" or "failed"."""
        with self._lock:
            return self._status

    @property
    def message(self) -> str:
        with self._lock:
            return self._message

    @property
    def result(self) -> TrainingResult | None:
        with self._lock:
            return self._result

    @property
    def progress(self) -> Progress:
        with self._lock:
            done, total = self._steps_done, self._total_steps
            if self._status in ("finished", "stopped", "failed"):
                return Progress(1.0 if self._status == "finished" else done / max(total, 1), 0.0)
            rate = self._rate
        if total == 0 or done == 0 or rate is None:
            return Progress(done / total if total else 0.0, None)
        return Progress(done / total, rate * (total - done))

    # ------------------------------------------------------------ the run

    def _execute(self) -> None:
        self._started_at = time.monotonic()
        fit = _Fit(self)
        try:
            fit.prepare()
        except RecoveryError as e:
            self._finish_without_result(str(e))
            return
        except Exception as e:  # a model that cannot run on this data
            self._finish_without_result(
                f"Training could not start: the model failed on the data ({_describe(e)})."
            )
            return
        status: RunStatus = "finished"
        message = ""
        try:
            if fit.method == "lstsq":
                fit.closed_form()
            else:
                fit.gradient_loop()
        except _Stop as stop:
            status, message = stop.status, stop.message
        except Exception as e:  # an exception inside a step: keep the best weights, say why
            status = "failed"
            message = (
                f"Training stopped at step {self._steps_done + 1} because of an error "
                f"({_describe(e)}); the best weights (step {fit.best_step}) were kept."
            )
        with self._lock:
            steps = self._steps_done
        result = fit.conclude(status, message, steps)
        with self._lock:
            self._result, self._status, self._message = result, status, result.message

    def _prepared(self, baseline: float, total_steps: int) -> None:
        """Set-up is done: the baseline is known and the steps' clock starts."""
        self.baseline = baseline
        with self._lock:
            self._total_steps = total_steps
            self._rate_mark = (time.monotonic(), 0)

    def _elapsed(self) -> float:
        return time.monotonic() - self._started_at

    def _publish(self, event: StepEvent) -> None:
        now = time.monotonic()
        with self._lock:
            self._events.append(event)
            self._steps_done = event.step
            # An exponential average of seconds per step, updated at most twice a second,
            # so the time left does not swing with every slow or fast batch.
            mark = self._rate_mark or (self._started_at, 0)
            if now - mark[0] >= 0.5 and event.step > mark[1]:
                rate = (now - mark[0]) / (event.step - mark[1])
                self._rate = (
                    rate
                    if self._rate is None
                    else ETA_SMOOTHING * rate + (1 - ETA_SMOOTHING) * self._rate
                )
                self._rate_mark = (now, event.step)

    def _finish_without_result(self, message: str) -> None:
        with self._lock:
            self._status, self._message = "failed", message


class _Fit:
    """The work of one run, in its thread: set-up (closed form or gradients, cached
    frozen-prefix features or the full forward), the steps, and the best weights seen."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.model, self.plan, self.loss_fn = run.model, run.plan, run.loss_fn
        self.config, self.device, self.target = run.config, run.device, run.target
        self.method = "adam"
        self.suffix: Suffix | None = None
        self.features: CachedFeatures | None = None
        self.why_not_cached = ""
        self.train_forward: Callable[[Tensor], Tensor]
        self.eval_forward: Callable[[Tensor], Tensor]
        self.eval_target: Tensor
        self.eval_chunk = EVAL_BATCH
        self.baseline = math.nan
        self.best_loss = math.inf
        self.best_step = 0
        self.best_state: dict[str, Tensor] = {}

    def prepare(self) -> None:
        cfg, run = self.config, self.run
        if cfg.seed_global_rng:
            torch.manual_seed(cfg.seed)
        set_train_mode(self.model, self.plan)
        probe = [t[:2] for t in run.inputs]
        if cfg.cache or cfg.method in ("auto", "lstsq"):
            suffix, why_not = find_suffix(self.model, self.plan, probe)
        else:
            suffix, why_not = None, "caching turned off"
        features: CachedFeatures | None = None
        if suffix is not None:  # the probe tells the features' layout: no other forward
            chunk = _cache_chunk(self.model, run.inputs, cfg.samples_independent)
            features, reason = cache_features(
                self.model, suffix, run.inputs, chunk=chunk, probe=suffix.probe
            )
            suffix = replace(suffix, probe=None)  # not needed any more
            if features is None:
                suffix, why_not = None, reason
        blocker = closed_form_blocker(
            self.model, self.plan, suffix, getattr(self.loss_fn, "name", None)
        )
        if cfg.method == "lstsq" and blocker:
            raise TrainingError(
                f"The closed form does not apply here: {blocker}; choose Adam instead."
            )
        lstsq = cfg.method == "lstsq" or (cfg.method == "auto" and not blocker)
        self.method = "lstsq" if lstsq else ("adam" if cfg.method == "auto" else cfg.method)
        use_cache = features is not None and (cfg.cache or self.method == "lstsq")
        if not use_cache and suffix is not None:
            why_not = "caching turned off"
        self.why_not_cached = why_not
        if use_cache and suffix is not None and features is not None:
            self.suffix, self.features = suffix, features
        self._choose_forwards()
        baseline = self.evaluate()
        if not math.isfinite(baseline):
            raise TrainingError(
                f"The loss of the original weights on this data is {baseline}; check the data and the mapping."
            )
        self.baseline = self.best_loss = baseline
        self.best_state = self.snapshot()
        steps_per_epoch = math.ceil(self.target.shape[0] / self.batch_size)
        run._prepared(baseline, 1 if self.method == "lstsq" else cfg.epochs * steps_per_epoch)

    def _choose_forwards(self) -> None:
        """What a step and an evaluation run: the cached suffix where there is one, else
        the whole model; on the validation set when there is one."""
        run, suffix = self.run, self.suffix
        if suffix is not None and self.features is not None:
            self.train_forward = cached_forward(suffix, self.features)
        else:
            self.train_forward = full_forward(self.model, run.inputs)
        if run.val is None:
            self.eval_forward, self.eval_target = self.train_forward, self.target
            self.eval_chunk = _eval_chunk(self.model, suffix, self.features, run.inputs)
            return
        self.eval_target = run.val[1]
        val_features = None
        if suffix is not None:
            chunk = chunk_for(self.model, run.val[0], FEATURE_CHUNK)
            val_features, _ = cache_features(self.model, suffix, run.val[0], chunk=chunk)
        if suffix is not None and val_features is not None:
            self.eval_forward = cached_forward(suffix, val_features)
        else:
            self.eval_forward = full_forward(self.model, run.val[0])
        self.eval_chunk = _eval_chunk(self.model, suffix, val_features, run.val[0])

    def closed_form(self) -> None:
        assert self.suffix is not None and self.features is not None
        linear = dict(self.model.named_modules())[self.suffix.entry]
        solve_linear(linear, self.features, self.target, getattr(self.loss_fn, "name", "mse"))
        loss = self.evaluate()
        self.consider(loss, step=1)
        self.publish(1, 1, loss, self.target.shape[0], loss, loss)

    def publish(
        self,
        step: int,
        epoch: int,
        loss: float,
        seen: int,
        eval_loss: float | None,
        monitor: float | None,
    ) -> None:
        val_loss = eval_loss if self.run.val is not None else None
        self.run._publish(
            StepEvent(step, epoch, loss, val_loss, self.run._elapsed(), seen, eval_loss, monitor)
        )

    @property
    def whole(self) -> bool:
        """Sample i at position i, and the whole model runs (no cache): a piece of the
        samples would get positions from 0 again, so every look takes them all, in order.
        (Cached features already hold their positions: their rows can be taken apart.)"""
        return not self.config.samples_independent and self.features is None

    @property
    def batch_size(self) -> int:
        return self.target.shape[0] if self.whole else self.config.batch_size

    def gradient_loop(self) -> None:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = _optimizer(self.method, params, cfg)
        order_gen = torch.Generator().manual_seed(cfg.seed)
        n, size = self.target.shape[0], self.batch_size
        step = seen = 0
        last_check = time.monotonic()
        for epoch in range(1, cfg.epochs + 1):
            set_train_mode(self.model, self.plan)
            order = torch.randperm(n, generator=order_gen).to(self.device)
            if self.whole:
                order = torch.arange(n, device=self.device)
            for start in range(0, n, size):
                idx = order[start : start + size]
                loss = self.step(optimizer, idx, step)
                step += 1
                seen += len(idx)
                end_of_epoch = start + size >= n
                eval_loss = self.evaluate() if end_of_epoch else None
                monitor = eval_loss
                if monitor is None and time.monotonic() - last_check >= EVAL_SECONDS:
                    monitor = self.evaluate()  # shown only; see EVAL_SECONDS
                if monitor is not None:
                    last_check = time.monotonic()
                self.publish(step, epoch, loss, seen, eval_loss, monitor)
                if eval_loss is not None:
                    if not math.isfinite(eval_loss):
                        raise _Stop(
                            "failed",
                            f"The evaluation loss became {eval_loss} after epoch {epoch}; the best "
                            f"weights (step {self.best_step}) were restored. Try a lower learning rate.",
                        )
                    self.consider(eval_loss, step)

    def step(self, optimizer: torch.optim.Optimizer, idx: Tensor, step: int) -> float:
        """One optimiser step on the samples `idx` (after `step` steps); its training loss."""
        if self.run._stop_requested.is_set():
            self.keep_if_better(step)
            raise _Stop(
                "stopped",
                f"Stopped by request at step {step}; the best weights (step {self.best_step}) were kept.",
            )
        loss = self.loss_fn(self.train_forward(idx), self.target[idx])
        if not bool(torch.isfinite(loss)):
            raise _Stop(
                "failed",
                f"The loss became {float(loss.detach())} at step {step + 1}; training stopped and the "
                f"best weights (step {self.best_step}) were restored. Try a lower learning rate.",
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def evaluate(self) -> float:
        """Eval-mode loss on the evaluation set; the modes are put back afterwards."""
        self.model.eval()
        try:
            n = self.eval_target.shape[0]
            size = n if self.whole else self.eval_chunk
            total = 0.0
            with torch.no_grad():
                for start in range(0, n, size):
                    idx = torch.arange(start, min(start + size, n), device=self.device)
                    out = self.eval_forward(idx)
                    total += float(self.loss_fn(out, self.eval_target[idx])) * len(idx)
            return total / n
        finally:
            set_train_mode(self.model, self.plan)

    def _trainable_state(self) -> dict[str, Tensor]:
        keys = set(self.plan.trainable_keys)
        return {k: v for k, v in self.model.state_dict(keep_vars=True).items() if k in keys}

    def snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self._trainable_state().items()}

    def restore(self, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for k, v in self._trainable_state().items():
                v.copy_(state[k])

    def consider(self, loss: float, step: int) -> None:
        if math.isfinite(loss) and loss < self.best_loss:
            self.best_loss, self.best_step, self.best_state = loss, step, self.snapshot()

    def keep_if_better(self, step: int) -> None:
        """On a stop mid-epoch the current weights may beat the last epoch's; check them."""
        if step > self.best_step:
            self.consider(self.evaluate(), step)

    def method_used(self) -> str:
        if self.method == "lstsq":
            logistic = getattr(self.loss_fn, "name", None) == "cross_entropy"
            return "lstsq (closed form: logistic regression)" if logistic else "lstsq (closed form)"
        if self.suffix is not None:
            return f"{self.method} with frozen-prefix cache (input of {self.suffix.description} computed once)"
        return f"{self.method} (full forward: {self.why_not_cached or 'no frozen prefix'})"

    def conclude(self, status: RunStatus, message: str, steps: int) -> TrainingResult:
        """The best weights restored and measured: the run's result."""
        self.restore(self.best_state)
        try:
            final = self.evaluate()
        except Exception:  # the same failure that ended the run; the best loss is known
            final = self.best_loss
        self.model.eval()
        method_used = self.method_used()
        if not message:
            message = (
                f"Loss {self.baseline:.4g} -> {final:.4g} with {method_used}."
                if self.best_step
                else f"Training did not beat the original weights (loss {self.baseline:.4g}); they were kept."
            )
        return TrainingResult(
            baseline_loss=self.baseline,
            final_loss=final,
            best_loss=self.best_loss,
            best_step=self.best_step,
            steps=steps,
            seconds=self.run._elapsed(),
            method_used=method_used,
            cached_prefix=self.suffix is not None,
            model=self.model.to("cpu"),
            stopped_early=status != "finished",
            message=message,
        )


def _cache_chunk(model: nn.Module, inputs: Sequence[Tensor], independent: bool) -> int:
    """Samples per piece of the frozen-prefix cache: sized by their work (`chunk_for`), or
    all at once when a sample's position depends on the others (positions along the batch)."""
    return chunk_for(model, inputs, FEATURE_CHUNK) if independent else max(len(inputs[0]), 1)


def _eval_chunk(
    model: nn.Module,
    suffix: Suffix | None,
    features: CachedFeatures | None,
    inputs: Sequence[Tensor],
) -> int:
    """An evaluation's chunk: by the work of the suffix on the cached features, or of the
    whole model on the inputs."""
    if features is not None and suffix is not None:
        return chunk_for(suffix.runner, list(features.batched.values()), EVAL_BATCH)
    return chunk_for(model, inputs, EVAL_BATCH)


def _optimizer(
    method: str, params: list[nn.Parameter], cfg: TrainingConfig
) -> torch.optim.Optimizer:
    if method == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if method == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=SGD_MOMENTUM, weight_decay=cfg.weight_decay)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "CUDA was requested but no CUDA device is available; choose cpu or auto."
        )
    return torch.device(name)


def _check_tensors(inputs: tuple[Tensor, ...], target: Tensor, what: str) -> None:
    if not inputs:
        raise TrainingError(f"The {what} data has no inputs.")
    counts = {t.shape[0] for t in (*inputs, target)}
    if len(counts) != 1:
        shapes = [tuple(t.shape) for t in (*inputs, target)]
        raise TrainingError(
            f"The {what} inputs and target disagree on the number of samples: {shapes}."
        )
    if counts.pop() == 0:
        raise TrainingError(f"The {what} data has no samples.")
    bad = [
        i
        for i, t in enumerate((*inputs, target))
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        names = ["target" if i == len(inputs) else f"input {i}" for i in bad]
        raise TrainingError(
            f"The {what} {', '.join(names)} contain NaN or Inf values; clean the data first."
        )


def _split(
    inputs: tuple[Tensor, ...], target: Tensor, fraction: float, seed: int
) -> tuple[tuple[tuple[Tensor, ...], Tensor], tuple[tuple[Tensor, ...], Tensor]]:
    try:
        train_idx, val_idx = split_indices(target.shape[0], fraction, seed)
    except DataError as e:  # raised when the run is set up: a training error to its caller
        raise TrainingError(str(e)) from e
    return (
        (tuple(t[train_idx] for t in inputs), target[train_idx]),
        (tuple(t[val_idx] for t in inputs), target[val_idx]),
    )


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


__all__ = ["Progress", "StepEvent", "TrainingConfig", "TrainingResult", "TrainingRun"]
