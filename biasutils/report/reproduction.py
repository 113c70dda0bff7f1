"""Does a reproduction agree with the committed record?

Before it renders, ``python -m biasutils run`` sets the committed record aside (:func:`set_aside`): the
profile's ``metrics.csv`` and the artifact keys each render's ``.run.yaml`` names, from git's ``HEAD``
when the reports are in a git work tree (a killed run cannot move the baseline), else the files as they
were before the run. After the renders, :func:`verify` compares the new ``metrics.csv`` row by row and
writes ``reproduction.md``: rows added and missing, the largest absolute difference per metric, and a
verdict: *identical*, *within tolerance* (params ``reproduction``), or *differs* with the rows named.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..config import Reproduction
from ..stats import RECORD_KEYS
from ..store import write_text_atomic

REPORT_FILE = "reproduction.md"
METRICS_FILE = "metrics.csv"
VALUE_COLUMNS = ("value", "ci_low", "ci_high", "n")
KEY_COLUMNS = (*(k for k in RECORD_KEYS if k not in VALUE_COLUMNS), "round")
IDENTICAL, WITHIN, DIFFERS, NO_RECORD = "identical", "within tolerance", "differs", "no committed record"
LISTED_ROWS = 500  # rows of each kind that reproduction.md lists (a changed seed changes every one)


@dataclass(frozen=True)
class CommittedRecord:
    """The record a run is compared with: where it came from, its metrics and each render's artifact keys."""

    source: str
    metrics: pd.DataFrame | None
    artifacts: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """A reproduced ``metrics.csv`` against the committed one (:func:`compare_records`)."""

    verdict: str
    source: str
    tolerance: Reproduction
    rows: int = 0
    added: pd.DataFrame = field(default_factory=pd.DataFrame)
    missing: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_metric: pd.DataFrame = field(default_factory=pd.DataFrame)
    differing: pd.DataFrame = field(default_factory=pd.DataFrame)
    artifact_changes: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    renders: int = 0

    @property
    def agrees(self) -> bool:
        return self.verdict in (IDENTICAL, WITHIN)

    @property
    def values(self) -> int:
        return int(self.per_metric["values"].sum()) if not self.per_metric.empty else 0

    @property
    def identical_values(self) -> int:
        return int(self.per_metric.identical.sum()) if not self.per_metric.empty else 0

    def beyond(self) -> int:
        return int(self.per_metric.beyond.sum()) if not self.per_metric.empty else 0

    def rule(self) -> str:
        return f"|Δ| ≤ {self.tolerance.atol:g} + {self.tolerance.rtol:g}·|committed|"

    def headline(self) -> str:
        return f"reproduction: {self.verdict} ({self.rule()}) against {self.source}"

    def summary(self) -> str:
        """The lines the runner prints: counts, the largest differences, the artifact keys."""
        if self.verdict == NO_RECORD:
            return f"{self.headline()}: nothing to compare"
        lines = [self.headline(),
                 f"  rows: {self.rows:,} compared, {len(self.added)} added, {len(self.missing)} missing; values: "
                 f"{self.identical_values:,} of {self.values:,} bit-identical, {self.beyond():,} beyond tolerance"]
        largest = self.per_metric[self.per_metric.max_abs_diff > 0].head(5)
        if not largest.empty:
            lines.append("  largest |Δ|: " + ", ".join(f"{m} {d:.2g}" for m, d in zip(largest.metric, largest.max_abs_diff)))
        lines.append(f"  artifact keys: {self.renders - len(self.artifact_changes)} of {self.renders} records read the "
                     f"committed artifacts")
        for row in self.differing.head(10).to_dict("records"):
            lines.append(f"  differs: {_row_label(row)} {row['column']}: {row['committed']} → {row['reproduced']}")
        for name, frame in (("added", self.added), ("missing", self.missing)):
            lines += [f"  {name}: {_row_label(row)}" for row in frame.head(10).to_dict("records")]
        return "\n".join(lines)

    def markdown(self) -> str:
        """``reproduction.md``: the verdict, every differing, added and missing row, and the per-metric table."""
        parts = [f"# Reproduction\n\n**{self.verdict}** against {self.source}.\n",
                 f"A value agrees when {self.rule()} (params `reproduction`; the reason is in "
                 f"`biasutils.config.Reproduction`).\n"]
        if self.verdict == NO_RECORD:
            return "\n".join([*parts, "There was no committed `metrics.csv` to compare with.\n"])
        parts.append(f"- rows compared: {self.rows:,}; added: {len(self.added)}; missing: {len(self.missing)}\n"
                     f"- values (value, ci_low, ci_high, n): {self.values:,}; bit-identical: {self.identical_values:,}; "
                     f"beyond tolerance: {self.beyond():,}\n"
                     f"- renders whose record names other artifacts than the committed one: "
                     f"{len(self.artifact_changes)} of {self.renders}\n")
        for title, frame in (("Rows that differ", self.differing), ("Rows added", self.added), ("Rows missing", self.missing)):
            if not frame.empty:
                more = f"\n… and {len(frame) - LISTED_ROWS:,} more\n" if len(frame) > LISTED_ROWS else ""
                parts.append(f"## {title}\n\n{frame.head(LISTED_ROWS).to_markdown(index=False)}\n{more}")
        if self.artifact_changes:
            lines = [f"- `{render}`: {len(gone)} key(s) gone, {len(new)} new" for render, (gone, new) in self.artifact_changes.items()]
            parts.append("## Renders that read other artifacts\n\n" + "\n".join(lines) + "\n")
        parts.append(f"## Largest difference per metric\n\n{self.per_metric.to_markdown(index=False)}\n")
        return "\n".join(parts)


def _row_label(row: dict) -> str:
    return "/".join(str(row[k]) for k in KEY_COLUMNS if str(row.get(k, "")) not in ("", "nan"))


def read_record(text: str) -> pd.DataFrame:
    """``metrics.csv`` text → keys as strings (``round`` empty where absent) and values as floats."""
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if "round" not in frame:
        frame["round"] = ""
    for column in VALUE_COLUMNS:
        frame[column] = pd.to_numeric(frame[column].replace("", np.nan))
    return frame


# ---------------------------------------------------------------------------------------------- set aside


def set_aside(profile_dir: Path) -> CommittedRecord:
    """The committed record of ``reports/<profile>``: git's ``HEAD`` where it tracks ``metrics.csv``, else
    the files as they are now (read before anything is rendered)."""
    return _from_git(Path(profile_dir)) or _from_disk(Path(profile_dir))


def _from_disk(profile_dir: Path) -> CommittedRecord:
    metrics = profile_dir / METRICS_FILE
    return CommittedRecord(
        source=f"the {METRICS_FILE} found before the run",
        metrics=read_record(metrics.read_text()) if metrics.exists() else None,
        artifacts=_records_on_disk(profile_dir),
    )


def _records_on_disk(profile_dir: Path) -> dict[str, frozenset[str]]:
    """Each render record under ``profile_dir`` (its path there) → the artifact keys it names."""
    return {str(p.relative_to(profile_dir)): _artifact_keys(p.read_text()) for p in sorted(profile_dir.rglob("*.run.yaml"))}


def _from_git(profile_dir: Path) -> CommittedRecord | None:
    """``HEAD``'s metrics.csv and records under ``profile_dir``; None outside a work tree or when untracked."""
    if not profile_dir.is_dir():
        return None
    try:
        listed = _git(profile_dir, "ls-tree", "-r", "--name-only", "--full-name", "HEAD", "--", ".").split("\n")
        prefix = _git(profile_dir, "rev-parse", "--show-prefix").strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    wanted = [p for p in listed if p == f"{prefix}{METRICS_FILE}" or p.endswith(".run.yaml")]
    if f"{prefix}{METRICS_FILE}" not in wanted:
        return None
    blobs = dict(zip(wanted, _git_blobs(profile_dir, wanted)))
    commit = _git(profile_dir, "rev-parse", "--short", "HEAD").strip()
    return CommittedRecord(
        source=f"the committed {prefix}{METRICS_FILE} (git HEAD {commit})",
        metrics=read_record(blobs.pop(f"{prefix}{METRICS_FILE}")),
        artifacts={path.removeprefix(prefix): _artifact_keys(text) for path, text in blobs.items()},
    )


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _git_blobs(cwd: Path, paths: list[str]) -> list[str]:
    """Every path's ``HEAD`` content in one ``git cat-file --batch`` call."""
    raw = subprocess.run(["git", "cat-file", "--batch"], cwd=cwd, capture_output=True, check=True,
                         input="".join(f"HEAD:{p}\n" for p in paths).encode()).stdout
    blobs, at = [], 0
    for _ in paths:
        header_end = raw.index(b"\n", at)
        size = int(raw[at:header_end].split()[2])
        blobs.append(raw[header_end + 1:header_end + 1 + size].decode())
        at = header_end + 1 + size + 1
    return blobs


def _artifact_keys(record_text: str) -> frozenset[str]:
    return frozenset((yaml.safe_load(record_text) or {}).get("artifacts", []))


# ---------------------------------------------------------------------------------------------- compare


def compare_records(committed: pd.DataFrame | None, reproduced: pd.DataFrame, tolerance: Reproduction,
                    source: str = "the committed record") -> Comparison:
    """Row by row on the record's keys; every value column within ``tolerance`` (NaN equals NaN)."""
    if committed is None:
        return Comparison(verdict=NO_RECORD, source=source, tolerance=tolerance)
    keys = list(KEY_COLUMNS)
    joined = committed.merge(reproduced, on=keys, how="outer", suffixes=("_committed", "_reproduced"), indicator=True)
    added = joined.loc[joined._merge == "right_only", keys].reset_index(drop=True)
    missing = joined.loc[joined._merge == "left_only", keys].reset_index(drop=True)
    both = joined[joined._merge == "both"]
    long = pd.concat([_column_differences(both, keys, column, tolerance) for column in VALUE_COLUMNS], ignore_index=True)
    per_metric = (long.groupby("metric")
                  .agg(values=("identical", "size"), identical=("identical", "sum"), max_abs_diff=("abs_diff", "max"),
                       beyond=("beyond", "sum"))
                  .reset_index().sort_values(["max_abs_diff", "metric"], ascending=[False, True], ignore_index=True))
    differing = long[long.beyond].drop(columns=["identical", "beyond"]).sort_values("abs_diff", ascending=False, ignore_index=True)
    identical = bool(long.identical.all()) and added.empty and missing.empty
    verdict = IDENTICAL if identical else WITHIN if differing.empty and added.empty and missing.empty else DIFFERS
    return Comparison(verdict=verdict, source=source, tolerance=tolerance, rows=len(both), added=added, missing=missing,
                      per_metric=per_metric, differing=differing)


def _column_differences(both: pd.DataFrame, keys: list[str], column: str, tolerance: Reproduction) -> pd.DataFrame:
    old, new = both[f"{column}_committed"].to_numpy(float), both[f"{column}_reproduced"].to_numpy(float)
    same_nan = np.isnan(old) & np.isnan(new)
    identical = (old == new) | same_nan
    with np.errstate(invalid="ignore"):
        gap = np.where(same_nan, 0.0, np.abs(new - old))
    gap = np.where(np.isnan(gap), np.inf, gap)  # one side NaN: no tolerance covers it
    return both[keys].assign(column=column, committed=old, reproduced=new, abs_diff=gap, identical=identical,
                             beyond=gap > tolerance.atol + tolerance.rtol * np.abs(np.nan_to_num(old)))


def verify(committed: CommittedRecord, profile_dir: Path, tolerance: Reproduction) -> Comparison:
    """Compare the run's ``metrics.csv`` and records with the set-aside ones; write ``reproduction.md``."""
    profile_dir = Path(profile_dir)
    metrics = profile_dir / METRICS_FILE
    reproduced = read_record(metrics.read_text()) if metrics.exists() else read_record(",".join(RECORD_KEYS) + ",round\n")
    comparison = compare_records(committed.metrics, reproduced, tolerance, committed.source)
    now = _records_on_disk(profile_dir)
    before = {render: committed.artifacts.get(render, frozenset()) for render in now}
    changes = {render: (sorted(before[render] - keys), sorted(keys - before[render]))
               for render, keys in now.items() if committed.artifacts.get(render) != keys}
    comparison = dataclasses.replace(comparison, artifact_changes=changes, renders=len(now))
    write_text_atomic(profile_dir / REPORT_FILE, comparison.markdown())
    return comparison
