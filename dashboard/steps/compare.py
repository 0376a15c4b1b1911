"""Step 5: every run of this session side by side, so choosing what to unfreeze is a comparison."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import recovery_core as rc
from dashboard import charts, state, ui
from dashboard import format as fmt

TABLE_KEY = "compare_table"


def _what_trained(record: state.RunRecord) -> str:
    modules = list(record.plan.trainable_modules) or list(record.plan.patterns)
    return "everything" if list(record.plan.patterns) == ["*"] else ", ".join(modules)


def _settings(record: state.RunRecord) -> str:
    """Each free setting's value, with a mark when it was an unverified default."""
    parts = []
    for hp in record.spec.free:
        unverified = record.states.get(hp.name) == rc.plan.UNVERIFIED
        parts.append(f"{hp.name} {fmt.value(hp.value)}{' (unverified)' if unverified else ''}")
    return ", ".join(parts) or "none to choose"


def data_label(record: state.RunRecord) -> str:
    """The data a run was measured on: file, entries, loss and held-out part."""
    mapping = record.mapping
    if mapping is None:
        return record.data_name or "—"
    held = f", {record.held_out:.0%} held out" if record.held_out else ""
    return (
        f"{record.data_name or 'data'}: {', '.join(mapping.inputs)} → {mapping.target} "
        f"({mapping.loss}{held})"
    )


def history_table(runs: list[state.RunRecord]) -> list[int]:
    """The run history; returns the indices of the rows the person selected."""
    rows = []
    for r in runs:
        result = r.result
        rows.append(
            {
                "run": r.name,
                "status": r.run.status,
                "trained layers": _what_trained(r),
                "baseline loss": fmt.loss(r.baseline),
                "final loss": fmt.loss(result.final_loss) if result else "—",
                "time": fmt.seconds(r.seconds),
                "trained parameters": r.plan.trainable_params,
                "method": result.method_used if result else r.config.method,
                "learning rate": r.config.lr,
                "epochs": r.config.epochs,
                "batch": r.config.batch_size,
                "hidden settings": _settings(r),
                "data flow": r.spec.wiring.description if r.spec.wiring else "—",
                "data": data_label(r),
            }
        )
    event = st.dataframe(
        pd.DataFrame(rows),
        key=TABLE_KEY,
        on_select="rerun",
        selection_mode="multi-row",
        hide_index=True,
        width="stretch",
        column_config={"trained parameters": st.column_config.NumberColumn(format="compact")},
    )
    return list(event.selection.rows) if event is not None else []


def baselines(runs: list[state.RunRecord]) -> list[tuple[str, float]]:
    """One baseline per distinct data (and settings): a run is judged against its own."""
    seen: dict[tuple[str, str], list[str]] = {}
    values: dict[tuple[str, str], float] = {}
    for r in runs:
        key = (data_label(r), state.spec_key(r.spec))
        seen.setdefault(key, []).append(str(r.number))
        values[key] = r.baseline
    if len(seen) == 1:
        return [("baseline", next(iter(values.values())))]
    return [(f"baseline of run {', '.join(numbers)}", values[k]) for k, numbers in seen.items()]


def render() -> None:
    ui.header(
        5,
        "Every training run of this session is kept here with its settings and result. "
        "Select rows to draw only those runs; each dashed line is a baseline to beat (runs "
        "on different data or settings each have their own).",
    )
    studio = state.studio()
    if not studio.runs:
        st.info("No runs yet: start one in step 4.")
        return
    for record in studio.runs:
        record.poll()
    selected = history_table(studio.runs)
    chosen = [studio.runs[i] for i in selected if i < len(studio.runs)] or studio.runs
    series = [charts.LossSeries(r.name, r.eval_steps, r.eval_losses) for r in chosen]
    st.plotly_chart(
        charts.loss_curves(
            series,
            title="Evaluation loss of each run (the measure of its baseline and verdict)",
            baselines=baselines(chosen),
        ),
        width="stretch",
    )
    # Losses compare only on the same data: the best run of each.
    groups: dict[str, list[state.RunRecord]] = {}
    for r in studio.finished_runs():
        groups.setdefault(data_label(r), []).append(r)
    for label, runs in groups.items():
        best = min(runs, key=lambda r: r.outcome.final_loss)
        where = f" on {label}" if len(groups) > 1 else ""
        st.success(
            f"Lowest final loss so far{where}: {best.name} ({fmt.loss(best.outcome.final_loss)})."
        )


render()
