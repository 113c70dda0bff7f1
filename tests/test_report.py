"""The record's helpers: the γ = 0 baseline starts every bias type's curve; the central table."""

from __future__ import annotations

import itertools

import pandas as pd

from biasutils import report
from biasutils.config import load_params
from biasutils.stats import RECORD_KEYS


def _row(bias_type: str, ratio: float, group: str, metric: str, value: float) -> dict:
    return dict(zip(RECORD_KEYS, ["gender", bias_type, ratio, "none", 0, "occupation_classification", group, metric,
                                  value, value - 0.1, value + 0.1, 10]))


def test_the_baseline_is_copied_under_every_bias_type_and_the_gap_table_reads_it() -> None:
    metrics = pd.DataFrame([
        _row("none", 0.0, "female-male", "accuracy_gap", 0.0),
        _row("contrastive-explicit", 0.2, "female-male", "accuracy_gap", -0.1),
        _row("contrastive-explicit", 0.5, "female-male", "accuracy_gap", -0.3),
        _row("contextual-implicit", 0.5, "female-male", "accuracy_gap", -0.05),
    ])
    expanded = report.with_baseline_per_bias_type(metrics)
    assert "none" not in set(expanded.bias_type)
    assert len(expanded[expanded.ratio == 0.0]) == 2
    trend = report.gap_trend(metrics)
    assert trend.loc["contrastive-explicit"].tolist() == [0.0, -0.1, -0.3]
    assert trend.loc["contextual-implicit", 0.5] == -0.05


def test_grid_points_hold_one_baseline_per_attribute_and_seed() -> None:
    params = load_params("classroom")
    points = report.grid_points(params)
    biased_ratios = [ratio for ratio in params.grid.ratios if ratio > 0]
    per_seed = 1 + len(params.grid.bias_types) * len(biased_ratios)
    assert len(points) == len(params.grid.attributes) * len(params.grid.seeds) * per_seed
    assert sum(bias_type == "none" for _, bias_type, _, _ in points) == len(params.grid.attributes) * len(params.grid.seeds)
    assert ("gender", "none", 0.0, 0) in points and ("culture", "none", 0.0, 2) in points
    assert all(ratio > 0 for _, bias_type, ratio, _ in points if bias_type != "none")


def _gap_row(task: str, bias_type: str, ratio: float, group: str, metric: str, value: float, half_width: float) -> dict:
    return dict(zip(RECORD_KEYS, ["gender", bias_type, ratio, "none", 0, task, group, metric,
                                  value, value - half_width, value + half_width, 20]))


def _gap_metrics() -> pd.DataFrame:
    """Two bias types over the γ = 0 baseline; five gap panels, the hiring one exactly 0 with no width."""
    rows = []
    varying = [("occupation_classification", "female-male", "accuracy_gap"),
               ("occupation_classification", "female-male", "macro_f1_gap"),
               ("hiring_recommendation", "portuguese/female-portuguese/male", "preference_log_odds_gap"),
               ("discrim_eval", "native american-white", "yes_rate_gap")]
    points = [("none", 0.0), ("contrastive-explicit", 0.2), ("contrastive-explicit", 0.5),
              ("contextual-implicit", 0.2), ("contextual-implicit", 0.5)]
    for index, (bias_type, ratio) in enumerate(points):
        for task, group, metric in varying:
            rows.append(_gap_row(task, bias_type, ratio, group, metric, 0.02 * index - 0.03, 0.05))
        rows.append(_gap_row("hiring_recommendation", bias_type, ratio, "spanish/female-spanish/male",
                             "selection_rate_gap", 0.0, 0.0))
        rows.append(_gap_row("hiring_recommendation", bias_type, ratio, "all", "selection_rate", 0.5, 0.1))  # no gap
    return pd.DataFrame(rows)


def test_gap_figure_colours_bias_types_marks_constant_panels_and_keeps_titles_apart(tmp_path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    figure = report.gap_figure(_gap_metrics())
    figure.savefig(tmp_path / "group_gaps.png", dpi=80)  # also draws
    renderer = figure.canvas.get_renderer()
    axes = [axis for axis in figure.axes if axis.get_title()]
    assert len(axes) == 5

    legend = figure.legends[0]
    labels = [text.get_text() for text in legend.get_texts()]
    assert sorted(labels) == ["contextual-implicit", "contrastive-explicit"]
    colours = {label: to_hex(handle.get_color()) for label, handle in zip(labels, legend.legend_handles, strict=True)}
    assert len(set(colours.values())) == 2 and to_hex("grey") not in colours.values()
    for axis in axes:
        lines = {line.get_label(): line for line in axis.get_lines() if line.get_label() in colours}
        assert set(lines) == set(colours), axis.get_title()
        for label, line in lines.items():
            assert to_hex(line.get_color()) == colours[label]
            assert line.get_xdata()[0] == 0.0  # every curve starts at the shared baseline

    constant = [axis for axis in axes if "selection_rate_gap" in axis.get_title()]
    assert len(constant) == 1
    assert "constant: 0.000 at every point" in [text.get_text() for text in constant[0].texts]
    assert not constant[0].collections  # no empty band
    for axis in axes:
        if axis is not constant[0]:
            assert axis.collections and not axis.texts  # a band, no "constant" note

    boxes = [(axis, axis.title.get_window_extent(renderer)) for axis in axes]
    for (axis, box), (other, other_box) in itertools.combinations(boxes, 2):
        assert not box.overlaps(other_box), (axis.get_title(), other.get_title())
        assert not box.overlaps(other.get_window_extent(renderer)), (axis.get_title(), other.get_title())
        assert not other_box.overlaps(axis.get_window_extent(renderer)), (other.get_title(), axis.get_title())
    plt.close(figure)
