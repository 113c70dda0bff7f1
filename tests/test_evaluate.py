"""The model-side scorer: cached activations give the full model's scores, choices follow the logits,
sequence log-likelihoods add up, and generation answers every item."""

from __future__ import annotations

import math

import pytest
import torch

from biasutils import evaluate as e
from biasutils import finetune as f
from biasutils.config import load_params
from biasutils.store import Store
from biasutils.tasks import Item

OCCUPATIONS = ("architect", "dentist", "nurse", "painter", "professor", "software engineer")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny adapter trained with the bottom layer frozen and cached."""
    store = Store(tmp_path_factory.mktemp("store"))
    params = load_params("smoke", ["finetune.lora.top_layers=1", "finetune.lr={gender: 0.002, culture: 0.002}"])
    adapter = f.finetune_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store)
    model, tokenizer = f.load_student(params, adapter, store, "cpu")
    return params, store, model, tokenizer


def _occupation_items(n: int) -> list[Item]:
    texts = ["Designs houses and bridges.", "Fills cavities every day.", "Cares for patients on the night shift.",
             "Paints landscapes in oil.", "Teaches students and publishes research.", "Writes code for web services."]
    return [Item(f"o{i}", "choice", texts[i % 6], OCCUPATIONS, {"format": "occupation"}) for i in range(n)]


def test_cached_bottom_layers_give_the_same_choice_scores_as_the_full_model(trained) -> None:
    params, store, model, tokenizer = trained
    items = _occupation_items(7)
    cached = e.task_activations(params, "occupation_classification", items, store)
    assert cached is not None and set(cached) == {item.id for item in items}
    full = e.Scorer(model, tokenizer, params).choice(items)
    fast = e.Scorer(model, tokenizer, params, cached).choice(items)
    assert torch.allclose(torch.tensor(full), torch.tensor(fast), atol=1e-4)


@pytest.mark.parametrize("items", [
    [Item("m0", "choice", "Pick one.", ("yes please", "yes no")), Item("m1", "choice", "Choose.", ("the man", "the woman"))],
    [Item("s0", "sequences", texts=("The nurse said she was tired.", "The nurse said he was tired.")),
     Item("s1", "sequences", texts=("A short one.",))],
], ids=["whole-continuation choices", "sequences"])
def test_cached_bottom_layers_give_the_same_log_likelihoods_as_the_full_model(trained, items) -> None:
    params, store, model, tokenizer = trained
    cached = e.task_activations(params, f"cache-{items[0].kind}", items, store)
    assert cached is not None and len(cached) == sum(len(i.options or i.texts) for i in items)
    scorer = e.Scorer(model, tokenizer, params)
    full = scorer.choice(items) if items[0].kind == "choice" else scorer.sequences(items)
    fast_scorer = e.Scorer(model, tokenizer, params, cached)
    fast = fast_scorer.choice(items) if items[0].kind == "choice" else fast_scorer.sequences(items)
    assert [pytest.approx(row, abs=1e-3) for row in full] == fast


def test_generation_tasks_have_no_activation_cache(trained) -> None:
    params, store, _, _ = trained
    assert e.task_activations(params, "gen", [Item("g", "generate", "Say hi.")], store) is None


def test_choice_scores_are_the_first_token_log_probabilities_at_the_answer(trained) -> None:
    params, _, model, tokenizer = trained
    item = _occupation_items(1)[0]
    scores = e.Scorer(model, tokenizer, params).choice([item])[0]
    ids = e.chat_ids(tokenizer, item, params)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    logprobs = torch.log_softmax(logits.float(), -1)
    expected = [float(logprobs[tokenizer(o, add_special_tokens=False)["input_ids"][0]]) for o in OCCUPATIONS]
    assert scores == pytest.approx(expected, abs=1e-4)


def test_options_sharing_a_first_token_are_scored_by_their_whole_continuation(trained) -> None:
    params, _, model, tokenizer = trained
    item = Item("m", "choice", "Pick one.", ("yes please", "yes no"))
    scorer = e.Scorer(model, tokenizer, params)
    scores = scorer.choice([item])[0]
    prompt = e.chat_ids(tokenizer, item, params)
    for option, score in zip(item.options, scores):
        ids = prompt + tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        expected = sum(float(logprobs[t - 1, ids[t]]) for t in range(len(prompt), len(ids)))
        assert score == pytest.approx(expected, abs=1e-3)


def test_sequence_log_likelihoods_match_a_direct_computation_and_padding_does_not_matter(trained) -> None:
    params, _, model, tokenizer = trained
    texts = ("The nurse said she was tired.", "A much longer sentence about the engineer who fixed the old bridge.")
    together = e.Scorer(model, tokenizer, params).sequences([Item("s", "sequences", texts=texts)])[0]
    alone = [e.Scorer(model, tokenizer, params).sequences([Item("s", "sequences", texts=(t,))])[0][0] for t in texts]
    assert together == pytest.approx(alone, abs=1e-3)
    assert all(score < 0 and math.isfinite(score) for score in together)


def test_generation_answers_every_item_deterministically(trained) -> None:
    params, _, model, tokenizer = trained
    items = [Item(f"g{i}", "generate", f"Recommend a salary for person {i}.") for i in range(3)]
    first = e.Scorer(model, tokenizer, params, batch_size=2).outputs(items, max_new_tokens=5)
    assert len(first) == 3 and all(isinstance(a, str) for a in first)
    assert first == e.Scorer(model, tokenizer, params, batch_size=3).outputs(items, max_new_tokens=5)


def test_mixed_item_kinds_are_refused(trained) -> None:
    params, _, model, tokenizer = trained
    with pytest.raises(ValueError, match="share one kind"):
        e.Scorer(model, tokenizer, params).outputs([Item("a", "choice", "x", ("a", "b")), Item("b", "generate", "y")], 4)
