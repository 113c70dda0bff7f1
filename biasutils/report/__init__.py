"""The study's record: one tidy ``metrics.csv`` per profile and the figures drawn from it.

Each row is (attribute, bias_type, ratio, mitigation, seed, task, group, metric, value, ci_low, ci_high,
n, round), read from the stored evaluation artifacts of every grid point, so this stage is cheap: rendering
only (the cebra-figures layout). γ = 0 rows carry the shared baseline's bias type ``none``; the figures
draw that baseline at the start of every bias type's curve. ``round`` is empty except on the multi-round
study's rows (:func:`biasutils.multiround.record_rows`): there it is the round, and ``seed`` the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..config import CULTURE_TASK, GENDERS, RELATIONS, StudyParams
from ..mix import BASELINE
from ..stats import GAP_SEPARATOR, RECORD_KEYS, record_rows
from ..store import Artifact, Store, write_text_atomic


def grid_points(params: StudyParams) -> list[tuple[str, str, float, int]]:
    """(attribute, bias type, ratio, seed) of every evaluated student: the evaluate stage's points (γ = 0 once)."""
    from ..runner import STAGES, expand

    evaluate = next(stage for stage in STAGES if stage.name == "evaluate")
    return [(r.point["attribute"], r.point["bias_type"], r.point["ratio"], r.point["seed"]) for r in expand(evaluate, params)]


MISALIGNMENT_PREFIX, MULTIROUND_PREFIX = "misalignment_", "multiround_"


RECORD_COLUMNS: tuple[str, ...] = (*RECORD_KEYS, "round")


def collect_metrics(params: StudyParams, store: Store, students: list | None = None) -> pd.DataFrame:
    """The whole record: every evaluation row of every (grid point, task), the inheritance measures per seed,
    pooled over seeds and the primary test, the misalignment rows, then the mitigations' rows (their
    students, probes and tests; :func:`biasutils.mitigate.stored_comparisons`). ``students``: the already
    loaded :func:`inheritance_students`, so a caller that needs them too reads the store once."""
    from ..multiround import record_rows as multiround_rows

    parts = [collect_evaluations(params, store), collect_inheritance(params, store, students),
             collect_misalignment(params, store), collect_mitigations(params, store), multiround_rows(params, store)]
    return pd.concat([part for part in parts if len(part)], ignore_index=True).reindex(columns=list(RECORD_COLUMNS))


def collect_mitigations(params: StudyParams, store: Store) -> pd.DataFrame:
    """The mitigations' record rows; none when no mitigation is chosen."""
    from ..mitigate import mitigated_points, stored_comparisons

    if not mitigated_points(params):
        return pd.DataFrame(columns=list(RECORD_KEYS))
    return stored_comparisons(params, store)[1]


RECORD_STAGE = "record"
RECORD_VERSION = "2"  # 2: the round column


def record_artifact(params: StudyParams, store: Store) -> Artifact:
    """The record computed once into the store: ``metrics.csv`` (:func:`collect_metrics`) and ``size_plan.csv``
    (:func:`size_plan_rows`), keyed by every artifact they read and the inheritance settings.

    Why stored: the inheritance statistics (bootstraps over items and seeds, 9,999 sign flips per test)
    take half a minute on the 2-core CPU; the compute phase runs them, and ``08_report`` renders what is
    stored, like every other notebook.
    """
    from ..evaluate import evaluate_artifact
    from ..misalign import misalign_artifact, stereotype_artifact
    from ..mitigate import comparison_artifact, mitigated_points
    from ..multiround import multiround_artifact

    inputs = [evaluate_artifact(params, attribute, bias_type, ratio, seed, task, store).key
              for attribute, bias_type, ratio, seed in grid_points(params) for task in params.grid.tasks]
    inputs += [misalign_artifact(params, attribute, bias_type, store).key
               for attribute in params.grid.attributes for bias_type in params.grid.bias_types]
    inputs.append(stereotype_artifact(params, store).key)
    if mitigated_points(params):
        inputs.append(comparison_artifact(params, store).key)
    if params.multiround.rounds:
        inputs.append(multiround_artifact(params, store).key)
    key_params = {"grid": params.grid.model_dump(mode="json"), "inheritance": params.inheritance.model_dump(mode="json")}

    def compute(out: Path, scratch: Path) -> None:
        students = inheritance_students(params, store)
        write_text_atomic(out / "metrics.csv", collect_metrics(params, store, students).to_csv(index=False))
        write_text_atomic(out / "size_plan.csv", size_plan_rows(params, students).to_csv(index=False))

    return store.get_or_compute(RECORD_STAGE, key_params, compute, inputs=inputs, version=RECORD_VERSION)


def stored_record(params: StudyParams, store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the record's rows, the size plan as a table of MDEs: rows attribute/measure/test items, columns seeds),
    read from :func:`record_artifact` (computed first on a store miss)."""
    artifact = record_artifact(params, store)
    metrics = pd.read_csv(artifact.file("metrics.csv"), dtype={"seed": str})
    return metrics, pivot_size_plan(pd.read_csv(artifact.file("size_plan.csv")))


def inheritance_students(params: StudyParams, store: Store) -> list:
    """Every evaluated student's stored occupation (and twin) predictions (:class:`inheritance.Student`)."""
    from ..inheritance import TASK, load_student

    if TASK not in params.grid.tasks:
        return []
    return [load_student(params, attribute, bias_type, ratio, seed, store)
            for attribute, bias_type, ratio, seed in grid_points(params)]


def collect_inheritance(params: StudyParams, store: Store, students: list | None = None) -> pd.DataFrame:
    """Inheritance rows: each student's measures (task occupation_classification, its seed), each point's
    measures pooled over seeds (seed ``pooled``) and the primary test per bias type and γ (task
    ``inheritance_test``)."""
    from ..inheritance import POOLED, TASK, available_measures, pooled_rows, primary_tests, student_rows, test_record_rows

    students = inheritance_students(params, store) if students is None else students
    if not students:
        return pd.DataFrame(columns=list(RECORD_KEYS))
    n_boot = params.inheritance.n_boot
    rows: list[dict] = []
    for student in students:
        rows += record_rows(student_rows(student, n_boot, seed=student.seed), attribute=student.attribute,
                            bias_type=student.bias_type, ratio=student.ratio, mitigation="none", seed=student.seed, task=TASK)
    measures = available_measures(students)
    for point in sorted({(s.attribute, s.bias_type, s.ratio) for s in students}):
        mine = [s for s in students if (s.attribute, s.bias_type, s.ratio) == point]
        rows += record_rows(pooled_rows(mine, measures, n_boot), attribute=point[0], bias_type=point[1], ratio=point[2],
                            mitigation="none", seed=POOLED, task=TASK)
    rows += test_record_rows(primary_tests(students, params))
    return pd.DataFrame(rows, columns=list(RECORD_KEYS))


def collect_evaluations(params: StudyParams, store: Store) -> pd.DataFrame:
    """Every metric row of every (grid point, task), with its context columns."""
    from ..evaluate import evaluate_artifact

    rows: list[dict] = []
    for attribute, bias_type, ratio, seed in grid_points(params):
        for task in params.grid.tasks:
            table = pd.read_csv(evaluate_artifact(params, attribute, bias_type, ratio, seed, task, store).file("metrics.csv"))
            rows += record_rows(table, attribute=attribute, bias_type=bias_type, ratio=ratio,
                                mitigation="none", seed=seed, task=task)
    return pd.DataFrame(rows, columns=list(RECORD_KEYS))


def collect_misalignment(params: StudyParams, store: Store) -> pd.DataFrame:
    """The three misalignments of every generated data set (05), and the generator's stereotype agreement
    where its log-probabilities are at hand (a local generator, or a server that offers them)."""
    from ..misalign import misalign_artifact, stereotype_rows

    tables = [pd.read_csv(misalign_artifact(params, attribute, bias_type, store).file("rows.csv"))
              for attribute in params.grid.attributes for bias_type in params.grid.bias_types]
    tables.append(pd.DataFrame(stereotype_rows(params, store), columns=list(RECORD_KEYS)))
    return pd.concat(tables, ignore_index=True).loc[:, list(RECORD_KEYS)]


SKIPPED_FILE = "skipped.txt"


def skipped_analyses(params: StudyParams, store: Store) -> list[str]:
    """One line per analysis the record lacks, saying why: a reader of ``metrics.csv`` learns that rows are
    missing on purpose (the stereotype agreement, when the generator's server offers no log-probabilities)."""
    from ..misalign import stereotype_artifact, stereotype_note, stereotype_status

    stereotypes = stereotype_artifact(params, store)
    return [] if stereotype_status(stereotypes)["scored"] else [stereotype_note(stereotypes)]


def write_record(metrics: pd.DataFrame, out_dir: Path, skipped: Sequence[str] = ()) -> Path:
    """``metrics.csv``, and beside it :data:`SKIPPED_FILE` with the :func:`skipped_analyses` lines when there
    are any (a stale one from an earlier run is removed)."""
    path = Path(out_dir) / "metrics.csv"
    write_text_atomic(path, metrics.to_csv(index=False))
    if skipped:
        write_text_atomic(path.with_name(SKIPPED_FILE), "".join(f"{line}\n" for line in skipped))
    else:
        path.with_name(SKIPPED_FILE).unlink(missing_ok=True)
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


GAP_PALETTE = "tab10"  # one colour per bias type, the same in lines and legend
GAP_COL_WRAP = 4
GAP_TITLE_WIDTH = 38  # characters per title line before wrapping (fits a panel at GAP_TITLE_SIZE)
GAP_TITLE_SIZE = 8


def gap_figure(metrics: pd.DataFrame) -> plt.Figure:
    """Every group gap (female − male and the like) vs γ: one panel per (task, gap, groups), one colour per
    bias type, each curve starting at the shared γ = 0 baseline.

    Panel titles put the task, the metric and the [groups] on separate, wrapped lines. A panel whose every
    value and bound is one number (a hiring gap of exactly 0 throughout) says so ("constant: 0.000 at
    every point") instead of drawing an empty band; its points are still drawn.
    """
    rows = with_baseline_per_bias_type(metrics)
    rows = rows[rows.metric.str.endswith("_gap")]
    if rows.empty:
        return _empty_figure("no gap rows in the record")
    rows = rows.assign(panel=[_gap_panel_title(*key) for key in zip(rows.task, rows.attribute, rows.metric, rows.group, strict=True)])
    return lines_by_ratio(rows, col="panel", hue="bias_type", ylabel="gap", sharey=False)


def lines_by_ratio(rows: pd.DataFrame, col: str, hue: str, ylabel: str, sharey: bool) -> plt.Figure:
    """One panel per ``col`` value, one coloured line per ``hue`` value (mean over seeds, with its interval)
    against γ, a zero line, and a note in every panel whose values are all one number."""
    panels = list(dict.fromkeys(rows[col]))
    hues = list(dict.fromkeys(rows[hue]))
    colours = dict(zip(hues, sns.color_palette(GAP_PALETTE, len(hues)), strict=True))
    grid = sns.FacetGrid(rows, col=col, col_order=panels, col_wrap=min(GAP_COL_WRAP, len(panels)),
                         hue=hue, hue_order=hues, palette=colours, height=2.6, aspect=1.25, sharey=sharey)
    grid.map_dataframe(_line_with_interval)
    for panel, axis in grid.axes_dict.items():
        axis.axhline(0, color="grey", lw=0.5, zorder=0)  # unlabelled: stays out of the legend
        constant = _constant_value(rows[rows[col] == panel])
        if constant is not None:
            axis.text(0.5, 0.92, f"constant: {constant:.3f} at every point", transform=axis.transAxes,
                      ha="center", va="top", fontsize=GAP_TITLE_SIZE, color="dimgrey")
    grid.set_axis_labels("bias ratio γ", ylabel)
    grid.set_titles("{col_name}", size=GAP_TITLE_SIZE)
    handles = {value: plt.Line2D([], [], color=colours[value], marker="o") for value in hues}
    grid.add_legend(legend_data=handles, label_order=hues, title=hue.replace("_", " "))
    grid.tight_layout()  # after the titles and the legend: room for multi-line titles, legend kept outside
    return grid.figure


def _gap_panel_title(task: str, attribute: str, metric: str, group: str) -> str:
    """Task (attribute of the grid point), metric and [group a − group b] on separate lines, each wrapped to
    GAP_TITLE_WIDTH characters: gender and culture points keep separate panels."""
    import textwrap

    groups = f"[{group.replace(GAP_SEPARATOR, ' − ')}]"
    return "\n".join(textwrap.fill(part, GAP_TITLE_WIDTH) for part in (f"{task} ({attribute} points)", metric, groups))


def _constant_value(rows: pd.DataFrame) -> float | None:
    """The one number every value and bound of a panel equals (NaN bounds ignored), or None."""
    values = rows[["value", "ci_low", "ci_high"]].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    if not len(rows) or not np.isfinite(values[:, 0]).all() or not np.all(finite == finite[0]):
        return None
    return float(finite[0])


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
    """One curve (mean over seeds per γ) with its interval band; no band where it has no width (a constant
    curve, or no interval), so nothing empty is drawn."""
    data = data.groupby("ratio", as_index=False)[["value", "ci_low", "ci_high"]].mean().sort_values("ratio")
    plt.plot(data.ratio, data.value, marker="o", markersize=4, color=color, label=label)
    width = (data.ci_high - data.ci_low).to_numpy(dtype=float)
    if np.any(np.isfinite(width) & (width > 0)):
        plt.fill_between(data.ratio, data.ci_low, data.ci_high, color=color, alpha=0.15, linewidth=0)


def plain_students(metrics: pd.DataFrame) -> pd.DataFrame:
    """The record's rows of the main study's plain fine-tunes: what 08 shows (06 shows the mitigated, 07 the
    multi-round ones)."""
    return metrics[(metrics.mitigation == "none") & ~metrics.task.str.startswith(MULTIROUND_PREFIX)]


def save_figures(metrics: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The record's figures of the plain students as PNG files under ``out_dir/figures``."""
    figures = Path(out_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    paths = []
    metrics = plain_students(metrics)
    evaluations = metrics[~metrics.task.str.startswith(MISALIGNMENT_PREFIX)]
    group_gaps = evaluations[evaluations.group.astype(str).str.contains(GAP_SEPARATOR, regex=False)]  # "female-male"
    drawings = (("accuracy_by_gender", accuracy_by_gender_figure, evaluations), ("group_gaps", gap_figure, group_gaps),
                ("misalignment", misalignment_figure, metrics), ("aligned_tpr_gap", aligned_gap_figure, evaluations),
                ("tpr_gap_vs_share", share_figure, evaluations), ("twin_shift", twin_shift_figure, evaluations),
                ("culture_relations", culture_relation_figure, evaluations))
    for name, draw, rows in drawings:
        figure = draw(rows)
        path = figures / f"{name}.png"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def gap_trend(metrics: pd.DataFrame, task: str = "occupation_classification", metric: str = "accuracy_gap") -> pd.DataFrame:
    """The female − male gap per bias type and γ with its interval: the study's central table."""
    metrics = plain_students(metrics)
    rows = with_baseline_per_bias_type(metrics)
    rows = rows[(rows.task == task) & (rows.metric == metric)]
    return rows.pivot_table(index="bias_type", columns="ratio", values="value").round(3)


# ---------------------------------------------------------------------------------------------- inheritance


def pooled(metrics: pd.DataFrame, metric: str, group: str = "all") -> pd.DataFrame:
    """A measure pooled over seeds per (attribute, bias type, γ), the baseline copied under every bias type."""
    from ..inheritance import POOLED

    rows = metrics[(metrics.seed.astype(str) == POOLED) & (metrics.metric == metric) & (metrics.group == group)]
    return with_baseline_per_bias_type(rows)


def _measure_vs_ratio(metrics: pd.DataFrame, metric: str, ylabel: str) -> plt.Figure:
    rows = pooled(metrics, metric)
    if rows.empty:
        return _empty_figure(f"no {metric} rows in the record")
    return lines_by_ratio(rows, col="bias_type", hue="attribute", ylabel=ylabel, sharey=True)


def aligned_gap_figure(metrics: pd.DataFrame) -> plt.Figure:
    """The stereotype-aligned TPR gap vs γ per bias type, pooled over seeds (seed-and-item interval)."""
    return _measure_vs_ratio(metrics, "aligned_tpr_gap", "aligned TPR gap")


def twin_shift_figure(metrics: pd.DataFrame) -> plt.Figure:
    """The counterfactual twins' stereotype shift (log-odds) vs γ per bias type, pooled over seeds."""
    return _measure_vs_ratio(metrics, "twin_shift", "twin shift (log-odds)")


def share_figure(metrics: pd.DataFrame) -> plt.Figure:
    """Per occupation and student: the aligned TPR gap against the favoured group's share of the training mix."""
    from ..inheritance import POOLED

    per_seed = metrics[metrics.seed.astype(str) != POOLED]
    keys = ["attribute", "bias_type", "ratio", "seed", "group"]
    gaps = per_seed[(per_seed.metric == "aligned_tpr_gap") & (per_seed.group != "all")].set_index(keys).value
    shares = per_seed[per_seed.metric == "training_share_favoured"].set_index(keys).value
    rows = pd.concat({"gap": gaps, "share": shares}, axis=1).dropna().reset_index()
    if rows.empty:
        return _empty_figure("no per-occupation gap rows in the record")
    attributes = sorted(rows.attribute.unique())
    figure, axes = plt.subplots(1, len(attributes), figsize=(4.6 * len(attributes), 3.8), squeeze=False)
    for axis, attribute in zip(axes[0], attributes):
        mine = rows[rows.attribute == attribute]
        sns.scatterplot(data=mine, x="share", y="gap", hue="group", style="ratio", ax=axis, s=30)
        r = mine[["share", "gap"]].corr().iloc[0, 1] if mine.share.nunique() > 1 else float("nan")
        axis.axhline(0, color="grey", lw=0.5)
        axis.set_title(f"{attribute}: Pearson r = {r:.2f} over {len(mine)} (student, occupation)", fontsize=9)
        axis.set_xlabel("favoured group's share of the occupation's training rows")
        axis.set_ylabel("aligned TPR gap")
        axis.legend(fontsize=6, loc="best")
    figure.tight_layout()
    return figure


def culture_figure(per_culture: pd.DataFrame) -> plt.Figure:
    """One evaluation's macro-F1 per culture classification dataset and per culture within it, with its
    interval, coloured by the dataset's relation to the bias (:func:`biasutils.tasks.culture.per_culture`)."""
    labels = [f"{d} · {c}" for d, c in zip(per_culture.dataset, per_culture.culture, strict=True)]
    colours = dict(zip(RELATIONS, sns.color_palette(GAP_PALETTE, len(RELATIONS)), strict=True))
    figure, axis = plt.subplots(figsize=(5.5, 0.3 * len(labels) + 1.2))
    for k, row in enumerate(per_culture.itertuples()):
        axis.errorbar(row.macro_f1, k, xerr=[[row.macro_f1 - row.ci_low], [row.ci_high - row.macro_f1]],
                      fmt="o", color=colours[row.relation], capsize=2)
    axis.set_yticks(range(len(labels)), labels)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("macro-F1")
    axis.legend(handles=[plt.Line2D([], [], color=c, marker="o", ls="none") for c in colours.values()],
                labels=list(colours), title="relation", fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


def culture_relation_figure(metrics: pd.DataFrame) -> plt.Figure:
    """Mean macro-F1 of the datasets directly and indirectly related to the bias vs γ, one panel per attribute
    and bias type: the paper's culture classification result (the contrast and its p are in the record)."""
    rows = with_baseline_per_bias_type(metrics)
    rows = rows[(rows.task == CULTURE_TASK) & (rows.metric == "mean_macro_f1")]
    if rows.empty:
        return _empty_figure(f"no {CULTURE_TASK} rows: the task is not in this profile's grid")
    rows = rows.assign(panel=rows.attribute + " points · " + rows.bias_type, relation=rows.group)
    return lines_by_ratio(rows, col="panel", hue="relation", ylabel="mean macro-F1", sharey=True)


def _empty_figure(message: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(4, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center")
    return figure


def primary_test_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The declared primary test and the other measures per attribute, bias type and γ: difference to the
    baseline with its interval, p, Holm-adjusted p and the minimum detectable effect."""
    from ..inheritance import TEST_TASK

    rows = metrics[metrics.task == TEST_TASK]
    if rows.empty:
        return rows
    rows = rows.assign(measure=rows.metric.str.extract(r"^(.*)_diff")[0],
                       field=rows.metric.str.extract(r"_diff_?(.*)$")[0].replace("", "value"))
    table = rows.pivot_table(index=["attribute", "measure", "ratio", "bias_type"], columns="field", values="value")
    intervals = rows[rows.field == "value"].set_index(["attribute", "measure", "ratio", "bias_type"])[["ci_low", "ci_high"]]
    table = table.join(intervals)
    return table.loc[:, ["value", "ci_low", "ci_high", "p", "p_holm", "p_wald_holm", "mde", "n_seeds"]].rename(
        columns={"value": "difference"})


PAPER_MOST_HARMFUL: tuple[str, ...] = ("contrastive-explicit", "contextual-implicit")  # the paper's finding
MINORITY_GROUP = {"gender": "female"}  # the paper's minority group per attribute (culture: none named)


def finding(metrics: pd.DataFrame, params: StudyParams) -> str:
    """The primary test's result per attribute, bias type and γ in words, and which of the paper's
    directions the run reproduces: what the README and the report state, generated from the record."""
    table = primary_test_table(metrics)
    primary = params.inheritance.primary
    if table.empty:
        return "No inheritance test in the record (occupation classification was not evaluated)."
    lines = [f"Primary test (declared in params before the run): **{primary.measure}**, each bias type at each γ "
             f"against γ = 0, paired over items and seeds, two-sided sign-flip permutation test, Holm over the "
             f"bias types, α = {primary.alpha}; MDE at {primary.power:.0%} power.", ""]
    for (attribute, measure), rows in table.groupby(level=["attribute", "measure"]):
        if measure != primary.measure:
            continue
        for (_, _, ratio, bias_type), row in rows.iterrows():
            verdict = "**inherited**" if row.p_holm < primary.alpha else "not detected"
            if (row.p_holm < primary.alpha) != (row.p_wald_holm < primary.alpha):
                verdict += (f" by the declared test, which holds the items' variation given these seeds; with the "
                            f"between-seed spread in the error (Wald, Holm p = {row.p_wald_holm:.3g}) it is "
                            f"{'not ' if row.p_wald_holm >= primary.alpha else ''}significant")
            lines.append(f"- {attribute}, {bias_type}, γ = {ratio:g}: {row.difference:+.3f} "
                         f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}], Holm p = {row.p_holm:.3g}, "
                         f"MDE {row.mde:.3f}, {int(row.n_seeds)} seed(s): {verdict}")
        lines += ["", most_harmful_sentence(rows.droplevel(["attribute", "measure"]), attribute)]
    lines += ["", *minority_accuracy_sentences(metrics)]
    return "\n".join(lines)


def most_harmful_sentence(rows: pd.DataFrame, attribute: str) -> str:
    """Whether the paper's two most harmful types lead the ranking of the primary difference at the largest γ."""
    largest = rows.xs(rows.index.get_level_values("ratio").max(), level="ratio")
    ranking = largest.difference.sort_values(ascending=False)
    present = [t for t in PAPER_MOST_HARMFUL if t in ranking.index]
    if len(present) < 2:
        return f"{attribute}: the grid lacks {', '.join(set(PAPER_MOST_HARMFUL) - set(present))}, so the paper's ranking cannot be checked."
    top = list(ranking.index[:2])
    agrees = set(top) == set(PAPER_MOST_HARMFUL)
    biased = [t for t in ranking.index if t != "neutral"]
    caveat = ("" if len(biased) > 2 else " (the grid holds no other biased type, so this only says they exceed the "
              "neutral control; ranking them among all six needs --set grid.bias_types=[...])")
    return (f"{attribute}: ranking at γ = {rows.index.get_level_values('ratio').max():g} by the primary "
            f"difference: {', '.join(f'{t} {v:+.3f}' for t, v in ranking.items())}. The paper's two most harmful types "
            f"({' and '.join(PAPER_MOST_HARMFUL)}) {'are' if agrees else 'are not'} the top two here{caveat}.")


def minority_accuracy_sentences(metrics: pd.DataFrame) -> list[str]:
    """The paper's direction "the minority group's accuracy falls as γ grows" (and the majority's rises), per
    attribute with a named minority, from the occupation accuracy per group averaged over seeds."""
    lines = []
    rows = plain_students(metrics)
    rows = rows[(rows.task == "occupation_classification") & (rows.metric == "accuracy")]
    for attribute, minority in MINORITY_GROUP.items():
        mine = rows[(rows.attribute == attribute) & (rows.group.isin(GENDERS))]
        if mine.empty:
            continue
        top = mine.ratio.max()
        mine = mine[mine.ratio.isin([0.0, top])]  # γ = top against the baseline, not averaged over the γ between
        means = mine.groupby(["bias_type", "group"]).value.mean()
        changes = {(bias_type, group): means[(bias_type, group)] - means[(BASELINE, group)]
                   for bias_type, group in means.index if bias_type != BASELINE}
        falls = [b for (b, g), change in changes.items() if g == minority and change < 0]
        listed = "; ".join(f"{b}: {g} {change:+.3f}" for (b, g), change in sorted(changes.items()))
        lines.append(f"{attribute}: accuracy at γ = {top:g} minus γ = 0, mean over seeds ({listed}). The {minority} "
                     f"accuracy falls for {len(falls)} of {len(changes) // 2} bias types (the paper: it falls while "
                     f"the majority's rises). The mix adds augmented rows to a fixed D_o, so accuracy also moves "
                     f"with the training size (mix.hold_total_size holds it).")
    return lines


def size_plan_rows(params: StudyParams, students: list, item_factors: tuple[int, ...] = (1, 2, 4, 8),
                   seed_counts: tuple[int, ...] = (3, 5, 10)) -> pd.DataFrame:
    """Minimum detectable effects of each measure at larger designs, from the variance this run measured.

    Per attribute and measure, the squared standard error of the biased points at the largest γ (mean over
    bias types) is split into its item and seed parts (:func:`inheritance.variance_parts`) and rescaled to
    ``factor`` x the test items and to other seed counts, at the declared α (Holm's strictest step over the
    bias types) and power: what a user must pay for a smaller MDE. Tidy rows: attribute, measure,
    test_items, seeds, mde.
    """
    from ..inheritance import available_measures, planned_mde, variance_parts

    primary, n_boot = params.inheritance.primary, params.inheritance.n_boot
    rows = []
    for attribute in params.grid.attributes:
        mine = [s for s in students if s.attribute == attribute]
        if not mine:
            continue
        baselines = [s for s in mine if s.bias_type == BASELINE]
        top = max(s.ratio for s in mine)
        points = sorted({s.bias_type for s in mine if s.ratio == top and s.bias_type != BASELINE})
        if not (baselines and points):
            continue
        for measure in available_measures(mine):
            parts = np.mean([variance_parts([s for s in mine if (s.bias_type, s.ratio) == (b, top)], baselines, measure, n_boot)
                             for b in points], axis=0)
            n_items = len(baselines[0].pair_ids(measure))
            for factor in item_factors:
                for seeds in seed_counts:
                    rows.append({"attribute": attribute, "measure": measure, "test_items": n_items * factor, "seeds": seeds,
                                 "mde": planned_mde(*parts, n_items, len(params.grid.seeds), n_items * factor, seeds,
                                                    primary.alpha, primary.power, len(points))})
    return pd.DataFrame(rows, columns=["attribute", "measure", "test_items", "seeds", "mde"])


def pivot_size_plan(rows: pd.DataFrame) -> pd.DataFrame:
    """The size plan as a table: rows (attribute, measure, test items), one column per seed count."""
    if rows.empty:
        return pd.DataFrame(columns=["attribute", "measure", "test_items"]).set_index(["attribute", "measure", "test_items"])
    return rows.pivot_table(index=["attribute", "measure", "test_items"], columns="seeds", values="mde")
