"""The audit command on small files with known answers: a pair shifted in group shares and style is
misaligned, an identical pair aligned in group data with no distribution test (every text is in both
files), copied texts are counted and left out of the tests, a group field is used as given, every bad
input fails with exit code 2 before a model loads, and the verdict rules hold on hand-made results."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from biasutils import audit as a
from biasutils import misalign as m
from biasutils.__main__ import main
from biasutils.models import load_embedder
from biasutils.stats import RECORD_KEYS
from biasutils.store import Store

STYLES = {
    "plain": "{Subj} has worked as a {job} in {city} for {years} years. {Subj} lives there with {poss} family.",
    "generated": "As a passionate {job}, {subj} brings empathy and dedication to every single day! Known for {poss} "
                 "warm smile, {subj} inspires everyone around {obj}.",
    "neutral": "Worked as a {job} in {city} for {years} years, then moved abroad.",
}
PRONOUNS = {"female": dict(Subj="She", subj="she", poss="her", obj="her"),
            "male": dict(Subj="He", subj="he", poss="his", obj="him")}
CITIES = ("a big city", "a small town", "the capital", "a port town", "the mountains", "a suburb")
BALANCED = {"nurse": 0.5, "architect": 0.5}
SKEWED = {"nurse": 0.9, "architect": 0.25}
N_PER_LABEL = 24


def biographies(female_share: dict[str, float], style: str, first_years: int = 2) -> pd.DataFrame:
    """``N_PER_LABEL`` texts per occupation with the given share of women, in one writing style; the i-th
    biography of an occupation has worked ``first_years + i`` years."""
    rows = []
    for job, share in female_share.items():
        n_female = round(N_PER_LABEL * share)
        for i in range(N_PER_LABEL):
            gender = "female" if i < n_female else "male"
            text = STYLES[style].format(job=job, city=CITIES[i % len(CITIES)], years=first_years + i,
                                        **PRONOUNS[gender])
            rows.append({"text": text, "occupation": job, "gender": gender})
    return pd.DataFrame(rows)


WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    ".jsonl": lambda frame, path: frame.to_json(path, orient="records", lines=True),
    ".csv": lambda frame, path: frame.to_csv(path, index=False),
    ".parquet": lambda frame, path: frame.to_parquet(path, index=False),
}


def write_pair(directory: Path, original: pd.DataFrame, augmented: pd.DataFrame, suffix: str) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"original{suffix}", directory / f"augmented{suffix}"]
    for frame, path in zip((original, augmented), paths):
        WRITERS[suffix](frame, path)
    return ["--original", str(paths[0]), "--augmented", str(paths[1])]


def run_audit(out: Path, *args: str) -> dict:
    """Run the command (it must succeed) and return its summary.json."""
    assert main(["audit", *args, "--out", str(out)]) == 0
    return json.loads((out / a.SUMMARY_FILE).read_text())


def state(summary: dict, key: str) -> str:
    return summary["verdicts"][key]["state"]


@pytest.fixture(scope="module", autouse=True)
def isolated_store(tmp_path_factory):
    """Named causal LMs are built into a throw-away store, never into the repository's artifacts/."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BIAS_STORE", str(tmp_path_factory.mktemp("store")))
        yield


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("shifted")
    files = write_pair(root, biographies(BALANCED, "plain"), biographies(SKEWED, "generated"), ".jsonl")
    return root / "out", run_audit(root / "out", *files, "--label-field", "occupation")


@pytest.fixture(scope="module")
def identical(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("identical")
    frame = biographies(BALANCED, "plain")
    return root / "out", run_audit(root / "out", *write_pair(root, frame, frame, ".csv"))


# ---------------------------------------------------------------------------------------------- end to end


def test_shifted_pair_is_misaligned_in_group_data_and_distribution(shifted) -> None:
    out, summary = shifted
    assert state(summary, "group") == "misaligned" and state(summary, "distribution") == "misaligned"
    chi2 = next(row for row in summary["group"] if row["test"] == "chi2_stratified")
    tables = ([[2, 22], [12, 12]], [[18, 6], [12, 12]])  # (augmented, original) x (male, female) per occupation
    statistic = sum(scipy_stats.chi2_contingency(t, correction=False).statistic for t in tables)
    assert chi2["p_value"] == pytest.approx(scipy_stats.chi2.sf(statistic, 2)) and chi2["p_value"] < 0.01
    assert summary["distribution"]["c2st"]["ci_low"] > 0.5
    assert summary["distribution"]["mmd"]["p_value"] < 0.05
    assert summary["verdicts"]["group"]["sentence"].startswith("the augmented data has 92% women among rows "
                                                               "labelled nurse vs 50% in the original")
    assert summary["inputs"]["group_source"] == "inferred"
    assert summary["inputs"]["original"]["unknown_groups"] == 0
    report = (out / a.REPORT_FILE).read_text()
    for verdict in summary["verdicts"].values():
        assert f'{verdict["state"]}</span> — ' in report and verdict["analysis"] in report
    assert report.count("data:image/png;base64,") == 2
    assert "<b>inferred</b>" in report and "are unknown: 0 of 48 original and 0 of 48 augmented rows" in report


def test_shifted_pair_with_study_occupations_runs_the_value_analysis(shifted) -> None:
    _, summary = shifted
    perceived = {row["group"]: row for row in summary["values"]["perceived"]}
    nurse = perceived["nurse"]
    assert nurse["share_female"] == pytest.approx(22 / 24) and nurse["n"] == N_PER_LABEL
    assert nurse["reference_share_female"] == pytest.approx(m.occupation_reference().set_index("occupation")
                                                            .at["nurse", "perceived_share_female"])
    assert {"values_labour", "values_perceived"} <= set(summary["verdicts"])


def test_rows_csv_holds_the_study_record(shifted) -> None:
    out, _ = shifted
    rows = pd.read_csv(out / a.ROWS_FILE)
    assert tuple(rows.columns) == RECORD_KEYS
    assert set(rows.task) == {"misalignment_values", "misalignment_group", "misalignment_distribution"}
    assert (rows.attribute == "gender").all() and (rows.bias_type == a.RECORD_BIAS_TYPE).all()


def test_identical_pair_is_aligned_in_group_data_and_says_why_values_were_not_run(identical) -> None:
    out, summary = identical
    assert state(summary, "group") == "aligned"
    assert state(summary, "values") == "not run"
    sentence = summary["verdicts"]["values"]["sentence"]
    assert "needs --generator MODEL" in sentence and "no --label-field was given" in sentence
    assert "needs --generator MODEL" in (out / a.REPORT_FILE).read_text()


def test_the_same_file_on_both_sides_gets_no_auc_but_the_reason_and_the_duplicates(identical) -> None:
    """Copies in both files once gave "AUC 0.06 [0.01, 0.12]": the tests now leave them out, and with
    nothing left no number is reported, only why, and no model loads."""
    out, summary = identical
    n = 2 * N_PER_LABEL
    reason = f"all {n} augmented texts also appear in the original data"
    assert state(summary, "distribution") == "not run"
    assert summary["distribution"] == {"mmd": None, "c2st": None, "not_run": reason}
    assert summary["duplicates"]["shared_texts"] == n
    for side in ("original", "augmented"):
        assert summary["duplicates"][side] == {"rows": n, "shared_rows": n, "repeated_rows": 0, "tested_rows": 0}
        assert summary["inputs"][side]["embedded"] == 0
    sentence = summary["verdicts"]["distribution"]["sentence"]
    assert sentence.startswith(f"{reason}; {a.NOT_TESTED}; ") and "no classifier AUC or MMD is reported" in sentence
    assert f"{n} augmented and {n} original rows hold a text found in both files ({n} distinct" in sentence
    assert "load embedder" not in summary["seconds"]
    report = (out / a.REPORT_FILE).read_text()
    assert f"Not run: {reason}; {a.NOT_TESTED}." in report and "classifier AUC (5-fold" not in report
    rows = pd.read_csv(out / a.ROWS_FILE)
    assert not {"mmd2", "mmd_p", "c2st_auc", "c2st_p"} & set(rows.metric)
    assert rows.set_index(["group", "metric"]).value[("augmented", "shared_rows")] == n


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("minilm-l6", Store(), "cpu")


def test_copied_texts_are_counted_and_the_tests_run_on_the_rest(tmp_path, embedder) -> None:
    original = biographies(BALANCED, "plain")
    copies = original.text[:20].tolist()
    copies[5:10] = [text.upper() for text in copies[5:10]]  # the same text for the (uncased) embedder
    copies[10:15] = [f"  {text.replace(' ', '   ')} " for text in copies[10:15]]
    new = biographies(BALANCED, "neutral").text[::2].tolist()  # 24 texts the original lacks
    augmented = pd.DataFrame({"text": [*copies, copies[0], *new, *new[:3]]})
    summary = run_audit(tmp_path / "out", *write_pair(tmp_path, original, augmented, ".jsonl"))
    assert summary["duplicates"]["shared_texts"] == 20
    assert summary["duplicates"]["original"] == {"rows": 48, "shared_rows": 20, "repeated_rows": 0, "tested_rows": 28}
    assert summary["duplicates"]["augmented"] == {"rows": 48, "shared_rows": 21, "repeated_rows": 4, "tested_rows": 27}
    x, y = a.embed_pair(embedder, original.text[20:].tolist(), [*new, *new[:3]])
    assert summary["distribution"]["c2st"] == pytest.approx(m.classifier_two_sample_test(x, y, seed=0))
    assert summary["distribution"]["mmd"] == pytest.approx(m.mmd_test(x, y, seed=0, max_per_side=500))
    assert summary["distribution"]["not_run"] is None and state(summary, "distribution") != "not run"
    assert ("21 augmented and 20 original rows hold a text found in both files (20 distinct; case and runs of "
            "whitespace ignored), left out of the tests; 4 augmented and 0 original rows repeat a text"
            in summary["verdicts"]["distribution"]["sentence"])


def test_without_copies_the_tests_see_every_text_as_before(tmp_path, embedder) -> None:
    """No text in both files: the numbers are those of the whole files, pinned to a direct computation."""
    original, augmented = biographies(BALANCED, "plain"), biographies(BALANCED, "plain", first_years=9)
    summary = run_audit(tmp_path / "out", *write_pair(tmp_path, original, augmented, ".jsonl"))
    assert summary["duplicates"]["shared_texts"] == 0 and summary["duplicates"]["augmented"]["tested_rows"] == 48
    x, y = a.embed_pair(embedder, original.text.tolist(), augmented.text.tolist())
    labels = np.r_[np.zeros(len(x), dtype=int), np.ones(len(y), dtype=int)]
    features = np.vstack([x, y]).astype(float)  # misalign fits on float64 (float32 reorders near-tied scores)
    scores = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), features, labels,
                               cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")[:, 1]
    c2st = summary["distribution"]["c2st"]
    assert c2st["auc"] == pytest.approx(roc_auc_score(labels, scores)) and 0.55 < c2st["auc"] < 0.95
    assert (c2st["n_x"], c2st["n_y"]) == (48, 48)
    assert summary["distribution"]["mmd"] == pytest.approx(m.mmd_test(x, y, seed=0, max_per_side=500))
    assert "no text is in both files" in summary["verdicts"]["distribution"]["sentence"]


def test_a_group_field_is_used_as_given_where_inference_finds_nothing(tmp_path) -> None:
    files = write_pair(tmp_path, biographies(BALANCED, "neutral"), biographies(SKEWED, "neutral"), ".parquet")
    given = run_audit(tmp_path / "given", *files, "--label-field", "occupation", "--group-field", "gender")
    assert given["inputs"]["group_source"] == "field" and state(given, "group") == "misaligned"
    inferred = run_audit(tmp_path / "inferred", *files, "--label-field", "occupation")
    assert inferred["inputs"]["augmented"]["unknown_groups"] == 2 * N_PER_LABEL
    assert state(inferred, "group") == "inconclusive"
    assert (pd.read_csv(tmp_path / "given" / a.ROWS_FILE).attribute == "gender").all()


def test_generator_stereotype_agreement_is_reported(tmp_path, capsys) -> None:
    files = write_pair(tmp_path, biographies(BALANCED, "plain"), biographies(SKEWED, "plain"), ".jsonl")
    summary = run_audit(tmp_path / "out", *files, "--generator", "tiny-random-llama")
    agreement = {row["group"]: row for row in summary["values"]["stereotypes"]}
    assert agreement["all"]["n"] == len(m.stereotype_items()) and 0 <= agreement["all"]["value"] <= 1
    assert state(summary, "values_stereotypes") in {"misaligned", "aligned", "inconclusive"}
    assert "stereotype_agreement" in set(pd.read_csv(tmp_path / "out" / a.ROWS_FILE).metric)
    assert capsys.readouterr().out.strip().endswith(f"report: {(tmp_path / 'out' / a.REPORT_FILE).resolve()}")


# ---------------------------------------------------------------------------------------------- bad inputs


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


BAD_INPUTS: dict[str, tuple[Callable[[Path, list[str]], list[str]], list[str]]] = {
    "missing path": (lambda d, ok: ["--original", str(d / "nope.jsonl"), *ok[2:]],
                     ["--original:", "nope.jsonl does not exist"]),
    "unsupported extension": (lambda d, ok: ["--original", _write(d / "data.txt", "x"), *ok[2:]],
                              ["unsupported extension '.txt'", "allowed: .jsonl, .json, .csv, .parquet"]),
    "empty file": (lambda d, ok: [*ok[:2], "--augmented", _write(d / "empty.jsonl", "")],
                   ["--augmented:", "empty.jsonl is empty"]),
    "header-only csv": (lambda d, ok: [*ok[:2], "--augmented", _write(d / "header.csv", "text,gender\n")],
                        ["header.csv holds no rows"]),
    "unknown field": (lambda d, ok: [*ok, "--label-field", "job"],
                      ["--label-field: field 'job' is in neither file", "columns: text, occupation, gender"]),
    "group field in one file only": (
        lambda d, ok: [*ok[:2], "--augmented", _write(d / "nogroup.jsonl", biographies(SKEWED, "plain")
                                                     .drop(columns="gender").to_json(orient="records", lines=True)),
                       "--group-field", "gender"],
        ["--group-field: mismatched schemas: field 'gender' is in", "but not in", "columns are: text, occupation"]),
    "non-string text": (
        lambda d, ok: [*ok[:2], "--augmented", _write(d / "numbers.jsonl", biographies(SKEWED, "plain")
                                                     .assign(text=lambda f: f.text.mask(f.index == 2, 5))
                                                     .to_json(orient="records", lines=True))],
        ["--text-field: mismatched schemas", "must hold strings", "row 3 holds 5 of type int"]),
    "too few rows": (lambda d, ok: [*ok[:2], "--augmented", _write(d / "few.jsonl", biographies(SKEWED, "plain")
                                                                  .head(5).to_json(orient="records", lines=True))],
                     ["few.jsonl has 5 rows", f"at least {a.MIN_ROWS} rows per file"]),
    "unknown embedder": (lambda d, ok: [*ok, "--embedder", "no-such-model"], ["--embedder: unknown model"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_exit_2_before_any_model_loads(case: str, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("biasutils.models.load_embedder", lambda *_: pytest.fail("a model loaded"))
    make_args, expected = BAD_INPUTS[case]
    good = write_pair(tmp_path, biographies(BALANCED, "plain"), biographies(SKEWED, "plain"), ".jsonl")
    assert main(["audit", *make_args(tmp_path, good), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and all(part in error for part in expected), error
    assert not (tmp_path / "out").exists()


def test_an_existing_report_needs_force(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("biasutils.models.load_embedder", lambda *_: pytest.fail("a model loaded"))
    files = write_pair(tmp_path, biographies(BALANCED, "plain"), biographies(SKEWED, "plain"), ".jsonl")
    report = tmp_path / "out" / a.REPORT_FILE
    report.parent.mkdir()
    report.write_text("an earlier audit")
    assert main(["audit", *files, "--out", str(report.parent)]) == 2
    assert f"error: --out: {report} already exists; pass --force" in capsys.readouterr().err
    assert report.read_text() == "an earlier audit"


# ---------------------------------------------------------------------------------------------- rules


def _labelled(occupation: str, female: int, male: int, unknown: int = 0) -> pd.DataFrame:
    groups = ["female"] * female + ["male"] * male + [m.UNKNOWN] * unknown
    return pd.DataFrame({"text": "", "occupation": occupation, "group": groups})


def test_balance_on_given_labels_equals_misaligns_balance_tests_on_inferred_ones() -> None:
    texts = {"female": "She fixes teeth.", "male": "He fixes teeth.", m.UNKNOWN: "The dentist fixes teeth."}
    augmented = pd.concat([_labelled("dentist", 30, 10, 2), _labelled("nurse", 18, 2)], ignore_index=True)
    original = pd.concat([_labelled("dentist", 20, 20), _labelled("nurse", 15, 5, 3)], ignore_index=True)
    as_text = lambda frame: frame.assign(text=frame.group.map(texts))  # noqa: E731
    expected = m.balance_tests(as_text(augmented), as_text(original))
    pd.testing.assert_frame_equal(a.group_balance(augmented, original, ["male", "female"]), expected)


def test_group_verdict_names_the_label_and_group_that_moved_most() -> None:
    balance = a.group_balance(_labelled("nurse", 71, 29), _labelled("nurse", 50, 50), ["male", "female"])
    verdict = a.group_verdict(balance)
    assert verdict.state == "misaligned"
    assert verdict.sentence.startswith("the augmented data has 71% women among rows labelled nurse vs 50% in the "
                                       "original (binomial p < 0.001); stratified χ²(1)")
    same = a.group_verdict(a.group_balance(_labelled("nurse", 50, 50), _labelled("nurse", 50, 50),
                                                 ["male", "female"]))
    assert same.state == "aligned" and "p = 1.000" in same.sentence
    unknown = a.group_verdict(a.group_balance(_labelled("nurse", 0, 0, 9), _labelled("nurse", 5, 5), ["female"]))
    assert unknown.state == "inconclusive"


@pytest.mark.parametrize(("ci_low", "mmd_p", "expected"), [(0.91, 0.002, "misaligned"), (0.45, 0.4, "aligned"),
                                                           (0.55, 0.4, "inconclusive"), (0.45, 0.01, "inconclusive")])
def test_distribution_verdict_needs_both_tests(ci_low: float, mmd_p: float, expected: str) -> None:
    state, sentence = a.two_sample_verdict({"p_value": mmd_p}, {"auc": 0.93, "ci_low": ci_low, "ci_high": 0.95})
    assert state == expected
    assert f"classifier AUC 0.93 [{ci_low:.2f}, 0.95], MMD {a.format_p(mmd_p)}" in sentence
    assert a.BELOW_CHANCE not in sentence


def test_an_auc_below_chance_is_called_a_sign_of_near_duplicates_not_a_finding() -> None:
    """Near-copies with no exact match (each biography one year older) still gave AUC 0.14 [0.08, 0.22]."""
    state, sentence = a.two_sample_verdict({"p_value": 1.0}, {"auc": 0.14, "ci_low": 0.08, "ci_high": 0.22})
    assert state == "aligned"
    assert sentence.endswith(f"(classifier AUC 0.14 [0.08, 0.22], MMD p = 1.000); {a.BELOW_CHANCE}")
    assert "suspect near-duplicates" in a.BELOW_CHANCE


def test_texts_match_ignoring_case_and_spacing_but_not_wording() -> None:
    assert a.text_key("  She is\ta  NURSE.\n") == a.text_key("she is a nurse.") != a.text_key("she is a nurse!")


def test_too_few_unshared_texts_leave_the_tests_out_with_the_counts() -> None:
    sides = {"original": pd.DataFrame({"text": [f"text {i}" for i in range(40)]}),
             "augmented": pd.DataFrame({"text": [f"TEXT {i}" for i in range(30)] + [f"new {i}" for i in range(10)]})}
    duplicates = a.find_duplicates(sides)
    assert a.untestable_reason(duplicates) == ("30 of 40 augmented texts also appear in the original data, leaving "
                                               f"10 of the {a.MIN_ROWS} per file the two-sample tests need")
    assert duplicates.unshared["augmented"] == [f"new {i}" for i in range(10)]
    assert duplicates.unshared["original"] == [f"text {i}" for i in range(30, 40)]


@pytest.mark.parametrize(("interval", "expected"), [((0.15, 0.3), "misaligned"), ((0.01, 0.05), "aligned"),
                                                    ((0.05, 0.15), "inconclusive")])
def test_value_verdicts_compare_the_interval_with_the_limit(interval: tuple[float, float], expected: str) -> None:
    distance = pd.DataFrame([
        {"group": "nurse", "value": 0.2, "ci_low": interval[0], "ci_high": interval[1], "share_female": 0.97,
         "reference_share_female": 0.9},
        {"group": "all", "value": 0.2, "ci_low": interval[0], "ci_high": interval[1], "share_female": 0.97,
         "reference_share_female": float("nan")},
    ])
    verdict = a.occupation_value_verdict(distance, "labour", "US labour statistics")
    assert verdict.state == expected and "largest for nurse: 97% women vs 90%" in verdict.sentence
    agreement = pd.DataFrame([{"group": "all", "value": 0.6, "ci_low": interval[0] + 0.4,
                               "ci_high": interval[1] + 0.4, "n": 129}])
    assert a.stereotype_verdict(agreement, "g").state == expected


def test_p_values_read_plainly() -> None:
    assert [a.format_p(p) for p in (0.0004, 0.002, 0.5, float("nan"))] == [
        "p < 0.001", "p = 0.002", "p = 0.500", "p not available"]
