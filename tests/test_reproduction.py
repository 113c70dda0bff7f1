"""The reproduction verdict: a run compares its metrics.csv with the committed record (identical, within
tolerance, differs naming rows), ``--check`` turns *differs* into an exit code, and renders stay clean."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biasutils import runner
from biasutils.__main__ import main
from biasutils.config import Reproduction
from biasutils.report import reproduction

RECORD = runner.REPORTS_DIR / "lesson" / "metrics.csv"


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    return reproduction.read_record(RECORD.read_text())


def test_the_same_record_is_identical(committed) -> None:
    result = reproduction.compare_records(committed, committed.copy(), Reproduction())
    assert result.verdict == "identical" and result.agrees
    assert result.values == 4 * len(committed) and result.identical_values == result.values, "NaN equals NaN"


def test_drift_below_the_tolerance_is_within_and_above_it_differs_naming_the_row(committed) -> None:
    drifted = committed.copy()
    drifted.loc[3, "value"] += 0.002
    result = reproduction.compare_records(committed, drifted, Reproduction())
    assert result.verdict == "within tolerance" and result.agrees
    metric = committed.loc[3, "metric"]
    assert result.per_metric.set_index("metric").loc[metric, "max_abs_diff"] == pytest.approx(0.002)
    drifted.loc[7, "ci_high"] += 0.02
    result = reproduction.compare_records(committed, drifted, Reproduction())
    assert result.verdict == "differs" and not result.agrees
    assert result.differing[["metric", "group", "column"]].values.tolist() == [
        [committed.loc[7, "metric"], committed.loc[7, "group"], "ci_high"]]
    assert reproduction.compare_records(committed, drifted, Reproduction(atol=0.05)).verdict == "within tolerance"


def test_a_value_that_becomes_nan_differs_whatever_the_tolerance(committed) -> None:
    drifted = committed.copy()
    drifted.loc[0, "value"] = np.nan
    result = reproduction.compare_records(committed, drifted, Reproduction(atol=1e9))
    assert result.verdict == "differs" and len(result.differing) == 1


def test_rows_added_and_missing_are_named(committed) -> None:
    changed = pd.concat([committed.drop(index=[2]), committed.iloc[[5]].assign(seed="9")], ignore_index=True)
    result = reproduction.compare_records(committed, changed, Reproduction())
    assert result.verdict == "differs"
    assert result.missing.metric.tolist() == [committed.loc[2, "metric"]]
    assert result.added.seed.tolist() == ["9"]
    summary = result.summary()
    assert "1 added, 1 missing" in summary and "missing: " in summary


def test_the_committed_record_comes_from_git_head_not_from_the_edited_file(tmp_path) -> None:
    profile = tmp_path / "reports" / "p"
    (profile / "a").mkdir(parents=True)
    (profile / "metrics.csv").write_text(RECORD.read_text())
    (profile / "a" / "01_x.run.yaml").write_text("run_hash: h\nartifacts: [generate/k1, mix/k2]\n")
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "record"]):
        subprocess.run(["git", *command], cwd=tmp_path, check=True)
    edited = reproduction.read_record(RECORD.read_text())
    edited.loc[0, "value"] += 1
    (profile / "metrics.csv").write_text(edited.to_csv(index=False))
    (profile / "a" / "01_x.run.yaml").write_text("run_hash: h\nartifacts: [generate/k1, mix/k3]\n")
    aside = reproduction.set_aside(profile)
    assert aside.source.startswith("the committed reports/p/metrics.csv (git HEAD")
    assert aside.artifacts == {"a/01_x.run.yaml": frozenset({"generate/k1", "mix/k2"})}
    result = reproduction.verify(aside, profile, Reproduction())
    assert result.verdict == "differs" and result.differing.column.tolist() == ["value"]
    assert result.artifact_changes == {"a/01_x.run.yaml": (["mix/k2"], ["mix/k3"])}
    assert "**differs**" in (profile / "reproduction.md").read_text()


def test_outside_git_the_record_is_the_file_before_the_run(tmp_path) -> None:
    aside = reproduction.set_aside(tmp_path / "absent")
    assert aside.metrics is None
    assert reproduction.compare_records(aside.metrics, pd.DataFrame(), Reproduction()).verdict == "no committed record"


def _run(capsys, store: Path, reports: Path, *extra: str) -> tuple[int, str]:
    """``python -m biasutils run`` on a one-bias-type smoke grid, as ``make reproduce`` calls it."""
    code = main(["run", "--profile", "smoke", "--reports", str(reports), "--jobs", "2",
                 "--set", "grid.bias_types=[contrastive-explicit]", *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_fresh_store_reproduces_the_record_identically_and_a_changed_seed_differs(tmp_path, monkeypatch, capsys) -> None:
    """The smoke pipeline computed twice from empty stores agrees bit for bit; ``--set seed=1`` (another
    original corpus) makes ``--check`` exit 1 and name the rows. Each run renders the report alone
    (``--stages report``): the record is the report's, and computing it computes every artifact behind it
    from the empty store (every notebook's render is checked in test_runner's whole smoke pipeline)."""
    reports = tmp_path / "reports"
    monkeypatch.setenv("BIAS_STORE", str(tmp_path / "store-1"))
    code, out = _run(capsys, tmp_path / "store-1", reports, "--stages", "report")
    assert code == 0 and "reproduction: no committed record" in out
    assert (reports / "smoke" / "metrics.csv").exists()

    monkeypatch.setenv("BIAS_STORE", str(tmp_path / "store-2"))
    code, out = _run(capsys, tmp_path / "store-2", reports, "--check", "--stages", "report")
    assert code == 0, out
    assert "reproduction: identical" in out and "0 added, 0 missing" in out
    assert (reports / "smoke" / "reproduction.md").read_text().startswith("# Reproduction\n\n**identical**")

    code, out = _run(capsys, tmp_path / "store-2", reports, "--check", "--stages", "report", "--set", "seed=1")
    assert code == 1
    assert "reproduction: differs" in out and "differs: gender/" in out
    written = (reports / "smoke" / "reproduction.md").read_text()
    assert "## Rows that differ" in written and "occupation_classification" in written


def test_a_bad_tolerance_is_refused_naming_the_field_before_any_work(tmp_path, capsys) -> None:
    code = main(["run", "--profile", "smoke", "--reports", str(tmp_path), "--set", "reproduction.atol=-1"])
    assert code == 2
    assert "reproduction.atol: -1: Input should be greater than or equal to 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing rendered"
