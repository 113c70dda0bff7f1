"""Group-data misalignment: who the texts are about, and whether the generator keeps the original balance.

Holds the one documented rule that reads a text's gender or culture (:func:`infer_group`,
:func:`infer_culture`: the cues of :mod:`biasutils.cues`, then the name tables), applied alike to
generated and original texts so that inference errors do not masquerade as misalignment, and what is
built on it: counts and shares per occupation with Wilson intervals (:func:`group_shares`) and the
binomial and stratified chi-square tests against the original data (:func:`balance_tests`). The value
misalignment reuses the inference (:mod:`biasutils.misalign.values`); nothing here depends on it.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..corpus import NameTable, _fold, name_tables
from ..cues import infer_gender
from ..tasks import ALL
from ._common import ATTRIBUTE_GROUPS, UNKNOWN, _check_attribute, _ordered_occupations, _require_columns, wilson_interval

# ---------------------------------------------------------------------------------------------- group inference

_NAME_TOKEN = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")  # words, hyphenated given names ("Shu-Fen") kept whole


@dataclass(frozen=True)
class _NameIndex:
    """Accent- and case-folded names: given name -> its genders; given or family name -> its cultures."""

    given_genders: Mapping[str, frozenset[str]]
    cultures: Mapping[str, frozenset[str]]


def _name_index(names: Mapping[tuple[str, str], NameTable]) -> _NameIndex:
    genders: dict[str, set[str]] = defaultdict(set)
    cultures: dict[str, set[str]] = defaultdict(set)
    for (culture, gender), table in names.items():
        for name in table.first:
            genders[_fold(name)].add(gender)
            cultures[_fold(name)].add(culture)
        for name in table.last:
            cultures[_fold(name)].add(culture)
    return _NameIndex({k: frozenset(v) for k, v in genders.items()}, {k: frozenset(v) for k, v in cultures.items()})


@functools.cache
def _default_index() -> _NameIndex:
    return _name_index(name_tables())


def _index(names: Mapping[tuple[str, str], NameTable] | None) -> _NameIndex:
    return _default_index() if names is None else _name_index(names)


def _name_candidates(text: str) -> list[str]:
    """Folded capitalised words that are not English function words: where a name can be.

    Skipping function words keeps "She", "An" or "I" (also Chinese family names) from reading as names.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [_fold(token) for token in _NAME_TOKEN.findall(text)
            if token[0].isupper() and token.lower() not in ENGLISH_STOP_WORDS]


def _group_from(text: str, index: _NameIndex) -> str:
    gender = infer_gender(text)
    if gender != UNKNOWN:
        return gender
    for token in _name_candidates(text):
        if token in index.given_genders:
            genders = index.given_genders[token]
            return next(iter(genders)) if len(genders) == 1 else UNKNOWN
    return UNKNOWN


def _culture_from(text: str, index: _NameIndex) -> str:
    found = {culture for token in _name_candidates(text) for culture in index.cultures.get(token, ())}
    return next(iter(found)) if len(found) == 1 else UNKNOWN


def infer_group(text: str, names: Mapping[tuple[str, str], NameTable] | None = None) -> str:
    """Gender a text is about: ``"male"``, ``"female"`` or ``"unknown"``.

    Rule: the majority of gendered pronouns and nouns (:func:`biasutils.cues.infer_gender`) decides;
    on a tie (including none), the first given name in the text (a capitalised word, not an English
    function word, found in the name tables ``names``, default :func:`biasutils.corpus.name_tables`)
    decides if it belongs to exactly one gender; otherwise ``"unknown"``. Pronouns come first because a
    biography's pronouns name the person written about, while a name can be anyone's.
    """
    return _group_from(text, _index(names))


def infer_culture(text: str, names: Mapping[tuple[str, str], NameTable] | None = None) -> str:
    """Culture a text's names point to, or ``"unknown"``.

    Rule: every capitalised word that is not an English function word is looked up among the given and
    family names of the tables (default :func:`biasutils.corpus.name_tables`); if the names found belong
    to exactly one culture, that culture; none found or several cultures -> ``"unknown"``. A capitalised
    ordinary word that happens to be a family name ("Sun") can still mislead; the rule is the same for
    generated and original texts.
    """
    return _culture_from(text, _index(names))


def inferred_groups(samples: pd.DataFrame, attribute: str = "gender",
                    names: Mapping[tuple[str, str], NameTable] | None = None) -> pd.Series:
    """The inferred gender (:func:`infer_group`) or culture (:func:`infer_culture`) of each row's ``text``."""
    _check_attribute(attribute)
    _require_columns(samples, "samples", ("text",))
    index = _index(names)
    infer = _group_from if attribute == "gender" else _culture_from
    return pd.Series([infer(text, index) for text in samples["text"].fillna("").astype(str)],
                     index=samples.index, name=attribute)


# ---------------------------------------------------------------------------------------------- group data


def row_groups(samples: pd.DataFrame, attribute: str = "gender",
               names: Mapping[tuple[str, str], NameTable] | None = None, group_field: str | None = None) -> np.ndarray:
    """Each row's group: the ``group_field`` column as given, else inferred from the text."""
    if group_field:
        _require_columns(samples, "samples", (group_field,))
        return samples[group_field].to_numpy(dtype=object)
    return inferred_groups(samples, attribute, names).to_numpy(dtype=object)


def _group_order(attribute: str, labels: Sequence[np.ndarray]) -> list[str]:
    """The attribute's groups first (zero counts included), then any other group seen."""
    seen = sorted(set().union(*(set(values) for values in labels)) - {UNKNOWN})
    return list(dict.fromkeys([*ATTRIBUTE_GROUPS.get(attribute, ()), *seen]))


def group_shares(samples: pd.DataFrame, attribute: str = "gender",
                 names: Mapping[tuple[str, str], NameTable] | None = None,
                 group_field: str | None = None, groups: Sequence[str] | None = None) -> pd.DataFrame:
    """Count and share of each gender (or culture) per occupation, with Wilson intervals.

    Groups are inferred from ``text`` (:func:`inferred_groups`), or read from ``group_field`` when the
    data carries them (the audit's ``--group-field``; ``unknown`` or blank there counts as unknown).
    Shares are over samples of a known group, the rest are counted in ``n_unknown``. Every group of
    ``groups`` (default: the attribute's groups, then any other seen) gets a row, a zero count
    included, and ``occupation = "all"`` pools the occupations when there are several.

    Columns: occupation, group, count, n (samples of a known group), n_unknown, share, ci_low, ci_high.
    """
    _require_columns(samples, "samples", ("text", "occupation", *([group_field] if group_field else [])))
    labels = row_groups(samples, attribute, names, group_field)
    occupations = samples["occupation"].astype(str).to_numpy()
    groups = _group_order(attribute, [labels]) if groups is None else groups
    ordered = _ordered_occupations(occupations)
    rows = []
    for occupation in [*ordered, ALL] if len(ordered) > 1 else ordered:
        part = labels if occupation == ALL else labels[occupations == occupation]
        n_unknown = int((part == UNKNOWN).sum())
        n = len(part) - n_unknown
        for group in groups:
            count = int((part == group).sum())
            low, high = wilson_interval(count, n)
            rows.append({"occupation": occupation, "group": group, "count": count, "n": n, "n_unknown": n_unknown,
                         "share": count / n if n else math.nan, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def balance_tests(generated: pd.DataFrame, original: pd.DataFrame, attribute: str = "gender",
                  names: Mapping[tuple[str, str], NameTable] | None = None,
                  group_field: str | None = None, groups: Sequence[str] | None = None) -> pd.DataFrame:
    """Does the generator keep the original data's group balance within each occupation?

    Per occupation and group (and pooled, ``all``): the generated share with its Wilson interval and an
    exact two-sided binomial test of the generated count against the original data's share
    (``scipy.stats.binomtest``). One more row (occupation and group ``all``, test ``chi2_stratified``)
    tests all occupations at once: Pearson's chi-square of homogeneity (generated vs original x group,
    ``scipy.stats.chi2_contingency`` without continuity correction) per occupation, summed over
    occupations with their degrees of freedom. Why stratified rather than one occupation x group
    table: the generator is asked for a fixed number of texts per occupation, so the occupation mix
    differs from the original data by design, and a joint table would test that instead of the balance.
    An occupation whose table has an empty row or group column adds nothing (no evidence either way).
    ``group_field`` and ``groups`` are passed to :func:`group_shares` for both data sets.

    Columns: occupation, group, count, n, n_unknown, share, ci_low, ci_high (generated data),
    original_count, original_n, original_share, test (``binomial`` / ``chi2_stratified``), statistic
    (the count k / the summed chi-square), dof (NaN / summed), p_value.
    """
    if groups is None:
        groups = _group_order(attribute, [row_groups(frame, attribute, names, group_field) for frame in (generated, original)])
    shares = group_shares(generated, attribute, names, group_field, groups)
    reference = group_shares(original, attribute, names, group_field, groups).rename(
        columns={"count": "original_count", "n": "original_n", "share": "original_share"})
    merged = shares.merge(reference[["occupation", "group", "original_count", "original_n", "original_share"]],
                          on=["occupation", "group"], how="left")
    merged["test"], merged["statistic"], merged["dof"] = "binomial", merged["count"].astype(float), math.nan
    merged["p_value"] = [_binomial_p(k, n, p) for k, n, p in zip(merged["count"], merged.n, merged.original_share)]
    return pd.concat([merged, pd.DataFrame([_stratified_chi2(merged)])], ignore_index=True)


def _binomial_p(count: int, n: int, share: float) -> float:
    if n == 0 or not math.isfinite(share):
        return math.nan
    return float(scipy_stats.binomtest(int(count), int(n), share).pvalue)


def _stratified_chi2(merged: pd.DataFrame) -> dict[str, Any]:
    statistic, dof, n = 0.0, 0, 0
    for occupation, part in merged[merged.occupation != ALL].groupby("occupation", sort=False):
        table = np.array([part["count"].to_numpy(), part.original_count.fillna(0).to_numpy()], dtype=float)
        table = table[:, table.sum(0) > 0]
        if table.shape[1] < 2 or (table.sum(1) == 0).any():
            continue
        result = scipy_stats.chi2_contingency(table, correction=False)
        statistic, dof, n = statistic + float(result.statistic), dof + int(result.dof), n + int(table[0].sum())
    p_value = float(scipy_stats.chi2.sf(statistic, dof)) if dof else math.nan
    return {"occupation": ALL, "group": ALL, "n": n, "test": "chi2_stratified",
            "statistic": statistic if dof else math.nan, "dof": float(dof) if dof else math.nan, "p_value": p_value}
