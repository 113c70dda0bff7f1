"""Each mitigation against the plain student: paired differences, tests, and the record's rows.

A mitigated student and the plain (``none``) student of the same point and seed were trained on the same
mix and scored on the same test items, so each comparison is paired over seeds and items
(:func:`biasutils.inheritance.compare_to_baseline`, the inheritance test's machinery with the plain
student as the baseline). Measures: the primary test's (``mitigate.primary.measure``, declared before
any result), the counterfactual twins' stereotype shift, and overall accuracy (the cost in utility).
Holm's correction runs per (attribute, γ, measure) over the point's bias types x mitigations; the
``overall`` row per mitigation pools every mitigated point (the paper's per-mitigation claim).

Signs: the stereotype shift and the aligned gaps are signed by the stereotype, so a mitigation that
helps has a *negative* difference; for accuracy a negative difference is a cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import StudyParams
from ..stats import RECORD_KEYS, record_rows
from ..store import Artifact, Store, read_jsonl, write_text_atomic
from .students import NONE, mitigated_evaluation, mitigated_mix, mitigated_points, mitigated_tasks, probe_artifact
from .transforms import cue_counts

STAGE = "mitigation-comparison"
VERSION = "2"  # 2: p_wald_holm
TEST_TASK = "mitigation_test"
PROBE_TASK = "mitigation_probe"
OVERALL = "overall"  # the bias type and γ label of the tests pooled over every mitigated point


def compared_measures(params: StudyParams) -> list[str]:
    """The primary measure first, then the twins' shift (when twins are scored) and accuracy."""
    from ..inheritance import ACCURACY, TWIN_TASK

    wanted = [params.mitigate.primary.measure, *(["twin_shift"] if TWIN_TASK in mitigated_tasks(params) else []), ACCURACY]
    return list(dict.fromkeys(wanted))


def mitigation_students(params: StudyParams, store: Store) -> list[Any]:
    """Every student notebook 06 compares (:func:`biasutils.mitigate.mitigated_points`), loaded."""
    from ..inheritance import load_student

    return [load_student(params, p["attribute"], p["bias_type"], p["ratio"], p["seed"], store, p["mitigation"])
            for p in mitigated_points(params)]


def _groups(students: Sequence[Any]) -> dict[tuple[str, str, float], dict[str, list[Any]]]:
    """(attribute, bias type, γ) -> mitigation -> its students, seeds in grid order."""
    out: dict[tuple[str, str, float], dict[str, list[Any]]] = {}
    for student in students:
        out.setdefault((student.attribute, student.bias_type, student.ratio), {}).setdefault(student.mitigation, []).append(student)
    return out


def comparison_table(students: Sequence[Any], params: StudyParams) -> pd.DataFrame:
    """One row per (attribute, bias type, γ, mitigation, measure): the paired difference mitigated − none
    with its seed-and-item bootstrap interval, the sign-flip p (Holm-corrected), the Wald p, the minimum
    detectable effect at the declared power, and the plain and mitigated students' pooled values; then the
    ``overall`` rows per mitigation and measure."""
    from ..inheritance import compare_to_baseline, holm, minimum_detectable_effect, stacked_terms

    test, settings = params.mitigate.primary, params.inheritance
    rows = []
    for (attribute, bias_type, ratio), by_mitigation in _groups(students).items():
        plain = by_mitigation.get(NONE, [])
        for mitigation, mine in by_mitigation.items():
            if mitigation == NONE:
                continue
            for measure in compared_measures(params):
                c = compare_to_baseline(mine, plain, measure, settings.n_boot, settings.n_permutations)
                rows.append({"attribute": attribute, "bias_type": bias_type, "ratio": ratio, "mitigation": mitigation,
                             "measure": measure, "difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high,
                             "standard_error": c.standard_error, "p_value": c.p_value, "p_wald": c.p_wald,
                             "n_items": c.n_items, "n_seeds": c.n_seeds,
                             "plain": stacked_terms(plain, measure)[0].mean(axis=0).sum(),
                             "mitigated": stacked_terms(mine, measure)[0].mean(axis=0).sum()})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    family = frame.groupby(["attribute", "ratio", "measure"])
    frame["p_holm"] = family["p_value"].transform(lambda p: pd.Series(holm(p.to_numpy()), index=p.index))
    frame["p_wald_holm"] = family["p_wald"].transform(lambda p: pd.Series(holm(p.to_numpy()), index=p.index))
    frame["tests"] = family["p_value"].transform("size")
    frame["mde"] = [minimum_detectable_effect(se, test.alpha, test.power, k) for se, k in zip(frame.standard_error, frame.tests)]
    frame["primary"] = frame["measure"] == test.measure
    frame = pd.concat([frame, overall_table(students, params)], ignore_index=True)
    frame["significant"] = frame["p_holm"] < test.alpha
    frame["verdict"] = [verdict(row, test.alpha) for row in frame.to_dict("records")]
    return frame


def overall_table(students: Sequence[Any], params: StudyParams) -> pd.DataFrame:
    """Per mitigation and measure, the mean over every mitigated point of its paired difference, with the
    interval of that mean (each point's seed-and-item bootstrap, averaged draw by draw) and one sign-flip
    test over all points' items; Holm over the mitigations."""
    from ..inheritance import bootstrap_totals, holm, paired_differences, sign_flip_p
    from ..stats import percentile_interval

    settings, rows = params.inheritance, []
    groups = _groups(students)
    mitigations = sorted({m for by in groups.values() for m in by if m != NONE})
    for measure in compared_measures(params):
        for mitigation in mitigations:
            per_point = [paired_differences(by[mitigation], by[NONE], measure) for by in groups.values() if mitigation in by]
            totals = np.mean([bootstrap_totals(d, cells, settings.n_boot, 0) for d, cells in per_point], axis=0)
            flat = np.concatenate([d.mean(axis=0) for d, _ in per_point])
            difference = float(np.mean([d.mean(axis=0).sum() for d, _ in per_point]))
            rows.append({"attribute": OVERALL, "bias_type": OVERALL, "ratio": math.nan, "mitigation": mitigation,
                         "measure": measure, "difference": difference, **dict(zip(("ci_low", "ci_high"), percentile_interval(totals))),
                         "standard_error": float(np.std(totals, ddof=1)), "n_items": len(flat), "n_points": len(per_point),
                         "p_value": sign_flip_p(flat, settings.n_permutations, 0),
                         "primary": measure == params.mitigate.primary.measure})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["p_holm"] = frame.groupby("measure")["p_value"].transform(lambda p: pd.Series(holm(p.to_numpy()), index=p.index))
    return frame


def verdict(row: dict[str, Any], alpha: float) -> str:
    """What a comparison row says, in words: for an inheritance measure a significant negative difference
    ``reduces`` the inherited bias; for accuracy a significant negative one is a ``cost``."""
    from ..inheritance import ACCURACY

    if not row["p_holm"] < alpha:
        return "no detectable change"
    if row["measure"] == ACCURACY:
        return "cost" if row["difference"] < 0 else "gain"
    return "reduces" if row["difference"] < 0 else "increases"


def summary_table(comparisons: pd.DataFrame, measure: str) -> pd.DataFrame:
    """The paper-style summary: rows (attribute, bias type, γ), one column per mitigation, each cell the
    difference [interval] and the verdict for one measure."""
    rows = comparisons[comparisons.measure == measure].copy()
    if rows.empty:
        return pd.DataFrame()
    rows["cell"] = [f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] {v}" for d, lo, hi, v in zip(rows.difference, rows.ci_low, rows.ci_high, rows.verdict)]
    rows["ratio"] = rows["ratio"].map(lambda r: "all" if pd.isna(r) else f"{r:g}")
    return rows.pivot(index=["attribute", "bias_type", "ratio"], columns="mitigation", values="cell")


# ---------------------------------------------------------------------------------------------- probes


def probe_rows(params: StudyParams, store: Store) -> pd.DataFrame:
    """Record rows (task ``mitigation_probe``) of every compared student's misalignment probe: stereotype
    agreement per target group, the representation distance, MMD and classifier AUC; and, for the
    mask-based mitigation, the cues per augmented training row before (mitigation ``none``) and after."""
    rows: list[dict[str, Any]] = []
    for p in mitigated_points(params):
        head = {k: p[k] for k in ("attribute", "bias_type", "ratio", "mitigation", "seed")} | {"task": PROBE_TASK}
        probe = probe_artifact(params, p["attribute"], p["bias_type"], p["ratio"], p["seed"], p["mitigation"], store)
        agreement = pd.read_csv(probe.file("agreement.csv"))
        rows += record_rows(agreement.drop(columns=["n_agree"]), **head)
        rows += [head | row for row in _representation_rows(probe)]
        if p["mitigation"] in (NONE, "mask") and "mask" in params.grid.mitigations:
            rows.append(head | _cue_row(params, p, store))
    return pd.DataFrame(rows, columns=list(RECORD_KEYS))


def _representation_rows(probe: Artifact) -> list[dict[str, Any]]:
    import json

    found = json.loads(probe.file("representations.json").read_text())
    n = found["n_original"] + found["n_augmented"]
    mmd, classifier = found["mmd"], found["classifier"]
    nan = math.nan
    return [{"group": "all", "metric": metric, "value": value, "ci_low": low, "ci_high": high, "n": n}
            for metric, value, low, high in (
                ("representation_mean_distance", found["mean_distance"], nan, nan),
                ("representation_mmd", mmd["statistic"], nan, nan), ("representation_mmd_p", mmd["p_value"], nan, nan),
                ("representation_auc", classifier["auc"], classifier["ci_low"], classifier["ci_high"]),
                ("representation_auc_p", classifier["p_value"], nan, nan))]


def _cue_row(params: StudyParams, point: dict[str, Any], store: Store) -> dict[str, Any]:
    """Mean group cues per augmented training row: in the plain mix (``none``) or the masked one (``mask``)."""
    from ..mix import mix_artifact

    where = (point["attribute"], point["bias_type"], point["ratio"], point["seed"])
    mix = mitigated_mix(params, *where, "mask", store) if point["mitigation"] == "mask" else mix_artifact(params, *where, store)
    counts = np.asarray(cue_counts(read_jsonl(mix.file("train.jsonl"))), dtype=float)
    return {"group": "all", "metric": "cues_per_augmented_row", "value": float(counts.mean()) if len(counts) else math.nan,
            "ci_low": math.nan, "ci_high": math.nan, "n": len(counts)}


# ---------------------------------------------------------------------------------------------- the stored comparison


def comparison_artifact(params: StudyParams, store: Store) -> Artifact:
    """Everything notebook 06 shows, computed once: ``comparisons.csv`` (:func:`comparison_table`) and
    ``rows.csv``, the record's rows of the mitigated students (their evaluations and inheritance measures),
    the probes and the tests, keyed by every artifact they read and the test's settings."""
    keys = []
    for p in mitigated_points(params):
        where = (p["attribute"], p["bias_type"], p["ratio"], p["seed"], p["mitigation"])
        keys += [mitigated_evaluation(params, *where, task, store).key for task in mitigated_tasks(params)]
        keys.append(probe_artifact(params, *where, store).key)
    key_params = {"points": mitigated_points(params), "tasks": mitigated_tasks(params),
                  "primary": params.mitigate.primary.model_dump(mode="json"),
                  "inheritance": params.inheritance.model_dump(mode="json")}

    def compute(out: Path, scratch: Path) -> None:
        students = mitigation_students(params, store)
        comparisons = comparison_table(students, params)
        write_text_atomic(out / "comparisons.csv", comparisons.to_csv(index=False))
        parts = [evaluation_rows(params, store), student_record_rows(students, params), probe_rows(params, store),
                 pd.DataFrame(test_rows(comparisons), columns=list(RECORD_KEYS))]
        write_text_atomic(out / "rows.csv", pd.concat([p for p in parts if len(p)], ignore_index=True).to_csv(index=False))

    return store.get_or_compute(STAGE, key_params, compute, inputs=keys, version=VERSION)


def stored_comparisons(params: StudyParams, store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the comparison table, the record's mitigation rows), read from :func:`comparison_artifact`."""
    artifact = comparison_artifact(params, store)
    return (pd.read_csv(artifact.file("comparisons.csv")),
            pd.read_csv(artifact.file("rows.csv"), dtype={"seed": str}))


def evaluation_rows(params: StudyParams, store: Store) -> pd.DataFrame:
    """Every mitigated student's metric rows of every task (the plain students' are the evaluate stage's)."""
    rows: list[dict[str, Any]] = []
    for p in mitigated_points(params):
        if p["mitigation"] == NONE:
            continue
        for task in mitigated_tasks(params):
            artifact = mitigated_evaluation(params, p["attribute"], p["bias_type"], p["ratio"], p["seed"], p["mitigation"], task, store)
            rows += record_rows(pd.read_csv(artifact.file("metrics.csv")), **{k: p[k] for k in ("attribute", "bias_type", "ratio", "mitigation", "seed")}, task=task)
    return pd.DataFrame(rows, columns=list(RECORD_KEYS))


def student_record_rows(students: Sequence[Any], params: StudyParams) -> pd.DataFrame:
    """The inheritance measures of every mitigated student, per seed and pooled over seeds."""
    from ..inheritance import POOLED, TASK, available_measures, pooled_rows, student_rows

    n_boot, rows = params.inheritance.n_boot, []
    mitigated = [s for s in students if s.mitigation != NONE]
    for s in mitigated:
        rows += record_rows(student_rows(s, n_boot, seed=s.seed), attribute=s.attribute, bias_type=s.bias_type,
                            ratio=s.ratio, mitigation=s.mitigation, seed=s.seed, task=TASK)
    for (attribute, bias_type, ratio), by_mitigation in _groups(mitigated).items():
        for mitigation, mine in by_mitigation.items():
            rows += record_rows(pooled_rows(mine, available_measures(mine), n_boot), attribute=attribute,
                                bias_type=bias_type, ratio=ratio, mitigation=mitigation, seed=POOLED, task=TASK)
    return pd.DataFrame(rows, columns=list(RECORD_KEYS))


def test_rows(comparisons: pd.DataFrame) -> list[dict[str, Any]]:
    """The comparison table as record rows (task ``mitigation_test``, group ``vs_none``, seed ``pooled``)."""
    from ..inheritance import POOLED

    rows = []
    for c in comparisons.to_dict("records"):
        head = {"attribute": c["attribute"], "bias_type": c["bias_type"], "ratio": c["ratio"], "mitigation": c["mitigation"],
                "seed": POOLED, "task": TEST_TASK, "group": "vs_none", "n": int(c["n_items"])}
        name = f"{c['measure']}_diff"
        rows.append(head | {"metric": name, "value": c["difference"], "ci_low": c["ci_low"], "ci_high": c["ci_high"]})
        rows += [head | {"metric": f"{name}_{suffix}", "value": c[column], "ci_low": math.nan, "ci_high": math.nan}
                 for suffix, column in (("p", "p_value"), ("p_holm", "p_holm"), ("p_wald", "p_wald"),
                                        ("p_wald_holm", "p_wald_holm"), ("mde", "mde"))
                 if column in c and not pd.isna(c[column])]
    return rows
