"""Dtype and device: a bf16 student on the CPU through every place that assumed float32 (the cached
frozen-layer activations, training, the scorer, generation, the loss hook), and the dtype in the keys.

The GPU paths are bf16 on CUDA; here the same code runs in bf16 on the CPU (``dtype: bfloat16``), so CI
covers the casts without a GPU. The defect this guards: activations cached in float32 and passed as
``inputs_embeds`` to a bf16 student ("expected m1 and m2 to have the same dtype").
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from biasutils import finetune as f
from biasutils.config import load_params
from biasutils.evaluate import Scorer, evaluate_artifact, task_items
from biasutils.generate import generate_samples
from biasutils.mitigate.loss import AlignmentLoss
from biasutils.models import load_causal_lm
from biasutils.store import Store, read_jsonl

BF16 = ["dtype=bfloat16", "finetune.lr={gender: 0.002, culture: 0.002}"]
# one task of each kind the scorer answers: choice (first-token), sequences (log-likelihoods), generate
TASKS_BY_KIND = ("occupation_classification", "stereoset", "salary_recommendation")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


def _rows(params, store: Store) -> list[dict]:
    from biasutils.mix import mix_artifact

    return read_jsonl(mix_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store).file("train.jsonl"))


@pytest.mark.parametrize("top_layers", ["1", "null"])
def test_a_bf16_student_trains_and_is_evaluated_on_the_cpu(store, top_layers: str) -> None:
    params = load_params("smoke", [*BF16, f"finetune.lora.top_layers={top_layers}"])
    adapter = f.finetune_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store)
    report = json.loads(adapter.file("report.json").read_text())
    curve = json.loads(adapter.file("loss.json").read_text())
    assert report["frozen_layers"] == (1 if top_layers == "1" else 0)
    assert report["adapter_logit_change"] > 0 and all(torch.isfinite(torch.tensor(c["loss"])) for c in curve)
    assert curve[-1]["ce"] < curve[0]["ce"]

    student, _ = f.load_student(params, adapter, store, "cpu")
    assert f.placement(student)[1] == torch.bfloat16  # bf16 weights keep the adapter unmerged
    for task in TASKS_BY_KIND:
        metrics = pd.read_csv(evaluate_artifact(params, "gender", "contrastive-explicit", 0.2, 0, task, store).file("metrics.csv"))
        assert len(metrics) and metrics["n"].sum() > 0, task


def test_cached_activations_keep_the_students_dtype_and_a_float32_cache_is_cast_where_used(store) -> None:
    params = load_params("smoke", [*BF16, "finetune.lora.top_layers=1"])
    model, tokenizer = load_causal_lm(params.models.student, store, "cpu", "bfloat16")
    examples = f.encode(_rows(params, store)[:6], tokenizer, params.finetune)
    bf16_cache = dict(zip((e.id for e in examples), f.lower_activations(model, examples, 1)))
    assert {t.dtype for t in bf16_cache.values()} == {torch.bfloat16}

    layers = f.trained_slice(model, 1)
    float32_cache = {k: v.float() for k, v in bf16_cache.items()}  # e.g. a cache written by an older version
    batch = f.collate(examples, float32_cache, "cpu", tokenizer.pad_token_id, torch.bfloat16)
    assert batch.inputs.dtype == torch.bfloat16
    with torch.inference_mode():
        cast = f.step_loss(model, batch, layers)[0]
        native = f.step_loss(model, f.collate(examples, bf16_cache, "cpu", tokenizer.pad_token_id), layers)[0]
        uncast = f.step_loss(model, f.collate(examples, float32_cache, "cpu", tokenizer.pad_token_id), layers)[0]
    assert torch.isfinite(cast) and float(cast) == float(native) == float(uncast)  # bf16 -> fp32 -> bf16 is exact


def test_the_loss_hook_takes_bf16_hidden_states_and_its_gradient_reaches_the_adapter(store) -> None:
    params = load_params("smoke", [*BF16, "finetune.lora.top_layers=1"])
    model, tokenizer, _ = f.trainable_student(params, store, "cpu", 0)
    examples = [e for e in f.encode(_rows(params, store), tokenizer, params.finetune)]
    mixed = [next(e for e in examples if e.source == "original"), next(e for e in examples if e.source == "augmented")]
    cache = dict(zip((e.id for e in mixed), f.lower_activations(model, mixed, 1)))
    batch = f.collate(mixed, cache, "cpu", tokenizer.pad_token_id, torch.bfloat16)
    loss, parts = f.step_loss(model, batch, f.trained_slice(model, 1), AlignmentLoss(weight=1.0))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert parts["extra"] > 0 and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_the_scorer_answers_the_stereotype_items_with_a_bf16_generator(store) -> None:
    from biasutils.misalign.values import stereotype_items

    params = load_params("smoke", BF16)
    model, tokenizer = load_causal_lm(params.models.generator, store, "cpu", "bfloat16")
    scores = Scorer(model, tokenizer, params).choice(stereotype_items()[:8])
    assert len(scores) == 8 and all(torch.isfinite(torch.tensor(s)).all() for s in scores)


def test_a_bf16_generator_writes_samples_and_the_stated_dtype_keys_every_model_artifact(store) -> None:
    bf16, auto = load_params("smoke", BF16), load_params("smoke", BF16[1:])
    samples = generate_samples(bf16, "gender", "contrastive-explicit", store)
    assert len(read_jsonl(samples.file("samples.jsonl"))) == bf16.generate.n
    assert samples.key != generate_samples(auto, "gender", "contrastive-explicit", store).key
    adapters = [f.finetune_artifact(p, "gender", "none", 0.0, 0, store) for p in (bf16, auto)]
    assert adapters[0].key != adapters[1].key
    assert json.loads(adapters[1].file("report.json").read_text())["adapter_logit_change"] > 0
    items = task_items(auto, "stereoset", store)
    assert len(items) > 0  # the items do not depend on the dtype; the scorer's cache does (next assert)
    from biasutils.evaluate import task_activations

    with_top = [load_params("smoke", [*p, "finetune.lora.top_layers=1"]) for p in (BF16, BF16[1:])]
    caches = [task_activations(p, "stereoset", items, store) for p in with_top]
    assert {next(iter(c.values())).dtype for c in caches} == {torch.bfloat16, torch.float32}
