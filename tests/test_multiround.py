"""Multi-round self-augmentation (issue 13, in progress): the accumulation arithmetic on constructed data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

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

    assert load_params("classroom", ["multiround.rounds=0"]).multiround.rounds == 0, "off when asked"
    params = load_params("lesson", ["multiround.rounds=3", "multiround.ratio=0.5", "multiround.bias_type=neutral"])
    assert (params.multiround.rounds, params.multiround.bias_type, params.multiround.attribute) == (3, "neutral", "gender")
    for override, field in (("multiround.rounds=-1", "multiround.rounds"), ("multiround.ratio=1.0", "multiround.ratio"), ("multiround.ratio=0", "multiround.ratio"),
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
    cut = f.encode(rows, tokenizer, params.finetune.model_copy(update={"write_max_tokens": 3}))[1]
    assert list(cut.input_ids[-cut.answer_len :]) == biography[:3], "cut at write_max_tokens, with no end token"
    assert len(f.encode(rows, tokenizer, load_params("smoke").finetune)) == 1, "the main study: classification only"


def test_the_main_studys_finetune_keys_hold_the_fields_they_always_held() -> None:
    from biasutils.config import load_params

    before = {"backend", "lr", "epochs", "batch_size", "max_length", "weight_decay", "grad_clip", "system", "instruction", "lora"}
    assert set(load_params("classroom").finetune.key_fields()) == before
    assert set(load_params("classroom", ["finetune.objective=classify_and_write"]).finetune.key_fields()) == before | {
        "objective", "write_instruction", "write_max_tokens"}


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
    from biasutils.generate import generate_samples

    base = generate_samples(mr.round_params(params), "gender", "contrastive-explicit", store, seed=mr.generation_seed(0, 0, 2))
    # the random model's own words are cut from its samples (the biased prefix is the sample): its answers differ
    answers = lambda artifact: [row["answer"] for row in read_jsonl(artifact.file("answers.jsonl"))]  # noqa: E731
    assert answers(second.samples) != answers(base), "round 2 is written by the student, not by the base model"
    stored = sorted(p.name for p in tmp_path.rglob("*") if p.is_dir())  # after the base model's set: nothing new below
    assert mr.round_artifacts(params, 0, 2, store) == second
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_dir()) == stored, "a rerun computes nothing"
    with pytest.raises(mr.MultiroundError, match="rounds count from 1"):
        mr.round_artifacts(params, 0, 0, store)


def test_two_rounds_of_two_chains_give_per_round_measures_and_their_slopes(tmp_path) -> None:
    from biasutils.config import load_params
    from biasutils.store import Store

    store = Store(tmp_path)
    params = load_params("smoke", ["multiround.rounds=2", "multiround.seeds=[0, 1]", "inheritance.n_boot=50", "grid.tasks=[occupation_classification, counterfactual_twins]"])
    stored = mr.stored_multiround(params, store)
    rows = stored["rows"]
    assert set(rows["round"]) == {1, 2} and set(rows.seed) == {0, 1}
    assert {"group", "distribution", "downstream", "occupation_classification"} <= set(rows.part)
    assert {"share_female", "aligned_share", "c2st_auc", "aligned_tpr_gap", "twin_shift", "accuracy"} <= set(rows.metric)
    table = mr.accumulation_table(rows, [("distribution", "c2st_auc", "all"), ("downstream", "twin_shift", "all")])
    assert list(table.metric) == ["c2st_auc", "twin_shift"] and (table.chains == 2).all() and (table.n_rounds == 2).all()
    shift = rows[(rows.part == "downstream") & (rows.metric == "twin_shift") & (rows.group == "all")].pivot_table(
        index="seed", columns="round", values="value")
    assert table.set_index("metric").loc["twin_shift", "slope"] == pytest.approx((shift[2] - shift[1]).mean())
    primary = stored["primary"]
    assert primary["measure"] == "twin_shift" and primary["slope"] == pytest.approx((shift[2] - shift[1]).mean())
    assert primary["mde"] > 0 and primary["chains"] == 2
    generation = stored["generation"]
    assert list(zip(generation.chain, generation["round"])) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert (generation.valid == generation.requested).all() and (generation.requested == 12).all(), "48 originals at 0.2: 12"
    assert "dropped_truncated" in generation.columns
    assert mr.accumulation_table(rows).set_index(["part", "metric", "group"]).loc[("downstream", "twin_shift", "all"), "slope"] == pytest.approx(
        primary["slope"]), "the default measures hold the primary one"


def test_the_aligned_share_signs_each_occupation_by_its_stereotype() -> None:
    import pandas as pd

    shares = pd.DataFrame([
        {"occupation": "nurse", "group": "female", "share": 0.9, "ci_low": 0.7, "ci_high": 0.97, "n": 20},
        {"occupation": "nurse", "group": "male", "share": 0.1, "ci_low": 0.03, "ci_high": 0.3, "n": 20},
        {"occupation": "architect", "group": "male", "share": 0.7, "ci_low": 0.5, "ci_high": 0.85, "n": 30},
        {"occupation": "architect", "group": "female", "share": 0.3, "ci_low": 0.15, "ci_high": 0.5, "n": 30}])
    rows = mr.aligned_share_rows(shares, {"nurse": "female", "architect": "male"}).set_index("group")
    assert rows.value.to_dict() == pytest.approx({"nurse": 0.9, "architect": 0.7, "all": 0.8})
    half = 1.959964 * np.sqrt(0.9 * 0.1 / 20 + 0.7 * 0.3 / 30) / 2
    assert (rows.loc["all", "ci_low"], rows.loc["all", "ci_high"]) == pytest.approx((0.8 - half, 0.8 + half))
    # the pooled female share of the same data is 0.6 x 20 + 0.3 x 30 ... : it mixes the two stereotypes
    assert rows.loc["all", "n"] == 50


def test_the_minimum_detectable_slope_is_the_t_tests_at_its_power() -> None:
    from scipy import stats

    slopes = [0.1, 0.3, 0.2]
    se = np.std(slopes, ddof=1) / np.sqrt(3)
    assert mr.minimum_detectable_slope(slopes, 0.05, 0.8) == pytest.approx((stats.t(2).ppf(0.975) + stats.t(2).ppf(0.8)) * se)
    assert np.isnan(mr.minimum_detectable_slope([0.1], 0.05, 0.8))


def test_a_round_with_too_few_valid_samples_fails_naming_its_chain_and_round(tmp_path) -> None:
    from biasutils.config import load_params
    from biasutils.store import Store

    params = load_params("smoke", ["multiround.rounds=1", "generate.min_words=400", "generate.max_attempts_factor=1"])
    with pytest.raises(mr.MultiroundError, match=r"multiround chain 0, round 1 \(written by the generator\): .*only 0 valid samples of 12"):
        mr.round_artifacts(params, 0, 1, Store(tmp_path))


def test_multiround_designs_a_run_could_not_finish_fail_when_params_load() -> None:
    from biasutils.config import ParamsError, load_params

    with pytest.raises(ParamsError, match="generate.backend: 'openai'.*allowed: transformers"):
        load_params("smoke", ["multiround.rounds=2", "generate.backend=openai"])
    with pytest.raises(ParamsError, match="multiround.tasks: counterfactual_twins; the rounds' measures need occupation_classification"):
        load_params("smoke", ["multiround.rounds=2", "multiround.tasks=[counterfactual_twins]"])
    with pytest.raises(ParamsError, match="multiround.primary.measure: twin_shift needs counterfactual_twins"):
        load_params("smoke", ["multiround.rounds=2", "multiround.tasks=[occupation_classification]"])
    assert load_params("smoke", ["generate.backend=openai"]).multiround.rounds == 0, "no round: nothing to check"
    assert load_params("smoke", ["generate.backend=openai", "multiround.rounds=1"]).multiround.rounds == 1, "round 1: the generator writes"


def test_every_chain_and_round_samples_with_its_own_seed() -> None:
    seeds = {mr.generation_seed(0, chain, r) for chain in (0, 1, 2) for r in (1, 2, 3)}
    assert len(seeds) == 9 and mr.generation_seed(0, 1, 2) == mr.generation_seed(0, 1, 2)


# ---------------------------------------------------------------------------------------------- resuming and extending

ONE_CHAIN = ["multiround.rounds=2", "multiround.seeds=[0]", "grid.tasks=[occupation_classification, counterfactual_twins]", "inheritance.n_boot=50"]

KILLED_IN_ROUND_TWO = textwrap.dedent(
    """
    import sys, time
    from biasutils import finetune as f
    from biasutils import multiround as mr
    from biasutils.config import load_params
    from biasutils.store import Store
    store = Store(sys.argv[1])
    original_save = f.training.save_checkpoint
    def slow_save(*args):
        original_save(*args)
        if len(list(store.root.glob("generate/*/samples.jsonl"))) >= 2:  # round 2's student: killed here
            time.sleep(60)
    f.training.save_checkpoint = slow_save
    mr.chain_measures(load_params("smoke", sys.argv[2:]), 0, store)
    """
)


def _artifacts(root) -> dict[str, int]:
    """Every stored artifact's folder (stage/key) with its modification time."""
    return {f"{p.parent.name}/{p.name}": p.stat().st_mtime_ns for p in root.glob("*/*") if p.is_dir()
            and not p.name.startswith(".") and not p.name.endswith(".scratch")}


@pytest.fixture(scope="module")
def finished_chain(tmp_path_factory):
    """A store holding one finished chain of the smoke profile's 2 rounds, never interrupted."""
    from biasutils.config import load_params
    from biasutils.store import Store

    store = Store(tmp_path_factory.mktemp("finished") / "store")
    return store, mr.chain_measures(load_params("smoke", ONE_CHAIN), 0, store)


def test_a_chain_killed_in_round_two_resumes_there_to_the_same_result(tmp_path, finished_chain) -> None:
    from biasutils.config import load_params
    from biasutils.store import Store

    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_IN_ROUND_TWO, str(root), *ONE_CHAIN])
    deadline = time.time() + 240
    while time.time() < deadline and not (len(list(root.glob("generate/*/samples.jsonl"))) >= 2
                                          and list(root.glob("finetune/*.scratch/checkpoint.pt"))):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(root.glob("multiround-round/*/rows.csv"))) == 1, "killed with round 1 measured, in round 2's fine-tune"
    round_one = _artifacts(root)
    measured = mr.chain_measures(load_params("smoke", ONE_CHAIN), 0, Store(root))
    after = _artifacts(root)
    assert {k: after[k] for k in round_one} == round_one, "nothing of round 1 (or of round 2 before the kill) recomputed"
    assert [a.key for a in measured] == [a.key for a in finished_chain[1]]
    for mine, reference in zip(measured, finished_chain[1]):
        assert mine.file("rows.csv").read_text() == reference.file("rows.csv").read_text(), "the same result as a run never killed"


def test_one_more_round_adds_exactly_that_rounds_work(tmp_path, finished_chain) -> None:
    import shutil

    from biasutils import runner
    from biasutils.config import load_params
    from biasutils.store import Store

    root = tmp_path / "store"
    shutil.copytree(finished_chain[0].root, root)
    store, two, three = Store(root), load_params("smoke", ONE_CHAIN), load_params("smoke", [*ONE_CHAIN, "multiround.rounds=3"])
    stages = runner.select_stages(["multiround"])
    mr.multiround_artifact(two, store)
    assert runner.missing_tasks(two, stages, store) == {}, "the 2-round run is finished"
    before = _artifacts(root)
    planned = runner.missing_tasks(three, stages, store)
    assert {phase: [t.label() for t in tasks] for phase, tasks in planned.items()} == {
        "multiround (inputs)": ["multiround-chain [chain=0]"], "multiround": ["multiround []"]}
    runner.compute_tasks(planned, three, store, lambda *a: None)
    added = sorted(k.split("/")[0] for k in set(_artifacts(root)) - set(before))
    assert added == ["activations", "evaluate", "evaluate", "finetune", "generate", "misalign", "mix", "multiround",
                     "multiround-round"], ("round 3's samples, their frozen-layer activations, mix, student, 2 evaluations, "
                                           "misalignment and measures, and the study over 3 rounds")
    assert all(_artifacts(root)[k] == t for k, t in before.items()), "rounds 1 and 2 untouched"
    assert set(mr.stored_multiround(three, store)["rows"]["round"]) == {1, 2, 3}


def test_the_head_on_the_answer_tokens_alone_gives_the_dense_loss(tmp_path) -> None:
    import torch

    from biasutils import finetune as f
    from biasutils.config import load_params
    from biasutils.models import load_causal_lm
    from biasutils.store import Store

    params = load_params("smoke", ["finetune.objective=classify_and_write"])
    model, tokenizer = load_causal_lm(params.models.student, Store(tmp_path), "cpu")
    rows = [{"id": f"r{i}", "occupation": o, "hard_text": text, "gender_name": "female"} for i, (o, text) in enumerate([
        ("nurse", "She has cared for patients in Porto for twenty years and trains new nurses on the night shift."),
        ("architect", "He designs schools.")])]
    batch = f.collate(f.encode(rows, tokenizer, params.finetune), None, "cpu", tokenizer.pad_token_id)
    assert batch.writes and (batch.labels == -100).any(), "writing examples: the answer-token path, padding skipped"
    with torch.no_grad():
        loss, _ = f.step_loss(model, batch, None)
        logits = f.head_logits(model, f.final_hidden(model, batch, None)[:, -batch.window : -1])
        dense = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1), ignore_index=-100)
    assert float(loss) == pytest.approx(float(dense), rel=1e-6)
