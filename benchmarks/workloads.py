"""The timed work of sections 2-6: the usual way and ours, called from the child processes.

Each function returns plain JSON values (seconds, losses) so the parent can compare the
two sides; what must not be timed (building models, making data) happens before the call.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import cases
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import recovery_core as rc

# --- 2. training when only the head trains --------------------------------------------------


def demo_usual_model() -> nn.Module:
    """The notebook way: the author's class, `torch.load` the weights, freeze by hand."""
    model = cases.demo_module().Seq2SeqTransformer()
    model.load_state_dict(torch.load(cases.DEMO_CHECKPOINT, map_location="cpu", weights_only=True))
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("generator."))
    return model


def demo_recovered_model() -> tuple[nn.Module, rc.ArchSpec, dict[str, Tensor]]:
    """Ours: no model code, only the checkpoint; the hidden values the search finds are set."""
    checkpoint = rc.load_checkpoint(cases.DEMO_CHECKPOINT)
    spec = rc.infer_spec(checkpoint).with_values(cases.DEMO_HIDDEN)
    model = rc.build_model(spec)
    state = checkpoint.state_dict()
    report = rc.load_weights(model, state)
    assert report.ok, report.message
    return model.eval(), spec, state


def sequence_loss(output: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def train_usual(
    model: nn.Module, data: dict[str, Tensor], epochs: int, lr: float, batch_size: int, seed: int
) -> dict[str, Any]:
    """Full forward and backward every step, Adam on what requires grad; the batch order is
    drawn exactly as `TrainingRun` draws it, so the two loss curves can be compared."""
    src, tgt, target = data["src"], data["tgt"], data["target"]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    order_gen = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    epoch_seconds: list[float] = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(target), generator=order_gen)
        for start in range(0, len(target), batch_size):
            idx = order[start : start + batch_size]
            loss = sequence_loss(model(src[idx], tgt[idx]), target[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        epoch_seconds.append(time.perf_counter() - started)
    return {"losses": losses, "epoch_seconds": epoch_seconds}


def train_ours(
    model: nn.Module, data: dict[str, Tensor], epochs: int, lr: float, batch_size: int, seed: int
) -> dict[str, Any]:
    """`TrainingRun` with Adam on the output layer: the frozen prefix runs once, then cached."""
    plan = rc.plan_freeze(model, rc.preset_patterns(model, "output_layer"))
    mapping = rc.DataMapping(("src", "tgt"), "target", "cross_entropy", "benchmark")
    config = rc.TrainingConfig(
        method="adam", lr=lr, epochs=epochs, batch_size=batch_size, seed=seed, device="cpu"
    )
    run = rc.TrainingRun(
        model, plan, (data["src"], data["tgt"]), data["target"], rc.loss_function(mapping), config
    )
    result = run.run()
    events = run.events_since(0)
    # Elapsed time at the end of each epoch; the first includes caching the prefix.
    ends = [e.elapsed for e in events if e.eval_loss is not None]
    return {
        "losses": [e.loss for e in events],
        "total_seconds": result.seconds,
        "first_epoch_seconds": ends[0],
        "steady_epoch_seconds": steady_epoch(ends),
        "method_used": result.method_used,
        "cached_prefix": result.cached_prefix,
    }


def steady_epoch(ends: list[float]) -> float:
    """Median time of the epochs after the first (which alone pays for the cache)."""
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return statistics.median(gaps) if gaps else ends[0]


# --- 3. closed form ----------------------------------------------------------------------


def seq2seq_head_problem(sequences: int, seed: int = 7) -> tuple[Any, ...]:
    """Section 3's problem: the continuous seq2seq family laid out batch-first (independent
    samples), data = its own outputs plus noise, its head `out` re-initialised (so that
    training has somewhere to go: the original head is already the optimum's neighbour).
    Also the least-squares optimum's loss, computed in float64 (not timed): the mark."""
    from tests.forward_zoo import FORWARD_BY_NAME

    case = FORWARD_BY_NAME["vector_seq2seq_batch_first"]
    model = case.make()
    data = case.data(model, sequences)
    torch.manual_seed(seed)
    head = model.get_submodule("out")
    assert isinstance(head, nn.Linear)
    head.reset_parameters()
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("out."))
    inputs, y = (data["src"], data["tgt"]), data["y"]
    features = head_features(model, inputs).reshape(-1, head.in_features).double()
    design = torch.cat([features, torch.ones(len(features), 1, dtype=torch.float64)], 1)
    target = y.reshape(len(features), -1).double()
    solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
    optimum = float(F.mse_loss((design @ solution).float(), target.float()))
    return model, inputs, y, optimum


def head_features(model: nn.Module, inputs: tuple[Tensor, ...]) -> Tensor:
    """The head's input on all samples: one forward of the frozen trunk, captured by a hook."""
    captured: dict[str, Tensor] = {}

    def grab(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        captured["x"] = args[0].detach()

    hook = model.get_submodule("out").register_forward_pre_hook(grab)
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        hook.remove()
    return captured["x"]


def adam_to_optimum(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    y: Tensor,
    *,
    lr: float,
    optimum: float,
    max_epochs: int,
    batch_size: int = 32,
    tolerance: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """The careful hand-written loop: the trunk's features cached once, then Adam on the
    head alone (minibatches of `batch_size` sequences), the full-data MSE after each epoch;
    stop once it is within `tolerance` of the least-squares optimum, or after `max_epochs`."""
    started = time.perf_counter()
    features = head_features(model, inputs)
    cached = time.perf_counter() - started
    head = copy_linear(model.get_submodule("out"))
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    order_gen = torch.Generator().manual_seed(seed)
    mark = optimum * (1 + tolerance)
    losses: list[float] = []
    ends: list[float] = []
    reached: float | None = None
    for _ in range(max_epochs):
        order = torch.randperm(len(y), generator=order_gen)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            loss = F.mse_loss(head(features[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            losses.append(float(F.mse_loss(head(features), y)))
        ends.append(time.perf_counter() - started)
        if losses[-1] <= mark:
            reached = ends[-1]
            break
    gaps = [b - a for a, b in zip([cached, *ends], ends, strict=False)]
    return {
        "lr": lr,
        "seconds": ends[-1],
        "reached_seconds": reached,
        "epochs": len(losses),
        "epoch_seconds": statistics.median(gaps),
        "cache_seconds": cached,
        "final_loss": losses[-1],
        "best_loss": min(losses),
        "optimum": optimum,
    }


def copy_linear(layer: nn.Module) -> nn.Linear:
    assert isinstance(layer, nn.Linear)
    out = nn.Linear(layer.in_features, layer.out_features)
    out.load_state_dict(layer.state_dict())
    return out


def closed_form(
    model: nn.Module, inputs: tuple[Tensor, ...], y: Tensor, optimum: float
) -> dict[str, Any]:
    """Ours: the whole `TrainingRun` with method "lstsq" on the head, as `recover` trains it
    (private copy, frozen-prefix cache, baseline, float64 solve, final evaluation)."""
    plan = rc.plan_freeze(model, ["out"])
    mapping = rc.DataMapping(("src", "tgt"), "y", "mse", "benchmark")
    config = rc.TrainingConfig(method="lstsq", device="cpu")
    started = time.perf_counter()
    result = rc.TrainingRun(model, plan, inputs, y, rc.loss_function(mapping), config).run()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "final_loss": result.final_loss,
        "optimum": optimum,
        "method_used": result.method_used,
        "cached_prefix": result.cached_prefix,
    }


def solver_times(
    samples: int, features: int, outputs: int = 8, repeats: int = 3
) -> dict[str, float]:
    """The least-squares solve alone, three ways, on features shaped like section 3's head
    input (float64, one thread): where the closed form's time could shrink."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(samples, features, generator=gen, dtype=torch.float64)
    y = torch.randn(samples, outputs, generator=gen, dtype=torch.float64)

    def normal_equations() -> Tensor:
        factor = torch.linalg.cholesky(a.T @ a)
        return torch.cholesky_solve(a.T @ y, factor)

    solvers = {
        "lstsq gelsd (SVD: the fallback)": lambda: torch.linalg.lstsq(a, y, driver="gelsd"),
        "lstsq gels (QR)": lambda: torch.linalg.lstsq(a, y, driver="gels"),
        "normal equations + Cholesky (used now)": normal_equations,
    }
    return {name: best_of(solve, repeats) for name, solve in solvers.items()}


def best_of(work: Any, repeats: int) -> float:
    """The fastest of a few runs: the cost of the work itself, least disturbed by the load."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


# --- 4. hyperparameter search ------------------------------------------------------------

EVERY_COMBINATION = 1 << 20  # above any real count: the goal is to score them all


def demo_search_inputs() -> tuple[Any, ...]:
    """What `score_candidates` needs for the demo: spec, weights, inputs, target, loss."""
    checkpoint = rc.load_checkpoint(cases.DEMO_CHECKPOINT)
    spec = rc.infer_spec(checkpoint)
    dataset = rc.load_dataset(cases.DEMO_DATA)
    assert spec.wiring is not None
    mapping = rc.guess_mapping(dataset, spec.wiring.inputs)
    inputs, target = rc.mapped_tensors(dataset, mapping)
    return spec, checkpoint.state_dict(), inputs, target, rc.loss_function(mapping)


def search(
    spec: rc.ArchSpec,
    state: Any,
    inputs: Any,
    target: Tensor,
    loss_fn: Any,
    budget_seconds: float = 30.0,
) -> dict[str, Any]:
    """Every free hyperparameter and every combination of their candidates: the search's
    defaults but for its time budget and its cap on combinations (512 by default)."""
    result = rc.score_candidates(
        spec,
        state,
        inputs,
        target,
        loss_fn,
        budget_seconds=budget_seconds,
        max_combinations=EVERY_COMBINATION,
    )
    return {
        "names": list(result.names),
        "scored": result.scored,
        "total": result.total,
        "complete": result.complete,
        "strategy": result.strategy,
        "fully_scored": result.fully_scored,
        "best": {k: repr(v) for k, v in result.best_values.items()},
        "found_demo_values": all(
            result.best_values.get(k, v) == v for k, v in cases.DEMO_HIDDEN.items()
        ),
    }


# --- 5. export ------------------------------------------------------------------------------


def export(out_dir: str | Path, again: bool = True) -> dict[str, Any]:
    """Export the recovered demo model every way and verify each file (`export_all`), and
    (`again`) a second time: the first export in a process also compiles torch.jit and
    torch.export's machinery."""
    model, spec, state = demo_recovered_model()
    plan = rc.plan_freeze(model, rc.preset_patterns(model, "output_layer"))
    example = rc.example_inputs(spec)
    code = rc.generate_code(spec)

    def export_once(folder: Path) -> tuple[float, rc.ExportBundle]:
        started = time.perf_counter()
        bundle = rc.export_all(
            model,
            example,
            folder,
            state,
            code=code,
            report={"benchmark": "export"},
            trainable_keys=plan.trainable_keys,
        )
        return time.perf_counter() - started, bundle

    first, bundle = export_once(Path(out_dir) / "first")
    second = export_once(Path(out_dir) / "again")[0] if again else None
    return {
        "seconds": first,
        "seconds_again": second,
        "passed": bundle.passed,
        "files": sorted(Path(p).name for p in bundle.files.values()),
        "failed": [f"{c.name} ({c.detail})" for c in bundle.checks if not c.passed],
    }


# --- 6. dashboard responsiveness -------------------------------------------------------------

APP = cases.ROOT / "dashboard" / "app.py"
TOGGLED_UNIT = "train_unit_0_0"  # the checkbox of the first Linear layer (path "0")


def dashboard_on_train_page(checkpoint: Path, data: Path) -> Any:
    """An AppTest session that opened `checkpoint` by server path, `data` as its dataset,
    and shows step 4 (freeze and train): what a person has done before ticking a box."""
    from streamlit.testing.v1 import AppTest

    # Opening by server path is off by default (a visitor could probe paths); a local
    # benchmark turns it on for its own process.
    os.environ["RECOVERY_SERVER_PATHS"] = "on"
    at = AppTest.from_file(str(APP), default_timeout=900)
    at.run()
    at.text_input(key="source_path").input(str(checkpoint))
    at.button(key="source_open_path").click().run()
    at.switch_page("steps/data.py").run()
    at.text_input(key="data_path").input(str(data))
    at.button(key="data_open_path").click().run()
    at.switch_page("steps/train.py").run()
    problems = [str(e.value) for e in (*at.exception, *at.error)]
    if problems:
        raise RuntimeError(f"the dashboard did not reach step 4: {problems}")
    return at


def interleaved_reruns(sessions: dict[str, Any], reruns: int) -> dict[str, dict[str, float]]:
    """`toggle_reruns` on several sessions in turn, one rerun each per round, so a change in
    the machine's load during the measurement falls on all of them alike."""
    seconds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(reruns):
        for name, at in sessions.items():
            seconds[name].append(toggle_once(at))
    return {name: summarise_reruns(times) for name, times in seconds.items()}


def toggle_once(at: Any) -> float:
    """Tick (or untick) the first layer's checkbox; the server-side time of the rerun."""
    box = at.checkbox(key=TOGGLED_UNIT)
    box.uncheck() if box.value else box.check()
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"the rerun failed: {at.exception[0].value}")
    return elapsed


def summarise_reruns(seconds: list[float]) -> dict[str, float]:
    # The first rerun after arriving on the page pays one-off costs (imports, caches).
    steady = seconds[1:] or seconds
    return {"median": statistics.median(steady), "max": max(steady), "first": seconds[0]}


# --- 8. forward recovery on the seq2seq family ---------------------------------------------


# Section 8's targets, one switch (the data file's name says which):
# - "new_head": the same trunk read out by a DIFFERENT output layer, its weight and bias a
#   seeded draw of the checkpoint's head's shape and scale, plus the same noise. A new task
#   for the same trunk, which is what retraining the output layer is for: the checkpoint's
#   head starts far above the least-squares optimum (thousands of times the noise floor),
#   so every contender has to train it to reach the mark.
# - "own_outputs": the model's own outputs plus noise (section 8 before 2026-12-02). The
#   checkpoint's head is then already at the optimum, so "training" it is one evaluation.
FORWARD_TARGET = "new_head"
NEW_HEAD_SEED = 2  # the draw of the target's output layer


def family_files(
    family: str, sequences: int, folder: str, target: str = FORWARD_TARGET
) -> tuple[str, str]:
    """A family's weights (benchmarks/families.py: always the ORIGINAL checkpoint) and its
    data: the inputs as the model takes them and targets as `target` says (see above)."""
    from families import FAMILIES

    from tests.forward_zoo import FORWARD_BY_NAME

    case = FORWARD_BY_NAME[FAMILIES[family].case]
    model = case.make()
    weights = Path(folder) / f"{family}_weights.pt"
    suffix = {"own_outputs": "", "new_head": "_new_head"}[target]
    data = Path(folder) / f"{family}_{sequences}{suffix}.pt"
    if not weights.exists():
        torch.save(model.state_dict(), weights)
    if not data.exists():
        teacher = model if target == "own_outputs" else redrawn_head(model, FAMILIES[family].head)
        torch.save(case.data(teacher, sequences), data)
    return str(weights), str(data)


def redrawn_head(model: nn.Module, head: str, seed: int = NEW_HEAD_SEED) -> nn.Module:
    """A copy of `model` whose output layer `head` is a seeded random draw with each of its
    tensors' mean and standard deviation: the same trunk, a different readout."""
    import copy

    teacher = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in teacher.get_submodule(head).parameters():
            draw = torch.randn(param.shape, generator=gen)
            param.copy_(param.mean() + param.std() * draw)
    return teacher.eval()


def whole_process(command: list[str]) -> dict[str, Any]:
    """Wall time and peak memory of a whole process (interpreter start and `import torch`
    included). The peak is the maximum resident set size that `/usr/bin/time` reads from
    wait4 for its own child: `time` is a small process, so the figure is the command's own
    (ru_maxrss of a child of this Python process would carry this process's peak over)."""
    import subprocess
    import sys
    import tempfile

    env = cases.as_people_run_it()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        out = subprocess.run(
            ["/usr/bin/time", "-o", report.name, "-f", "%M", sys.executable, *command],
            capture_output=True,
            text=True,
            cwd=cases.ROOT,
            env=env,
            check=False,
        )
        seconds = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(f"{command[:3]} failed:\n{out.stderr[-3000:]}")
        peak_kib = int(report.read().split()[-1])
    return {"seconds": seconds, "peak_bytes": peak_kib * 1024, "stdout": out.stdout}


def recover_family(
    family: str, weights: str, data: str, folder: str, fixed: bool, formats: str | None = None
) -> dict[str, Any]:
    """`recovery recover` on a family, searching everything or with the values fixed;
    `formats` is `--formats` (None: the default, every format)."""
    from families import FAMILIES

    out = Path(folder) / f"{family}_{'fixed' if fixed else 'found'}.pt"
    command = ["-m", "recovery_core", "recover", weights, "--data", data, "--out", str(out)]
    if fixed:  # the careful script's work and no more: TorchScript only, values given
        formats = ""
    if formats is not None:
        command += ["--formats", formats]
    if fixed:
        for value in FAMILIES[family].values:
            command += ["--set", value]
    run = whole_process(command)
    line = next(ln for ln in run["stdout"].splitlines() if ln.startswith("loss: baseline"))
    words = line.replace("(", " ").replace(")", " ").replace(",", " ").split()
    training = float(words[-2]) * (1e-3 if words[-1] == "ms" else 1.0)
    return {
        "seconds": run["seconds"],
        "peak_bytes": run["peak_bytes"],
        "baseline": float(words[2]),
        "final": float(words[5]),
        "epoch_seconds": training,
        "reached": True,
        "report": str(out.with_name(out.stem + "_report.json")),
    }


def hand_script(
    script: str, family: str, weights: str, data: str, folder: str, *extra: str
) -> dict[str, Any]:
    """benchmarks/careful_seq2seq.py or naive_seq2seq.py as a whole process."""
    import json

    out = str(Path(folder) / f"{family}_{Path(script).stem}.pt")
    path = str(cases.ROOT / "benchmarks" / script)
    run = whole_process([path, family, weights, data, out, *extra])
    line = next(ln for ln in run["stdout"].splitlines() if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    return {
        "seconds": run["seconds"],
        "peak_bytes": run["peak_bytes"],
        "baseline": result["before"],
        "final": result["after"],
        "epoch_seconds": statistics.median(result["epoch_seconds"]),
        "epochs": len(result["epoch_seconds"]),
        "reached": result.get("reached", True),
    }
