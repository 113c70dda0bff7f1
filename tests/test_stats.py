"""Group statistics: per-group values equal sklearn/fairlearn computed directly, intervals behave like
intervals, the tests agree with scipy called directly, results are seeded, and the tidy record schema holds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame
from scipy import stats as scipy_stats
from sklearn.metrics import accuracy_score, f1_score

from biasutils import stats

LABELS = ["architect", "dentist", "nurse"]
CONTEXT = {"attribute": "gender", "bias_type": "neutral", "ratio": 0.2, "mitigation": "none", "seed": 0, "task": "t"}


def classification(n: int, seed: int = 0, accuracy: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.choice(LABELS, n)
    y_pred = np.where(rng.random(n) < accuracy, y_true, rng.choice(LABELS, n))
    return y_true, y_pred, rng.choice(["female", "male"], n)


def metrics() -> dict[str, stats.Metric]:
    return {"accuracy": stats.ACCURACY, "macro_f1": stats.macro_f1(LABELS)}


def width(table: pd.DataFrame) -> pd.Series:
    return (table["ci_high"] - table["ci_low"]).reset_index(drop=True)


def test_group_values_equal_sklearn_and_fairlearn_per_group() -> None:
    y_true, y_pred, groups = classification(300)
    table = stats.group_table(y_true, y_pred, groups, metrics(), n_boot=20)
    assert list(table.columns) == list(stats.GROUP_COLUMNS)
    direct = MetricFrame(metrics={"accuracy": accuracy_score}, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    for group in ("female", "male"):
        mask = groups == group
        rows = table[table["group"] == group].set_index("metric")
        assert rows.at["accuracy", "value"] == pytest.approx(accuracy_score(y_true[mask], y_pred[mask]))
        assert rows.at["accuracy", "value"] == pytest.approx(direct.by_group.at[group, "accuracy"])
        assert rows.at["macro_f1", "value"] == pytest.approx(
            f1_score(y_true[mask], y_pred[mask], average="macro", labels=LABELS, zero_division=0)
        )
        assert (rows["n"] == mask.sum()).all()


def test_mean_metric_intervals_are_scipys_bootstrap_and_agree_with_fairlearns() -> None:
    y_true, y_pred, groups = classification(600)
    table = stats.group_table(y_true, y_pred, groups, {"accuracy": stats.ACCURACY}, n_boot=300, seed=3)
    fairlearn = MetricFrame(metrics={"accuracy": accuracy_score}, y_true=y_true, y_pred=y_pred, sensitive_features=groups,
                            n_boot=300, ci_quantiles=[0.025, 0.975], random_state=3)
    low, high = fairlearn.by_group_ci
    for group in ("female", "male"):
        mask = groups == group
        row = table[table["group"] == group].iloc[0]
        direct = scipy_stats.bootstrap(((y_true[mask] == y_pred[mask]).astype(float),), np.mean, n_resamples=300,
                                       method="percentile", vectorized=True, random_state=3).confidence_interval
        assert (row.ci_low, row.ci_high) == pytest.approx((direct.low, direct.high))
        assert (row.ci_low, row.ci_high) == pytest.approx((low.at[group, "accuracy"], high.at[group, "accuracy"]), abs=0.025)


def test_other_metric_intervals_equal_fairlearns_bootstrap_exactly() -> None:
    """macro-F1 (and any metric that is not a mean) gets fairlearn's interval, number for number, including a
    group so small that some resamples miss it and a metric that is NaN in some resamples."""
    y_true, y_pred, groups = classification(250, seed=5)
    groups = groups.astype(object)
    groups[:3] = "nonbinary"  # 3 of 250 rows: absent from about 5 % of the resamples

    def nan_when_one_row(t: np.ndarray, p: np.ndarray) -> float:
        return float(np.mean(np.asarray(t) == np.asarray(p))) if len(t) > 1 else math.nan

    chosen = {"macro_f1": stats.macro_f1(LABELS), "odd": nan_when_one_row}
    table = stats.group_table(y_true, y_pred, groups, chosen, n_boot=150, seed=11, ci=0.9)
    frame = MetricFrame(metrics=chosen, y_true=y_true, y_pred=y_pred, sensitive_features=pd.Series(groups, name="group"),
                        n_boot=150, ci_quantiles=[0.05, 0.95], random_state=11)
    low, high = frame.by_group_ci
    for row in table.itertuples():
        assert (row.ci_low, row.ci_high) == pytest.approx((low.at[row.group, row.metric], high.at[row.group, row.metric]),
                                                          rel=1e-12, abs=1e-12)
    assert set(table["group"]) == {"female", "male", "nonbinary"}


def test_macro_f1_equals_sklearn_with_missing_classes() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 5, 40):
        y_true, y_pred = rng.choice(LABELS[:2], n), rng.choice(LABELS, n)
        expected = f1_score(y_true, y_pred, average="macro", labels=LABELS, zero_division=0)
        assert stats.macro_f1(LABELS)(y_true, y_pred) == pytest.approx(expected)


def test_intersection_labels_and_prediction_only_metrics() -> None:
    groups = pd.DataFrame({"culture": ["arabic", "arabic", "chinese"], "gender": ["female", "male", "female"]})
    table = stats.group_table(None, [1.0, 0.0, 1.0], groups, {"rate": stats.RATE}, n_boot=0)
    assert table["group"].tolist() == ["arabic/female", "arabic/male", "chinese/female"]
    assert table["value"].tolist() == [1.0, 0.0, 1.0]
    assert table[["ci_low", "ci_high"]].isna().all().all()


def test_intervals_contain_the_estimate_and_shrink_with_more_data() -> None:
    small = stats.group_table(*classification(100), metrics(), n_boot=40)
    large = stats.group_table(*classification(1600), metrics(), n_boot=40)
    for table in (small, large):
        assert ((table["ci_low"] <= table["value"]) & (table["value"] <= table["ci_high"])).all()
    assert (width(large) < width(small) / 2).all()
    small_gap = stats.gap_table(*classification(100), metrics(), "female", "male", n_boot=200, n_permutations=99)
    large_gap = stats.gap_table(*classification(1600), metrics(), "female", "male", n_boot=200, n_permutations=99)
    for gap in (small_gap, large_gap):
        assert ((gap["ci_low"] <= gap["value"]) & (gap["value"] <= gap["ci_high"])).all()
    assert (width(large_gap) < width(small_gap) / 2).all()


def test_gap_value_is_group_a_minus_group_b() -> None:
    y_true, y_pred, groups = classification(300)
    gap = stats.gap_table(y_true, y_pred, groups, metrics(), "female", "male", n_boot=20, n_permutations=49)
    table = stats.group_table(y_true, y_pred, groups, metrics(), n_boot=0).set_index(["group", "metric"])
    for row in gap.to_dict("records"):
        expected = table.at[("female", row["metric"]), "value"] - table.at[("male", row["metric"]), "value"]
        assert row["value"] == pytest.approx(expected)
        assert (row["n_a"], row["n_b"]) == ((groups == "female").sum(), (groups == "male").sum())
    assert gap.set_index("metric")["test"].to_dict() == {"accuracy": "fisher", "macro_f1": "permutation"}


@pytest.mark.parametrize("metric", [stats.ACCURACY, stats.RATE, stats.MEAN, stats.macro_f1([0, 1])])
def test_identical_groups_give_a_high_p_value(metric: stats.Metric) -> None:
    rng = np.random.default_rng(2)
    y_true, y_pred = rng.integers(0, 2, 100), rng.integers(0, 2, 100)
    twice = {"y_true": np.tile(y_true, 2), "y_pred": np.tile(y_pred, 2), "groups": np.repeat(["a", "b"], 100)}
    gap = stats.gap_table(**twice, metrics={"m": metric}, group_a="a", group_b="b", n_boot=20, n_permutations=199)
    assert gap.at[0, "value"] == 0.0
    assert gap.at[0, "p_value"] > 0.5


def test_strongly_different_groups_give_a_small_p_value() -> None:
    rng = np.random.default_rng(3)
    groups = np.repeat(["a", "b"], 200)
    selected = np.concatenate([rng.random(200) < 0.9, rng.random(200) < 0.2]).astype(float)
    salary = np.concatenate([rng.normal(90_000, 10_000, 200), rng.normal(60_000, 10_000, 200)])
    y_true = np.tile(rng.integers(0, 2, 200), 2)
    y_pred = np.concatenate([y_true[:200], 1 - y_true[200:]])
    for y, y_hat, metric, test in (
        (None, selected, stats.RATE, "fisher"),
        (None, salary, stats.MEAN, "welch"),
        (y_true, y_pred, stats.macro_f1([0, 1]), "permutation"),
    ):
        # a two-sided permutation p is at least 2 / (n_permutations + 1): 4999 resamples reach below 0.001
        gap = stats.gap_table(y, y_hat, groups, {"m": metric}, "a", "b", n_boot=50, n_permutations=4999)
        assert gap.at[0, "test"] == test
        assert gap.at[0, "p_value"] < 0.001


def test_fisher_and_welch_p_values_equal_scipy() -> None:
    rng = np.random.default_rng(4)
    groups = np.array(["female"] * 60 + ["male"] * 80)
    y_true, y_pred = rng.integers(0, 2, 140), rng.integers(0, 2, 140)
    salary = rng.normal(70_000, 15_000, 140)
    gap = stats.gap_table(y_true, y_pred, groups, {"accuracy": stats.ACCURACY}, "female", "male", n_boot=10)
    correct = y_true == y_pred
    table = [[correct[:60].sum(), (~correct[:60]).sum()], [correct[60:].sum(), (~correct[60:]).sum()]]
    assert gap.at[0, "p_value"] == pytest.approx(scipy_stats.fisher_exact(table).pvalue)
    gap = stats.gap_table(None, salary, groups, {"salary": stats.MEAN}, "female", "male", n_boot=10)
    assert gap.at[0, "p_value"] == pytest.approx(scipy_stats.ttest_ind(salary[:60], salary[60:], equal_var=False).pvalue)


def test_results_are_determined_by_the_seed() -> None:
    data = classification(200)
    first = stats.group_table(*data, metrics(), n_boot=15, seed=7)
    pd.testing.assert_frame_equal(first, stats.group_table(*data, metrics(), n_boot=15, seed=7))
    assert not first["ci_low"].equals(stats.group_table(*data, metrics(), n_boot=15, seed=8)["ci_low"])
    gap = stats.gap_table(*data, metrics(), "female", "male", n_boot=30, seed=7, n_permutations=49)
    pd.testing.assert_frame_equal(gap, stats.gap_table(*data, metrics(), "female", "male", n_boot=30, seed=7,
                                                       n_permutations=49))
    other = stats.gap_table(*data, metrics(), "female", "male", n_boot=30, seed=8, n_permutations=49)
    assert not gap["ci_low"].equals(other["ci_low"])


def test_a_missing_group_gives_nan_with_n_zero() -> None:
    gap = stats.gap_table(None, [1.0, 0.0], ["a", "a"], {"rate": stats.RATE}, "a", "b", n_boot=10)
    row = gap.iloc[0]
    assert (row["n_a"], row["n_b"]) == (2, 0)
    assert all(math.isnan(row[column]) for column in ("value", "ci_low", "ci_high", "p_value"))


def test_bad_inputs_fail_with_named_fields() -> None:
    with pytest.raises(ValueError, match="lengths 3, 3 and 2"):
        stats.group_table([1, 0, 1], [1, 0, 1], ["a", "b"], {"acc": stats.ACCURACY})
    with pytest.raises(ValueError, match="ci: 95"):
        stats.group_table([1, 0], [1, 0], ["a", "b"], {"acc": stats.ACCURACY}, ci=95)
    with pytest.raises(ValueError, match="'salary' is a binary MeanOutcome"):
        stats.gap_table(None, [50.0, 60.0, 70.0, 80.0], ["a", "a", "b", "b"], {"salary": stats.RATE}, "a", "b", n_boot=5)


def test_record_rows_keys_order_and_gap_naming() -> None:
    data = classification(100)
    group_rows = stats.record_rows(stats.group_table(*data, metrics(), n_boot=10), **CONTEXT)
    gap_rows = stats.record_rows(
        stats.gap_table(*data, metrics(), "female", "male", n_boot=10, n_permutations=19), **CONTEXT
    )
    assert stats.RECORD_KEYS == (
        "attribute", "bias_type", "ratio", "mitigation", "seed", "task",
        "group", "metric", "value", "ci_low", "ci_high", "n",
    )
    assert all(tuple(row) == stats.RECORD_KEYS for row in group_rows + gap_rows)
    assert {row["group"] for row in gap_rows} == {"female-male"}
    assert [row["metric"] for row in gap_rows] == ["accuracy_gap", "accuracy_gap_p", "macro_f1_gap", "macro_f1_gap_p"]
    p_row = gap_rows[1]
    assert 0 <= p_row["value"] <= 1 and math.isnan(p_row["ci_low"]) and math.isnan(p_row["ci_high"])
    assert p_row["n"] == 100
    bad_context = {key: value for key, value in CONTEXT.items() if key != "task"} | {"model": "x"}
    with pytest.raises(ValueError, match=r"missing \['task'\], unknown \['model'\]"):
        stats.record_rows(stats.group_table(*data, metrics(), n_boot=0), **bad_context)


def test_every_bootstrap_interval_leaves_out_undefined_draws_and_says_nan_when_none_is_left():
    """One definition serves gaps, inheritance totals, misalignments and the culture task: a resample whose
    statistic is undefined (NaN, or infinite) does not move the interval, and a level outside (0, 1) is refused."""
    draws = np.random.default_rng(0).normal(size=1000)
    expected = tuple(np.quantile(draws, [0.05, 0.95]))
    assert stats.percentile_interval(draws, 0.9) == pytest.approx(expected, rel=0, abs=0)
    spoiled = np.concatenate([draws, [np.nan, np.inf, -np.inf]])
    assert stats.percentile_interval(spoiled, 0.9) == pytest.approx(expected, rel=0, abs=0)
    assert all(np.isnan(stats.percentile_interval(np.array([np.nan, np.inf]))))
    with pytest.raises(ValueError, match="ci: 1.5 .*allowed: 0 < ci < 1"):
        stats.percentile_interval(draws, 1.5)
