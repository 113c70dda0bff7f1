"""Audit augmented data against the original before training: the study's three misalignments on your files.

Why an audit: bias inheritance starts in the augmented data, so whatever a generator gets wrong about
people can be seen before a single student is trained on it. ``python -m biasutils audit --original A
--augmented B`` reads two JSONL, CSV or Parquet files and measures, with :mod:`biasutils.misalign`:

* **group data**: the share of each group per label (e.g. women among nurses) in the augmented data
  against the original's, with exact binomial tests and one stratified chi-square test over labels;
  groups come from ``--group-field`` or are inferred from the text (:func:`misalign.infer_group`);
* **distribution**: whether the two sets of texts are told apart in embedding space (MMD permutation
  test and a classifier two-sample test on a seeded subsample of ``--max-per-side`` texts per file,
  plus a 2-D projection); texts found in both files are counted and left out of both tests
  (:func:`find_duplicates`), and with too few texts left the tests are not run, saying why;
* **values**: the augmented data's implied share of women per occupation against human references
  (when the labels are the study's occupations) and the generator's agreement with gender stereotypes
  (with ``--generator``).

Every input is checked before any model loads; a bad one raises :class:`AuditError` (exit code 2),
whose message names the flag or file, what is wrong and what is allowed. The output directory gets
``report.html`` (self-contained: figures as base64 PNG), ``summary.json`` (every number, the verdicts
and the seconds per stage) and ``rows.csv`` (the study's record rows, :data:`biasutils.stats.RECORD_KEYS`).

Verdicts follow fixed rules, stated in the report (:data:`RULES`): a test rejects at α = 0.05; texts are
distinguishable when the classifier's AUC interval lies above 0.5 *and* the MMD test rejects; an AUC
interval below 0.5 is reported as a sign of near-duplicates across the files, never as a finding.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import string
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # installed with scikit-learn, which requires it

from . import misalign, stats
from .config import check_model_name, load_params
from .data import read_table
from .misalign import ALL, AUGMENTED, ORIGINAL, UNKNOWN
from .stats import RECORD_KEYS
from .store import Store, write_text_atomic

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


# ---------------------------------------------------------------------------------------------- the audit


def run_audit(options: AuditOptions) -> AuditResult:
    """Check every input, run the three analyses and write the report; returns its path and the verdicts."""
    check_options(options)
    clock = StageClock()
    with clock.stage("read"):
        raw = read_inputs(options)
    with clock.stage("infer groups"):
        sides = {side: tidy_frame(frame, options) for side, frame in raw.items()}
    with clock.stage("group tests"):
        balance = group_balance(sides[AUGMENTED], sides[ORIGINAL], audited_groups(sides, options))
    distribution = distribution_analysis(sides, options, clock)
    with clock.stage("values"):
        values = value_analysis(sides[AUGMENTED], options)
    verdicts = [group_verdict(balance), distribution_verdict(distribution), *values.verdicts]
    findings = Findings(options, sides, balance, distribution, values, verdicts)
    with clock.stage("report"):
        page = render_report(findings)
    return AuditResult(write_outputs(findings, page, clock.seconds), verdicts)


# ---------------------------------------------------------------------------------------------- inputs


def read_inputs(options: AuditOptions) -> dict[str, pd.DataFrame]:
    """Both files, read and checked against each other (fields, text values, row counts)."""
    frames = {ORIGINAL: read_table(options.original, "--original", AuditError, MIN_ROWS),
              AUGMENTED: read_table(options.augmented, "--augmented", AuditError, MIN_ROWS)}
    paths = {ORIGINAL: options.original, AUGMENTED: options.augmented}
    for flag, name in (("--text-field", options.text_field), ("--group-field", options.group_field),
                       ("--label-field", options.label_field)):
        if name is not None:
            check_field(flag, name, frames, paths)
    for side, frame in frames.items():
        check_text_values(frame, options.text_field, paths[side])
        check_row_count(frame, paths[side], f"--{side}")
    return frames


def _columns(frame: pd.DataFrame) -> str:
    return ", ".join(map(str, frame.columns))


def check_field(flag: str, name: str, frames: Mapping[str, pd.DataFrame], paths: Mapping[str, Path]) -> None:
    """A field must be in both files; in one only is a schema mismatch between them, named as such."""
    missing = [side for side, frame in frames.items() if name not in frame.columns]
    if len(missing) == len(frames):
        where = "; ".join(f"{paths[side]} has columns: {_columns(frames[side])}" for side in missing)
        raise AuditError(f"{flag}: field {name!r} is in neither file; {where}")
    if missing:
        (side,) = missing
        present = next(s for s in frames if s != side)
        raise AuditError(f"{flag}: mismatched schemas: field {name!r} is in {paths[present]} but not in "
                         f"{paths[side]}, whose columns are: {_columns(frames[side])}")


def check_text_values(frame: pd.DataFrame, field: str, path: Path) -> None:
    """Texts are embedded and searched for pronouns, so every value must be a string (missing ones are not)."""
    bad = [i for i, value in enumerate(frame[field]) if not isinstance(value, str)]
    if bad:
        value = frame[field].iloc[bad[0]]
        raise AuditError(f"--text-field: mismatched schemas: field {field!r} of {path} must hold strings, but "
                         f"{len(bad)} row(s) do not (first: row {bad[0] + 1} holds {value!r} of type "
                         f"{type(value).__name__})")


def check_row_count(frame: pd.DataFrame, path: Path, flag: str) -> None:
    if len(frame) < MIN_ROWS:
        raise AuditError(f"{flag}: {path} has {len(frame)} rows; the two-sample tests need at least "
                         f"{MIN_ROWS} rows per file")


def check_options(options: AuditOptions) -> None:
    """The command's own options, checked before the files are read: output directory, model names, sample size."""
    report = options.out / REPORT_FILE
    if options.out.exists() and not options.out.is_dir():
        raise AuditError(f"--out: {options.out} is a file; give a directory")
    if report.exists() and not options.force:
        raise AuditError(f"--out: {report} already exists; pass --force to overwrite it")
    for flag, name in (("--embedder", options.embedder), ("--generator", options.generator)):
        if name is not None:
            try:
                check_model_name(name)
            except ValueError as error:
                raise AuditError(f"{flag}: {error}") from None
    if options.max_per_side < MIN_ROWS:
        raise AuditError(f"--max-per-side: {options.max_per_side}; allowed: {MIN_ROWS} or more texts per file")


def as_labels(values: pd.Series) -> np.ndarray:
    """Values as stripped strings; missing or blank ones become ``unknown`` (counted, left out of shares)."""
    text = values.astype(object).where(values.notna(), "").map(lambda value: str(value).strip())
    return text.where(text != "", UNKNOWN).to_numpy(dtype=object)


def tidy_frame(raw: pd.DataFrame, options: AuditOptions) -> pd.DataFrame:
    """The columns the analyses read: ``text``, ``occupation`` (misalign's name for the label; :data:`NO_LABEL`
    without a label field) and ``group`` (the group field, else :func:`misalign.inferred_groups`)."""
    frame = pd.DataFrame({"text": raw[options.text_field].to_numpy(dtype=object)})
    frame["occupation"] = as_labels(raw[options.label_field]) if options.label_field else NO_LABEL
    if options.group_field:
        frame["group"] = as_labels(raw[options.group_field])
    else:
        frame["group"] = misalign.inferred_groups(frame, "gender").to_numpy(dtype=object)
    return frame


# ---------------------------------------------------------------------------------------------- group data


def audited_groups(sides: Mapping[str, pd.DataFrame], options: AuditOptions) -> list[str]:
    """Groups that get a row in every label's table: both genders when inferred, else every value seen."""
    seen = sorted({group for frame in sides.values() for group in frame.group} - {UNKNOWN})
    fixed = misalign.ATTRIBUTE_GROUPS["gender"] if options.group_field is None else ()
    return list(dict.fromkeys([*fixed, *seen]))


def group_balance(augmented: pd.DataFrame, original: pd.DataFrame, groups: Sequence[str]) -> pd.DataFrame:
    """:func:`misalign.balance_tests` on the frames' ``group`` columns (given or already inferred)."""
    return misalign.balance_tests(augmented, original, group_field="group", groups=groups)


# ---------------------------------------------------------------------------------------------- distribution


def distribution_analysis(sides: Mapping[str, pd.DataFrame], options: AuditOptions, clock: StageClock) -> Distribution:
    """Count the duplicates; then embed a seeded subsample of each file's unshared texts and run both two-sample
    tests and the projection. With too few unshared texts no model loads and the reason is kept instead."""
    from .models import load_embedder

    with clock.stage("duplicates"):
        duplicates = find_duplicates(sides)
    reason = untestable_reason(duplicates)
    if reason is not None:
        return Distribution(duplicates, None, None, None, reason)
    with clock.stage("load embedder"):
        embedder = load_embedder(options.embedder, Store(), _device())
    rng = np.random.default_rng(options.seed)
    texts = [subsample(duplicates.unshared[side], options.max_per_side, rng) for side in SIDES]
    with clock.stage("embed"):
        x, y = embed_pair(embedder, *texts)
    with clock.stage("mmd"):
        mmd = misalign.mmd_test(x, y, seed=options.seed, max_per_side=options.max_per_side)
    with clock.stage("c2st"), single_threaded_blas():
        c2st = misalign.classifier_two_sample_test(x, y, seed=options.seed)
    with clock.stage("projection"), single_threaded_blas():
        projection = misalign.projection_2d(x, y, seed=options.seed)
    return Distribution(duplicates, mmd, c2st, projection)


def text_key(text: str) -> str:
    """A text as duplicates are matched: runs of whitespace as one space, ends stripped, case folded.

    Why ignore case: a copy that only changes case is still a copy, and the default embedder (MiniLM,
    uncased) gives it the very same embedding, so it breaks the tests exactly as an exact copy does
    (measured: an upper-cased copy of a file gives the same below-chance AUC as the file itself). Spacing
    changes no token either. Punctuation and wording count: they change the text.
    """
    return " ".join(text.split()).casefold()


def find_duplicates(sides: Mapping[str, pd.DataFrame]) -> Duplicates:
    """Texts found in both files, and texts repeated within one, by :func:`text_key`.

    Why the tests leave out a text found in both files, on both sides: both tests assume two independent
    samples, and a copy breaks that. A text in both files cannot tell them apart, yet in cross-validation
    its copy in the training folds carries the other file's label, so the classifier's out-of-fold score
    turns against the held-out file (the same file on both sides gave AUC 0.06 [0.01, 0.12]); the MMD
    statistic falls below every permutation's (p = 1). Dropping it from both files, rather than from the
    augmented one only, treats the files alike: from two samples of one distribution the common texts
    would leave both, so what is left is still alike under the null.

    Repeats within a file are counted but kept: a generator that repeats itself is less diverse than the
    original, a real difference the tests should be able to see.
    """
    keys = {side: sides[side].text.map(text_key) for side in SIDES}
    shared = set(keys[ORIGINAL]) & set(keys[AUGMENTED])
    return Duplicates(shared_texts=len(shared), rows={side: len(key) for side, key in keys.items()},
                      repeated_rows={side: int(key.duplicated().sum()) for side, key in keys.items()},
                      unshared={side: sides[side].text[~key.isin(shared)].tolist() for side, key in keys.items()})


def untestable_reason(duplicates: Duplicates) -> str | None:
    """Why the two-sample tests cannot run (None when they can): a file has fewer than :data:`MIN_ROWS`
    texts the other lacks, the floor the input check sets for the tests on whole files."""
    for side, other in ((AUGMENTED, ORIGINAL), (ORIGINAL, AUGMENTED)):
        left, rows = len(duplicates.unshared[side]), duplicates.rows[side]
        if left == 0:
            return f"all {rows} {side} texts also appear in the {other} data"
        if left < MIN_ROWS:
            return (f"{rows - left} of {rows} {side} texts also appear in the {other} data, leaving {left} of the "
                    f"{MIN_ROWS} per file the two-sample tests need")
    return None


def single_threaded_blas() -> threadpool_limits:
    """One OpenBLAS thread for small LAPACK-bound steps (logistic regression, PCA).

    Why: with two threads on two shared cores, OpenBLAS made the SVD of a 1000 x 384 matrix take 7.9 s
    instead of 0.13 s and the classifier test 1.5 s instead of 0.24 s (bench/bench_audit.py machine);
    unshared, one thread is as fast at these sizes. Torch's embedding uses its own OpenMP pool, unaffected.
    """
    return threadpool_limits(limits=1, user_api="blas")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def subsample(texts: list[str], limit: int, rng: np.random.Generator) -> list[str]:
    """At most ``limit`` texts, drawn without replacement in file order: embedding is the audit's slow step."""
    if len(texts) <= limit:
        return texts
    return [texts[i] for i in np.sort(rng.choice(len(texts), limit, replace=False))]


def embed_pair(embedder: Any, original: list[str], augmented: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of both sides; a text found in both (or twice) is embedded once."""
    distinct = list(dict.fromkeys([*original, *augmented]))
    vectors = embedder.encode(distinct, batch_size=EMBED_BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)
    row = {text: i for i, text in enumerate(distinct)}
    return vectors[[row[text] for text in original]], vectors[[row[text] for text in augmented]]


# ---------------------------------------------------------------------------------------------- values


def reference_occupation(label: str) -> str:
    """A label as the study spells occupations ("Software engineer" -> "software_engineer")."""
    return label.strip().lower().replace(" ", "_").replace("-", "_")


def value_analysis(augmented: pd.DataFrame, options: AuditOptions) -> Values:
    """Shares of women against the references (labels that are study occupations) and, with a
    generator, its stereotype agreement; else one "not run" verdict that says why."""
    tables: dict[str, pd.DataFrame] = {}
    verdicts: list[Verdict] = []
    occupations = augmented.occupation.map(reference_occupation)
    known = occupations.isin(misalign.occupation_reference().occupation)
    if known.any():
        samples = augmented[known].assign(occupation=occupations[known])
        for name, (column, source) in REFERENCES.items():
            tables[name] = misalign.occupation_share_distance(samples, reference_column=column, seed=options.seed)
            verdicts.append(occupation_value_verdict(tables[name], name, source))
    if options.generator:
        tables["stereotypes"] = stereotype_table(options.generator)
        verdicts.append(stereotype_verdict(tables["stereotypes"], options.generator))
    if not verdicts:
        verdicts.append(Verdict("values", "Values", NOT_RUN, "; ".join(skipped_value_analyses(tables, options)) + "."))
    return Values(tables, verdicts)


def stereotype_table(generator: str) -> pd.DataFrame:
    """The generator's agreement with every GEST gender stereotype (:func:`misalign.stereotype_agreement`)."""
    from .evaluate import Scorer
    from .models import load_causal_lm

    model, tokenizer = load_causal_lm(generator, Store(), _device())
    items = misalign.stereotype_items()
    return misalign.stereotype_agreement(items, Scorer(model, tokenizer, load_params(VALUE_PROFILE)).choice(items))


def skipped_value_analyses(tables: Mapping[str, pd.DataFrame], options: AuditOptions) -> list[str]:
    """Which value analyses could not run and what they need: the report says so rather than stay silent."""
    skipped = []
    if not set(REFERENCES) & set(tables):
        occupations = ", ".join(misalign.occupation_reference().occupation)
        why = ("no --label-field was given" if options.label_field is None
               else f"{options.label_field!r} holds none of them")
        skipped.append(f"comparing the share of women per occupation with human references needs a --label-field "
                       f"holding the study's occupations ({occupations}); {why}")
    if "stereotypes" not in tables:
        skipped.append("scoring the generator's agreement with gender stereotypes needs --generator MODEL")
    return skipped


# ---------------------------------------------------------------------------------------------- verdicts


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


# ---------------------------------------------------------------------------------------------- outputs


def write_outputs(findings: Findings, page: str, seconds: Mapping[str, float]) -> Path:
    """rows.csv and summary.json, then report.html last, each atomically: a report means a finished audit."""
    out = findings.options.out
    write_text_atomic(out / ROWS_FILE, record_frame(findings).to_csv(index=False))
    summary = summary_of(findings) | {"seconds": dict(seconds)}
    write_text_atomic(out / SUMMARY_FILE, json.dumps(_json_ready(summary), indent=2, ensure_ascii=False, allow_nan=False))
    report = out / REPORT_FILE
    write_text_atomic(report, page)
    return report.resolve()


def group_attribute(options: AuditOptions) -> str:
    """The record's ``attribute``: gender when inferred (what :func:`misalign.infer_group` infers), else the
    group field's name."""
    return options.group_field or "gender"


def record_frame(findings: Findings) -> pd.DataFrame:
    """The study's record rows (:func:`misalign.misalignment_rows`) with the audited groups' attribute.

    misalign accepts only the attributes it can infer, so the rows are built as gender and relabelled.
    """
    rows = misalign.misalignment_rows("gender", RECORD_BIAS_TYPE, findings.options.seed,
                                      values=list(findings.values.tables.values()), group=findings.balance,
                                      distribution=findings.distribution.tests() or None)
    rows += duplicate_rows(findings.distribution.duplicates, findings.options.seed)
    return pd.DataFrame(rows, columns=list(RECORD_KEYS)).assign(attribute=group_attribute(findings.options))


def duplicate_rows(duplicates: Duplicates, seed: int) -> list[dict[str, Any]]:
    """Record rows of the duplicate counts, task ``misalignment_distribution``, group the file, ``n`` its rows:
    ``shared_rows`` (rows whose text the other file holds, left out of the tests) and ``repeated_rows``.
    Why in the record too: a reader of rows.csv alone must see that the tests ran on fewer texts, or none."""
    table = pd.DataFrame([{"group": side, "metric": metric, "value": float(count), "ci_low": math.nan,
                           "ci_high": math.nan, "n": duplicates.rows[side]}
                          for side in SIDES for metric, count in (("shared_rows", duplicates.shared_rows(side)),
                                                                  ("repeated_rows", duplicates.repeated_rows[side]))])
    return stats.record_rows(table, attribute="gender", bias_type=RECORD_BIAS_TYPE, ratio=misalign.RECORD_RATIO,
                             mitigation=misalign.RECORD_MITIGATION, seed=seed, task=misalign.TASK_DISTRIBUTION)


def input_summary(findings: Findings) -> dict[str, Any]:
    options = findings.options
    sides = {side: {"path": str(path), "rows": len(findings.sides[side]),
                    "unknown_groups": int((findings.sides[side].group == UNKNOWN).sum())}
             for side, path in ((ORIGINAL, options.original), (AUGMENTED, options.augmented))}
    mmd = findings.distribution.mmd
    sides[ORIGINAL]["embedded"] = mmd["n_x"] if mmd else 0
    sides[AUGMENTED]["embedded"] = mmd["n_y"] if mmd else 0
    return sides | {"text_field": options.text_field, "group_field": options.group_field,
                    "group_source": "field" if options.group_field else "inferred",
                    "label_field": options.label_field, "embedder": options.embedder,
                    "generator": options.generator, "seed": options.seed, "max_per_side": options.max_per_side}


def summary_of(findings: Findings) -> dict[str, Any]:
    """Every number of the audit, as JSON-ready values."""
    return {
        "inputs": input_summary(findings),
        "thresholds": {"alpha": ALPHA, "chance_auc": CHANCE_AUC, "value_distance_limit": VALUE_DISTANCE_LIMIT,
                       "stereotype_majority": STEREOTYPE_MAJORITY, "min_rows": MIN_ROWS},
        "rules": list(RULES),
        "verdicts": {v.key: {"analysis": v.analysis, "state": v.state, "sentence": v.sentence} for v in findings.verdicts},
        "group": findings.balance.to_dict("records"),
        "duplicates": findings.distribution.duplicates.counts(),
        "distribution": {"mmd": findings.distribution.mmd, "c2st": findings.distribution.c2st,
                         "not_run": findings.distribution.not_run},
        "values": {name: table.to_dict("records") for name, table in findings.values.tables.items()},
    }


def _json_ready(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither), numpy scalars plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------- HTML

PAGE = string.Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Augmentation audit</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.state { font-weight: bold; padding: 0 0.3rem; border-radius: 0.2rem; }
.misaligned { background: #f8d7da; } .aligned { background: #d4edda; }
.inconclusive { background: #fff3cd; } .not-run { background: #e2e3e5; }
</style></head><body>
<h1>Augmentation audit</h1>
<p>Augmented <code>$augmented</code> against original <code>$original</code>, $created.</p>
<h2>Verdicts</h2>
<ul>$verdicts</ul>
<h2>Decision rules</h2>
<ul>$rules</ul>
<h2>Inputs</h2>
$inputs
<h2>Group data</h2>
$group
<h2>Distribution</h2>
$distribution
<h2>Values</h2>
$values
<p>Every number is in <code>summary.json</code>; the study's record rows are in <code>rows.csv</code>.</p>
</body></html>
""")


def render_report(findings: Findings) -> str:
    options = findings.options
    return PAGE.substitute(
        original=html.escape(str(options.original)), augmented=html.escape(str(options.augmented)),
        created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        verdicts="".join(_verdict_html(v) for v in findings.verdicts),
        rules="".join(f"<li>{html.escape(rule)}</li>" for rule in RULES),
        inputs=_inputs_html(findings), group=_group_html(findings),
        distribution=_distribution_html(findings.distribution), values=_values_html(findings.values, options),
    )


def _verdict_html(verdict: Verdict) -> str:
    css = verdict.state.replace(" ", "-")
    return (f'<li><b>{html.escape(verdict.analysis)}</b>: <span class="state {css}">{verdict.state}</span> — '
            f"{html.escape(verdict.sentence)}</li>")


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, na_rep="–", float_format=lambda v: f"{v:.3g}")


def _figure_html(figure: plt.Figure, alt: str) -> str:
    """A figure as an embedded PNG, so the report is one file that opens anywhere."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}"></p>'


def _inputs_html(findings: Findings) -> str:
    inputs = input_summary(findings)
    duplicates = findings.distribution.duplicates
    table = pd.DataFrame([{"file": side, "path": inputs[side]["path"], "rows": inputs[side]["rows"],
                           "unknown group": inputs[side]["unknown_groups"],
                           "repeated in the file": duplicates.repeated_rows[side],
                           "text in both files": duplicates.shared_rows(side), "embedded": inputs[side]["embedded"]}
                          for side in SIDES])
    options = findings.options
    unknown = " and ".join(f"{inputs[side]['unknown_groups']} of {inputs[side]['rows']} {side}"
                           for side in (ORIGINAL, AUGMENTED))
    if options.group_field:
        groups = (f"Groups come from the field <code>{html.escape(options.group_field)}</code>; missing or blank "
                  f"values are unknown: {unknown} rows.")
    else:
        groups = ("Groups were <b>inferred</b> from the text with <code>misalign.infer_group</code> (gender: the majority "
                  "of gendered pronouns and nouns, then the first given name of exactly one gender); texts with "
                  f"neither are unknown: {unknown} rows.")
    labels = (f"Labels come from the field <code>{html.escape(options.label_field)}</code>." if options.label_field
              else f"No label field: all rows share the label <code>{NO_LABEL}</code>.")
    embedded = (f"The distribution tests embed a seeded sample of at most {options.max_per_side} texts per file, "
                f"from the rows whose text the other file lacks ({TEXT_MATCHING}), with "
                f"<code>{html.escape(options.embedder)}</code> (seed {options.seed}).")
    return f"{_table_html(table)}<p>{groups} Unknown rows are left out of the shares. {labels} {embedded}</p>"


def _group_html(findings: Findings) -> str:
    balance = findings.balance
    rows = balance[balance.test == "binomial"]
    table = rows[["occupation", "group", "count", "n", "share", "ci_low", "ci_high", "original_count", "original_n",
                  "original_share", "p_value"]].rename(columns={"occupation": "label", "n": "n known",
                                                                "p_value": "binomial p"})
    chi2 = balance[balance.test == "chi2_stratified"].iloc[0]
    parts = [f"<p>Share of each group per label in the augmented data (95% Wilson interval) against the original; "
             f"the binomial test asks whether the augmented count fits the original's share. Stratified chi-square "
             f"over labels: χ²({chi2.dof:.0f}) = {chi2.statistic:.2f}, {html.escape(format_p(chi2.p_value))}.</p>",
             _table_html(table)]
    if "female" in set(rows.group):
        shares = {side: misalign.group_shares(findings.sides[side], group_field="group", groups=["female"])
                  for side in (AUGMENTED, ORIGINAL)}
        parts.append(_figure_html(misalign.share_female_figure(shares[AUGMENTED], shares[ORIGINAL]),
                                  "share of women per label"))
    return "".join(parts)


def _distribution_html(distribution: Distribution) -> str:
    sentence = duplicates_sentence(distribution.duplicates)
    counts = f"<p>{html.escape(sentence[0].upper() + sentence[1:])}.</p>"
    if distribution.not_run is not None:
        return f"{counts}<p>Not run: {html.escape(distribution.not_run)}; {NOT_TESTED}.</p>"
    mmd, c2st = distribution.mmd, distribution.c2st
    table = pd.DataFrame([
        {"test": "MMD² (RBF kernel, permutations)", "statistic": mmd["statistic"], "interval": "",
         "p": mmd["p_value"], "n original": mmd["n_x"], "n augmented": mmd["n_y"]},
        {"test": "classifier AUC (5-fold logistic regression)", "statistic": c2st["auc"],
         "interval": f"[{c2st['ci_low']:.3f}, {c2st['ci_high']:.3f}]", "p": c2st["p_value"],
         "n original": c2st["n_x"], "n augmented": c2st["n_y"]},
    ])
    figure = misalign.projection_figure(distribution.projection, "embeddings, first two principal components")
    return counts + _table_html(table) + _figure_html(figure, "2-D projection of the embeddings")


VALUE_NOTES: dict[str, str] = {
    name: f"Share of women per occupation in the augmented data against {source}: Jensen-Shannon distance (base 2; "
          "0 = same share) with a 95% bootstrap interval; the all row is the mean over occupations. Genders are "
          "inferred from the text even when a group field is given, since the reference is about women."
    for name, (_column, source) in REFERENCES.items()
} | {"stereotypes": "Share of GEST gender stereotypes the generator agrees with (it scores Yes above No), per "
                    "target group, with a 95% Wilson interval."}


def _values_html(values: Values, options: AuditOptions) -> str:
    skipped = "".join(f"<li>{html.escape(reason)}</li>" for reason in skipped_value_analyses(values.tables, options))
    tables = "".join(f"<h3>{html.escape(name)}</h3><p>{html.escape(VALUE_NOTES[name])}</p>{_table_html(table)}"
                     for name, table in values.tables.items())
    return tables + (f"<p>Not run:</p><ul>{skipped}</ul>" if skipped else "")
