"""The study's record: one tidy ``metrics.csv`` per profile and the figures drawn from it.

Each row is (attribute, bias_type, ratio, mitigation, seed, task, group, metric, value, ci_low, ci_high,
n), read from the stored evaluation artifacts of every grid point, so this stage is cheap: rendering
only (the cebra-figures layout). γ = 0 rows carry the shared baseline's bias type ``none``; the figures
draw that baseline at the start of every bias type's curve.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .config import StudyParams
from .mix import BASELINE
from .stats import RECORD_KEYS, record_rows
from .store import Store, write_text_atomic


def grid_points(params: StudyParams) -> list[tuple[str, str, float, int]]:
    """(attribute, bias type, ratio, seed) of every evaluated student: the evaluate stage's points (γ = 0 once)."""
    from .runner import STAGES, expand

    evaluate = next(stage for stage in STAGES if stage.name == "evaluate")
    return [(r.point["attribute"], r.point["bias_type"], r.point["ratio"], r.point["seed"]) for r in expand(evaluate, params)]


MISALIGNMENT_PREFIX = "misalignment_"


def collect_metrics(params: StudyParams, store: Store) -> pd.DataFrame:
    """The whole record: every evaluation row of every (grid point, task), then the misalignment rows."""
    return pd.concat([collect_evaluations(params, store), collect_misalignment(params, store)], ignore_index=True)


def collect_evaluations(params: StudyParams, store: Store) -> pd.DataFrame:
    """Every metric row of every (grid point, task), with its context columns."""
    from .evaluate import evaluate_artifact

    rows: list[dict] = []
    for attribute, bias_type, ratio, seed in grid_points(params):
        for task in params.grid.tasks:
            table = pd.read_csv(evaluate_artifact(params, attribute, bias_type, ratio, seed, task, store).file("metrics.csv"))
            rows += record_rows(table, attribute=attribute, bias_type=bias_type, ratio=ratio,
                                mitigation="none", seed=seed, task=task)
    return pd.DataFrame(rows, columns=list(RECORD_KEYS))


def collect_misalignment(params: StudyParams, store: Store) -> pd.DataFrame:
    """The three misalignments of every generated data set (05), and the generator's stereotype agreement
    where its log-probabilities are at hand (a local generator)."""
    from .misalign import misalign_artifact, stereotype_rows

    tables = [pd.read_csv(misalign_artifact(params, attribute, bias_type, store).file("rows.csv"))
              for attribute in params.grid.attributes for bias_type in params.grid.bias_types]
    if params.generate.backend == "transformers":
        tables.append(pd.DataFrame(stereotype_rows(params, store), columns=list(RECORD_KEYS)))
    return pd.concat(tables, ignore_index=True).loc[:, list(RECORD_KEYS)]


def write_record(metrics: pd.DataFrame, out_dir: Path) -> Path:
    path = Path(out_dir) / "metrics.csv"
    write_text_atomic(path, metrics.to_csv(index=False))
    return path


def with_baseline_per_bias_type(metrics: pd.DataFrame) -> pd.DataFrame:
    """Copy the γ = 0 baseline rows under every bias type, so each curve starts at γ = 0."""
    baseline = metrics[metrics.bias_type == BASELINE]
    biased = metrics[metrics.bias_type != BASELINE]
    copies = [baseline.assign(bias_type=b) for b in biased.bias_type.unique()]
    return pd.concat([biased, *copies], ignore_index=True)


def accuracy_by_gender_figure(metrics: pd.DataFrame) -> plt.Figure:
    """Occupation-classification accuracy of male and female biographies vs γ, one panel per bias type."""
    rows = with_baseline_per_bias_type(metrics)
    rows = rows[(rows.task == "occupation_classification") & (rows.metric == "accuracy") & rows.group.isin(["male", "female"])]
    grid = sns.FacetGrid(rows, col="bias_type", col_wrap=4, hue="group", height=2.6, sharey=True)
    grid.map_dataframe(_line_with_interval)
    grid.add_legend(title="gender")
    grid.set_axis_labels("bias ratio γ", "accuracy")
    grid.set_titles("{col_name}")
    return grid.figure


def gap_figure(metrics: pd.DataFrame) -> plt.Figure:
    """Every group gap (female − male and the like) vs γ: one row per task, one colour per bias type."""
    rows = with_baseline_per_bias_type(metrics)
    rows = rows[rows.metric.str.endswith("_gap")]
    rows = rows.assign(panel=rows.task + "\n" + rows.metric + " (" + rows.group + ")")
    grid = sns.FacetGrid(rows, col="panel", col_wrap=4, hue="bias_type", height=2.6, sharey=False)
    grid.map_dataframe(_line_with_interval)
    grid.map(plt.axhline, y=0, color="grey", lw=0.5)
    grid.add_legend(title="bias type")
    grid.set_axis_labels("bias ratio γ", "gap")
    grid.set_titles("{col_name}", size=7)
    return grid.figure


MISALIGNMENT_PANELS: tuple[tuple[str, str, str], ...] = (
    ("misalignment_values", "js_distance_perceived", "value: JS distance to perceived share of women"),
    ("misalignment_group", "share_female", "group data: share of women (all occupations)"),
    ("misalignment_distribution", "c2st_auc", "distribution: classifier AUC, original vs augmented"),
)


def misalignment_figure(metrics: pd.DataFrame) -> plt.Figure:
    """The three misalignments per bias type (pooled over occupations), each with its 95% interval."""
    figure, axes = plt.subplots(1, len(MISALIGNMENT_PANELS), figsize=(4.2 * len(MISALIGNMENT_PANELS), 3.4), sharey=True)
    for axis, (task, metric, title) in zip(axes, MISALIGNMENT_PANELS):
        rows = metrics[(metrics.task == task) & (metrics.metric == metric) & (metrics.group == "all")]
        rows = rows.groupby("bias_type", as_index=False)[["value", "ci_low", "ci_high"]].mean()
        axis.errorbar(rows.value, rows.bias_type, xerr=[rows.value - rows.ci_low, rows.ci_high - rows.value], fmt="o", capsize=3)
        axis.set_title(title, fontsize=9)
    return figure


def _line_with_interval(data: pd.DataFrame, color: str, label: str, **kwargs) -> None:
    data = data.groupby("ratio", as_index=False)[["value", "ci_low", "ci_high"]].mean().sort_values("ratio")
    plt.plot(data.ratio, data.value, marker="o", color=color, label=label)
    plt.fill_between(data.ratio, data.ci_low, data.ci_high, color=color, alpha=0.15)


def save_figures(metrics: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The record's figures as PNG files under ``out_dir/figures``."""
    figures = Path(out_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    paths = []
    evaluations = metrics[~metrics.task.str.startswith(MISALIGNMENT_PREFIX)]
    drawings = (("accuracy_by_gender", accuracy_by_gender_figure, evaluations), ("group_gaps", gap_figure, evaluations),
                ("misalignment", misalignment_figure, metrics))
    for name, draw, rows in drawings:
        figure = draw(rows)
        path = figures / f"{name}.png"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def gap_trend(metrics: pd.DataFrame, task: str = "occupation_classification", metric: str = "accuracy_gap") -> pd.DataFrame:
    """The female − male gap per bias type and γ with its interval: the study's central table."""
    rows = with_baseline_per_bias_type(metrics)
    rows = rows[(rows.task == task) & (rows.metric == metric)]
    return rows.pivot_table(index="bias_type", columns="ratio", values="value").round(3)
