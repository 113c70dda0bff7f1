"""What notebook 06 shows, drawn from the stored comparison: the paired differences per mitigation, the
misalignment each mitigation targets before and after, the masked cues, and the finding in words.

Apart so that the measures never draw: the package's mitigation module that uses matplotlib and seaborn.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..config import StudyParams
from ..store import Store, read_jsonl
from .compare import OVERALL, PROBE_TASK
from .students import NONE, mitigated_mix, mitigated_points

# Each mitigation's target (the and the paper's pairing) and the probe metric that measures it.
TARGETS: dict[str, tuple[str, str]] = {
    "token": ("value misalignment: the student's agreement with gender stereotypes", "stereotype_yes_log_odds"),
    "mask": ("surface cues: group cues per augmented training row", "cues_per_augmented_row"),
    "loss": ("distribution misalignment: the student's original vs augmented representations", "representation_mean_distance"),
}
# The paper's p-values per mitigation (its abstract and section 5; pooled over its grid).
PAPER_P: dict[str, float] = {"loss": 0.0215, "token": 0.0359, "mask": 0.0485}
MEASURE_LABELS = {"twin_shift": "twin stereotype shift\n(mitigated − none; < 0 helps)",
                  "accuracy": "accuracy\n(mitigated − none; < 0 costs)"}


def difference_figure(comparisons: pd.DataFrame, measures: list[str]) -> plt.Figure:
    """One row of panels per measure, one column per attribute: each mitigation's paired difference to the
    plain student per bias type (points) with its 95 % interval (bars); the ``overall`` column pools every
    point. Filled markers: Holm-significant at the declared α."""
    attributes = list(dict.fromkeys(comparisons.attribute))
    mitigations = sorted(set(comparisons.mitigation))
    colours = dict(zip(mitigations, sns.color_palette("colorblind", len(mitigations)), strict=True))
    figure, axes = plt.subplots(len(measures), len(attributes), figsize=(3.6 * len(attributes), 2.8 * len(measures)),
                                squeeze=False, sharey="row")
    for row, measure in enumerate(measures):
        for column, attribute in enumerate(attributes):
            axis, mine = axes[row, column], comparisons[(comparisons.measure == measure) & (comparisons.attribute == attribute)]
            labels = list(dict.fromkeys(_point_label(r) for r in mine.to_dict("records")))
            for k, mitigation in enumerate(mitigations):
                part = mine[mine.mitigation == mitigation]
                x = np.array([labels.index(_point_label(r)) for r in part.to_dict("records")]) + (k - (len(mitigations) - 1) / 2) * 0.2
                axis.errorbar(x, part.difference, yerr=[part.difference - part.ci_low, part.ci_high - part.difference],
                              fmt="none", ecolor=colours[mitigation], capsize=2)
                for xi, (_, r) in zip(x, part.iterrows()):
                    axis.plot(xi, r.difference, "o", color=colours[mitigation],
                              markerfacecolor=colours[mitigation] if r.significant else "white",
                              label=mitigation if xi == x[0] else None)
            axis.axhline(0, color="grey", lw=0.6)
            axis.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
            axis.set_title(attribute if row == 0 else "", fontsize=9)
            if column == 0:
                axis.set_ylabel(MEASURE_LABELS.get(measure, measure), fontsize=8)
    axes[0, -1].legend(title="mitigation", fontsize=7, title_fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def _point_label(row: dict[str, Any]) -> str:
    return "all points" if row["bias_type"] == OVERALL else f"{row['bias_type']}\nγ={row['ratio']:g}"


def save_difference_figure(comparisons: pd.DataFrame, measures: list[str], reports_dir: Path) -> Path:
    """:func:`difference_figure` as ``figures/mitigation.png`` beside the record."""
    path = Path(reports_dir) / "figures" / "mitigation.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = difference_figure(comparisons, measures)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def comparison_view(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparison table as the notebook prints it: per point, mitigation and measure, the difference with
    its interval, p (sign flips), Holm p, Wald p (uncorrected and Holm), MDE and the verdict."""
    columns = ["plain", "mitigated", "difference", "ci_low", "ci_high", "p_value", "p_holm", "p_wald", "p_wald_holm", "mde",
               "verdict"]
    view = comparisons.set_index(["attribute", "bias_type", "ratio", "mitigation", "measure"])
    return view.loc[:, [c for c in columns if c in view]].round(4)


def overall_against_paper(comparisons: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Per mitigation, the pooled difference of ``measure`` over every mitigated point with its interval and
    p-values, beside the paper's p-value for the same mitigation."""
    rows = comparisons[(comparisons.bias_type == OVERALL) & (comparisons.measure == measure)].set_index("mitigation")
    rows = rows.loc[:, ["difference", "ci_low", "ci_high", "p_value", "p_holm", "n_points", "verdict"]]
    return rows.assign(paper_p=[PAPER_P.get(m, math.nan) for m in rows.index]).round(4)


def probe_view(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One probe metric (task ``mitigation_probe``) per point and mitigation, the mean over seeds with the seeds'
    range: the misalignment before (``none``) and after each mitigation."""
    mine = rows[(rows.task == PROBE_TASK) & (rows.metric == metric) & (rows.group == "all")]
    table = mine.groupby(["attribute", "bias_type", "ratio", "mitigation"]).value.agg(["mean", "min", "max", "count"])
    return table.rename(columns={"count": "seeds"}).round(4)


def targets_view(rows: pd.DataFrame) -> pd.DataFrame:
    """For each mitigation, its target's probe metric before (the plain student or mix) and after, averaged
    over every point and seed, and the change."""
    out = []
    for mitigation, (target, metric) in TARGETS.items():
        mine = rows[(rows.task == PROBE_TASK) & (rows.metric == metric) & (rows.group == "all")]
        before, after = mine[mine.mitigation == NONE].value, mine[mine.mitigation == mitigation].value
        if len(after):
            out.append({"mitigation": mitigation, "target": target, "metric": metric, "before": before.mean(),
                        "after": after.mean(), "change": after.mean() - before.mean(), "students": len(after)})
    return pd.DataFrame(out).set_index("mitigation").round(4) if out else pd.DataFrame()


def mask_examples(params: StudyParams, store: Store, n: int = 3) -> pd.DataFrame:
    """The first ``n`` augmented rows of the first mitigated point, before and after masking, with the cues
    masked in each."""
    import json

    from ..mix import mix_artifact

    point = next(p for p in mitigated_points(params) if p["mitigation"] == "mask")
    where = (point["attribute"], point["bias_type"], point["ratio"], point["seed"])
    before = [r for r in read_jsonl(mix_artifact(params, *where, store).file("train.jsonl")) if r.get("source") == "augmented"]
    masked = mitigated_mix(params, *where, "mask", store)
    after = read_jsonl(masked.file("augmented.jsonl"))
    counts = json.loads(masked.file("changes.json").read_text())["masked_per_row"]
    return pd.DataFrame({"before": [r["hard_text"] for r in before[:n]], "after": [r["hard_text"] for r in after[:n]],
                         "cues masked": counts[:n]})


def masked_counts(params: StudyParams, store: Store) -> pd.DataFrame:
    """Cues masked per augmented row, every mask-mitigated mix: attribute, bias type, γ, seed, count."""
    import json

    rows = []
    for p in mitigated_points(params):
        if p["mitigation"] != "mask":
            continue
        changes = json.loads(mitigated_mix(params, p["attribute"], p["bias_type"], p["ratio"], p["seed"], "mask", store)
                             .file("changes.json").read_text())
        rows += [{**{k: p[k] for k in ("attribute", "bias_type", "ratio", "seed")}, "cues masked": c} for c in changes["masked_per_row"]]
    return pd.DataFrame(rows)


def masked_counts_figure(counts: pd.DataFrame) -> plt.Figure:
    """Histogram of the cues masked per augmented row, one panel per attribute, one colour per bias type."""
    grid = sns.displot(counts, x="cues masked", hue="bias_type", col="attribute", discrete=True, multiple="dodge",
                       shrink=0.8, height=2.8, aspect=1.3)
    grid.set_axis_labels("cues masked in a row", "augmented rows (all seeds)")
    return grid.figure


def _stated(row: dict[str, Any], alpha: float) -> str:
    """A difference with its interval, Holm p of the declared test and of the Wald test, and the verdict;
    where the two disagree, which one says what (the sign-flip test holds the items' variation given
    these seeds, the Wald test the between-seed spread too)."""
    text = (f"{row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], Holm p = {row['p_holm']:.3g} "
            f"(Wald, Holm p = {row['p_wald_holm']:.3g}): {row['verdict']}")
    if (row["p_holm"] < alpha) != (row["p_wald_holm"] < alpha):
        text += " by the declared sign-flip test; with the between-seed spread in the error (Wald) it is " + (
            "significant" if row["p_wald_holm"] < alpha else "not")
    return text


def finding(comparisons: pd.DataFrame, params: StudyParams) -> str:
    """The declared mitigation test per point and pooled, in words, set beside the paper's claims."""
    test = params.mitigate.primary
    if comparisons.empty:
        return "No mitigation was run (grid.mitigations holds only none)."
    lines = [f"Declared before the run (params `mitigate.primary`): **{test.measure}**, each mitigation against the "
             f"plain fine-tune at the same point, paired over test items and seeds, two-sided sign-flip test, Holm "
             f"over bias types × mitigations per attribute and γ, α = {test.alpha}; MDE at {test.power:.0%} power.", ""]
    primary = comparisons[comparisons.measure == test.measure]
    accuracy = comparisons[comparisons.measure == "accuracy"].set_index(["attribute", "bias_type", "ratio", "mitigation"])
    for row in primary[primary.bias_type != OVERALL].to_dict("records"):
        key = (row["attribute"], row["bias_type"], row["ratio"], row["mitigation"])
        cost = accuracy.loc[key].to_dict() if key in accuracy.index else None
        lines.append(f"- {row['attribute']}, {row['bias_type']}, γ = {row['ratio']:g}, **{row['mitigation']}**: "
                     f"{row['plain']:+.3f} → {row['mitigated']:+.3f}, difference {_stated(row, test.alpha)}, MDE {row['mde']:.3f}"
                     + (f"; accuracy {_stated(cost, test.alpha)}" if cost is not None else ""))
    lines.append("")
    for row in primary[primary.bias_type == OVERALL].sort_values("difference").to_dict("records"):
        paper = PAPER_P.get(row["mitigation"])
        lines.append(f"- pooled over {int(row['n_points'])} points, **{row['mitigation']}**: {row['difference']:+.3f} "
                     f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], p = {row['p_value']:.3g} (Holm over the mitigations "
                     f"{row['p_holm']:.3g}): {row['verdict']}" + (f"; the paper: p = {paper}" if paper else ""))
    works = sorted(primary[(primary.bias_type != OVERALL) & (primary.verdict == "reduces")].mitigation.unique())
    everywhere = [m for m in works if (primary[(primary.bias_type != OVERALL) & (primary.mitigation == m)].verdict == "reduces").all()]
    lines += ["", "The paper: loss-based the most robust overall (p = 0.0215), token p = 0.0359, mask p = 0.0485, and none "
              f"works everywhere. Here: {', '.join(works) or 'no mitigation'} reduce{'s' if len(works) == 1 else ''} the "
              f"primary measure at some point; {', '.join(everywhere) or 'none'} at every point."]
    return "\n".join(lines)
