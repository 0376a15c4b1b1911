"""Step 5: every run of this session side by side, so choosing what to unfreeze is a comparison."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, state, ui
from dashboard import format as fmt

TABLE_KEY = "compare_table"


def _what_trained(record: state.RunRecord) -> str:
    patterns = list(record.plan.patterns)
    return "everything" if patterns == ["*"] else ", ".join(patterns)


def history_table(runs: list[state.RunRecord]) -> list[int]:
    """The run history; returns the indices of the rows the person selected."""
    rows = []
    for r in runs:
        result = r.result
        rows.append(
            {
                "run": r.name,
                "status": r.run.status,
                "what trained": _what_trained(r),
                "baseline loss": fmt.loss(r.baseline),
                "final loss": fmt.loss(result.final_loss) if result else "—",
                "time": fmt.seconds(r.seconds),
                "trained parameters": r.plan.trainable_params,
                "learning rate": r.lr,
                "epochs": r.epochs,
                "batch": r.batch_size,
                "method": result.method_used if result else r.method,
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


def render() -> None:
    ui.header(
        5,
        "Every training run of this session is kept here with its settings and result. "
        "Select rows to draw only those runs; the dashed line is the baseline to beat.",
    )
    studio = state.studio()
    if not studio.runs:
        st.info("No runs yet: start one in step 4.")
        return
    for record in studio.runs:
        record.poll()
    selected = history_table(studio.runs)
    chosen = [studio.runs[i] for i in selected if i < len(studio.runs)] or studio.runs
    series = [charts.LossSeries(r.name, r.steps, r.losses) for r in chosen]
    st.plotly_chart(
        charts.loss_curves(series, chosen[0].baseline, title="Loss of each run"), width="stretch"
    )
    best = min((r for r in studio.finished_runs()), key=lambda r: r.result.final_loss, default=None)
    if best is not None:
        st.success(f"Lowest final loss so far: {best.name} ({fmt.loss(best.result.final_loss)}).")


render()
