"""Group statistics shared by evaluation, misalignment and mitigation.

Three things every stage reports the same way:

* :func:`group_table`: each metric per group (fairlearn's :class:`~fairlearn.metrics.MetricFrame`
  ``by_group``) with a percentile bootstrap interval. For a :class:`MeanOutcome` (accuracy, selection
  rate, mean salary: nearly every metric of the study) the interval is ``scipy.stats.bootstrap`` of the
  mean of the group's per-sample outcomes (vectorised, resampling within the group); any other metric
  (macro-F1) gets fairlearn's bootstrap (``n_boot``, ``ci_quantiles``, ``random_state``;
  ``by_group_ci``), which resamples *all rows* and recomputes every group, so a group's size varies
  between resamples; :func:`_fairlearn_intervals` draws fairlearn's very resamples without building
  a MetricFrame per resample (equal number for number, tested; ~30x faster). Why two: scipy's
  vectorised resampling of a mean takes milliseconds and gives the same percentile interval up to the
  within-group resampling (tested against fairlearn's).
* :func:`gap_table`: the signed difference ``metric(group_a) - metric(group_b)`` (e.g. female minus
  male) with a bootstrap interval and a significance test. Fairlearn's ``difference()`` is the
  *unsigned* largest gap over all groups, so it cannot give a signed gap between two chosen groups;
  the gap's interval is therefore a seeded numpy bootstrap that resamples *within* each group (group
  sizes fixed), percentile interval like fairlearn's. The test depends on the metric: a
  :class:`MeanOutcome` with a 0/1 outcome (accuracy, selection rate) gets Fisher's exact test on the
  2x2 table, one with a continuous outcome (salary) Welch's t-test, any other metric (macro-F1, ratios)
  a seeded two-sided permutation test of the gap (``scipy.stats.permutation_test``).
* :func:`record_rows`: the tidy rows of ``reports/<profile>/metrics.csv`` (:data:`RECORD_KEYS`).

``y_pred`` may be anything a metric accepts (labels, numbers, role names). Metrics that read only the
predictions (mean salary, selection rate) may be given ``y_true=None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

GROUP_COLUMNS: tuple[str, ...] = ("group", "metric", "value", "ci_low", "ci_high", "n")
GAP_COLUMNS: tuple[str, ...] = (
    "metric", "group_a", "group_b", "value", "ci_low", "ci_high", "p_value", "test", "n_a", "n_b",
)
CONTEXT_KEYS: tuple[str, ...] = ("attribute", "bias_type", "ratio", "mitigation", "seed", "task")
RECORD_KEYS: tuple[str, ...] = CONTEXT_KEYS + GROUP_COLUMNS
INTERSECTION = "/"  # joins the labels of several group columns: "arabic/female"
GAP_SEPARATOR = "-"  # names a gap's groups in metric rows: "female-male"

Metric = Callable[[Any, Any], float]


@dataclass(frozen=True)
class MeanOutcome:
    """A metric that is the mean of a per-sample outcome (accuracy = mean of "correct").

    Why a class and not a plain function: knowing the per-sample outcome lets :func:`gap_table` use an
    exact test (Fisher for 0/1 outcomes, Welch for continuous ones) instead of a permutation test, and
    makes the gap bootstrap a cheap mean over resampled indices.
    """

    outcome: Callable[[np.ndarray, np.ndarray], np.ndarray]
    binary: bool

    def __call__(self, y_true: Any, y_pred: Any) -> float:
        values = self.outcome(np.asarray(y_true), np.asarray(y_pred))
        return float(np.mean(values)) if len(values) else math.nan


def correct(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """1 where the prediction equals the gold label."""
    return (y_true == y_pred).astype(float)


def predicted(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The prediction itself as a number (a 0/1 selection, a salary, a probability)."""
    return np.asarray(y_pred, dtype=float)


def macro_f1(labels: Sequence[Any]) -> Metric:
    """Macro-F1 over a fixed label set, equal to sklearn's ``f1_score(average="macro", labels=labels,
    zero_division=0)``.

    Why not sklearn's: its input validation costs about a millisecond a call, and the bootstrap and
    the permutation test call the metric thousands of times per table. Fixing the labels keeps a
    resample that misses a class from changing what the average runs over.
    """
    labels = tuple(labels)

    def metric(y_true: Any, y_pred: Any) -> float:
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        scores = []
        for label in labels:
            gold, guess = y_true == label, y_pred == label
            support = int(gold.sum() + guess.sum())  # = 2 TP + FP + FN
            scores.append(2 * int((gold & guess).sum()) / support if support else 0.0)
        return float(np.mean(scores))

    return metric


ACCURACY = MeanOutcome(correct, binary=True)
RATE = MeanOutcome(predicted, binary=True)  # share of 1s in a 0/1 prediction: selection, unparsed
MEAN = MeanOutcome(predicted, binary=False)  # mean of a continuous prediction: salary, P(yes)


# ---------------------------------------------------------------------------------------------- inputs


def group_labels(groups: Any) -> np.ndarray:
    """One string label per sample: a 1-D array-like as is, a DataFrame's columns joined ("arabic/female")."""
    if isinstance(groups, pd.DataFrame):
        if groups.shape[1] == 0:
            raise ValueError("groups: the DataFrame has no columns; give at least one group column")
        rows = groups.astype(str).itertuples(index=False, name=None)
        return np.array([INTERSECTION.join(row) for row in rows], dtype=object)
    labels = np.asarray(groups, dtype=object)
    if labels.ndim != 1:
        raise ValueError(f"groups: expected a 1-D array-like or a DataFrame, got shape {labels.shape}")
    return np.array([str(label) for label in labels], dtype=object)


def _aligned(y_true: Any, y_pred: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays of equal length; ``y_true=None`` stands in the predictions for prediction-only metrics."""
    y_pred = np.asarray(y_pred)
    y_true = y_pred if y_true is None else np.asarray(y_true)
    labels = group_labels(groups)
    if not len(y_true) == len(y_pred) == len(labels):
        raise ValueError(
            f"y_true, y_pred and groups must have one entry per sample; got lengths "
            f"{len(y_true)}, {len(y_pred)} and {len(labels)}"
        )
    return y_true, y_pred, labels


def ci_quantiles(ci: float) -> list[float]:
    """The two quantiles of a ``ci`` percentile interval (0.95 -> 0.025, 0.975); refuses a level outside (0, 1)."""
    if not 0 < ci < 1:
        raise ValueError(f"ci: {ci!r} is not a confidence level; allowed: 0 < ci < 1 (e.g. 0.95)")
    return [(1 - ci) / 2, (1 + ci) / 2]


# ---------------------------------------------------------------------------------------------- groups


def group_table(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    metrics: Mapping[str, Metric],
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Each metric per group with a bootstrap interval (``n_boot=0``: no interval, NaN bounds); see the module notes.

    Returns tidy rows with columns :data:`GROUP_COLUMNS`; ``n`` is the number of samples in the group.
    No samples give an empty table (a model that answered nothing parseable is counted elsewhere).
    """
    from fairlearn.metrics import MetricFrame

    if n_boot < 0:
        raise ValueError(f"n_boot: {n_boot!r}; allowed: 0 (no interval) or a positive number of resamples")
    ci_quantiles(ci)
    y_true, y_pred, labels = _aligned(y_true, y_pred, groups)
    if not len(labels):
        return pd.DataFrame(columns=list(GROUP_COLUMNS))
    sensitive = pd.Series(labels, name="group")
    values = MetricFrame(metrics=dict(metrics), y_true=y_true, y_pred=y_pred, sensitive_features=sensitive).by_group
    low, high = values * math.nan, values * math.nan
    if n_boot:
        means = {name: metric for name, metric in metrics.items() if isinstance(metric, MeanOutcome)}
        others = {name: metric for name, metric in metrics.items() if name not in means}
        for name, metric in means.items():
            for group in values.index:
                rows = labels == group
                low.at[group, name], high.at[group, name] = _mean_interval(
                    metric.outcome(y_true[rows], y_pred[rows]), n_boot, seed, ci)
        if others:
            other_low, other_high = _fairlearn_intervals(others, y_true, y_pred, sensitive, n_boot, seed, ci)
            low.loc[:, list(others)], high.loc[:, list(others)] = other_low[list(others)], other_high[list(others)]
    sizes = pd.Series(labels).value_counts()
    return pd.DataFrame(
        [
            {
                "group": group, "metric": metric, "value": float(values.at[group, metric]),
                "ci_low": float(low.at[group, metric]), "ci_high": float(high.at[group, metric]),
                "n": int(sizes[group]),
            }
            for group in values.index
            for metric in metrics
        ],
        columns=list(GROUP_COLUMNS),
    )


def tpr_table(y_true: Any, y_pred: Any, groups: Any, classes: Sequence[Any], n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95) -> pd.DataFrame:
    """True-positive rate (recall) of each class per group, with a bootstrap interval: column ``class`` plus
    :data:`GROUP_COLUMNS` (metric ``tpr``; ``n`` = the group's items of that class).

    The TPR of class c is the share of c's items predicted as c (De-Arteaga et al.'s GAP^TPR is its
    difference between groups), equal to fairlearn's ``true_positive_rate`` on the one-vs-rest labels.
    A class-group cell without items has no row.
    """
    y_true, y_pred, labels = _aligned(y_true, y_pred, groups)
    parts = []
    for label in classes:
        mine = y_true == label
        if mine.any():
            hits = (y_pred[mine] == label).astype(float)
            table = group_table(None, hits, labels[mine], {"tpr": RATE}, n_boot=n_boot, seed=seed, ci=ci)
            parts.append(table.assign(**{"class": label}))
    if not parts:
        return pd.DataFrame(columns=["class", *GROUP_COLUMNS])
    return pd.concat(parts, ignore_index=True).loc[:, ["class", *GROUP_COLUMNS]]


def _mean_interval(outcomes: np.ndarray, n_boot: int, seed: int, ci: float) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (``scipy.stats.bootstrap``). NaN below two samples or with a
    NaN outcome (the mean is NaN too); the point itself when every outcome is equal (nothing to resample)."""
    outcomes = np.asarray(outcomes, dtype=float)
    if len(outcomes) < 2 or not np.isfinite(outcomes).all():
        return math.nan, math.nan
    if np.all(outcomes == outcomes[0]):
        return float(outcomes[0]), float(outcomes[0])
    result = scipy_stats.bootstrap((outcomes,), np.mean, n_resamples=n_boot, confidence_level=ci,
                                   method="percentile", vectorized=True, random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _fairlearn_intervals(metrics: Mapping[str, Metric], y_true: np.ndarray, y_pred: np.ndarray, sensitive: pd.Series,
                         n_boot: int, seed: int, ci: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fairlearn's ``MetricFrame(..., n_boot, ci_quantiles, random_state=seed).by_group_ci``, the same numbers
    without its per-resample frames.

    Why not fairlearn's own call: it builds a pandas group-by result per resample (about 4 s per table at
    200 resamples on the 2-core CPU, half of a classroom evaluation). This draws the very resamples
    fairlearn draws (its per-resample seeds from ``default_rng(seed)``, each a pandas ``sample(frac=1,
    replace=True)``, i.e. ``RandomState(s).choice(n, n)``), evaluates each metric on each group's rows in
    resample order, and takes ``nanquantile`` over the resamples, a group absent from a resample counting as
    NaN there, as fairlearn's aligned frames do. ``tests/test_stats.py`` checks equality with fairlearn.
    """
    labels = sensitive.to_numpy()
    groups = sorted(set(labels))
    n = len(labels)
    seeds = np.random.default_rng(seed).integers(low=0, high=np.iinfo(np.uint32).max, size=n_boot, dtype=np.uint32)
    samples = np.full((n_boot, len(groups), len(metrics)), np.nan)
    for b, resample_seed in enumerate(seeds):
        index = np.random.RandomState(resample_seed).choice(n, size=n, replace=True)
        drawn = labels[index]
        for g, group in enumerate(groups):
            rows = index[drawn == group]
            if len(rows):
                samples[b, g] = [metric(y_true[rows], y_pred[rows]) for metric in metrics.values()]
    with warnings.catch_warnings():
        # a group whose metric is NaN in every resample gets NaN bounds; the NaN interval already says it
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        low, high = np.nanquantile(samples, ci_quantiles(ci), axis=0)
    index = pd.Index(groups, name=sensitive.name)
    return pd.DataFrame(low, index=index, columns=list(metrics)), pd.DataFrame(high, index=index, columns=list(metrics))


# ---------------------------------------------------------------------------------------------- gaps


def gap_table(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    metrics: Mapping[str, Metric],
    group_a: str,
    group_b: str,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    n_permutations: int = 999,
) -> pd.DataFrame:
    """``metric(group_a) - metric(group_b)`` per metric, with a within-group bootstrap interval and a test.

    Columns :data:`GAP_COLUMNS`. The interval resamples each group separately (numpy, seeded, percentile
    interval; fairlearn offers no signed two-group difference). The test is Fisher's exact test for a
    :class:`MeanOutcome` with a 0/1 outcome, Welch's t-test for one with a continuous outcome, and
    otherwise a permutation test with at most ``n_permutations`` resamples (exact when fewer
    partitions exist). A group without samples gives NaN value, interval and p-value with its n = 0,
    so a group the model never answered for shows up instead of stopping the evaluation.
    """
    y_true, y_pred, labels = _aligned(y_true, y_pred, groups)
    ci_quantiles(ci)
    index_a, index_b = np.flatnonzero(labels == group_a), np.flatnonzero(labels == group_b)
    rows = []
    for name, metric in metrics.items():
        statistic = _index_statistic(metric, y_true, y_pred)
        row = {"metric": name, "group_a": group_a, "group_b": group_b, "n_a": len(index_a), "n_b": len(index_b)}
        if not (len(index_a) and len(index_b)):
            rows.append(row | {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                               "p_value": math.nan, "test": significance_test(metric)})
            continue
        low, high = _bootstrap_gap(statistic, index_a, index_b, n_boot, seed, ci)
        p_value = _p_value(name, metric, statistic, y_true, y_pred, index_a, index_b, n_permutations, seed)
        rows.append(row | {"value": statistic(index_a) - statistic(index_b), "ci_low": low, "ci_high": high,
                           "p_value": p_value, "test": significance_test(metric)})
    return pd.DataFrame(rows, columns=list(GAP_COLUMNS))


def significance_test(metric: Metric) -> str:
    """Which test :func:`gap_table` runs for a metric: ``fisher``, ``welch`` or ``permutation``."""
    if isinstance(metric, MeanOutcome):
        return "fisher" if metric.binary else "welch"
    return "permutation"


def _index_statistic(metric: Metric, y_true: np.ndarray, y_pred: np.ndarray) -> Callable[[np.ndarray], float]:
    """The metric on a set of sample indices (a mean over precomputed outcomes for a MeanOutcome)."""
    if isinstance(metric, MeanOutcome):
        values = metric.outcome(y_true, y_pred)
        return lambda index: float(values[index].mean())
    return lambda index: float(metric(y_true[index], y_pred[index]))


def _bootstrap_gap(
    statistic: Callable[[np.ndarray], float],
    index_a: np.ndarray,
    index_b: np.ndarray,
    n_boot: int,
    seed: int,
    ci: float,
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    gaps = np.array([
        statistic(rng.choice(index_a, len(index_a))) - statistic(rng.choice(index_b, len(index_b)))
        for _ in range(n_boot)
    ])
    return percentile_interval(gaps, ci)


def defined_draws(draws: np.ndarray) -> np.ndarray:
    """The bootstrap draws whose statistic is defined (finite): a resample that lost a group gives NaN or an
    infinity, and every interval and test of the study leaves those draws out alike."""
    draws = np.asarray(draws, dtype=float)
    return draws[np.isfinite(draws)]


def percentile_interval(draws: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """The ``ci`` percentile interval of the :func:`defined_draws` of a bootstrap (NaN bounds when none is).

    The one definition behind every bootstrap interval of the study (gaps, inheritance totals, misalignments,
    the culture task), so that they all treat an undefined resample alike."""
    draws = defined_draws(draws)
    if not len(draws):
        return math.nan, math.nan
    low, high = np.quantile(draws, ci_quantiles(ci))
    return float(low), float(high)


def stratified_bootstrap(statistic: Callable[[np.ndarray], Any], strata: Any, n_boot: int, seed: int) -> np.ndarray:
    """``statistic`` of ``n_boot`` resamples of the sample indices, each drawn with replacement *within* each
    stratum, so every stratum keeps its size (seeded numpy); the draws stacked, one row per resample.

    Why within strata: a statistic over several fixed groups (datasets, cultures) must compare the same
    groups in every resample, with the group sizes of the design, as :func:`gap_table`'s bootstrap does.
    """
    labels = group_labels(strata)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == label) for label in sorted(set(labels))]
    draws = [statistic(np.concatenate([rng.choice(rows, len(rows)) for rows in members])) for _ in range(n_boot)]
    return np.asarray(draws, dtype=float)


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided p-value of "the difference is 0" from bootstrap draws of the difference: twice the smaller
    share of draws at or beyond 0 on either side, each share as (count + 1) / (draws + 1) so that no p is 0.

    It is the test the percentile interval inverts: up to the +1, p < 1 - ci when the ci percentile interval
    leaves out 0. Only the :func:`defined_draws` count; NaN without any.
    """
    differences = defined_draws(differences)
    if not len(differences):
        return math.nan
    sides = [(np.sum(differences <= 0) + 1) / (len(differences) + 1), (np.sum(differences >= 0) + 1) / (len(differences) + 1)]
    return float(min(1.0, 2 * min(sides)))


def _p_value(
    name: str,
    metric: Metric,
    statistic: Callable[[np.ndarray], float],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    index_a: np.ndarray,
    index_b: np.ndarray,
    n_permutations: int,
    seed: int,
) -> float:
    if isinstance(metric, MeanOutcome):
        values = metric.outcome(y_true, y_pred)
        a, b = values[index_a], values[index_b]
        return fisher_p(a, b, name) if metric.binary else welch_p(a, b)
    result = scipy_stats.permutation_test(
        (index_a, index_b), lambda a, b: statistic(a) - statistic(b), permutation_type="independent",
        vectorized=False, n_resamples=n_permutations, alternative="two-sided", random_state=seed,
    )
    return float(result.pvalue)


def fisher_p(a: np.ndarray, b: np.ndarray, name: str = "metric") -> float:
    """Two-sided Fisher's exact test on the 2x2 table (ones, zeros) x (group a, group b)."""
    pooled = np.concatenate([a, b])
    if not np.isin(pooled, (0, 1)).all():
        odd = sorted(set(pooled[~np.isin(pooled, (0, 1))].tolist()))[:5]
        raise ValueError(
            f"metric {name!r} is a binary MeanOutcome (Fisher's exact test) but its per-sample outcome "
            f"holds {odd}; allowed: 0 and 1 (use stats.MEAN for a continuous outcome)"
        )
    table = [[int(a.sum()), int(len(a) - a.sum())], [int(b.sum()), int(len(b) - b.sum())]]
    return float(scipy_stats.fisher_exact(table).pvalue)


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's t-test (unequal variances); NaN when a group has fewer than two samples."""
    if min(len(a), len(b)) < 2:
        return math.nan
    return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


# ---------------------------------------------------------------------------------------------- records


def metric_rows(table: pd.DataFrame) -> pd.DataFrame:
    """A group table as is, or a gap table as group-table rows.

    A gap becomes two rows: group ``"<a>-<b>"`` with metric ``"<metric>_gap"`` (value and interval) and
    metric ``"<metric>_gap_p"`` (value = p-value, no interval); ``n`` counts both groups.
    """
    if set(GAP_COLUMNS) <= set(table.columns):
        rows = []
        for gap in table.to_dict("records"):
            common = {"group": f"{gap['group_a']}{GAP_SEPARATOR}{gap['group_b']}", "n": gap["n_a"] + gap["n_b"]}
            rows.append(common | {"metric": f"{gap['metric']}_gap", "value": gap["value"],
                                  "ci_low": gap["ci_low"], "ci_high": gap["ci_high"]})
            rows.append(common | {"metric": f"{gap['metric']}_gap_p", "value": gap["p_value"],
                                  "ci_low": math.nan, "ci_high": math.nan})
        return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))
    if set(GROUP_COLUMNS) <= set(table.columns):
        return table.loc[:, list(GROUP_COLUMNS)]
    raise ValueError(
        f"table has columns {list(table.columns)}; expected a group table ({', '.join(GROUP_COLUMNS)}) "
        f"or a gap table ({', '.join(GAP_COLUMNS)})"
    )


def record_rows(table: pd.DataFrame, **context: Any) -> list[dict[str, Any]]:
    """Rows of ``reports/<profile>/metrics.csv``: the run's context, then one metric row, keys :data:`RECORD_KEYS`.

    ``context`` must name exactly :data:`CONTEXT_KEYS`; the table is a group or gap table.
    """
    missing = [key for key in CONTEXT_KEYS if key not in context]
    unknown = [key for key in context if key not in CONTEXT_KEYS]
    if missing or unknown:
        raise ValueError(
            f"record_rows context: missing {missing}, unknown {unknown}; allowed keys: {', '.join(CONTEXT_KEYS)}"
        )
    head = {key: context[key] for key in CONTEXT_KEYS}
    return [
        head | {"group": str(row["group"]), "metric": str(row["metric"]), "value": float(row["value"]),
                "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"]), "n": int(row["n"])}
        for row in metric_rows(table).to_dict("records")
    ]
