"""The culture classification task: the user's datasets from JSON Lines, CSV, Parquet or the Hub become
choice items; bad params and bad data fail naming the field; macro-F1 per dataset and culture equals
scikit-learn's; the direct-vs-indirect contrast has the sign, value and test it should; and the evaluation
runs the task end to end with the tiny random model."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import f1_score

from biasutils import config, stats
from biasutils import evaluate as e
from biasutils.config import ParamsError, load_params
from biasutils.store import Store
from biasutils.tasks import TASKS, CultureClassification, Item
from biasutils.tasks import culture as c
from culture_data import FIXTURES, HATE, OFFENSE, RELATIVE, SPAM, datasets_override

N = 12  # evaluate.n_items of the smoke profile: items per dataset


def culture_params(*overrides: str, datasets: Sequence[str] = ()) -> config.StudyParams:
    return load_params("smoke", [datasets_override(*datasets), *overrides])


@pytest.fixture(scope="module")
def items() -> list[Item]:
    return TASKS["culture_classification"].items(culture_params(), Store())


def fast() -> CultureClassification:
    return dataclasses.replace(TASKS["culture_classification"], n_boot=400)


def answer(items: Sequence[Item], pick: Callable[[Item, int], str]) -> list[list[float]]:
    """Choice scores that pick, for the k-th item, the option ``pick(item, k)`` names."""
    return [[1.0 if option == pick(item, k) else 0.0 for option in item.options] for k, item in enumerate(items)]


def row(metrics: pd.DataFrame, group: str, metric: str) -> dict[str, Any]:
    rows = metrics[(metrics["group"] == group) & (metrics["metric"] == metric)]
    assert len(rows) == 1, f"expected one row for ({group}, {metric}), got {len(rows)}"
    return rows.iloc[0].to_dict()


def other(item: Item) -> str:
    """The wrong answer of a two-label item."""
    return next(option for option in item.options if option != item.meta["gold"])


# ---------------------------------------------------------------------------------------------- items


def test_each_file_format_becomes_items_with_its_labels_and_cultures(items: list[Item]) -> None:
    cells = Counter((item.meta["dataset"], item.meta["culture"]) for item in items)
    assert cells == {("offense", "arabic"): 6, ("offense", "spanish"): 6, ("hate", "portuguese"): 6,
                     ("hate", "spanish"): 6, ("spam", "chinese"): 12}, "n_items per dataset, equal per culture"
    by_dataset = {item.meta["dataset"]: item for item in items}
    assert by_dataset["offense"].options == ("not offensive", "offensive")  # the labels mapping of 0/1 (JSONL)
    assert by_dataset["hate"].options == ("no", "yes")  # the CSV's values as written
    assert by_dataset["spam"].options == ("ham", "spam")  # the Parquet's values
    assert {item.meta["relation"] for item in items if item.meta["dataset"] == "spam"} == {"indirect"}
    rows = [json.loads(line) for line in (FIXTURES / "offense.jsonl").read_text(encoding="utf-8").splitlines()]
    first = next(item for item in items if item.meta["dataset"] == "offense")
    source = rows[int(first.id.rsplit("-", 1)[1])]
    assert first.prompt.startswith(source["text"]) and "not offensive; offensive" in first.prompt
    assert first.meta["gold"] == ("offensive" if source["label"] == 1 else "not offensive")
    hate = pd.read_csv(FIXTURES / "hate.csv")
    for item in (item for item in items if item.meta["dataset"] == "hate"):
        source = hate.iloc[int(item.id.rsplit("-", 1)[1])]
        assert item.prompt.startswith(source["comment"]) and item.meta["gold"] == source["is_hate"]
        assert item.meta["culture"] == source["country"]


def test_items_are_drawn_by_seed_and_capped_per_dataset(items: list[Item]) -> None:
    again = TASKS["culture_classification"].items(culture_params(), Store())
    assert [item.id for item in again] == [item.id for item in items]
    other_seed = TASKS["culture_classification"].items(culture_params("seed=1"), Store())
    assert {item.id for item in other_seed} != {item.id for item in items}
    capped = OFFENSE.replace("relation: direct", "relation: direct, n_items: 4")
    few = TASKS["culture_classification"].items(culture_params(datasets=[capped]), Store())
    assert Counter(item.meta["culture"] for item in few) == {"arabic": 2, "spanish": 2}


def test_a_relative_path_is_read_from_the_project_folder_wherever_the_command_runs(items, tmp_path, monkeypatch) -> None:
    """Notebook kernels run in reports/<profile>/ and the command line wherever it is started: a path relative
    to the project folder (as README writes them) must give the same items in each."""
    assert all(str(FIXTURES) not in dataset for dataset in RELATIVE)
    monkeypatch.chdir(tmp_path)
    params = culture_params(datasets=RELATIVE)
    c.check_local_datasets(params)
    assert TASKS["culture_classification"].items(params, Store()) == items


def test_a_custom_prompt_template_is_filled_with_the_text_and_options() -> None:
    prompted = SPAM.replace("relation: indirect", "relation: indirect, prompt: 'Spam? {options} | {text}'")
    items = TASKS["culture_classification"].items(culture_params(datasets=[prompted]), Store())
    assert all(item.prompt.startswith("Spam? ham; spam | ") for item in items)


def test_a_hub_dataset_is_loaded_by_its_id_config_and_split(monkeypatch) -> None:
    import datasets

    asked = []

    def hub(dataset: config.CultureDataset) -> datasets.Dataset:
        asked.append((dataset.path, dataset.config, dataset.split))
        return datasets.Dataset.from_pandas(pd.read_json(FIXTURES / "offense.jsonl", lines=True))

    monkeypatch.setattr(c, "hub_rows", hub)
    hub_id = "{name: osact, path: org/offense-ar-es, config: ar, split: validation, culture_field: lang, relation: direct}"
    items = TASKS["culture_classification"].items(culture_params(datasets=[hub_id]), Store())
    assert asked == [("org/offense-ar-es", "ar", "validation")]
    assert len(items) == N and items[0].options == ("0", "1")


def test_a_hub_dataset_that_cannot_load_names_the_dataset(monkeypatch) -> None:
    def unreachable(dataset: config.CultureDataset) -> None:
        raise ConnectionError("no route to the Hub")

    monkeypatch.setattr(c, "hub_rows", unreachable)
    hub_id = "{name: osact, path: org/offense-ar-es, culture: arabic, relation: direct}"
    with pytest.raises(ValueError, match=r"'osact' path: the Hub dataset 'org/offense-ar-es' .* no route"):
        TASKS["culture_classification"].items(culture_params(datasets=[hub_id]), Store())


# ---------------------------------------------------------------------------------------------- bad data


@pytest.mark.parametrize(("replace", "expected"), [
    (("culture_field: lang", "culture_field: language"),
     r"'offense' culture_field: 'language' is not a column of .*offense.jsonl; allowed: one of its columns: text, "
     r"label, lang"),
    (("culture_field: lang", "culture_field: lang, text_field: body"),
     r"'offense' text_field: 'body' is not a column of .*; allowed: one of its columns: text, label, lang"),
    (("{0: not offensive, 1: offensive}", "{0: fine, 2: rude}"),
     r"'offense' labels: column 'label' of .* holds \['1'\] .*; allowed: '0', '2'"),
    (("offense.jsonl", "offense.tsv"), r"'offense' path: .*offense.tsv does not exist"),
])
def test_data_that_does_not_fit_the_params_fails_naming_the_dataset_and_field(replace, expected) -> None:
    broken = OFFENSE.replace(*replace)
    with pytest.raises(ValueError, match=expected):
        TASKS["culture_classification"].items(culture_params(datasets=[broken]), Store())


def test_a_missing_value_names_the_column_and_row(tmp_path) -> None:
    pd.DataFrame({"text": ["hola", "adiós", None], "label": [1, 0, 1]}).to_parquet(tmp_path / "gaps.parquet")
    dataset = f"{{name: gaps, path: {tmp_path / 'gaps.parquet'}, culture: spanish, relation: direct}}"
    with pytest.raises(ValueError, match=r"'gaps' text_field: column 'text' .* misses 1 value\(s\) \(first: row 3\)"):
        TASKS["culture_classification"].items(culture_params(datasets=[dataset]), Store())


@pytest.mark.parametrize(("overrides", "field", "allowed"), [
    (["grid.tasks=[occupation_classification, culture_classification]"], "evaluate.culture_datasets: empty",
     "allowed: one or more datasets"),
    ([datasets_override(OFFENSE.replace("relation: direct", "relation: sideways"))],
     "evaluate.culture_datasets.0.relation", "allowed: 'direct' or 'indirect'"),
    ([datasets_override(SPAM.replace(", relation: indirect", ""))],
     "evaluate.culture_datasets.0.relation", "required, but missing; allowed: 'direct' or 'indirect'"),
    ([datasets_override(SPAM.replace("culture: chinese", "culture: chinese, culture_field: lang"))],
     "evaluate.culture_datasets.0", "give exactly one of culture_field (a column) or culture"),
    ([datasets_override(SPAM.replace("culture: chinese", "colour: red, culture: chinese"))],
     "evaluate.culture_datasets.0.colour", "allowed keys here: name, path, split, config, text_field"),
    ([datasets_override(SPAM.replace("relation: indirect", "relation: indirect, prompt: 'Is {txt} spam?'"))],
     "evaluate.culture_datasets.0.prompt", "allowed: exactly {text} and {options}"),
    ([datasets_override(OFFENSE.replace("{0: not offensive, 1: offensive}", "{0: rude, 1: rude}"))],
     "evaluate.culture_datasets.0.labels", "two or more label names"),
    ([datasets_override(SPAM, SPAM)], "evaluate.culture_datasets", "the names ['spam'] repeat"),
])
def test_bad_culture_params_name_the_field_and_the_allowed_values(overrides, field, allowed) -> None:
    with pytest.raises(ParamsError) as caught:
        load_params("smoke", overrides)
    assert field in str(caught.value) and allowed in str(caught.value)


def test_no_profile_runs_the_task_by_default() -> None:
    for profile in config.available_profiles():
        assert "culture_classification" not in load_params(profile).grid.tasks, profile
    assert list(config.DEFAULT_TASKS) == [task for task in config.TASKS if task != "culture_classification"]


@pytest.mark.parametrize(("overrides", "expected"), [
    (["grid.tasks=[culture_classification]"],
     "evaluate.culture_datasets: empty, but grid.tasks includes culture_classification"),
    ([datasets_override(SPAM.replace("relation: indirect", "relation: sideways"))],
     "evaluate.culture_datasets.0.relation: 'sideways' is not allowed; allowed: 'direct' or 'indirect'"),
    ([datasets_override(OFFENSE.replace("culture_field: lang", "culture_field: language")),
      "grid.tasks=[occupation_classification, counterfactual_twins, culture_classification]"],
     "'offense' culture_field: 'language' is not a column of"),
], ids=["no dataset", "bad relation", "missing column"])
def test_the_command_line_exits_2_on_bad_culture_params_before_any_work(overrides, expected, tmp_path) -> None:
    command = [sys.executable, "-m", "biasutils", "run", "--profile", "smoke", "--reports", str(tmp_path)]
    result = subprocess.run([*command, *(arg for item in overrides for arg in ("--set", item))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir()), "nothing rendered"


# ---------------------------------------------------------------------------------------------- scoring


def test_macro_f1_per_dataset_and_culture_equals_scikit_learns(items: list[Item]) -> None:
    outputs = answer(items, lambda item, k: item.meta["gold"] if k % 3 else other(item))  # every third wrong
    frame, metrics = fast().score(items, outputs)
    cells = frame.assign(cell=frame["dataset"] + ":" + frame["culture"])
    for group, rows in [*cells.groupby("cell"), *cells.groupby("dataset")]:
        options = items[int(rows.index[0])].options
        expected = f1_score(rows["gold"], rows["prediction"], average="macro", labels=list(options), zero_division=0)
        found = row(metrics, str(group), "macro_f1")
        assert found["value"] == pytest.approx(expected) and found["n"] == len(rows)
        assert found["ci_low"] <= found["value"] <= found["ci_high"], group
    assert list(metrics.columns) == list(stats.GROUP_COLUMNS)


def test_direct_tasks_scored_worse_give_a_negative_significant_contrast(items: list[Item]) -> None:
    def pick(item: Item, k: int) -> str:  # direct: half of the items wrong; indirect: all right
        return other(item) if item.meta["relation"] == "direct" and k % 2 else item.meta["gold"]

    frame, metrics = fast().score(items, answer(items, pick))
    per_dataset = {
        dataset: f1_score(rows["gold"], rows["prediction"], average="macro", zero_division=0)
        for dataset, rows in frame.groupby("dataset")
    }
    direct = (per_dataset["offense"] + per_dataset["hate"]) / 2
    assert row(metrics, "direct", "mean_macro_f1")["value"] == pytest.approx(direct)
    assert row(metrics, "indirect", "mean_macro_f1")["value"] == pytest.approx(1.0)
    gap = row(metrics, "direct-indirect", "mean_macro_f1_gap")
    assert gap["value"] == pytest.approx(direct - 1.0) and gap["value"] < -0.3
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"] < 0 and gap["n"] == len(items)
    assert row(metrics, "direct-indirect", "mean_macro_f1_gap_p")["value"] < 0.01


def test_equal_scores_give_no_contrast(items: list[Item]) -> None:
    _, metrics = fast().score(items, answer(items, lambda item, k: item.meta["gold"]))
    assert row(metrics, "direct-indirect", "mean_macro_f1_gap")["value"] == 0.0
    assert row(metrics, "direct-indirect", "mean_macro_f1_gap_p")["value"] == 1.0


def test_one_relation_alone_reports_its_mean_and_a_nan_contrast() -> None:
    items = TASKS["culture_classification"].items(culture_params(datasets=[SPAM]), Store())
    _, metrics = fast().score(items, answer(items, lambda item, k: item.meta["gold"]))
    assert row(metrics, "indirect", "mean_macro_f1")["value"] == 1.0
    assert math.isnan(row(metrics, "direct", "mean_macro_f1")["value"]) and row(metrics, "direct", "mean_macro_f1")["n"] == 0
    assert math.isnan(row(metrics, "direct-indirect", "mean_macro_f1_gap")["value"])


def test_bootstrap_p_is_the_two_sided_share_of_draws_across_zero() -> None:
    assert stats.bootstrap_p([-3.0, -2.0, -1.0, 1.0]) == pytest.approx(2 * (1 + 1) / 5)
    assert stats.bootstrap_p([-1.0] * 99) == pytest.approx(2 / 100)
    assert math.isnan(stats.bootstrap_p([]))


# ---------------------------------------------------------------------------------------------- end to end


def test_the_evaluation_runs_the_task_with_the_tiny_model_and_keys_it_by_the_labels(tmp_path) -> None:
    from biasutils.finetune import finetune_artifact

    store = Store(tmp_path)
    grid = "grid.tasks=[occupation_classification, counterfactual_twins, culture_classification]"
    params = culture_params(grid, "evaluate.n_items=6", "finetune.lora.top_layers=1")
    adapter = finetune_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store)
    artifact = e.evaluate_artifact(params, "gender", "contrastive-explicit", 0.2, 0, "culture_classification", store,
                                   adapter=adapter)
    metrics = pd.read_csv(artifact.file("metrics.csv"))
    predictions = [json.loads(line) for line in artifact.file("predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 18 and all(p["prediction"] in ("not offensive", "offensive", "no", "yes", "ham", "spam")
                                          for p in predictions)
    groups = set(zip(metrics["group"], metrics["metric"]))
    assert {("offense:arabic", "macro_f1"), ("hate:portuguese", "macro_f1"), ("spam:chinese", "macro_f1"),
            ("direct", "mean_macro_f1"), ("indirect", "mean_macro_f1"), ("direct-indirect", "mean_macro_f1_gap"),
            ("direct-indirect", "mean_macro_f1_gap_p")} <= groups
    assert metrics["value"].between(-1, 1).all()
    cached = e.task_activations(params, "culture_classification", e.task_items(params, "culture_classification", store),
                                store)
    assert cached is not None and len(cached) >= 18, "the frozen layers' activations of the task's sequences are cached"
    relabelled = culture_params(grid, "evaluate.n_items=6", "finetune.lora.top_layers=1",
                                datasets=[OFFENSE.replace("{0: not offensive, 1: offensive}", "{1: not offensive, 0: offensive}"), HATE, SPAM])
    again = e.evaluate_artifact(relabelled, "gender", "contrastive-explicit", 0.2, 0, "culture_classification", store,
                                adapter=adapter)
    assert again.key != artifact.key, "swapped gold labels are a new evaluation, not the stored one"
