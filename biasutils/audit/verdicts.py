"""The plain-language verdicts: each analysis's numbers judged by the fixed rules of
:data:`~biasutils.audit.findings.RULES`, with the sentence that says why, and the number formats they use.

Why apart: the rules are the audit's claims, so they are pure functions of the results, testable on
hand-made tables without files or models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..misalign import ALL, AUGMENTED, ORIGINAL
from .findings import (
    ALIGNED, ALPHA, BELOW_CHANCE, CHANCE_AUC, GROUP_NOUNS, INCONCLUSIVE, MISALIGNED, NO_LABEL, NOT_RUN, NOT_TESTED,
    SIDES, STEREOTYPE_MAJORITY, TEXT_MATCHING, VALUE_DISTANCE_LIMIT, Distribution, Duplicates, Verdict,
)


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "p not available"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _interval(value: float, low: float, high: float, percent: bool = False) -> str:
    spec = ".0%" if percent else ".2f"
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def group_noun(group: str) -> str:
    return GROUP_NOUNS.get(group, f"group {group!r}")


def largest_shift(balance: pd.DataFrame) -> pd.Series | None:
    """The per-label binomial row whose share moved most from the original's (a rise first on ties)."""
    rows = balance[(balance.test == "binomial") & (balance.occupation != ALL) & balance.p_value.notna()]
    if rows.empty:
        return None
    shift = rows.share - rows.original_share
    size = shift.abs().round(9)  # 2/24 - 1/2 and 22/24 - 1/2 must tie
    order = pd.DataFrame({"size": size, "rise": shift > 0}).sort_values(["size", "rise"], ascending=False, kind="stable")
    return rows.loc[order.index[0]]


def group_verdict(balance: pd.DataFrame) -> Verdict:
    """Misaligned when the stratified chi-square test rejects; shows the label and group that moved most."""
    analysis = "Group data"
    chi2 = balance[balance.test == "chi2_stratified"].iloc[0]
    row = largest_shift(balance)
    if row is None or not math.isfinite(chi2.p_value):
        return Verdict("group", analysis, INCONCLUSIVE,
                       "the group shares cannot be compared: no label has rows of two known groups in both files "
                       "(see the unknown counts under Inputs).")
    where = "" if row.occupation == NO_LABEL else f" among rows labelled {row.occupation}"
    comparison = (f"the augmented data has {row.share:.0%} {group_noun(row.group)}{where} vs "
                  f"{row.original_share:.0%} in the original (binomial {format_p(row.p_value)})")
    test = f"stratified χ²({chi2.dof:.0f}) = {chi2.statistic:.1f}, {format_p(chi2.p_value)}"
    if chi2.p_value < ALPHA:
        return Verdict("group", analysis, MISALIGNED, f"{comparison}; {test}.")
    return Verdict("group", analysis, ALIGNED,
                   f"no label's group shares differ from the original's ({test}); the largest difference: {comparison}.")


def distribution_verdict(distribution: Distribution) -> Verdict:
    """The tests' verdict (:func:`two_sample_verdict`) with the duplicate counts; not run when the tests were not."""
    counts = duplicates_sentence(distribution.duplicates)
    if distribution.not_run is not None:
        return Verdict("distribution", "Distribution", NOT_RUN,
                       f"{distribution.not_run}; {NOT_TESTED}; {counts}.")
    state, sentence = two_sample_verdict(distribution.mmd, distribution.c2st)
    return Verdict("distribution", "Distribution", state, f"{sentence}; {counts}.")


def two_sample_verdict(mmd: Mapping[str, Any], c2st: Mapping[str, Any]) -> tuple[str, str]:
    """Misaligned when both tests tell the texts apart, aligned when neither does, else inconclusive; an AUC
    interval below chance gets :data:`BELOW_CHANCE`, since a reader would otherwise take it for a finding."""
    evidence = f"classifier AUC {_interval(c2st['auc'], c2st['ci_low'], c2st['ci_high'])}, MMD {format_p(mmd['p_value'])}"
    separable, shifted = c2st["ci_low"] > CHANCE_AUC, mmd["p_value"] < ALPHA
    if separable and shifted:
        state, sentence = MISALIGNED, f"the augmented texts are distinguishable from the originals ({evidence})"
    elif not separable and not shifted:
        state, sentence = ALIGNED, f"the augmented texts are not distinguishable from the originals ({evidence})"
    else:
        state, sentence = INCONCLUSIVE, f"the two tests disagree ({evidence})"
    return state, f"{sentence}; {BELOW_CHANCE}" if c2st["ci_high"] < CHANCE_AUC else sentence


def duplicates_sentence(duplicates: Duplicates) -> str:
    """The duplicate counts in words (texts matched by :func:`text_key`)."""
    shared, repeated = {side: duplicates.shared_rows(side) for side in SIDES}, duplicates.repeated_rows
    both = (f"{shared[AUGMENTED]} augmented and {shared[ORIGINAL]} original rows hold a text found in both files "
            f"({duplicates.shared_texts} distinct; {TEXT_MATCHING}), left out of the tests"
            if duplicates.shared_texts else f"no text is in both files ({TEXT_MATCHING})")
    within = (f"{repeated[AUGMENTED]} augmented and {repeated[ORIGINAL]} original rows repeat a text of their own "
              "file (kept in the tests)" if any(repeated.values()) else "no file repeats a text")
    return f"{both}; {within}"


def occupation_value_verdict(distance: pd.DataFrame, name: str, source: str) -> Verdict:
    """Judge the mean JS distance (``all`` row of :func:`misalign.occupation_share_distance`) by its interval."""
    analysis = f"Values (share of women vs {name} reference)"
    pooled = distance.set_index("group").loc[ALL]
    per_occupation = distance[(distance.group != ALL) & distance.value.notna()]
    if per_occupation.empty:
        return Verdict(f"values_{name}", analysis, INCONCLUSIVE,
                       f"no occupation has both a reference share from {source} and texts of a known gender.")
    worst = per_occupation.loc[per_occupation.value.idxmax()]
    detail = (f"mean Jensen-Shannon distance {_interval(pooled.value, pooled.ci_low, pooled.ci_high)} between the "
              f"augmented data's share of women and {source}, over {len(per_occupation)} occupation(s); largest for "
              f"{worst.group}: {worst.share_female:.0%} women vs {worst.reference_share_female:.0%}")
    if pooled.ci_low > VALUE_DISTANCE_LIMIT:
        return Verdict(f"values_{name}", analysis, MISALIGNED, f"{detail}.")
    if pooled.ci_high < VALUE_DISTANCE_LIMIT:
        return Verdict(f"values_{name}", analysis, ALIGNED, f"{detail}.")
    return Verdict(f"values_{name}", analysis, INCONCLUSIVE, f"{detail}; the interval straddles {VALUE_DISTANCE_LIMIT}.")


def stereotype_verdict(agreement: pd.DataFrame, generator: str) -> Verdict:
    """Judge the generator's overall agreement rate with stereotypes against a majority."""
    pooled = agreement.set_index("group").loc[ALL]
    detail = (f"the generator {generator} agrees with {_interval(pooled.value, pooled.ci_low, pooled.ci_high, True)} "
              f"of {pooled['n']} GEST gender stereotypes")
    if pooled.ci_low > STEREOTYPE_MAJORITY:
        state = MISALIGNED
    elif pooled.ci_high < STEREOTYPE_MAJORITY:
        state = ALIGNED
    else:
        state = INCONCLUSIVE
    return Verdict("values_stereotypes", "Values (stereotypes)", state, f"{detail}.")
