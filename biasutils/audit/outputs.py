"""What the audit writes: ``rows.csv`` (the study's record rows), ``summary.json`` (every number) and the
self-contained ``report.html`` (figures as base64 PNG), each atomically, the report last.

Why together: the three files are views of one :class:`~biasutils.audit.findings.Findings`, and the
report's tables show the same summary the JSON holds.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import misalign, stats
from ..misalign import AUGMENTED, ORIGINAL, UNKNOWN
from ..stats import RECORD_KEYS
from ..store import write_text_atomic
from .analyses import skipped_value_analyses
from .findings import (
    ALPHA, CHANCE_AUC, MIN_ROWS, NO_LABEL, NOT_TESTED, RECORD_BIAS_TYPE, REFERENCES, REPORT_FILE, ROWS_FILE, RULES,
    SIDES, STEREOTYPE_MAJORITY, SUMMARY_FILE, TEXT_MATCHING, VALUE_DISTANCE_LIMIT, AuditOptions, Distribution,
    Duplicates, Findings, Values, Verdict,
)
from .verdicts import duplicates_sentence, format_p


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
