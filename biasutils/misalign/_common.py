"""What the three misalignments share: the side and group labels, the argument checks and the 95% intervals.

One definition each, imported by values, group data, distribution and the stage alike, so that every
part of the stage says ``unknown`` the same way, checks its arguments with the same messages and gives
intervals at the same level (:data:`CI_LEVEL`: percentile bootstrap, or Wilson for a share of counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from scipy import stats as scipy_stats

from ..config import CULTURES, GENDERS, OCCUPATIONS

CI_LEVEL = 0.95
UNKNOWN = "unknown"
ORIGINAL, AUGMENTED = "original", "augmented"
ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {"gender": GENDERS, "culture": CULTURES}


def _require_columns(frame: pd.DataFrame, argument: str, columns: Sequence[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{argument}: missing column(s) {missing}; required: {', '.join(columns)}")
    if frame.empty:
        raise ValueError(f"{argument}: no rows; give at least one sample")


def _check_attribute(attribute: str) -> None:
    if attribute not in ATTRIBUTE_GROUPS:
        raise ValueError(f"attribute: {attribute!r}; allowed: {', '.join(ATTRIBUTE_GROUPS)}")


def _check_n_boot(n_boot: int) -> None:
    if n_boot < 0:
        raise ValueError(f"n_boot: {n_boot!r}; allowed: 0 (no interval) or a positive number of resamples")


def _ordered_occupations(values: Any) -> list[str]:
    """Distinct occupations, the study's six first in their usual order, then any others sorted."""
    present = set(map(str, values))
    return [o for o in OCCUPATIONS if o in present] + sorted(present - set(OCCUPATIONS))


def wilson_interval(count: int, n: int) -> tuple[float, float]:
    """Wilson score interval of ``count / n`` (scipy's); NaN bounds for ``n = 0``.

    Why Wilson: it stays inside [0, 1] and keeps its coverage for small counts and shares near 0 or 1,
    which is exactly where a stereotyped generator puts an occupation.
    """
    if n == 0:
        return math.nan, math.nan
    interval = scipy_stats.binomtest(count, n).proportion_ci(confidence_level=CI_LEVEL, method="wilson")
    return float(interval.low), float(interval.high)
