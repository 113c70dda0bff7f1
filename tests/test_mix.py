"""Mixing at a bias ratio: the arithmetic, nested draws, composition, and impossible requests."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biasutils import mix
from biasutils.config import load_params
from biasutils.store import Store, read_jsonl


def _rows(prefix: str, n: int) -> list[dict]:
    genders = ["male", "female"]
    return [{"id": f"{prefix}{i}", "gender_name": genders[i % 2], "occupation": f"occ{i % 3}"} for i in range(n)]


ratios = st.floats(min_value=0.0, max_value=0.9, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 500), ratio=ratios)
def test_sizes_follow_the_definition_of_gamma(n, ratio) -> None:
    kept, added = mix.mix_sizes(n, ratio)
    assert kept == n
    assert added == round(ratio / (1 - ratio) * n)
    if added:
        assert abs(added / (kept + added) - ratio) <= 1 / (kept + added)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 500), ratio=ratios)
def test_hold_total_size_keeps_the_total(n, ratio) -> None:
    kept, added = mix.mix_sizes(n, ratio, hold_total_size=True)
    assert kept + added == n and added == round(ratio * n)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), small=ratios, large=ratios, hold=st.booleans())
def test_draws_are_nested_across_ratios(seed, small, large, hold) -> None:
    small, large = sorted((small, large))
    original, augmented = _rows("o", 60), _rows("a", 600)
    ids = lambda rows, source: {r["id"] for r in rows if r["source"] == source}
    at_small = mix.mix(original, augmented, small, seed, hold)
    at_large = mix.mix(original, augmented, large, seed, hold)
    assert ids(at_small, "augmented") <= ids(at_large, "augmented")
    if hold:  # originals shrink as γ grows, nested the other way
        assert ids(at_large, "original") <= ids(at_small, "original")
    else:
        assert ids(at_small, "original") == ids(at_large, "original") == {r["id"] for r in original}


def test_mix_is_deterministic_per_seed_and_records_its_composition() -> None:
    original, augmented = _rows("o", 30), _rows("a", 40)
    first = mix.mix(original, augmented, 0.5, seed=3)
    assert first == mix.mix(original, augmented, 0.5, seed=3)
    assert first != mix.mix(original, augmented, 0.5, seed=4)
    assert mix.realised_ratio(first) == 0.5
    counts = {(c["source"], c["gender_name"], c["occupation"]): c["count"] for c in mix.composition(first)}
    assert sum(counts.values()) == 60
    assert sum(v for k, v in counts.items() if k[0] == "augmented") == 30
    assert counts[("original", "male", "occ0")] == sum(1 for r in original if r["gender_name"] == "male" and r["occupation"] == "occ0")


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_a_ratio_outside_zero_one_is_a_clear_error(ratio) -> None:
    with pytest.raises(mix.MixError, match=r"ratio: .* allowed: 0 <= ratio < 1"):
        mix.mix(_rows("o", 10), _rows("a", 10), ratio, seed=0)


def test_asking_for_more_augmented_samples_than_exist_is_a_clear_error() -> None:
    with pytest.raises(mix.MixError, match=r"ratio: 0.5 needs 10 augmented samples but only 4 were generated"):
        mix.mix(_rows("o", 10), _rows("a", 4), 0.5, seed=0)


def test_gamma_zero_is_one_baseline_shared_by_all_bias_types_and_attributes(tmp_path) -> None:
    params = load_params("smoke")
    store = Store(tmp_path)
    a = mix.mix_artifact(params, "gender", "contrastive-explicit", 0.0, 0, store)
    b = mix.mix_artifact(params, "gender", "contextual-implicit", 0.0, 0, store)
    c = mix.mix_artifact(params, "culture", "contextual-implicit", 0.0, 0, store)
    assert a.key == b.key == c.key and a.meta["params"]["bias_type"] == "none", "shared by bias types and attributes"
    assert mix.mix_artifact(params, "gender", "none", 0.0, 1, store).key != a.key, "one baseline per seed"
    assert not (tmp_path / "generate").exists(), "the baseline generates nothing"
    rows = read_jsonl(a.file("train.jsonl"))
    assert len(rows) == params.data.n_train and {r["source"] for r in rows} == {"original"}


def test_mix_artifact_on_smoke_holds_the_requested_ratio(tmp_path) -> None:
    params = load_params("smoke")
    artifact = mix.mix_artifact(params, "gender", "contrastive-explicit", 0.2, 0, Store(tmp_path))
    summary = json.loads(artifact.file("composition.json").read_text())
    assert summary["realised_ratio"] == pytest.approx(0.2)
    rows = read_jsonl(artifact.file("train.jsonl"))
    augmented = [r for r in rows if r["source"] == "augmented"]
    assert len(augmented) == 12 and all(r["bias_type"] == "contrastive-explicit" for r in augmented)
    assert len(artifact.meta["inputs"]) == 2, "keyed by the original data and the generated data"
