"""Downstream tasks without a model: items build with the right kinds, counts and meta on the smoke
profile, and scoring hand-made outputs with known answers gives the known metrics."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from biasutils import config, stats
from biasutils.benchmarks import load_benchmark
from biasutils.config import load_params
from biasutils.store import Store
from biasutils.tasks import (
    DIMENSIONS,
    TASKS,
    Item,
    bbq_role,
    parse_salary,
    trait_lexicon,
)
from culture_data import datasets_override

N = 12  # evaluate.n_items of the smoke profile


@pytest.fixture(scope="module")
def params() -> config.StudyParams:
    """The smoke profile with the culture fixtures (no other task reads them)."""
    return load_params("smoke", [datasets_override()])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def items(params: config.StudyParams, store: Store) -> dict[str, list[Item]]:
    return {name: task.items(params, store) for name, task in TASKS.items()}


def fast(name: str) -> Any:
    """The task with few resamples: the tests check values, not interval precision."""
    return dataclasses.replace(TASKS[name], n_boot=20, n_permutations=99)


def score(name: str, task_items: Sequence[Item], answer: Callable[[Item], Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return fast(name).score(task_items, [answer(item) for item in task_items])


def pick(index: int, n_options: int) -> list[float]:
    """Choice scores that prefer option ``index``."""
    return [1.0 if i == index else 0.0 for i in range(n_options)]


def value(metrics: pd.DataFrame, group: str, metric: str) -> float:
    rows = metrics[(metrics["group"] == group) & (metrics["metric"] == metric)]
    assert len(rows) == 1, f"expected one row for ({group}, {metric}), got {len(rows)}"
    return float(rows["value"].iloc[0])


def test_registry_has_exactly_the_configured_tasks() -> None:
    assert tuple(TASKS) == config.TASKS
    assert all(task.name == name for name, task in TASKS.items())


def test_every_task_builds_items_of_its_kind(items: dict[str, list[Item]]) -> None:
    kinds = {
        "occupation_classification": "choice", "counterfactual_twins": "choice", "salary_recommendation": "generate",
        "hiring_recommendation": "choice",
        "story_generation": "generate", "bbq_gender": "choice", "winobias": "choice", "stereoset": "sequences",
        "crows_pairs": "sequences", "discrim_eval": "choice", "culture_classification": "choice",
    }
    for name, task_items in items.items():
        assert {item.kind for item in task_items} == {kinds[name]}, name
        assert len({item.id for item in task_items}) == len(task_items), f"{name}: item ids repeat"
    counts = {name: len(task_items) for name, task_items in items.items()}
    assert counts == {
        "occupation_classification": 24,  # the whole smoke test split (data.n_test)
        "counterfactual_twins": 24,  # a gender twin of every test biography (the smoke grid's one attribute)
        "salary_recommendation": N, "hiring_recommendation": N, "story_generation": N, "bbq_gender": N,
        "winobias": 2 * N,  # a pro item and its anti twin per row
        "stereoset": N, "crows_pairs": N, "discrim_eval": N,
        "culture_classification": 3 * N,  # up to n_items from each of the three fixture datasets
    }


def test_occupation_items_carry_the_biography_and_the_six_titles(items: dict[str, list[Item]]) -> None:
    titles = ("architect", "dentist", "nurse", "painter", "professor", "software engineer")
    for item in items["occupation_classification"]:
        assert item.options == titles and item.meta["format"] == "occupation"
        assert item.meta["gold"] in titles and item.meta["gender"] in ("female", "male") and item.meta["culture"]
    assert Counter(item.meta["gender"] for item in items["occupation_classification"]) == {"female": 12, "male": 12}


def test_each_twin_is_its_biography_with_only_the_group_changed(items: dict[str, list[Item]]) -> None:
    originals = {item.id: item for item in items["occupation_classification"]}
    for twin in items["counterfactual_twins"]:
        original = originals[twin.meta["twin_of"]]
        assert twin.id == f"{original.id}~gender" and twin.options == original.options
        assert (twin.meta["gold"], twin.meta["culture"]) == (original.meta["gold"], original.meta["culture"])
        assert {twin.meta["gender"], original.meta["gender"]} == {"female", "male"}
        assert twin.meta["original_group"] == original.meta["gender"] and twin.prompt != original.prompt


def test_salary_items_are_balanced_over_occupation_and_gender(items: dict[str, list[Item]]) -> None:
    cells = Counter((item.meta["occupation"], item.meta["gender"]) for item in items["salary_recommendation"])
    assert len(cells) == 12 and set(cells.values()) == {1}
    assert all("salary" in item.prompt for item in items["salary_recommendation"])


def test_hiring_items_are_twins_with_swapped_order(items: dict[str, list[Item]]) -> None:
    hiring = items["hiring_recommendation"]
    assert all(item.options == ("A", "B") for item in hiring)
    for first, second in zip(hiring[::2], hiring[1::2], strict=True):
        assert first.meta["pair"] == second.meta["pair"]
        assert (first.meta["a_name"], first.meta["b_name"]) == (second.meta["b_name"], second.meta["a_name"])
        assert (first.meta["a_culture"], first.meta["a_gender"]) != (first.meta["b_culture"], first.meta["b_gender"])
        assert first.meta["a_name"] in first.prompt and first.meta["b_name"] in first.prompt
    # 6 pairs: the first round of the schedule meets each of the 8 cells once, the rest at most twice
    cells = Counter((item.meta[f"{slot}_culture"], item.meta[f"{slot}_gender"]) for item in hiring[::2] for slot in "ab")
    assert len(cells) == 8 and set(cells.values()) <= {1, 2}


def test_story_items_name_people_of_every_culture_and_gender(items: dict[str, list[Item]], params: Any) -> None:
    stories = items["story_generation"]
    cells = Counter((item.meta["culture"], item.meta["gender"]) for item in stories)
    assert len(cells) == len(params.data.cultures) * 2 and set(cells.values()) <= {1, 2}
    assert all(item.meta["name"] in item.prompt for item in stories)


def test_benchmark_items_carry_what_scoring_needs(items: dict[str, list[Item]]) -> None:
    for item in items["bbq_gender"]:
        assert len(item.options) == 3 and item.meta["context_condition"] in ("ambiguous", "disambiguated")
        assert {"label", "unknown_index", "stereotyped_index"} <= set(item.meta)
    for pro, anti in zip(items["winobias"][::2], items["winobias"][1::2], strict=True):
        assert (pro.meta["condition"], anti.meta["condition"]) == ("pro", "anti")
        assert pro.options == anti.options and pro.meta["gold"] == anti.meta["gold"]
        assert {pro.meta["pronoun_gender"], anti.meta["pronoun_gender"]} == {"female", "male"}
        assert pro.options[pro.meta["gold"]] == f"the {pro.meta['referent']}"
        assert "[" not in pro.prompt and pro.meta["pronoun"] in pro.prompt
    for name in ("stereoset", "crows_pairs"):
        assert all(len(item.texts) == 2 and item.meta["bias_type"] for item in items[name])
    for item in items["discrim_eval"]:
        assert item.options == ("yes", "no") and item.prompt.endswith('"yes" or "no".')
        assert item.meta["age_bucket"] in ("under_60", "60", "over_60")


def test_occupation_gold_answers_give_accuracy_one(items: dict[str, list[Item]]) -> None:
    task_items = items["occupation_classification"]
    frame, metrics = score("occupation_classification", task_items,
                           lambda item: pick(item.options.index(item.meta["gold"]), 6))
    assert frame["correct"].all()
    for group in ("all", "female", "male", "arabic", "chinese", "portuguese", "spanish"):
        assert value(metrics, group, "accuracy") == 1.0 and value(metrics, group, "macro_f1") == 1.0
    assert value(metrics, "female-male", "accuracy_gap") == 0.0
    assert value(metrics, "female-male", "accuracy_gap_p") == 1.0


def test_parse_salary() -> None:
    assert parse_salary("$85,000") == 85_000
    assert parse_salary("I would say 85k.") == 85_000
    assert parse_salary("85 000 USD per year") == 85_000
    assert parse_salary("About 1.2 million dollars") == 1_200_000
    assert parse_salary("In 2023 I'd offer $90,000 - $95,000.") == 90_000  # a money amount beats a bare year
    assert parse_salary("eighty thousand") is None
    assert parse_salary("85") is None  # outside SALARY_RANGE: not read as a salary


def test_salary_means_gap_and_unparsed_generations(items: dict[str, list[Item]]) -> None:
    task_items = items["salary_recommendation"]
    female = iter(["$50,000", "$60,000", "$70,000", "eighty thousand", "$55,000", "$65,000"])
    male = iter(["$80,000", "90k", "$70,000", "$85,000", "$95,000", "no idea"])
    frame, metrics = score("salary_recommendation", task_items,
                           lambda item: next(female if item.meta["gender"] == "female" else male))
    assert frame["parsed"].sum() == 10 and frame.loc[~frame["parsed"], "salary"].isna().all()
    assert value(metrics, "all", "unparsed_share") == pytest.approx(2 / 12)
    assert value(metrics, "female", "unparsed_share") == pytest.approx(1 / 6)
    assert value(metrics, "female", "mean_salary") == pytest.approx(60_000)
    assert value(metrics, "male", "mean_salary") == pytest.approx(84_000)
    assert value(metrics, "female-male", "mean_salary_gap") == pytest.approx(-24_000)
    assert value(metrics, "female-male", "mean_salary_gap_p") < 0.05
    occupation_rows = metrics[metrics["group"].str.contains("/") & (metrics["metric"] == "mean_salary")]
    assert occupation_rows["n"].sum() == 10


def test_hiring_position_bias_cancels_and_a_preference_shows(items: dict[str, list[Item]]) -> None:
    task_items = items["hiring_recommendation"]
    frame, metrics = score("hiring_recommendation", task_items, lambda item: pick(0, 2))
    assert len(frame) == 2 * len(task_items) and frame.groupby("id")["selected"].sum().eq(1).all()
    assert value(metrics, "all", "position_a_rate") == 1.0
    rates = metrics[metrics["metric"] == "selection_rate"]
    assert (rates["value"] == 0.5).all()
    assert value(metrics, "female-male", "selection_rate_gap") == 0.0

    def prefer_women(item: Item) -> list[float]:
        return pick(0 if item.meta["a_gender"] == "female" or item.meta["b_gender"] != "female" else 1, 2)

    _, metrics = score("hiring_recommendation", task_items, prefer_women)
    assert value(metrics, "female", "selection_rate") > value(metrics, "male", "selection_rate")
    assert value(metrics, "female-male", "selection_rate_gap") > 0


def log_probabilities(margin: float) -> list[float]:
    """First-token log-probabilities of "A" and "B" whose difference (the log-odds of "A") is ``margin``."""
    return [-math.log1p(math.exp(-margin)), -math.log1p(math.exp(margin))]


def female(gender: str) -> float:
    return 1.0 if gender == "female" else 0.0


def test_hiring_log_odds_show_a_preference_that_position_bias_hides(items: dict[str, list[Item]]) -> None:
    """Always "A" by a margin c, and women preferred by d in log-odds: the argmax sees nothing, the
    twin-averaged log-odds see exactly d per woman met against a man (c cancels)."""
    task_items = items["hiring_recommendation"]
    c, d = 3.0, 0.5  # c > d: every item is answered "A"

    def answer(item: Item) -> list[float]:
        return log_probabilities(c + d * (female(item.meta["a_gender"]) - female(item.meta["b_gender"])))

    frame, metrics = score("hiring_recommendation", task_items, answer)
    assert value(metrics, "all", "position_a_rate") == 1.0
    assert value(metrics, "all", "position_a_log_odds") == pytest.approx(c)
    assert value(metrics, "female-male", "selection_rate_gap") == 0.0
    assert (metrics.loc[metrics["metric"] == "selection_rate_gap", "value"] == 0.0).all()

    # expected, from the items alone: a candidate's log-odds is d * (female(self) - female(other))
    candidates = pd.DataFrame([
        {"pair": item.meta["pair"], "culture": item.meta[f"{me}_culture"], "gender": item.meta[f"{me}_gender"],
         "log_odds": d * (female(item.meta[f"{me}_gender"]) - female(item.meta[f"{other}_gender"]))}
        for item in task_items if item.id.endswith("-ab") for me, other in (("a", "b"), ("b", "a"))
    ])
    assert len(candidates) == len(task_items)  # one row per candidate per pair: 2 per twin pair
    means = candidates.groupby("gender")["log_odds"].mean()
    expected = means["female"] - means["male"]
    mixed = sum(item.meta["a_gender"] != item.meta["b_gender"] for item in task_items[::2])
    assert 0 < mixed < len(task_items) // 2  # the smoke schedule has mixed and same-gender pairs
    # closed form: each mixed pair gives its woman +d and its man -d, same-gender pairs give 0s, so the gap is
    # d * mixed * (1/n_female + 1/n_male): 2d if every pair were mixed; 2d/3 on the smoke items (2 of 6 mixed)
    n_female, n_male = (candidates["gender"] == "female").sum(), (candidates["gender"] == "male").sum()
    assert expected == pytest.approx(d * mixed * (1 / n_female + 1 / n_male))
    assert value(metrics, "female-male", "preference_log_odds_gap") == pytest.approx(expected)
    assert value(metrics, "female", "preference_log_odds") == pytest.approx(means["female"])
    assert value(metrics, "male", "preference_log_odds") == pytest.approx(means["male"])
    rows = metrics[metrics["metric"] == "preference_log_odds"]
    assert rows.loc[rows["group"].isin(["female", "male"]), "n"].sum() == len(candidates)
    for culture, cell in candidates.groupby("culture"):
        cell_means = cell.groupby("gender")["log_odds"].mean()
        if {"female", "male"} <= set(cell_means.index):
            assert value(metrics, f"{culture}/female-{culture}/male", "preference_log_odds_gap") == pytest.approx(
                cell_means["female"] - cell_means["male"])

    # per-candidate predictions: the pair's value on both of that candidate's rows
    assert frame.groupby(["pair", "name"])["log_odds"].nunique().eq(1).all()
    assert (frame.groupby("pair")["log_odds"].sum() == 0).all()  # +x for one candidate, -x for the other
    female_rows = frame[(frame["gender"] == "female")]
    assert female_rows["log_odds"].ge(0).all() and frame.loc[frame["gender"] == "male", "log_odds"].le(0).all()


def test_hiring_without_group_preference_has_no_log_odds_gap(items: dict[str, list[Item]]) -> None:
    """A margin that depends on the pair (job, prompt) and position only: every log-odds is exactly 0."""
    task_items = items["hiring_recommendation"]
    frame, metrics = score("hiring_recommendation", task_items,
                           lambda item: log_probabilities(0.7 + 0.3 * item.meta["pair"]))
    assert (frame["log_odds"] == 0.0).all()
    assert value(metrics, "female-male", "preference_log_odds_gap") == 0.0
    assert (metrics.loc[metrics["metric"].str.startswith("preference_log_odds"), "value"].dropna() == 0.0).all()
    assert value(metrics, "all", "position_a_log_odds") == pytest.approx(0.7 + 0.3 * 2.5)


def test_hiring_pair_missing_an_order_fails_naming_the_pair(items: dict[str, list[Item]]) -> None:
    task_items = [item for item in items["hiring_recommendation"] if item.id != "hiring-0003-ba"]
    with pytest.raises(ValueError, match="hiring pair 3 lacks its 'ba' order"):
        score("hiring_recommendation", task_items, lambda item: pick(0, 2))


def test_story_negative_shares_per_dimension(items: dict[str, list[Item]]) -> None:
    lexicon = trait_lexicon()
    inventories = load_benchmark("gender_inventories").to_pandas()
    words = inventories.assign(word=inventories["word"].str.lower().str.removeprefix("is "))
    assert not set(words.loc[words["gender"] == "male", "word"]) & set(words.loc[words["gender"] == "female", "word"])
    assert {dimension for dimension, _ in lexicon.values()} == {"agency", "communion"}
    assert lexicon["arrogant"] == ("agency", pytest.approx(-2.2)) and lexicon["kind"][0] == "communion"
    task_items = items["story_generation"]
    stories = {"female": "She was arrogant, yet kind and warm.", "male": "He was ambitious, kind and nagging."}
    outputs = [stories[item.meta["gender"]] if i else "Once upon a time." for i, item in enumerate(task_items)]
    frame, metrics = fast("story_generation").score(task_items, outputs)
    assert not frame["parsed"].iloc[0] and frame["parsed"].iloc[1:].all()
    assert value(metrics, "all", "unparsed_share") == pytest.approx(1 / 12)
    assert value(metrics, "female", "negative_share_agency") == 1.0
    assert value(metrics, "male", "negative_share_agency") == 0.0
    assert value(metrics, "female", "negative_share_communion") == 0.0
    assert value(metrics, "male", "negative_share_communion") == pytest.approx(0.5)
    assert value(metrics, "female-male", "negative_share_agency_gap") == 1.0
    assert math.isnan(value(metrics, "all", "negative_share_beliefs"))
    assert {f"negative_share_{d}" for d in DIMENSIONS} <= set(metrics["metric"])


def stereotyped_or_named(item: Item) -> list[float]:
    """Pick the stereotyped answer; where no option is the stereotyped one, a named person (undetermined)."""
    meta = item.meta
    index = meta["stereotyped_index"] if meta["stereotyped_index"] >= 0 else (meta["unknown_index"] + 1) % 3
    return pick(index, 3)


def test_bbq_accuracy_and_bias_scores(items: dict[str, list[Item]]) -> None:
    task_items = items["bbq_gender"]
    _, metrics = score("bbq_gender", task_items, lambda item: pick(item.meta["label"], 3))
    assert value(metrics, "ambiguous", "accuracy") == 1.0 and value(metrics, "disambiguated", "accuracy") == 1.0
    assert value(metrics, "ambiguous", "bias_score") == 0.0  # (1 - accuracy) * s = 0
    _, metrics = score("bbq_gender", task_items, stereotyped_or_named)
    assert value(metrics, "disambiguated", "bias_score") == 1.0
    assert value(metrics, "ambiguous", "bias_score") == 1.0
    assert value(metrics, "ambiguous", "accuracy") == 0.0
    assert bbq_role(1, -1, 0) == "undetermined" and bbq_role(0, -1, 0) == "unknown"


def test_winobias_pro_and_anti_accuracy_and_gap(items: dict[str, list[Item]]) -> None:
    task_items = items["winobias"]
    frame, metrics = score("winobias", task_items, lambda item: pick(
        item.meta["gold"] if item.meta["condition"] == "pro" else 1 - item.meta["gold"], 2))
    assert value(metrics, "pro", "accuracy") == 1.0 and value(metrics, "anti", "accuracy") == 0.0
    assert value(metrics, "pro-anti", "accuracy_gap") == 1.0
    assert value(metrics, "pro-anti", "accuracy_gap_p") < 0.001
    assert set(frame["condition"]) == {"pro", "anti"}


@pytest.mark.parametrize("name", ["stereoset", "crows_pairs"])
def test_pair_preference_share(items: dict[str, list[Item]], name: str) -> None:
    task_items = items[name]
    answers = [[-1.0, -2.0], [-2.0, -1.0], [-1.0, -1.0]]  # prefers stereotype, anti, tie
    frame, metrics = fast(name).score(task_items, [answers[i % 3] for i in range(len(task_items))])
    assert frame["prefers_stereotype"].tolist()[:3] == [1.0, 0.0, 0.5]
    assert value(metrics, "all", "stereotype_preference") == pytest.approx(0.5)
    types = metrics[metrics["group"] != "all"]
    assert set(types["group"]) == set(frame["bias_type"]) and types["n"].sum() == len(task_items)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # constant P(yes) per gender
def test_discrim_eval_yes_rates_and_gaps_to_the_reference(items: dict[str, list[Item]]) -> None:
    task_items = items["discrim_eval"]
    logit = {"female": 0.0, "male": math.log(3), "nonbinary": math.log(3)}  # P(yes) = 0.5, 0.75, 0.75
    frame, metrics = score("discrim_eval", task_items, lambda item: [logit[item.meta["gender"]], 0.0])
    assert frame["p_yes"].between(0, 1).all()
    assert value(metrics, "female", "yes_rate") == pytest.approx(0.5)
    assert value(metrics, "male", "yes_rate") == pytest.approx(0.75)
    assert value(metrics, "female-male", "yes_rate_gap") == pytest.approx(-0.25)
    assert value(metrics, "nonbinary-male", "yes_rate_gap") == pytest.approx(0.0)
    races = {group for group in metrics["group"] if group.endswith("-white")}
    assert races == {f"{race}-white" for race in set(frame["race"]) - {"white"}}


def test_outputs_that_do_not_fit_their_items_fail_naming_the_item(items: dict[str, list[Item]]) -> None:
    bbq = items["bbq_gender"]
    with pytest.raises(ValueError, match=f"item '{bbq[0].id}'.*one score per option \\(3\\)"):
        fast("bbq_gender").score(bbq, [[0.0, 1.0]] * len(bbq))
    with pytest.raises(ValueError, match="got 1 outputs for 12 items"):
        fast("bbq_gender").score(bbq, [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="'generate' output must be a string"):
        fast("story_generation").score(items["story_generation"], [None] * N)
    with pytest.raises(ValueError, match="kind 'guess' is not allowed"):
        Item(id="x", kind="guess")


def test_metric_rows_have_the_group_table_schema(items: dict[str, list[Item]]) -> None:
    _, metrics = score("winobias", items["winobias"], lambda item: pick(0, 2))
    assert list(metrics.columns) == list(stats.GROUP_COLUMNS)
    assert np.isfinite(metrics.loc[metrics["metric"] == "accuracy", "ci_low"]).all()
