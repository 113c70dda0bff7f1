"""Multi-round self-augmentation (issue 13, in progress): the accumulation arithmetic on constructed data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biasutils import multiround as mr


def test_the_slope_of_noiseless_chains_is_the_planted_one() -> None:
    rounds = [1, 2, 3, 4]
    values = [[0.5 + 0.1 * r for r in rounds], [0.3 + 0.1 * r for r in rounds]]  # same slope, other levels
    result = mr.accumulation(values, rounds)
    assert result.slope == pytest.approx(0.1) and result.seed_slopes == pytest.approx((0.1, 0.1))
    assert result.ci_low == pytest.approx(0.1) and result.ci_high == pytest.approx(0.1) and result.p_value < 1e-6


def test_the_interval_covers_the_planted_slope_at_its_level() -> None:
    rng = np.random.default_rng(0)
    rounds, slope, covered, rejected = np.arange(1, 4), 0.05, 0, 0
    for _ in range(400):
        chains = 0.4 + slope * rounds + rng.normal(0, 0.04, (3, 3)) + rng.normal(0, 0.02, (3, 1)) * rounds
        result = mr.accumulation(chains, rounds)
        covered += result.ci_low <= slope <= result.ci_high
        null = mr.accumulation(chains - slope * rounds, rounds)
        rejected += null.p_value < 0.05
    assert 0.92 <= covered / 400 <= 0.98
    assert 0.02 <= rejected / 400 <= 0.08


def test_the_measurement_only_error_comes_from_the_per_round_standard_errors() -> None:
    rounds = [1, 2, 3]
    result = mr.accumulation([[0.1, 0.2, 0.3], [0.2, 0.3, 0.4]], rounds, standard_errors=[[0.1] * 3, [0.1] * 3])
    # slope weights (-1/2, 0, 1/2): each chain's slope has SE 0.1/sqrt(2); the mean of two, 0.05
    assert result.ci_high_items - result.slope == pytest.approx(1.959964 * 0.05, rel=1e-5)


def test_designs_without_a_slope_are_named() -> None:
    with pytest.raises(mr.MultiroundError, match="at least 2 distinct rounds"):
        mr.accumulation([[0.1], [0.2]], [1])
    with pytest.raises(mr.MultiroundError, match="seeds x 3 rounds"):
        mr.accumulation([0.1, 0.2, 0.3], [1, 2, 3])
    with pytest.raises(mr.MultiroundError, match="NaN"):
        mr.accumulation([[0.1, np.nan, 0.3]], [1, 2, 3])
    one = mr.accumulation([[0.1, 0.2, 0.3]], [1, 2, 3])
    assert one.slope == pytest.approx(0.1) and np.isnan(one.ci_low), "one chain: no between-chain interval"


def test_multiround_settings_that_make_no_sense_fail_before_any_work() -> None:
    from biasutils.config import ParamsError, load_params

    assert load_params("smoke").multiround.rounds == 0, "off unless asked for"
    params = load_params("smoke", ["multiround.rounds=3", "multiround.ratio=0.5"])
    assert (params.multiround.rounds, params.multiround.bias_type, params.multiround.attribute) == (3, "neutral", "gender")
    for override, field in (("multiround.rounds=-1", "multiround.rounds"), ("multiround.ratio=1.0", "multiround.ratio"),
                            ("multiround.bias_type=sarcastic", "multiround.bias_type"),
                            ("multiround.n_original=0", "multiround.n_original")):
        with pytest.raises(ParamsError, match=field.replace(".", r"\.")):
            load_params("smoke", [override])


def test_the_writing_objective_adds_one_biography_example_per_row_with_the_loss_on_the_biography(tmp_path) -> None:
    from biasutils import finetune as f
    from biasutils.config import load_params
    from biasutils.models import load_tokenizer, model_dir
    from biasutils.store import Store

    params = load_params("smoke", ["finetune.objective=classify_and_write"])
    tokenizer = load_tokenizer(model_dir(params.models.student, Store(tmp_path)))
    rows = [{"id": "r1", "occupation": "software_engineer", "hard_text": "She writes compilers in Lisbon.", "source": "augmented",
             "gender_name": "female"}]
    classify, write = f.encode(rows, tokenizer, params.finetune)
    assert (classify.id, write.id, write.source, write.group) == ("r1", "r1/write", "augmented", "female")
    biography = tokenizer(rows[0]["hard_text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert list(write.input_ids[-write.answer_len :]) == biography
    assert "software engineer" in tokenizer.decode(write.input_ids[: -write.answer_len])
    batch = f.collate([classify, write], None, "cpu", tokenizer.pad_token_id)
    scored = batch.labels[1][batch.labels[1] != -100].tolist()
    assert scored == biography, "the loss is on the biography tokens and the end token"
    assert len(f.encode(rows, tokenizer, load_params("smoke").finetune)) == 1, "the main study: classification only"


def test_the_main_studys_finetune_keys_hold_the_fields_they_always_held() -> None:
    from biasutils.config import load_params

    before = {"backend", "lr", "epochs", "batch_size", "max_length", "weight_decay", "grad_clip", "system", "instruction", "lora"}
    assert set(load_params("classroom").finetune.key_fields()) == before
    assert set(load_params("classroom", ["finetune.objective=classify_and_write"]).finetune.key_fields()) == before | {
        "objective", "write_instruction"}


def test_a_fine_tuned_student_writes_with_its_adapter_keyed_by_it_and_unlike_the_base_model(tmp_path) -> None:
    from biasutils.config import load_params
    from biasutils.finetune import finetune_artifact
    from biasutils.generate import GenerationError, generate_samples
    from biasutils.store import Store, read_jsonl

    store = Store(tmp_path)
    params = load_params("smoke", ["finetune.objective=classify_and_write", "finetune.epochs={gender: 3, culture: 3}"])
    student = finetune_artifact(params, "gender", "none", 0.0, 0, store)
    base = generate_samples(params, "gender", "contrastive-explicit", store)
    written = generate_samples(params, "gender", "contrastive-explicit", store, adapter=student)
    assert base.key != written.key and student.key in json.dumps(json.loads(written.path.joinpath("samples.jsonl").read_text().splitlines()[0]))
    texts = lambda artifact: [row["text"] for row in read_jsonl(artifact.file("samples.jsonl"))]  # noqa: E731
    assert texts(base) != texts(written), "the adapter changes what the generator writes"
    assert generate_samples(params, "gender", "contrastive-explicit", store, adapter=student).key == written.key, "stored, not rewritten"
    with pytest.raises(GenerationError, match="generate.backend: 'openai'"):
        generate_samples(load_params("smoke", ["generate.backend=openai"]), "gender", "contrastive-explicit", store, adapter=student)


def test_round_two_is_written_by_round_ones_student_and_a_rerun_recomputes_nothing(tmp_path) -> None:
    from biasutils.config import load_params
    from biasutils.store import Store, read_jsonl

    store = Store(tmp_path)
    params = load_params("smoke", ["multiround.rounds=2", "multiround.ratio=0.2", "multiround.bias_type=contrastive-explicit"])
    first, second = mr.round_artifacts(params, 0, 1, store), mr.round_artifacts(params, 0, 2, store)
    writer = json.loads(read_jsonl(second.samples.file("samples.jsonl"))[0]["generator"])
    assert writer["adapter"] == first.student.key and "adapter" not in json.loads(
        read_jsonl(first.samples.file("samples.jsonl"))[0]["generator"])
    assert len({first.samples.key, second.samples.key}) == 2 and len({first.student.key, second.student.key}) == 2
    stored = sorted(p.name for p in tmp_path.rglob("*") if p.is_dir())
    assert mr.round_artifacts(params, 0, 2, store) == second
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_dir()) == stored, "a rerun computes nothing"
    with pytest.raises(mr.MultiroundError, match="rounds count from 1"):
        mr.round_artifacts(params, 0, 0, store)


def test_two_rounds_of_two_chains_give_per_round_measures_and_their_slopes(tmp_path) -> None:
    import pandas as pd

    from biasutils.config import load_params
    from biasutils.store import Store

    store = Store(tmp_path)
    params = load_params("smoke", ["multiround.rounds=2", "multiround.ratio=0.2", "multiround.bias_type=contrastive-explicit",
                                   "grid.seeds=[0, 1]", "inheritance.n_boot=50"])
    rows = pd.concat([mr.round_rows(params, seed, r, store) for seed in (0, 1) for r in (1, 2)], ignore_index=True)
    assert set(rows["round"]) == {1, 2} and set(rows.seed) == {0, 1}
    assert {"group", "distribution", "downstream"} <= set(rows.part)
    assert {"share_female", "c2st_auc", "aligned_tpr_gap", "twin_shift"} <= set(rows.metric)
    table = mr.accumulation_table(rows, [("c2st_auc", "all"), ("twin_shift", "all")])
    assert list(table.metric) == ["c2st_auc", "twin_shift"] and (table.chains == 2).all() and (table.n_rounds == 2).all()
    shift = rows[(rows.metric == "twin_shift") & (rows.group == "all")].pivot_table(index="seed", columns="round", values="value")
    assert table.set_index("metric").loc["twin_shift", "slope"] == pytest.approx((shift[2] - shift[1]).mean())


def test_every_chain_and_round_samples_with_its_own_seed() -> None:
    seeds = {mr.generation_seed(0, chain, r) for chain in (0, 1, 2) for r in (1, 2, 3)}
    assert len(seeds) == 9 and mr.generation_seed(0, 1, 2) == mr.generation_seed(0, 1, 2)
