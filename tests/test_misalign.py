"""Misalignment measures on inputs with a known answer: two-sample tests on Gaussians, shares and
tests against scipy on constructed counts, JS distances at their extremes, group inference on hand-made
sentences, the GlobalOpinionQA parser on a fixture, and record rows with the study's keys."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon

from biasutils import misalign as m
from biasutils.corpus import NameTable
from biasutils.stats import RECORD_KEYS
from biasutils.tasks import Item

FIXTURE = Path(__file__).parent / "fixtures" / "global_opinions" / "global_opinions.jsonl"
NAMES = {
    ("spanish", "female"): NameTable(first=("Lucía",), last=("García",)),
    ("spanish", "male"): NameTable(first=("Mateo",), last=("García",)),
    ("chinese", "female"): NameTable(first=("Shu-Fen", "Mateo"), last=("Chen",)),
    ("chinese", "male"): NameTable(first=("Chih-Ming",), last=("Chen",)),
}


def _gaussians(shift: float, n: int = 150, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)), rng.normal(size=(n, dim)) + shift


def _samples(occupation: str, female: int, male: int, unknown: int = 0) -> pd.DataFrame:
    texts = (["She fixes teeth and her patients trust her."] * female + ["He fixes teeth for his patients."] * male
             + ["The dentist fixes teeth."] * unknown)
    return pd.DataFrame({"text": texts, "occupation": occupation})


# ---------------------------------------------------------------------------------------------- distribution


def test_two_sample_tests_accept_one_distribution_and_reject_shifted_means() -> None:
    same, shifted = _gaussians(0.0), _gaussians(1.0)
    assert m.mmd_test(*same, seed=0)["p_value"] > 0.05
    assert m.mmd_test(*shifted, seed=0)["p_value"] < 0.01
    assert m.classifier_two_sample_test(*same, seed=0)["p_value"] > 0.05
    c2st = m.classifier_two_sample_test(*shifted, seed=0)
    assert c2st["p_value"] < 0.01 and c2st["auc"] > 0.7 and c2st["ci_low"] < c2st["auc"] < c2st["ci_high"]


def test_mmd_is_about_zero_for_identical_inputs_and_reports_subsampling() -> None:
    x, _ = _gaussians(0.0)
    result = m.mmd_test(x, x, n_permutations=50, max_per_side=100)
    assert abs(result["statistic"]) < 0.02
    assert (result["n_x"], result["n_y"], result["n_x_input"]) == (100, 100, 150)


def test_unbiased_mmd_equals_a_direct_double_loop() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(6, 3)) + 0.5
    result = m.mmd_test(x, y, n_permutations=10)
    k = lambda a, b: math.exp(-np.sum((a - b) ** 2) / (2 * result["bandwidth"] ** 2))  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    xy = sum(k(a, b) for a in x for b in y) / (5 * 6)
    assert result["statistic"] == pytest.approx(xx + yy - 2 * xy, abs=1e-12)
    pooled = np.vstack([x, y])
    distances = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(11) for j in range(i + 1, 11)]
    assert result["bandwidth"] == pytest.approx(np.median(distances))


def test_projection_has_two_coordinates_per_text_and_draws() -> None:
    x, y = _gaussians(1.0, n=20)
    projection = m.projection_2d(x, y)
    assert list(projection.columns) == ["x1", "x2", "source"] and len(projection) == 40
    assert projection.source.value_counts().to_dict() == {"original": 20, "augmented": 20}
    plt.close(m.projection_figure(projection, "test"))


# ---------------------------------------------------------------------------------------------- group data


def test_shares_carry_scipys_wilson_interval_and_count_unknowns() -> None:
    shares = m.group_shares(_samples("dentist", 30, 10, unknown=2))
    female = shares[(shares.occupation == "dentist") & (shares.group == "female")].iloc[0]
    interval = scipy_stats.binomtest(30, 40).proportion_ci(method="wilson")
    assert (female["count"], female.n, female.n_unknown, female.share) == (30, 40, 2, 0.75)
    assert (female.ci_low, female.ci_high) == pytest.approx((interval.low, interval.high))
    assert set(shares.occupation) == {"dentist"}, "one occupation: no pooled row repeating it"


def test_balance_tests_match_scipys_binomial_and_chi_square() -> None:
    generated = pd.concat([_samples("dentist", 30, 10), _samples("nurse", 18, 2)])
    original = pd.concat([_samples("dentist", 20, 20), _samples("nurse", 15, 5, unknown=3)])
    table = m.balance_tests(generated, original)
    nurse = table[(table.occupation == "nurse") & (table.group == "female")].iloc[0]
    assert nurse.original_share == 0.75
    assert nurse.p_value == pytest.approx(scipy_stats.binomtest(18, 20, 0.75).pvalue)
    chi2 = table[table.test == "chi2_stratified"].iloc[0]
    parts = [scipy_stats.chi2_contingency(t, correction=False) for t in ([[10, 30], [20, 20]], [[2, 18], [5, 15]])]
    statistic = sum(p.statistic for p in parts)
    assert (chi2.statistic, chi2.dof) == pytest.approx((statistic, 2))
    assert chi2.p_value == pytest.approx(scipy_stats.chi2.sf(statistic, 2))
    single = m.balance_tests(_samples("dentist", 30, 10), _samples("dentist", 20, 20))
    expected = scipy_stats.chi2_contingency([[10, 30], [20, 20]], correction=False).pvalue
    assert single[single.test == "chi2_stratified"].p_value.iloc[0] == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------- values


def test_js_distance_is_zero_for_equal_shares_and_one_for_disjoint_ones() -> None:
    assert m.share_distance(0.3, 0.3)[0] == pytest.approx(0.0)
    assert m.share_distance(1.0, 0.0)[0] == pytest.approx(1.0)


def test_reference_table_maps_the_six_occupations_to_the_packaged_nouns() -> None:
    reference = m.occupation_reference().set_index("occupation")
    assert list(reference.index) == list(m.REFERENCE_NOUNS)
    assert reference.at["nurse", "labour_share_female"] == pytest.approx(0.9)
    assert reference.at["software_engineer", "labour_share_female"] == pytest.approx(0.2)
    assert reference.at["nurse", "perceived_share_female"] == pytest.approx(1 - 0.22083, abs=1e-4)
    assert math.isnan(reference.at["architect", "labour_share_female"])


def test_occupation_distance_compares_the_generated_share_with_the_reference() -> None:
    samples = pd.concat([_samples("nurse", 30, 10, unknown=5), _samples("dentist", 5, 5)])
    reference = pd.DataFrame({"occupation": ["nurse", "dentist"], "labour_share_female": [0.9, 0.5]})
    table = m.occupation_share_distance(samples, reference, n_boot=200).set_index("group")
    nurse = table.loc["nurse"]
    assert (nurse.share_female, nurse.n, nurse.n_unknown) == (0.75, 45, 5)
    assert nurse.value == pytest.approx(jensenshannon([0.75, 0.25], [0.9, 0.1], base=2))
    assert nurse.ci_low <= nurse.value <= nurse.ci_high
    assert table.at["dentist", "value"] == pytest.approx(0.0)
    assert table.at["all", "value"] == pytest.approx(nurse.value / 2)
    assert set(table.metric) == {"js_distance_labour"}


def test_stereotype_agreement_counts_yes_above_no_per_target_group() -> None:
    items = m.stereotype_items(10, seed=0)
    assert len(items) == 10 and all(item.options == ("Yes", "No") for item in items)
    assert {item.meta["target_group"] for item in items} <= {"female", "male"}
    hand = [Item(f"s{i}", "choice", "p", ("Yes", "No"), meta={"target_group": g}) for i, g in enumerate("ffffmm")]
    scores = [[0, -1], [0, -1], [0, -1], [-1, 0], [-1, 0], [-1, 0]]
    table = m.stereotype_agreement(hand, scores).set_index("group")
    assert table.at["f", "value"] == 0.75 and table.at["m", "value"] == 0.0 and table.at["all", "n"] == 6
    assert (table.at["f", "ci_low"], table.at["f", "ci_high"]) == pytest.approx(m.wilson_interval(3, 4))


def test_stereotype_agreement_runs_on_a_real_scorer(tmp_path) -> None:
    from biasutils.config import load_params
    from biasutils.evaluate import Scorer
    from biasutils.models import load_causal_lm
    from biasutils.store import Store

    model, tokenizer = load_causal_lm("tiny-random-llama", Store(tmp_path), "cpu")
    items = m.stereotype_items(6, seed=1)
    table = m.stereotype_agreement(items, Scorer(model, tokenizer, load_params("smoke", [])).choice(items))
    assert table.value.between(0, 1).all() and table.set_index("group").at["all", "n"] == 6


def test_infer_group_uses_pronouns_then_the_first_given_name() -> None:
    assert m.infer_group("She said he was late, and she left.", NAMES) == "female"
    assert m.infer_group("Lucía García designs bridges.", NAMES) == "female"
    assert m.infer_group("He met her. Chih-Ming Chen designs bridges.", NAMES) == "male"
    assert m.infer_group("Mateo draws plans.", NAMES) == "unknown"  # a given name of both genders
    assert m.infer_group("The architect draws plans.", NAMES) == "unknown"


def test_infer_culture_needs_names_of_exactly_one_culture() -> None:
    assert m.infer_culture("Shu-Fen Chen teaches physics.", NAMES) == "chinese"
    assert m.infer_culture("Dr. García treats patients.", NAMES) == "spanish"
    assert m.infer_culture("Lucía Chen paints.", NAMES) == "unknown"
    assert m.infer_culture("The painter paints.", NAMES) == "unknown"
    with_an = NAMES | {("chinese", "female"): NameTable(("An",), ("An",))}  # "An" is also an English word
    assert m.infer_culture("She paints with An.", with_an) == "unknown"


# ---------------------------------------------------------------------------------------------- GlobalOpinionQA


def test_global_opinions_fixture_parses_to_normalised_country_vectors(tmp_path) -> None:
    opinions = m.load_global_opinions(FIXTURE)
    assert len(opinions) == 9 and set(opinions.country) == {"Belgium", "France", "Japan"}
    assert all(np.isclose(p.sum(), 1) and len(p) == len(o) for p, o in zip(opinions.probs, opinions.options))
    work = opinions[(opinions.country == "Belgium") & (opinions.options.map(len) == 3)].probs.iloc[0]
    assert work == pytest.approx([0.8, 0.15, 0.05])
    from datasets import Dataset

    Dataset.from_pandas(pd.read_json(FIXTURE, lines=True, dtype=False)).save_to_disk(tmp_path / "saved")
    assert len(m.load_global_opinions(tmp_path / "saved")) == 9


@pytest.mark.parametrize(("column", "value"), [("selections", "defaultdict(<class 'list'>, {'France': [0.5, nan]})"),
                                                ("selections", "{'France': [0.5, 0.3, 0.2]}"),
                                                ("options", "Yes, No")])
def test_malformed_global_opinions_rows_name_the_column(column: str, value: str) -> None:
    row = {"question": "q", "selections": "{'France': [0.5, 0.5]}", "options": "['Yes', 'No']", "source": "s"}
    with pytest.raises(ValueError, match=f"row 0: column '{column}'"):
        m.parse_global_opinions(pd.DataFrame([row | {column: value}]))


def test_opinion_distance_is_zero_where_the_model_answers_like_a_country() -> None:
    opinions = m.load_global_opinions(FIXTURE)
    items = m.opinion_items(opinions)
    assert len(items) == 4 and items[1].options[0] == "Very important"
    france = opinions[opinions.country == "France"]
    scores = [np.log(france.set_index("question").probs.get(item.meta["question"], np.full(len(item.options), 0.5)))
              for item in items]
    probs = m.opinion_probs(items, scores)
    table = m.opinion_distance(probs, opinions, n_boot=100).set_index("group")
    assert table.at["France", "value"] == pytest.approx(0.0, abs=1e-7) and table.at["France", "n"] == 3
    japan = table.loc["Japan"]
    assert japan.value > 0 and japan.similarity == pytest.approx(1 - japan.value)


# ---------------------------------------------------------------------------------------------- record and input checks


def test_misalignment_rows_have_exactly_the_record_keys() -> None:
    values = [m.occupation_share_distance(_samples("nurse", 3, 1), n_boot=20)]
    group = m.balance_tests(_samples("nurse", 3, 1), _samples("nurse", 2, 2))
    x, y = _gaussians(0.5, n=20)
    distribution = {"mmd": m.mmd_test(x, y, n_permutations=20), "c2st": m.classifier_two_sample_test(x, y, n_boot=20)}
    rows = m.misalignment_rows("gender", "neutral", 0, values=values, group=group, distribution=distribution)
    assert rows and all(tuple(row) == RECORD_KEYS for row in rows)
    frame = pd.DataFrame(rows)
    assert set(frame.task) == {"misalignment_values", "misalignment_group", "misalignment_distribution"}
    assert {"js_distance_labour", "share_female", "share_female_binom_p", "chi2_p", "mmd2", "mmd_p",
            "c2st_auc", "c2st_p"} <= set(frame.metric)
    assert (frame.ratio == 1.0).all() and (frame.mitigation == "none").all()
    assert frame[frame.metric.str.endswith("_p")].ci_low.isna().all()
    plt.close(m.share_female_figure(m.group_shares(_samples("nurse", 3, 1)), m.group_shares(_samples("nurse", 2, 2))))


@pytest.mark.parametrize(("call", "argument"), [
    (lambda: m.mmd_test(np.zeros((0, 3)), np.zeros((4, 3))), "x"),
    (lambda: m.mmd_test(np.zeros((4, 3)), np.zeros((4, 2))), "x and y"),
    (lambda: m.classifier_two_sample_test(np.zeros((4, 3)), np.ones((4, 3)), folds=9), "folds"),
    (lambda: m.occupation_share_distance(_samples("nurse", 1, 1), reference_column="bls"), "reference_column"),
    (lambda: m.group_shares(pd.DataFrame({"text": ["x"]})), "samples"),
    (lambda: m.group_shares(_samples("nurse", 1, 1), attribute="age"), "attribute"),
    (lambda: m.stereotype_items(0), "n"),
    (lambda: m.stereotype_agreement([Item("a", "choice", "p", ("Yes", "No"))], []), "option_scores"),
    (lambda: m.opinion_distance({"q": [1.0]}, m.load_global_opinions(FIXTURE), ["Chile"]), "countries"),
    (lambda: m.misalignment_rows("gender", "neutral", 0, distribution={"kl": {}}), "distribution"),
])
def test_bad_inputs_raise_value_errors_naming_the_argument(call, argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}: "):
        call()
