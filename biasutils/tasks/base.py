"""What every task shares: the :class:`Item` a scorer answers, the :class:`Task` protocol, checks of the
outputs, the metric-row helpers and the seeded draws of named people.

Why one module: each task module builds items and scores them with these, and none of them needs
another task's code (occupation titles aside, see :mod:`~biasutils.tasks.occupation`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from .. import stats
from ..config import GENDERS, StudyParams
from ..corpus import NameDrawer, name_tables
from ..store import Store

KINDS: tuple[str, ...] = ("choice", "sequences", "generate")
ALL = "all"  # group label of rows over every sample


@dataclass(frozen=True)
class Item:
    """One question for the model-side scorer; ``meta`` carries the gold answer and group attributes."""

    id: str
    kind: str  # "choice" | "sequences" | "generate"
    prompt: str = ""  # user message (the scorer applies the chat template) for choice/generate
    options: tuple[str, ...] = ()  # choice: candidate answers; the scorer returns one score per option
    texts: tuple[str, ...] = ()  # sequences: raw texts; the scorer returns each text's total log-likelihood
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"item {self.id!r}: kind {self.kind!r} is not allowed; allowed: {', '.join(KINDS)}")


class Task(Protocol):
    name: str

    def items(self, params: StudyParams, store: Store) -> list[Item]: ...

    def score(self, items: Sequence[Item], outputs: Sequence[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(per-sample predictions with item id, parsed prediction, group columns; metric rows with columns
        group, metric, value, ci_low, ci_high, n) — gap rows from stats.gap_table included"""
        ...


# ---------------------------------------------------------------------------------------------- outputs


def _check_output(item: Item, output: Any, kind: str) -> None:
    """Fail on an output that does not fit its item, naming the item, rather than scoring garbage."""
    if item.kind != kind:
        raise ValueError(f"item {item.id!r}: kind {item.kind!r}, but this task scores {kind!r} items")
    if kind == "generate":
        if not isinstance(output, str):
            raise ValueError(f"item {item.id!r}: a 'generate' output must be a string, got {type(output).__name__}")
        return
    expected, unit = (item.options, "option") if kind == "choice" else (item.texts, "text")
    scores = np.asarray(output, dtype=float)
    if scores.shape != (len(expected),):
        raise ValueError(
            f"item {item.id!r}: a {kind!r} output holds one score per {unit} ({len(expected)}), "
            f"got shape {scores.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError(f"item {item.id!r}: the scores {scores.tolist()} contain NaN")


def _frame(items: Sequence[Item], outputs: Sequence[Any], kind: str) -> pd.DataFrame:
    """One row per item: its id and scalar meta (gold answer, group columns), after checking the outputs."""
    if len(items) != len(outputs):
        raise ValueError(f"got {len(outputs)} outputs for {len(items)} items; expected one output per item")
    if not items:
        raise ValueError("no items to score")
    for item, output in zip(items, outputs, strict=True):
        _check_output(item, output, kind)
    scalars = (str, int, float, bool)
    return pd.DataFrame(
        [{"id": item.id, **{k: v for k, v in item.meta.items() if isinstance(v, scalars)}} for item in items]
    )


def _choices(items: Sequence[Item], outputs: Sequence[Any]) -> pd.DataFrame:
    """Per-item frame with the chosen option's index (``choice``) and text (``prediction``)."""
    frame = _frame(items, outputs, "choice")
    frame["choice"] = [int(np.argmax(np.asarray(scores, dtype=float))) for scores in outputs]
    frame["prediction"] = [item.options[choice] for item, choice in zip(items, frame["choice"], strict=True)]
    return frame


def _generations(items: Sequence[Item], outputs: Sequence[Any]) -> pd.DataFrame:
    frame = _frame(items, outputs, "generate")
    frame["text"] = list(outputs)
    return frame


# ---------------------------------------------------------------------------------------------- metrics


def _labels(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Group label per row: the columns joined ("arabic/female"), or :data:`ALL` for no columns."""
    if not columns:
        return np.full(len(frame), ALL, dtype=object)
    return stats.group_labels(frame[list(columns)])


def _column(frame: pd.DataFrame, name: str | None) -> np.ndarray | None:
    return None if name is None else frame[name].to_numpy()


def _table(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Metric rows of several group and gap tables, in one frame."""
    rows = [stats.metric_rows(part) for part in parts if len(part)]
    if not rows:
        return pd.DataFrame(columns=list(stats.GROUP_COLUMNS))
    return pd.concat(rows, ignore_index=True)


def _nan_row(metric: str) -> pd.DataFrame:
    """A metric we cannot measure, reported as NaN rather than left out or invented."""
    row = {"group": ALL, "metric": metric, "value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    return pd.DataFrame([row], columns=list(stats.GROUP_COLUMNS))


def _present(frame: pd.DataFrame, column: str, reference: str) -> list[tuple[str, str]]:
    """(group, reference) pairs for every other group present in a column: the gaps to a reference group."""
    return [(str(group), reference) for group in sorted(set(frame[column].astype(str))) if group != reference]


@dataclass(frozen=True, kw_only=True)
class _Scoring:
    """Resampling settings every task's ``score`` passes to :mod:`biasutils.stats`.

    Every resample recomputes each grouping's metrics (a permutation test and two bootstraps per gap);
    ``dataclasses.replace(task, n_boot=200)`` trades interval precision for time.
    """

    n_boot: int = 1000
    n_permutations: int = 999
    seed: int = 0
    ci: float = 0.95
    # True where an item's meta (gold answer, groups) comes from a user's files rather than from params: the
    # evaluation then keys its stored outputs by the meta too, so an edited label is never scored from a stale store
    meta_in_key: ClassVar[bool] = False

    def groups(
        self, frame: pd.DataFrame, metrics: Mapping[str, stats.Metric], by: Iterable[Sequence[str]],
        y_pred: str, y_true: str | None = None,
    ) -> list[pd.DataFrame]:
        """One group table per grouping in ``by`` (``()`` = all samples, ``("culture", "gender")`` = intersection)."""
        return [
            stats.group_table(_column(frame, y_true), frame[y_pred].to_numpy(), _labels(frame, columns), metrics,
                              n_boot=self.n_boot, seed=self.seed, ci=self.ci)
            for columns in by
        ]

    def gaps(
        self, frame: pd.DataFrame, metrics: Mapping[str, stats.Metric], columns: Sequence[str],
        pairs: Iterable[tuple[str, str]], y_pred: str, y_true: str | None = None,
    ) -> list[pd.DataFrame]:
        """One gap table per (group_a, group_b) pair of the grouping ``columns``."""
        labels = _labels(frame, columns)
        return [
            stats.gap_table(_column(frame, y_true), frame[y_pred].to_numpy(), labels, metrics, a, b,
                            n_boot=self.n_boot, seed=self.seed, ci=self.ci, n_permutations=self.n_permutations)
            for a, b in pairs
        ]

    def unparsed(self, frame: pd.DataFrame) -> list[pd.DataFrame]:
        """``unparsed_share`` overall and per gender, from the frame's boolean ``parsed`` column."""
        flags = frame.assign(unparsed=(~frame["parsed"]).astype(float))
        return self.groups(flags, {"unparsed_share": stats.RATE}, [(), ("gender",)], "unparsed")


# ---------------------------------------------------------------------------------------------- named people


def _round_robin(buckets: Sequence[Sequence[Any]], n: int) -> list[Any]:
    """Up to ``n`` entries taken one bucket at a time, so every cell of a design gets its share."""
    taken = []
    for rank in range(max((len(bucket) for bucket in buckets), default=0)):
        taken += [bucket[rank] for bucket in buckets if rank < len(bucket)]
    return taken[:n]


def _cells(params: StudyParams) -> list[tuple[str, str]]:
    """(culture, gender) cells of the named-person tasks."""
    return list(itertools.product(params.data.cultures, GENDERS))


def _drawers(params: StudyParams, stream: str) -> dict[tuple[str, str], NameDrawer]:
    """Seeded name drawers per (culture, gender) cell, names from ``corpus.name_tables``; ``stream``
    keeps the tasks' draws independent of each other."""
    rng = random.Random(f"{stream}-{params.seed}")
    tables = name_tables()
    return {cell: NameDrawer(tables[cell], rng) for cell in _cells(params)}


def _people(params: StudyParams, stream: str, n: int) -> list[dict[str, str]]:
    """``n`` named people cycling over the culture x gender cells."""
    drawers = _drawers(params, stream)
    people = []
    for culture, gender in itertools.islice(itertools.cycle(drawers), n):
        first, last = drawers[(culture, gender)].draw()
        people.append({"name": f"{first} {last}", "first": first, "culture": culture, "gender": gender})
    return people
