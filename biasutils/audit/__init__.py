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

The package, by concept: :mod:`.findings` (thresholds, decision rules, file names, the options and the
result types), :mod:`.inputs` (checks of the options and files, the tidy frames), :mod:`.analyses` (group
data, distribution, values: the measurements, the only steps that load models), :mod:`.verdicts` (the
rules applied, in words) and :mod:`.outputs` (rows.csv, summary.json, report.html). :func:`run_audit`, the
order of the steps, is here; every public name is re-exported, so callers write ``audit.X`` as before.
"""

from __future__ import annotations

from ..misalign import AUGMENTED, ORIGINAL
from .analyses import (
    audited_groups, distribution_analysis, embed_pair, find_duplicates, group_balance, reference_occupation,
    single_threaded_blas, skipped_value_analyses, stereotype_table, subsample, text_key, untestable_reason,
    value_analysis,
)
from .findings import (
    ALIGNED, ALPHA, BELOW_CHANCE, CHANCE_AUC, EMBED_BATCH_SIZE, GROUP_NOUNS, INCONCLUSIVE, MIN_ROWS, MISALIGNED,
    NO_LABEL, NOT_RUN, NOT_TESTED, RECORD_BIAS_TYPE, REFERENCES, REPORT_FILE, ROWS_FILE, RULES, SIDES,
    STEREOTYPE_MAJORITY, SUMMARY_FILE, TEXT_MATCHING, VALUE_DISTANCE_LIMIT, VALUE_PROFILE, AuditError, AuditOptions,
    AuditResult, Distribution, Duplicates, Findings, StageClock, Values, Verdict,
)
from .inputs import (
    as_labels, check_field, check_options, check_row_count, check_text_values, read_inputs, tidy_frame,
)
from .outputs import (
    PAGE, VALUE_NOTES, duplicate_rows, group_attribute, input_summary, record_frame, render_report, summary_of,
    write_outputs,
)
from .verdicts import (
    distribution_verdict, duplicates_sentence, format_p, group_noun, group_verdict, largest_shift,
    occupation_value_verdict, stereotype_verdict, two_sample_verdict,
)

__all__ = [
    # findings: thresholds, rules, file names, options and result types
    "ALIGNED", "ALPHA", "BELOW_CHANCE", "CHANCE_AUC", "EMBED_BATCH_SIZE", "GROUP_NOUNS", "INCONCLUSIVE", "MIN_ROWS",
    "MISALIGNED", "NO_LABEL", "NOT_RUN", "NOT_TESTED", "RECORD_BIAS_TYPE", "REFERENCES", "REPORT_FILE", "ROWS_FILE",
    "RULES", "SIDES", "STEREOTYPE_MAJORITY", "SUMMARY_FILE", "TEXT_MATCHING", "VALUE_DISTANCE_LIMIT", "VALUE_PROFILE",
    "AuditError", "AuditOptions", "AuditResult", "Distribution", "Duplicates", "Findings", "StageClock", "Values",
    "Verdict",
    # inputs
    "as_labels", "check_field", "check_options", "check_row_count", "check_text_values", "read_inputs", "tidy_frame",
    # analyses
    "audited_groups", "distribution_analysis", "embed_pair", "find_duplicates", "group_balance",
    "reference_occupation", "single_threaded_blas", "skipped_value_analyses", "stereotype_table", "subsample",
    "text_key", "untestable_reason", "value_analysis",
    # verdicts
    "distribution_verdict", "duplicates_sentence", "format_p", "group_noun", "group_verdict", "largest_shift",
    "occupation_value_verdict", "stereotype_verdict", "two_sample_verdict",
    # outputs
    "PAGE", "VALUE_NOTES", "duplicate_rows", "group_attribute", "input_summary", "record_frame", "render_report",
    "summary_of", "write_outputs",
    # the audit
    "run_audit",
]


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
