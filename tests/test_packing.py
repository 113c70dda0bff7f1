"""Packed batches (``finetune.packing``): the examples of a batch end to end in one row with no padding give the
loss and the gradients of the left-padded batch, from token ids and from cached activations, with and
without the extra-loss hook; and attention stays within each example (a row whose positions do not restart
gives another loss)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from biasutils import finetune as f
from biasutils.config import load_params
from biasutils.mitigate.loss import AlignmentLoss
from biasutils.store import Store, read_jsonl

FAST = ["finetune.lr={gender: 0.002, culture: 0.002}"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


def _examples(params, store: Store, tokenizer) -> list[f.Example]:
    """Six rows of a mix, originals and augmented ones, of different lengths (two write examples among them
    with ``classify_and_write``)."""
    from biasutils.mix import mix_artifact

    rows = read_jsonl(mix_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store).file("train.jsonl"))
    chosen = [r for r in rows if r["source"] == "original"][:4] + [r for r in rows if r["source"] == "augmented"][:2]
    examples = f.encode(chosen, tokenizer, params.finetune)
    assert len({len(e.input_ids) for e in examples}) > 2  # padding would matter
    return examples


def _loss_and_grads(model, batch, layers, extra=None) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    loss, _ = f.step_loss(model, batch, layers, extra)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize(("top_layers", "objective", "extra"), [
    ("null", "classify", None), ("1", "classify", None), ("1", "classify_and_write", None),
    ("null", "classify", AlignmentLoss(weight=0.5)), ("1", "classify", AlignmentLoss(weight=0.5)),
])
def test_a_packed_batch_gives_the_padded_batchs_loss_and_gradients(store, top_layers, objective, extra) -> None:
    params = load_params("smoke", [*FAST, f"finetune.lora.top_layers={top_layers}", f"finetune.objective={objective}"])
    model, tokenizer, _ = f.trainable_student(params, store, "cpu", 0)
    model.train()
    examples = _examples(params, store, tokenizer)
    n_frozen = f.frozen_layer_count(model, params.finetune)
    cached = dict(zip((e.id for e in examples), f.lower_activations(model, examples, n_frozen))) if n_frozen else None
    layers = f.trained_slice(model, n_frozen)

    padded_loss, padded_grads = _loss_and_grads(model, f.collate(examples, cached, "cpu", tokenizer.pad_token_id), layers, extra)
    packed = f.pack(examples, cached, "cpu")
    packed_loss, packed_grads = _loss_and_grads(model, packed, layers, extra)

    assert packed.inputs.shape[1] == sum(len(e.input_ids) for e in examples)  # not one pad position
    assert len(packed.reads) == sum(e.answer_len for e in examples)
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for padded_grad, packed_grad in zip(padded_grads, packed_grads, strict=True):
        torch.testing.assert_close(packed_grad, padded_grad, rtol=1e-4, atol=1e-6)


def test_attention_stays_within_each_example_of_a_packed_row(store) -> None:
    params = load_params("smoke", FAST)
    model, tokenizer, _ = f.trainable_student(params, store, "cpu", 0)
    examples = _examples(params, store, tokenizer)
    packed = f.pack(examples, None, "cpu")
    running = dataclasses.replace(packed, position_ids=torch.arange(packed.inputs.shape[1])[None])  # one long sequence
    with torch.inference_mode():
        isolated = float(f.step_loss(model, packed, None)[0])
        alone = [float(f.step_loss(model, f.pack([e], None, "cpu"), None)[0]) for e in examples]
        leaking = float(f.step_loss(model, running, None)[0])
    weights = [e.answer_len for e in examples]  # the batch loss is the mean over every answer token
    assert isolated == pytest.approx(sum(w * a for w, a in zip(weights, alone)) / sum(weights), rel=1e-5)
    assert abs(leaking - isolated) > 1e-3


def test_packing_trains_a_student_of_its_own_key_whose_loss_falls(store) -> None:
    padded, packed = (load_params("smoke", [*FAST, f"finetune.packing={on}"]) for on in ("false", "true"))
    artifacts = [f.finetune_artifact(p, "gender", "contrastive-explicit", 0.2, 0, store) for p in (padded, packed)]
    assert artifacts[0].key != artifacts[1].key
    curves = [json.loads(a.file("loss.json").read_text()) for a in artifacts]
    assert curves[1][-1]["ce"] < curves[1][0]["ce"]
    # the same examples in the same batches from the same initial adapter: the first step's loss agrees
    assert curves[1][0]["ce"] == pytest.approx(curves[0][0]["ce"], rel=1e-5)
    assert json.loads(artifacts[1].file("report.json").read_text())["adapter_logit_change"] > 0
