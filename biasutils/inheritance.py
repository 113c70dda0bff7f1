"""Inheritance: measures that can see the shortcut a student learned from the augmented data.

Why not the pooled female − male accuracy gap: the biased templates favour men in five occupations and
women in one (nurse), and a student that learns "she → nurse" loses female dentists *and* male nurses,
so the two losses cancel in the aggregate. Every measure here is signed by the stereotype the
generation templates favour (``favoured_group`` in ``params/templates/generation.yaml``), per
occupation, and paired wherever the design allows:

* **Stereotype-aligned TPR gap** (De-Arteaga et al. 2019, GAP^TPR): per occupation, the recall of the
  group the templates favour for it minus the recall of the other group(s); summarised as the mean over
  occupations. Culture: the favoured culture against the other cultures pooled.
* **Stereotype-aligned prediction-rate gap**: per predicted class c, P(pred = c | favoured group of c) −
  P(pred = c | the other groups), a demographic-parity difference that uses every test item; the mean
  over classes.
* **Counterfactual twins** (``counterfactual_twins`` task): each test biography again with only its
  group changed. Per pair, whether the predicted occupation flips, and the *stereotype shift*: with
  S(x, g) = log P(A(g) | x) − log P(not A(g) | x), the log-odds (over the six options) that x is one of
  the occupations A(g) the templates give group g, the shift is the mean of S(twin, g') − S(orig, g')
  (towards the twin group g' 's occupations) and S(orig, g) − S(twin, g) (away from the original group
  g 's), each where A is not empty. For gender both terms are equal. The original data carries no
  group-occupation link, so a shift at γ > 0 that is absent at γ = 0 is inheritance.
* **TPR gap vs the training share**: per occupation, the aligned TPR gap against the share of the
  favoured group among that occupation's rows in the training mix (the Bias in Bios plot).

Every measure is a sum over test items of a per-item contribution (a recall or rate term weighted by
its cell size, or a twin's shift over the number of twins). That gives one machinery for all of them:
intervals by a bootstrap that resamples items within their (occupation, group) cell, and seeds when
several are pooled, so the interval holds the between-seed spread; and the primary test
(``params.inheritance.primary``, declared before any result): each bias type at each γ against the
γ = 0 baseline, per-item differences averaged over seeds (the same seed's baseline), a two-sided
sign-flip permutation test over items (``scipy.stats.permutation_test``), Holm-corrected over the bias
types, with the minimum detectable effect at the declared power from the bootstrap standard error.
The permutation test holds the items' variation given the seeds; beside it, a Wald test on the
seed-and-item bootstrap standard error (``p_wald``) holds the between-seed spread too, the same error
as the interval and the MDE. Where the two disagree the finding says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from scipy.special import logsumexp

from .config import INHERITANCE_MEASURES, StudyParams
from .mix import BASELINE
from .stats import GROUP_COLUMNS, percentile_interval, tpr_table
from .store import Store, read_jsonl

TASK = "occupation_classification"
TWIN_TASK = "counterfactual_twins"
POOLED = "pooled"  # the seed label of rows pooled over seeds
TEST_TASK = "inheritance_test"
ACCURACY = "accuracy"  # a Student.terms measure: overall accuracy, as a sum of per-item terms


class InheritanceError(ValueError):
    """A design the measures cannot be computed on; the message names the field and what is allowed."""


# ---------------------------------------------------------------------------------------------- design


def favoured_groups(params: StudyParams, attribute: str) -> dict[str, str]:
    """Occupation -> the group the generation templates favour for it; every studied occupation must have one."""
    from .generate import load_templates

    favoured = (load_templates(params.generate).get("favoured_group") or {}).get(attribute) or {}
    missing = [occupation for occupation in params.data.occupations if occupation not in favoured]
    if missing:
        raise InheritanceError(
            f"favoured_group.{attribute} in {params.generate.templates}: no favoured group for occupation(s) "
            f"{', '.join(missing)}; every occupation of data.occupations ({', '.join(params.data.occupations)}) needs one"
        )
    return {occupation: str(favoured[occupation]) for occupation in params.data.occupations}


def check_design(params: StudyParams) -> None:
    """Fail before any work on a grid whose inheritance measures cannot be computed: an occupation without a
    favoured group, or a primary measure whose task is not evaluated."""
    if TASK not in params.grid.tasks:
        return
    for attribute in params.grid.attributes:
        favoured_groups(params, attribute)
    if params.inheritance.primary.measure == "twin_shift" and TWIN_TASK not in params.grid.tasks:
        raise InheritanceError(
            f"inheritance.primary.measure: 'twin_shift' needs {TWIN_TASK!r} in grid.tasks; add it, or choose one of "
            f"{', '.join(m for m in INHERITANCE_MEASURES if m != 'twin_shift')}"
        )


@dataclass(frozen=True)
class Items:
    """The occupation test items of one student: gold occupation, group, prediction and class log-probs.

    ``logprobs`` holds one row per item, one column per occupation, normalised over the options.
    """

    ids: np.ndarray
    gold: np.ndarray
    group: np.ndarray
    predicted: np.ndarray
    logprobs: np.ndarray
    occupations: tuple[str, ...]

    @cached_property
    def cells(self) -> np.ndarray:
        """The (occupation, group) cell of each item: the strata of every bootstrap."""
        return np.array([f"{o}|{g}" for o, g in zip(self.gold, self.group)], dtype=object)


def items_from(predictions: pd.DataFrame, outputs: Sequence[Sequence[float]], occupations: Sequence[str],
               group_column: str) -> Items:
    """Items from a stored occupation evaluation (``predictions.jsonl`` rows and ``outputs.jsonl`` scores)."""
    scores = np.asarray(outputs, dtype=float)
    if scores.shape != (len(predictions), len(occupations)):
        raise InheritanceError(f"outputs: expected {len(predictions)} x {len(occupations)} option scores, got {scores.shape}")
    logprobs = scores - logsumexp(scores, axis=1, keepdims=True)
    return Items(
        ids=predictions["id"].astype(str).to_numpy(), gold=predictions["occupation"].astype(str).to_numpy(),
        group=predictions[group_column].astype(str).to_numpy(),
        predicted=np.asarray(occupations, dtype=object)[scores.argmax(axis=1)], logprobs=logprobs,
        occupations=tuple(occupations),
    )


# ---------------------------------------------------------------------------------------------- per-item terms


def aligned_tpr_terms(items: Items, favoured: Mapping[str, str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-item terms whose sum is the mean stereotype-aligned TPR gap, and each occupation's own terms.

    Item i of occupation o adds correct_i / (K n_fav(o)) when its group is o's favoured group and
    −correct_i / (K n_other(o)) otherwise; K counts the occupations with items on both sides (an
    occupation without one side cannot have a gap and is left out).
    """
    correct = (items.predicted == items.gold).astype(float)
    per_occupation: dict[str, np.ndarray] = {}
    for occupation in items.occupations:
        fav = (items.gold == occupation) & (items.group == favoured[occupation])
        other = (items.gold == occupation) & (items.group != favoured[occupation])
        if fav.any() and other.any():
            per_occupation[occupation] = correct * (fav / fav.sum() - other / other.sum())
    if not per_occupation:
        raise InheritanceError("no occupation has test items of both its favoured and its other group(s)")
    return sum(per_occupation.values()) / len(per_occupation), per_occupation


def aligned_rate_terms(items: Items, favoured: Mapping[str, str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-item terms whose sum is the mean over classes of P(pred = c | favoured(c)) − P(pred = c | others)."""
    per_class: dict[str, np.ndarray] = {}
    for occupation in items.occupations:
        fav = items.group == favoured[occupation]
        if fav.any() and (~fav).any():
            hit = (items.predicted == occupation).astype(float)
            per_class[occupation] = hit * (fav / fav.sum() - ~fav / (~fav).sum())
    if not per_class:
        raise InheritanceError("every test item belongs to one group: no prediction-rate gap can be formed")
    return sum(per_class.values()) / len(per_class), per_class


def stereotype_log_odds(logprobs: np.ndarray, stereotyped: np.ndarray) -> np.ndarray:
    """log P(class in the stereotyped set) − log P(class outside it), per row of normalised log-probs."""
    inside = logsumexp(np.where(stereotyped, logprobs, -np.inf), axis=1)
    outside = logsumexp(np.where(stereotyped, -np.inf, logprobs), axis=1)
    return inside - outside


@dataclass(frozen=True)
class Twins:
    """Original and twin items in pair order, with the groups they hold."""

    original: Items
    twin: Items
    skipped: int  # test items without a twin (no group cue in the text)


def pair_twins(original: Items, twin: Items, twin_of: Sequence[str]) -> Twins:
    """Align each twin with its original by id; originals without a twin are counted as skipped."""
    position = {item_id: i for i, item_id in enumerate(original.ids)}
    unknown = [item_id for item_id in twin_of if item_id not in position]
    if unknown:
        raise InheritanceError(f"twins of unknown test items: {unknown[:5]}; the twin and the original evaluations differ")
    index = np.array([position[item_id] for item_id in twin_of], dtype=int)
    subset = Items(original.ids[index], original.gold[index], original.group[index], original.predicted[index],
                   original.logprobs[index], original.occupations)
    return Twins(subset, twin, skipped=len(original.ids) - len(index))


def twin_shift_terms(twins: Twins, favoured: Mapping[str, str]) -> np.ndarray:
    """Per-pair stereotype shift over the number of pairs (sum = the mean shift); see the module notes."""
    occupations = np.asarray(twins.original.occupations, dtype=object)

    def stereotyped(groups: np.ndarray) -> np.ndarray:
        return np.array([[favoured[o] == g for o in occupations] for g in groups], dtype=bool)

    towards, away = stereotyped(twins.twin.group), stereotyped(twins.original.group)
    total, count = np.zeros(len(twins.twin.ids)), np.zeros(len(twins.twin.ids))
    for sets, sign in ((towards, 1.0), (away, -1.0)):
        defined = sets.any(axis=1) & (~sets).any(axis=1)  # a group with no stereotyped occupation has no term
        change = (stereotype_log_odds(twins.twin.logprobs[defined], sets[defined])
                  - stereotype_log_odds(twins.original.logprobs[defined], sets[defined]))
        total[defined] += sign * change
        count[defined] += 1
    shifts = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return shifts / max(len(shifts), 1)


def twin_flips(twins: Twins) -> np.ndarray:
    """1 where the twin's predicted occupation differs from the original's."""
    return (twins.original.predicted != twins.twin.predicted).astype(float)


# ---------------------------------------------------------------------------------------------- resampling


def cell_resamples(cells: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` x n item indices, each row a resample with replacement within every cell (cell sizes fixed)."""
    out = np.empty((n_boot, len(cells)), dtype=int)
    for cell in np.unique(cells):
        members = np.flatnonzero(cells == cell)
        out[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return out


def bootstrap_totals(terms: np.ndarray, cells: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap distribution of ``terms.sum()``: seeds x items terms (one seed: a 1-D array).

    Seeds (rows) are resampled with replacement and items within their cells, the same item draw for
    every seed (the seeds score the same items), so the spread holds both sources of variation.
    """
    terms = np.atleast_2d(np.asarray(terms, dtype=float))
    rng = np.random.default_rng(seed)
    items = cell_resamples(cells, n_boot, rng)
    seeds = rng.integers(0, terms.shape[0], size=(n_boot, terms.shape[0])) if terms.shape[0] > 1 else np.zeros((n_boot, 1), int)
    return terms[seeds[:, :, None], items[:, None, :]].mean(axis=1).sum(axis=1)


def sign_flip_p(differences: np.ndarray, n_permutations: int, seed: int) -> float:
    """Two-sided sign-flip permutation test of sum(differences) = 0 (``scipy.stats.permutation_test``).

    Valid under the null that, item by item, the two students being compared are exchangeable.
    """
    differences = np.asarray(differences, dtype=float)
    if not np.any(differences):
        return 1.0
    result = scipy_stats.permutation_test((differences,), lambda d, axis=-1: np.sum(d, axis=axis), vectorized=True,
                                          permutation_type="samples", n_resamples=n_permutations,
                                          alternative="two-sided", random_state=seed)
    return float(result.pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN): controls the family-wise error at any α."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def minimum_detectable_effect(standard_error: float, alpha: float, power: float, tests: int = 1) -> float:
    """Smallest true difference a two-sided level-α/``tests`` test detects with the given power (normal approximation).

    ``tests`` > 1 gives Holm's strictest step (Bonferroni), so the figure holds for every bias type.
    """
    z = scipy_stats.norm.ppf
    return float((z(1 - alpha / tests / 2) + z(power)) * standard_error)


def power_at(effect: float, standard_error: float, alpha: float, tests: int = 1) -> float:
    """Power of the two-sided level-α/``tests`` test against a true difference ``effect`` (normal approximation)."""
    if not standard_error > 0:
        return math.nan
    z = scipy_stats.norm
    critical = z.ppf(1 - alpha / tests / 2)
    shift = abs(effect) / standard_error
    return float(z.sf(critical - shift) + z.cdf(-critical - shift))


# ---------------------------------------------------------------------------------------------- one student


@dataclass(frozen=True)
class Student:
    """The stored evaluations of one grid point that the measures read."""

    attribute: str
    bias_type: str
    ratio: float
    seed: int
    items: Items
    twins: Twins | None
    favoured: Mapping[str, str]
    training_share: Mapping[str, float]  # occupation -> share of the favoured group in the training mix
    mitigation: str = "none"

    def terms(self, measure: str) -> np.ndarray:
        """Per-item terms of a measure (twin shift: per pair; accuracy: correct / items, the cost in utility
        that notebook 06 weighs a mitigation by)."""
        if measure == ACCURACY:
            return (self.items.predicted == self.items.gold) / len(self.items.gold)
        if measure == "aligned_tpr_gap":
            return aligned_tpr_terms(self.items, self.favoured)[0]
        if measure == "aligned_rate_gap":
            return aligned_rate_terms(self.items, self.favoured)[0]
        if measure == "twin_shift":
            if self.twins is None:
                raise InheritanceError(f"twin_shift needs the {TWIN_TASK!r} task in grid.tasks")
            return twin_shift_terms(self.twins, self.favoured)
        raise InheritanceError(f"measure {measure!r}; allowed: {', '.join((*INHERITANCE_MEASURES, ACCURACY))}")

    def cells(self, measure: str) -> np.ndarray:
        return self.twins.original.cells if measure == "twin_shift" else self.items.cells

    def pair_ids(self, measure: str) -> np.ndarray:
        return self.twins.original.ids if measure == "twin_shift" else self.items.ids


def load_student(params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, store: Store,
                 mitigation: str = "none", evaluation: Callable[[str], Any] | None = None,
                 tasks: Sequence[str] | None = None, mix: Any = None) -> Student:
    """Read one grid point's stored occupation (and twin) predictions and its training mix; ``mitigation``:
    the student trained under that mitigation (:mod:`biasutils.mitigate`). ``evaluation`` (task -> its
    evaluation artifact), ``tasks`` and ``mix``: another student's (a multi-round one's)."""
    from .mitigate import mitigated_evaluation, mitigated_tasks

    if tasks is None:
        tasks = params.grid.tasks if mitigation == "none" else mitigated_tasks(params)
    if evaluation is None:
        evaluation = lambda task: mitigated_evaluation(params, attribute, bias_type, ratio, seed, mitigation, task, store)  # noqa: E731
    favoured = favoured_groups(params, attribute)
    column = attribute  # the predictions' group column is named after the attribute
    occupations = tuple(params.data.occupations)

    def read(task: str) -> tuple[pd.DataFrame, list]:
        artifact = evaluation(task)
        predictions = pd.DataFrame(read_jsonl(artifact.file("predictions.jsonl")))
        return predictions, [row["output"] for row in read_jsonl(artifact.file("outputs.jsonl"))]

    items = items_from(*read(TASK), occupations, column)
    twins = None
    if TWIN_TASK in tasks:
        predictions, outputs = read(TWIN_TASK)
        mine = (predictions["attribute"] == attribute).to_numpy()
        twin_items = items_from(predictions[mine].reset_index(drop=True), [o for o, m in zip(outputs, mine) if m],
                                occupations, column)
        twins = pair_twins(items, twin_items, predictions.loc[mine, "twin_of"].astype(str).tolist())
    return Student(attribute, bias_type, ratio, seed, items, twins, favoured,
                   training_share(params, attribute, bias_type, ratio, seed, store, favoured, mix), mitigation)


def training_share(params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, store: Store,
                   favoured: Mapping[str, str], mix: Any = None) -> dict[str, float]:
    """Per occupation, the share of the training mix's rows whose group is the one the templates favour.

    Rows whose culture the generator chose (the neutral control) get it read from their names
    (:func:`biasutils.misalign.infer_culture`); genders come from the stored ``gender_name``.
    """
    from .misalign import infer_culture
    from .mix import mix_artifact

    rows = read_jsonl((mix or mix_artifact(params, attribute, bias_type, ratio, seed, store)).file("train.jsonl"))
    shares = {}
    for occupation in params.data.occupations:
        mine = [row for row in rows if row["occupation"] == occupation]
        if attribute == "gender":
            groups = [row.get("gender_name", "") for row in mine]
        else:
            groups = [row.get("culture") or infer_culture(row.get("text", row["hard_text"])) for row in mine]
        shares[occupation] = sum(g == favoured[occupation] for g in groups) / len(mine) if mine else math.nan
    return shares


# ---------------------------------------------------------------------------------------------- record rows


def _row(group: str, metric: str, value: float, low: float = math.nan, high: float = math.nan, n: int = 0) -> dict[str, Any]:
    return {"group": group, "metric": metric, "value": float(value), "ci_low": float(low), "ci_high": float(high), "n": int(n)}


def student_rows(student: Student, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """One student's inheritance rows (columns :data:`stats.GROUP_COLUMNS`): per-occupation TPR, aligned
    gaps per occupation and overall, the twins' flip rate and shift (Wilcoxon signed-rank p against 0)."""
    items, favoured = student.items, student.favoured
    rows: list[dict[str, Any]] = []
    tpr = tpr_table(items.gold, items.predicted, items.group, items.occupations, n_boot=n_boot, seed=seed)
    rows += [_row(f"{r['class']}/{r['group']}", "tpr", r["value"], r["ci_low"], r["ci_high"], r["n"])
             for r in tpr.to_dict("records")]
    aligned = {"aligned_tpr_gap": aligned_tpr_terms(items, favoured), "aligned_rate_gap": aligned_rate_terms(items, favoured)}
    for measure, (total, per_part) in aligned.items():
        rows += [_row(part, measure, terms.sum(), *percentile_interval(bootstrap_totals(terms, items.cells, n_boot, seed)),
                      n=int((items.gold == part).sum() if measure == "aligned_tpr_gap" else len(terms)))
                 for part, terms in per_part.items()]
        rows.append(_row("all", measure, total.sum(), *percentile_interval(bootstrap_totals(total, items.cells, n_boot, seed)),
                         n=len(total)))
    gaps = aligned["aligned_tpr_gap"][1]
    shares = [student.training_share[o] for o in gaps]
    if len(gaps) >= 3 and np.ptp(shares) > 0:
        result = scipy_stats.pearsonr(shares, [terms.sum() for terms in gaps.values()])
        interval = result.confidence_interval()
        rows += [_row("all", "tpr_gap_share_r", result.statistic, interval.low, interval.high, len(gaps)),
                 _row("all", "tpr_gap_share_r_p", result.pvalue, n=len(gaps))]
    rows += [_row(o, "training_share_favoured", share) for o, share in student.training_share.items()]
    if student.twins is not None:
        rows += twin_rows(student.twins, favoured, n_boot, seed)
    return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))


def twin_rows(twins: Twins, favoured: Mapping[str, str], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Flip rate and stereotype shift of one student's twins, per twin direction and overall."""
    flips, shifts = twin_flips(twins), twin_shift_terms(twins, favoured) * len(twins.twin.ids)
    cells = twins.original.cells
    rows = [_row("all", "twin_skipped", twins.skipped, n=len(twins.original.ids) + twins.skipped)]
    if not len(flips):
        return rows
    rows.append(_row("all", "twin_flip_rate", flips.mean(), *percentile_interval(bootstrap_totals(flips / len(flips), cells, n_boot, seed)), len(flips)))
    rows.append(_row("all", "twin_shift", shifts.mean(),
                     *percentile_interval(bootstrap_totals(shifts / len(shifts), cells, n_boot, seed)), len(shifts)))
    rows.append(_row("all", "twin_shift_p", scipy_stats.wilcoxon(shifts).pvalue if np.any(shifts) else 1.0, n=len(shifts)))
    for direction in sorted(set(zip(twins.original.group, twins.twin.group))):
        mine = (twins.original.group == direction[0]) & (twins.twin.group == direction[1])
        rows.append(_row(f"{direction[0]}>{direction[1]}", "twin_shift", shifts[mine].mean(), n=int(mine.sum())))
    return rows


# ---------------------------------------------------------------------------------------------- seeds and the primary test


def stacked_terms(students: Sequence[Student], measure: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeds x items terms of one point's students, aligned on the items every seed scored, and their cells."""
    common = set.intersection(*(set(s.pair_ids(measure)) for s in students))
    first = students[0]
    keep = np.array([item_id in common for item_id in first.pair_ids(measure)])
    order = first.pair_ids(measure)[keep]
    rows = []
    for student in students:
        position = {item_id: i for i, item_id in enumerate(student.pair_ids(measure))}
        rows.append(student.terms(measure)[[position[item_id] for item_id in order]])
    return np.vstack(rows), first.cells(measure)[keep]


def pooled_rows(students: Sequence[Student], measures: Sequence[str], n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Each measure pooled over a point's seeds (mean), with the seed-and-item bootstrap interval."""
    rows = []
    for measure in measures:
        terms, cells = stacked_terms(students, measure)
        totals = bootstrap_totals(terms, cells, n_boot, seed)
        rows.append(_row("all", measure, terms.mean(axis=0).sum(), *percentile_interval(totals), terms.shape[1]))
        rows.append(_row("all", f"{measure}_seed_sd", terms.sum(axis=1).std(ddof=1) if len(terms) > 1 else math.nan,
                         n=len(terms)))
    return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))


@dataclass(frozen=True)
class Comparison:
    """One bias type at one γ against the baseline: the paired difference of a measure over seeds and items."""

    attribute: str
    bias_type: str
    ratio: float
    measure: str
    difference: float
    ci_low: float
    ci_high: float
    standard_error: float
    p_value: float  # the declared test: sign flips over items of the seed-averaged differences (given these seeds)
    p_wald: float  # difference / the seed-and-item bootstrap standard error, normal: holds the between-seed spread
    n_items: int
    n_seeds: int


def paired_differences(students: Sequence[Student], baselines: Sequence[Student], measure: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeds x items differences of a measure's terms between a point's students and the baseline students
    of the same seeds, on the same items, and the items' cells."""
    by_seed = {b.seed: b for b in baselines}
    missing = [s.seed for s in students if s.seed not in by_seed]
    if missing:
        raise InheritanceError(f"grid.seeds: no γ = 0 baseline for seed(s) {missing}")
    point, cells = stacked_terms(students, measure)
    base, _ = stacked_terms([by_seed[s.seed] for s in students], measure)
    if base.shape != point.shape:
        raise InheritanceError("the baseline and the point scored different items; rerun both with the same data")
    return point - base, cells


def compare_to_baseline(students: Sequence[Student], baselines: Sequence[Student], measure: str, n_boot: int,
                        n_permutations: int, seed: int = 0) -> Comparison:
    """Paired difference of a measure between a point's students and the baseline students of the same seeds."""
    differences, cells = paired_differences(students, baselines, measure)
    totals = bootstrap_totals(differences, cells, n_boot, seed)
    first, difference, standard_error = students[0], float(differences.mean(axis=0).sum()), float(np.std(totals, ddof=1))
    return Comparison(first.attribute, first.bias_type, first.ratio, measure, difference, *percentile_interval(totals),
                      standard_error, sign_flip_p(differences.mean(axis=0), n_permutations, seed),
                      wald_p(difference, standard_error), differences.shape[1], differences.shape[0])


def wald_p(difference: float, standard_error: float) -> float:
    """Two-sided normal p of difference / standard error (1 when both are 0: no difference, no spread)."""
    if not standard_error > 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * scipy_stats.norm.sf(abs(difference) / standard_error))


def variance_parts(students: Sequence[Student], baselines: Sequence[Student], measure: str, n_boot: int,
                   seed: int = 0) -> tuple[float, float]:
    """The squared standard error of a point's difference to the baseline, split into an item part (the
    bootstrap over items of the seed-averaged differences) and a seed part (the rest of the seed-and-item
    bootstrap's variance): the inputs of :func:`planned_mde`."""
    differences, cells = paired_differences(students, baselines, measure)
    total = np.var(bootstrap_totals(differences, cells, n_boot, seed), ddof=1)
    items = np.var(bootstrap_totals(differences.mean(axis=0), cells, n_boot, seed), ddof=1)
    return float(items), float(max(total - items, 0.0))


def planned_mde(item_variance: float, seed_variance: float, n_items: int, n_seeds: int, new_items: int, new_seeds: int,
                alpha: float, power: float, tests: int = 1) -> float:
    """The minimum detectable effect at other sizes: the item part of the variance scales as 1/items, the seed
    part as 1/seeds (a planning figure from the measured variance, normal approximation)."""
    variance = item_variance * n_items / new_items + seed_variance * n_seeds / new_seeds
    return minimum_detectable_effect(math.sqrt(variance), alpha, power, tests)


def primary_tests(students: Sequence[Student], params: StudyParams) -> pd.DataFrame:
    """Every measure at every biased point against the baseline, per attribute; Holm over bias types per
    (attribute, γ, measure), the minimum detectable effect at the declared power and α/(bias types)."""
    settings = params.inheritance
    measures = available_measures(students)
    comparisons = []
    for attribute in sorted({s.attribute for s in students}):
        mine = [s for s in students if s.attribute == attribute]
        baselines = [s for s in mine if s.bias_type == BASELINE]
        if not baselines:  # a grid without γ = 0 has nothing to test against
            continue
        for (bias_type, ratio) in sorted({(s.bias_type, s.ratio) for s in mine if s.bias_type != BASELINE}):
            point = [s for s in mine if (s.bias_type, s.ratio) == (bias_type, ratio)]
            comparisons += [compare_to_baseline(point, baselines, m, settings.n_boot, settings.n_permutations)
                            for m in measures]
    frame = pd.DataFrame([vars(c) for c in comparisons])
    if frame.empty:
        return frame
    frame["primary"] = frame["measure"] == settings.primary.measure
    family = frame.groupby(["attribute", "ratio", "measure"])
    frame["p_holm"] = family["p_value"].transform(lambda p: pd.Series(holm(p.to_numpy()), index=p.index))
    frame["p_wald_holm"] = family["p_wald"].transform(lambda p: pd.Series(holm(p.to_numpy()), index=p.index))
    frame["tests"] = family["p_value"].transform("size")
    alpha, power = settings.primary.alpha, settings.primary.power
    frame["mde"] = [minimum_detectable_effect(se, alpha, power, k) for se, k in zip(frame.standard_error, frame.tests)]
    frame["significant"] = frame["p_holm"] < alpha
    return frame


def available_measures(students: Sequence[Student]) -> list[str]:
    """The measures every student supports (twin shift only where twins were scored)."""
    return [m for m in INHERITANCE_MEASURES if m != "twin_shift" or all(s.twins is not None for s in students)]


def test_record_rows(tests: pd.DataFrame) -> list[dict[str, Any]]:
    """The primary-test table as metrics.csv rows (task ``inheritance_test``, seed ``pooled``)."""
    rows = []
    for test in tests.to_dict("records"):
        head = {"attribute": test["attribute"], "bias_type": test["bias_type"], "ratio": test["ratio"],
                "mitigation": "none", "seed": POOLED, "task": TEST_TASK, "group": "vs_baseline"}
        n = int(test["n_items"])
        name = f"{test['measure']}_diff"
        rows += [head | _row("vs_baseline", name, test["difference"], test["ci_low"], test["ci_high"], n),
                 head | _row("vs_baseline", f"{name}_p", test["p_value"], n=n),
                 head | _row("vs_baseline", f"{name}_p_holm", test["p_holm"], n=n),
                 head | _row("vs_baseline", f"{name}_p_wald", test["p_wald"], n=n),
                 head | _row("vs_baseline", f"{name}_p_wald_holm", test["p_wald_holm"], n=n),
                 head | _row("vs_baseline", f"{name}_mde", test["mde"], n=n),
                 head | _row("vs_baseline", f"{name}_n_seeds", test["n_seeds"], n=n)]
    return rows
