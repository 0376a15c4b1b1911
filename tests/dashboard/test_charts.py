"""The figure builders and number formats, tested without Streamlit."""

from __future__ import annotations

import pytest

from dashboard import charts
from dashboard import format as fmt


def test_icicle_has_one_box_per_module_under_the_model_root():
    fig = charts.parameter_icicle(
        [
            charts.ModuleWeight("", "Module", 0),
            charts.ModuleWeight("encoder", "Linear", 120),
            charts.ModuleWeight("decoder", "Sequential", 0),
            charts.ModuleWeight("decoder.0", "Linear", 30),
        ]
    )
    trace = fig.data[0]
    parents = dict(zip(trace.ids, trace.parents, strict=True))
    assert parents == {"model": "", "encoder": "model", "decoder": "model", "decoder.0": "decoder"}
    # "remainder": a box shows its own parameters plus its children's.
    assert trace.branchvalues == "remainder"
    assert dict(zip(trace.ids, trace.values, strict=True))["decoder.0"] == 30


def test_icicle_attaches_modules_whose_parent_is_not_listed_to_the_nearest_ancestor():
    fig = charts.parameter_icicle(
        [charts.ModuleWeight("a", "Module", 0), charts.ModuleWeight("a.b.c", "Linear", 5)]
    )
    parents = dict(zip(fig.data[0].ids, fig.data[0].parents, strict=True))
    assert parents["a.b.c"] == "a"
    assert parents["model"] == ""  # a root is added when the list has none


def test_histogram_places_bars_at_bin_centres_and_checks_edges():
    fig = charts.value_histogram([1, 3], [0.0, 1.0, 2.0], "w")
    assert list(fig.data[0].x) == [0.5, 1.5]
    assert list(fig.data[0].y) == [1, 3]
    assert "w" in fig.layout.title.text
    with pytest.raises(ValueError):
        charts.value_histogram([1, 2], [0.0, 1.0], "w")


def test_candidate_ranking_puts_the_lowest_loss_first_and_leaves_out_failures():
    fig = charts.candidate_ranking(["nhead=8", "nhead=4", "nhead=2"], [2.5, 0.1, None])
    bar = fig.data[0]
    assert list(bar.y) == ["nhead=4", "nhead=8"]
    assert list(bar.x) == [0.1, 2.5]
    assert bar.marker.color[0] != bar.marker.color[1]  # the winner stands out
    assert fig.layout.yaxis.autorange == "reversed"  # first row drawn at the top


def test_candidate_ranking_keeps_only_the_best_few():
    fig = charts.candidate_ranking(
        [f"c{i}" for i in range(30)], [float(i) for i in range(30)], top=5
    )
    assert list(fig.data[0].y) == ["c0", "c1", "c2", "c3", "c4"]


def test_loss_curves_draw_one_line_per_run_and_the_baseline():
    runs = [
        charts.LossSeries("Run 1", [0, 1, 2], [3.0, 2.0, 1.0]),
        charts.LossSeries("Run 2", [0, 1], [3.0, 2.5]),
    ]
    fig = charts.loss_curves(runs, baseline=2.75)
    assert [t.name for t in fig.data] == ["Run 1", "Run 2"]
    assert list(fig.data[0].y) == [3.0, 2.0, 1.0]
    (line,) = fig.layout.shapes
    assert line.y0 == line.y1 == 2.75
    assert "2.75" in fig.layout.annotations[0].text


def test_loss_curves_without_a_baseline_draw_no_line():
    fig = charts.loss_curves([charts.LossSeries("Run 1", [0], [1.0])])
    assert fig.layout.shapes == ()


@pytest.mark.parametrize(
    ("n", "text"), [(12, "12"), (12_345, "12.3 k"), (1_234_567, "1.2 M"), (3_000_000_000, "3.0 B")]
)
def test_counts_read_like_a_person_writes_them(n, text):
    assert fmt.count(n) == text


@pytest.mark.parametrize(
    ("value", "text"), [(0.012345, "0.01235"), (2.0, "2"), (1e-7, "1.000e-07"), (None, "—")]
)
def test_losses_have_four_significant_digits(value, text):
    assert fmt.loss(value) == text


def test_sizes_use_binary_units():
    assert fmt.size(512) == "512 B"
    assert fmt.size(3 * 1024 * 1024) == "3.0 MiB"
    assert fmt.size(5 * 1024**3) == "5.0 GiB"


def test_icicle_gives_each_layer_type_one_colour():
    fig = charts.parameter_icicle(
        [
            charts.ModuleWeight("", "Module", 0),
            charts.ModuleWeight("a", "Linear", 1),
            charts.ModuleWeight("b", "LayerNorm", 1),
            charts.ModuleWeight("c", "Linear", 1),
        ]
    )
    colours = dict(zip(fig.data[0].ids, fig.data[0].marker.colors, strict=True))
    assert colours["a"] == colours["c"] != colours["b"]


def test_the_training_chart_draws_evaluation_as_the_main_line_and_batches_faintly():
    evaluation = charts.LossSeries("evaluation loss", [7, 14], [1.2, 0.9])
    batches = charts.LossSeries("training loss (each batch)", list(range(1, 15)), [1.0] * 14)
    fig = charts.training_chart(evaluation, batches, baseline=1.4)
    faint, main = fig.data
    assert list(main.y) == [1.2, 0.9] and main.line.width > faint.line.width
    assert faint.opacity < 1 and main.line.simplify is False  # every point drawn: it grows
    assert [s.y0 for s in fig.layout.shapes] == [1.4]


def test_runs_on_different_data_each_get_their_own_baseline():
    series = [charts.LossSeries("Run 1", [1], [1.0]), charts.LossSeries("Run 2", [1], [2.0])]
    fig = charts.loss_curves(
        series, baselines=[("baseline of run 1", 1.5), ("baseline of run 2", 2.5)]
    )
    assert sorted(s.y0 for s in fig.layout.shapes) == [1.5, 2.5]
    assert {a.text.split(" 1")[0] for a in fig.layout.annotations} >= {"baseline of run"}


def test_how_many_times_lower_reads_at_a_glance():
    # Step 2's "the original weights fit it N× worse": a refit can fit to rounding (0).
    assert fmt.times(1.27, 0.0818) == "16×"
    assert fmt.times(0.6532, 9.948e-05) == "6,566×"
    assert fmt.times(1.3, 0.8) == "1.6×"
    assert fmt.times(1.27, 0.0) == "∞×"
