"""Step 4: tick what trains, start a run in the background, watch the loss fall."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

import recovery_core as rc
from dashboard import charts, datasets, state, status, ui
from dashboard import format as fmt

METHOD_WORDS = {
    "auto": "automatic",
    "lstsq": "closed form (exact)",
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
}
METHOD_HELP = (
    "Automatic solves exactly in one step when only a final linear layer trains: least "
    "squares under mean squared error, a logistic regression under cross-entropy; it uses "
    "Adam otherwise. Adam is a safe default for gradient training."
)
SCROLL_KEY = "train_scroll_to_run"
SCROLL_TO_RUN = """<script>
(function bring(tries) {
  const run = document.querySelector(".st-key-train_live");
  const main = document.querySelector("[data-testid='stMain']");
  // Its top just under Streamlit's header bar (about 60 px), not hidden beneath it.
  if (run && main) { main.scrollTop += run.getBoundingClientRect().top - 64; }
  else if (tries > 0) { setTimeout(() => bring(tries - 1), 100); }
})(30);
</script>"""
PRESET_WORDS = {
    "output_layer": "Only the output layer",
    "last_blocks": "Last N blocks",
    "everything": "Everything",
}


def units(spec: rc.ArchSpec, inspection: rc.Inspection) -> list[tuple[str, str, int]]:
    """Tickable modules (path, type, parameters) in definition order: whole layers, not their
    weights one by one, so a choice reads like "decoder layer 1" rather than a list of keys."""
    found: list[tuple[str, str, int]] = []

    def visit(module: rc.ModuleSpec) -> None:
        params = inspection.module_parameter_count(module)
        # Containers (and a Transformer's stacks) offer their parts; else one tickable unit.
        opened = rc.families.opened_for_training(module.type)
        if module.path and (not opened or not module.children) and params:
            found.append((module.path, module.type, params))
            return
        for child in module.children:
            visit(child)

    visit(spec.root)
    return found


def _trainable(studio: state.Studio) -> set[str]:
    """This session's ticked modules (the output layer on the first visit)."""
    if studio.trainable is None:
        assert studio.recovery is not None
        recovery = studio.recovery
        patterns = rc.session.default_patterns(recovery.reference_model(), recovery.spec)
        studio.trainable = set(_from_patterns(studio, patterns))
    return studio.trainable


def _from_patterns(studio: state.Studio, patterns: tuple[str, ...]) -> list[str]:
    assert studio.opened is not None and studio.spec is not None
    paths = [p for p, _, _ in units(studio.spec, studio.opened.inspection)]
    return rc.session.paths_matching(paths, patterns)


def _on_tick(path: str, key: str) -> None:
    chosen = _trainable(state.studio())
    (chosen.add if st.session_state[key] else chosen.discard)(path)


def _on_preset(name: str) -> None:
    studio = state.studio()
    with ui.reported("choosing a preset"):
        n = int(st.session_state.get("train_last_n", 1))
        assert studio.recovery is not None
        patterns = rc.preset_patterns(studio.recovery.reference_model(), name, n)
        studio.trainable = set(_from_patterns(studio, patterns))
        studio.freeze_version += 1


def freeze_choice(studio: state.Studio) -> rc.FreezePlan | None:
    """A checkbox per layer, grouped by top-level module, plus presets; returns the plan."""
    assert studio.opened is not None and studio.spec is not None
    chosen = _trainable(studio)
    version = studio.freeze_version
    cols = st.columns([1, 1, 1, 1])
    for col, (name, label) in zip(cols, PRESET_WORDS.items(), strict=False):
        col.button(
            label, key=f"train_preset_{name}", on_click=_on_preset, args=(name,), width="stretch"
        )
    cols[3].number_input("N (for last N blocks)", 1, 64, 1, key="train_last_n")

    roles = ui.roles_by_path(studio.spec)
    groups: dict[str, list[tuple[str, str, int]]] = {}
    for path, type_, params in units(studio.spec, studio.opened.inspection):
        groups.setdefault(path.split(".")[0], []).append((path, type_, params))
    # Top-level layers that are one unit share a box; bigger ones get a box each.
    single = [m[0] for top, m in groups.items() if len(m) == 1 and m[0][0] == top]
    boxes = [("Layers", single)] if single else []
    boxes += [(top, m) for top, m in groups.items() if not (len(m) == 1 and m[0][0] == top)]
    for title, members in boxes:
        with st.container(border=True):
            role = roles.get(title, "")
            st.markdown(f"**{title}**" + (f" · {role}" if role else ""))
            grid = st.columns(3)
            for i, (path, type_, params) in enumerate(members):
                key = f"train_unit_{path}_{version}"
                name = path.removeprefix(title + ".")
                role = roles.get(path, "")
                # A named role says more than a size; plain layers show their kind and size.
                label = (
                    f"{name} ({role})"
                    if role
                    else f"{name} · {type_} · {fmt.count(params)} parameters"
                )
                grid[i % 3].checkbox(
                    label,
                    value=path in chosen,
                    key=key,
                    on_change=_on_tick,
                    args=(path, key),
                    # What the layer does, as its family says it.
                    help=f"A {type_} layer with {fmt.count(params)} parameters. "
                    f"{rc.families.meaning(type_)}".rstrip(),
                )
    if not chosen:
        st.info("Tick at least one layer to train.")
        return None
    assert studio.recovery is not None
    plan = rc.plan_freeze(studio.recovery.reference_model(), sorted(chosen))
    if plan.trainable_params >= plan.total_params:
        text = f"Training all {fmt.count(plan.total_params)} parameters: nothing is frozen."
    else:
        text = (
            f"Training {fmt.count(plan.trainable_params)} of {fmt.count(plan.total_params)} "
            f"parameters ({plan.fraction:.1%}); everything else stays frozen."
        )
    st.progress(plan.fraction, text=text)
    return plan


def _on_setting(field_name: str, key: str, kind: type) -> None:
    studio = state.studio()
    studio.training = replace(studio.training, **{field_name: kind(st.session_state[key])})


def settings(studio: state.Studio) -> rc.TrainingConfig:
    """The training settings, kept in the session (a reload finds them again)."""
    t = studio.training
    key = {f: state.widget_key(studio, f"train_{f}") for f in ("method", "lr", "epochs", "batch")}
    cols = st.columns(4)
    methods = list(METHOD_WORDS)
    cols[0].selectbox(
        "Method",
        methods,
        index=methods.index(t.method) if t.method in methods else 0,
        format_func=lambda method: METHOD_WORDS[method],
        key=key["method"],
        help=METHOD_HELP,
        on_change=_on_setting,
        args=("method", key["method"], str),
    )
    cols[1].number_input(
        "Learning rate",
        1e-6,
        1.0,
        float(t.lr),
        format="%.4f",
        step=1e-3,
        key=key["lr"],
        on_change=_on_setting,
        args=("lr", key["lr"], float),
    )
    cols[2].number_input(
        "Epochs (passes over the data)",
        1,
        10_000,
        int(t.epochs),
        key=key["epochs"],
        on_change=_on_setting,
        args=("epochs", key["epochs"], int),
    )
    cols[3].number_input(
        "Batch size",
        1,
        65_536,
        int(t.batch_size),
        key=key["batch"],
        on_change=_on_setting,
        args=("batch_size", key["batch"], int),
    )
    # The widgets' values win on this run (a test or a fast click may not fire on_change).
    values = st.session_state
    t = studio.training = replace(
        t,
        method=values[key["method"]],
        lr=float(values[key["lr"]]),
        epochs=int(values[key["epochs"]]),
        batch_size=int(values[key["batch"]]),
    )
    return config_of(studio)


def config_of(studio: state.Studio) -> rc.TrainingConfig:
    independent = studio.recovery is None or studio.recovery.dims.independent
    return studio.training.config(val_fraction=studio.held_out, samples_independent=independent)


def start(studio: state.Studio, plan: rc.FreezePlan, config: rc.TrainingConfig) -> None:
    recovery = studio.recovery
    assert recovery is not None and recovery.mapping is not None
    inputs, target = recovery.batch_major_tensors()
    loss_fn = rc.loss_function(recovery.mapping)
    run = rc.TrainingRun(recovery.reference_model(), plan, inputs, target, loss_fn, config)
    record = state.RunRecord(
        number=len(studio.runs) + 1,
        run=run,
        spec=recovery.spec,
        plan=plan,
        config=config,
        baseline=studio.baseline(),
        mapping=recovery.mapping,
        data_name=recovery.data_name,
        example_inputs=tuple(t[:2] for t in inputs),
        states=studio.states(),
        unchecked=studio.unchecked(),
        refitted_head=studio.search.refitted_head if studio.search is not None else None,
        target_scale=rc.session.mean_square(target),
    )
    run.start()
    studio.runs.append(record)


def run_chart(record: state.RunRecord) -> None:
    where = "held-out examples" if record.held_out else "the examples"
    st.plotly_chart(
        charts.training_chart(
            charts.LossSeries("evaluation loss", record.eval_steps, record.eval_losses),
            charts.LossSeries("training loss (each batch)", record.steps, record.losses),
            record.baseline,
            title=f"{record.name}: loss on {where} (evaluation mode) while training",
        ),
        width="stretch",
        key="train_chart",
    )


def verdict(record: state.RunRecord) -> None:
    result = record.result
    if result is None:
        if not record.running:
            ui.show(
                ui.Problem(
                    f"{record.name} failed: {record.run.message} Try a lower learning rate, "
                    "other layers, or check the data in step 3.",
                    None,
                )
            )
        return
    better = result.final_loss < result.baseline_loss
    where = "held-out " if record.held_out else ""
    text = (
        f"{record.name} {record.run.status}: {where}loss {fmt.loss(result.baseline_loss)} → "
        f"**{fmt.loss(result.final_loss)}** (baseline → best kept, the chart's main line; "
        f"{result.method_used}, {fmt.seconds(result.seconds)})."
    )
    if result.stopped_early:
        text += f" {result.message}"
    if record.unverified:
        names = ", ".join(status.label(n) for n in record.unverified)
        st.warning(
            text + f" Trained on unverified settings ({names}): the model may be rebuilt wrongly."
        )
    else:
        (st.success if better else st.warning)(text)
    found = [n for n, state_ in record.states.items() if state_ == rc.plan.FOUND]
    before, after = result.baseline_loss, result.final_loss
    if warning := rc.session.new_task_warning(
        found, before, after, record.target_scale, record.refitted_head
    ):
        st.warning(
            f"Check the settings found on this data: {warning}. Choose them in step 2 if "
            "you know them, or score them on data the original model was trained for."
        )


def live(studio: state.Studio) -> None:
    """The latest run's progress, Stop and chart, refreshed about once a second while it runs."""
    record = studio.runs[-1]

    @st.fragment(run_every=1.0 if record.running else None)
    def panel() -> None:
        record.poll()
        fraction, eta = record.run.progress
        if record.running:
            left = f" · about {fmt.seconds(eta)} left" if eta else ""
            cols = st.columns([5, 1], vertical_alignment="center")
            cols[0].progress(min(fraction, 1.0), text=f"{record.name}: {fraction:.0%}{left}")
            cols[1].button("Stop", key="train_stop", on_click=record.run.stop, type="primary")
        run_chart(record)
        if not record.running and not record.announced:
            # The run ended between refreshes: redraw the whole page (history, buttons).
            record.announced = True
            st.rerun(scope="app")

    with st.container(key="train_live"):
        panel()
        verdict(record)


def blocked(studio: state.Studio, plan: rc.FreezePlan | None) -> str | None:
    """Why training cannot start now, in words; None when it can."""
    if studio.active_run is not None:
        return "A run is going on: stop it or wait for it to end."
    if studio.scoring_running:
        return "The hidden settings are being scored; training starts on their result."
    if not studio.settings_ok():
        return "Some hidden settings are unverified: score them or choose to use them (top of the page)."
    if plan is None:
        return "Tick at least one layer to train."
    try:
        studio.baseline()
    except Exception as exc:  # noqa: BLE001 - the reason is shown beside the button
        return f"The original weights cannot be evaluated on this data ({ui.sentence(exc, 'computing the baseline')}); fix the data in step 3."
    return None


def render() -> None:
    ui.header(
        4,
        "Choose which layers learn from your data. A **frozen** layer keeps the weights it "
        "came with; only the ticked ones change. Retraining just the last layer is fast and "
        "often enough when the task is close to the original one.",
    )
    studio = state.studio()
    if not datasets.runnable(studio):
        st.info(ui.NO_FORWARD)
        return
    if not datasets.ready(studio):
        st.info("Open a dataset in step 3 first.")
        return
    # The latest run first: after Start, its chart and Stop are in view without scrolling.
    if studio.runs:
        live(studio)
    plan = None
    with ui.reported("choosing what trains"):
        plan = freeze_choice(studio)
    st.subheader("How to train")
    config = None
    with ui.reported("checking the settings"):
        config = settings(studio)
    reason = blocked(studio, plan) or (None if config is not None else "Fix the settings above.")
    cols = st.columns([1, 3], vertical_alignment="center")
    if cols[0].button(
        "Start training",
        type="primary",
        key="train_start",
        disabled=reason is not None,
        help="Runs in the background: you can look at other steps meanwhile.",
    ):
        with ui.reported("starting the training"):
            assert plan is not None and config is not None  # else the button is disabled
            start(studio, plan, config)
            st.session_state[SCROLL_KEY] = True
            st.rerun()
    with cols[1]:
        ui.disabled_reason(reason)
    if st.session_state.pop(SCROLL_KEY, False):
        # Start is at the bottom of a long page: bring the new run's chart and Stop into view.
        st.html(SCROLL_TO_RUN, unsafe_allow_javascript=True)


render()
