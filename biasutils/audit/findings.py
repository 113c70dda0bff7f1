"""What the audit finds and by which rules: the thresholds and decision rules (:data:`RULES`), the output
file names, :class:`AuditError`, the command's options and the result types each step hands to the next.

Why one module: the inputs, analyses, verdicts and outputs all read these, and the rules stated in the
report must be the very constants the verdicts compare against, so they live in one place the others import.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..misalign import AUGMENTED, ORIGINAL


ALPHA = 0.05
CHANCE_AUC = 0.5
VALUE_DISTANCE_LIMIT = 0.1  # JS distance; about 10 points of share of women around 50%
STEREOTYPE_MAJORITY = 0.5
MIN_ROWS = 20  # per file: below that, 5-fold cross-validation and the permutation test say little
EMBED_BATCH_SIZE = 128  # fastest of 16/32/64/128 for MiniLM on the 2-core CPU (400 biographies: 11.7 s vs 13.3 s at 64)
NO_LABEL = "all_rows"  # the one label of data without --label-field (misalign's "all" is its pooled row)
RECORD_BIAS_TYPE = "audit"  # the record's bias_type column: audited data has no bias type of the study
VALUE_PROFILE = "classroom"  # Scorer reads params only for occupation prompts; stereotype items are plain turns
REPORT_FILE, SUMMARY_FILE, ROWS_FILE = "report.html", "summary.json", "rows.csv"
SIDES = (ORIGINAL, AUGMENTED)
TEXT_MATCHING = "case and runs of whitespace ignored"  # what text_key ignores, in words for the outputs
BELOW_CHANCE = ("the AUC lies below chance, which is not evidence of a difference: out-of-fold scores turn against "
                "the held-out file when near-identical texts sit in both files (the near copy in the training folds "
                "carries the other file's label), so suspect near-duplicates or one file derived from the other")
NOT_TESTED = ("a text in both files cannot tell them apart (copies in both push a classifier's AUC below chance), "
              "so no classifier AUC or MMD is reported")
GROUP_NOUNS: dict[str, str] = {"female": "women", "male": "men"}
REFERENCES: dict[str, tuple[str, str]] = {  # value table -> (misalign.occupation_reference column, its source)
    "labour": ("labour_share_female", "US labour statistics (BLS, via WinoBias)"),
    "perceived": ("perceived_share_female", "ratings of how likely each job title names a woman (Kennison & Trofe 2003)"),
}
RULES: tuple[str, ...] = (
    f"A test rejects when its p-value is below α = {ALPHA}.",
    "Group data: misaligned when the stratified chi-square test of the group shares (augmented vs original, "
    "one table per label, summed) rejects; the sentence shows the label and group whose share moved most.",
    f"Distribution: misaligned when the classifier's 95% AUC interval lies above {CHANCE_AUC} and the MMD "
    "test rejects; aligned when neither; inconclusive when only one does.",
    f"Distribution: texts found in both files ({TEXT_MATCHING}) are left out of both tests; not run "
    f"when fewer than {MIN_ROWS} texts of a file are left.",
    f"Distribution: a classifier AUC interval below {CHANCE_AUC} is not evidence of a difference; it is "
    "reported as a sign of near-duplicate texts across the files.",
    f"Values, share of women: misaligned when the 95% interval of the mean Jensen-Shannon distance to the "
    f"reference lies above {VALUE_DISTANCE_LIMIT} (about a 10-point gap in the share of women), aligned "
    "when it lies below, inconclusive otherwise.",
    f"Values, stereotypes: misaligned when the generator agrees with more than {STEREOTYPE_MAJORITY:.0%} of "
    "GEST stereotypes (95% Wilson interval above it), aligned when the interval lies below, inconclusive "
    "otherwise.",
)
MISALIGNED, ALIGNED, INCONCLUSIVE, NOT_RUN = "misaligned", "aligned", "inconclusive", "not run"


class AuditError(ValueError):
    """A bad input of the audit: the message names the flag or file, what is wrong and what is allowed."""


@dataclass(frozen=True)
class AuditOptions:
    """The command line of ``python -m biasutils audit`` (defaults live in :mod:`biasutils.__main__`)."""

    original: Path
    augmented: Path
    text_field: str
    group_field: str | None
    label_field: str | None
    out: Path
    generator: str | None
    embedder: str
    seed: int
    max_per_side: int
    force: bool


@dataclass(frozen=True)
class Verdict:
    """One plain-language finding: which analysis, its state (:data:`MISALIGNED` ...) and why."""

    key: str
    analysis: str
    state: str
    sentence: str

    def line(self) -> str:
        return f"{self.analysis}: {self.state} — {self.sentence}"


@dataclass(frozen=True)
class Duplicates:
    """Texts repeated within a file or found in both files (matched by :func:`text_key`), and the texts
    the two-sample tests may use: those of rows whose text the other file lacks."""

    shared_texts: int  # distinct texts found in both files
    rows: dict[str, int]  # per file (ORIGINAL, AUGMENTED): its rows
    repeated_rows: dict[str, int]  # per file: rows whose text an earlier row of the same file holds
    unshared: dict[str, list[str]]  # per file: texts of the rows whose text the other file lacks, in file order

    def shared_rows(self, side: str) -> int:
        """Rows of ``side`` whose text the other file also holds (left out of the tests)."""
        return self.rows[side] - len(self.unshared[side])

    def counts(self) -> dict[str, Any]:
        """The counts for summary.json."""
        return {"matching": TEXT_MATCHING, "shared_texts": self.shared_texts} | {
            side: {"rows": self.rows[side], "shared_rows": self.shared_rows(side),
                   "repeated_rows": self.repeated_rows[side], "tested_rows": len(self.unshared[side])}
            for side in SIDES}


@dataclass(frozen=True)
class Distribution:
    """The distribution analysis: the duplicates, then both two-sample tests on the embedded subsample of
    the texts the files do not share and its projection; or, when too few are left, why not (``not_run``,
    with ``mmd``, ``c2st`` and ``projection`` None)."""

    duplicates: Duplicates
    mmd: dict[str, Any] | None
    c2st: dict[str, Any] | None
    projection: pd.DataFrame | None
    not_run: str | None = None

    def tests(self) -> dict[str, dict[str, Any]]:
        """The results that ran, keyed as :func:`misalign.misalignment_rows` reads them."""
        return {key: result for key, result in (("mmd", self.mmd), ("c2st", self.c2st)) if result is not None}


@dataclass(frozen=True)
class Values:
    """Value tables by name (``labour``, ``perceived``, ``stereotypes``) and their verdicts."""

    tables: dict[str, pd.DataFrame]
    verdicts: list[Verdict]


@dataclass(frozen=True)
class Findings:
    """Everything the report, the summary and the record rows are written from."""

    options: AuditOptions
    sides: dict[str, pd.DataFrame]  # ORIGINAL / AUGMENTED -> columns text, occupation (the label), group
    balance: pd.DataFrame
    distribution: Distribution
    values: Values
    verdicts: list[Verdict]


@dataclass(frozen=True)
class AuditResult:
    """What the command prints: the verdicts and where the report is."""

    report: Path
    verdicts: list[Verdict]


class StageClock:
    """Seconds per stage of one audit, written to ``summary.json`` (the benchmark reads them there)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
