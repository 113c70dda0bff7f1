"""The record's helpers: the γ = 0 baseline starts every bias type's curve; the central table."""

from __future__ import annotations

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


def test_grid_points_train_the_baseline_once() -> None:
    params = load_params("classroom")
    points = report.grid_points(params)
    biased_ratios = [ratio for ratio in params.grid.ratios if ratio > 0]
    assert len(points) == 1 + len(params.grid.bias_types) * len(biased_ratios)
    assert sum(bias_type == "none" for _, bias_type, _, _ in points) == 1
    assert ("gender", "none", 0.0, 0) in points
    assert all(ratio > 0 for _, bias_type, ratio, _ in points if bias_type != "none")
