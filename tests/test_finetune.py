"""Fine-tuning: the loss falls, adapters reload exactly, the cached path equals the full model,
the extra-loss hook, resume after a kill, the unsloth fallback, and the untrained-adapter check."""

from __future__ import annotations

import importlib.abc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from biasutils import finetune as f
from biasutils.config import load_params
from biasutils.models import load_causal_lm
from biasutils.store import Artifact, Store, read_jsonl

FAST = ["finetune.lr={gender: 0.002, culture: 0.002}"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


def _rows(store: Store, params) -> list[dict]:
    from biasutils.mix import mix_artifact

    return read_jsonl(mix_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store).file("train.jsonl"))


def test_training_lowers_the_loss_and_the_adapter_reloads_with_identical_outputs(store) -> None:
    params = load_params("smoke", FAST)
    artifact = f.finetune_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store)
    curve = json.loads(artifact.file("loss.json").read_text())
    first, last = curve[: len(curve) // 3], curve[-len(curve) // 3 :]
    assert sum(c["ce"] for c in last) / len(last) < sum(c["ce"] for c in first) / len(first) - 0.05
    report = json.loads(artifact.file("report.json").read_text())
    assert report["backend_used"] == "peft" and report["epochs"] == 3 and report["examples"] == 60
    assert (artifact.path / "adapter" / "adapter_config.json").exists()

    model, tokenizer = f.load_student(params, artifact, store, "cpu")
    again, _ = f.load_student(params, artifact, store, "cpu")
    base, _ = f.load_student(params, None, store, "cpu")
    batch = f.collate(f.encode(_rows(store, params)[:6], tokenizer, params.finetune), None, "cpu", tokenizer.pad_token_id)
    with torch.inference_mode():
        tuned = f.answer_logits(model, batch, None)
        assert torch.equal(tuned, f.answer_logits(again, batch, None))
        assert not torch.allclose(tuned, f.answer_logits(base, batch, None))
    assert f.finetune_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store).key == artifact.key


def test_cached_bottom_layers_plus_the_top_slice_equal_the_full_model(store) -> None:
    params = load_params("smoke", ["finetune.lora.top_layers=1"])
    model, tokenizer = load_causal_lm(params.models.student, store, "cpu")
    examples = f.encode(_rows(store, params)[:5], tokenizer, params.finetune)
    n_frozen = f.frozen_layer_count(model, params.finetune)
    assert n_frozen == 1
    cached = {e.id: h for e, h in zip(examples, f.lower_activations(model, examples, n_frozen))}
    with torch.inference_mode():
        full = f.answer_logits(model, f.collate(examples, None, "cpu", tokenizer.pad_token_id), None)
        sliced = f.answer_logits(model, f.collate(examples, cached, "cpu", tokenizer.pad_token_id), (n_frozen, 2))
    assert torch.allclose(full, sliced, atol=1e-4), float((full - sliced).abs().max())


def test_labels_cover_exactly_the_answer_tokens(store) -> None:
    params = load_params("smoke")
    _, tokenizer = load_causal_lm(params.models.student, store, "cpu")
    rows = [{"id": "a", "hard_text": "Builds bridges.", "occupation": "architect"},
            {"id": "b", "hard_text": "A much longer biography about caring for patients at night.", "occupation": "software_engineer"}]
    examples = f.encode(rows, tokenizer, params.finetune)
    batch = f.collate(examples, None, "cpu", tokenizer.pad_token_id)
    for i, example in enumerate(examples):
        targets = [t for t in batch.labels[i].tolist() if t != -100]
        assert targets == list(example.input_ids[-example.answer_len :])
        assert tokenizer.decode(targets) == f.answer_text(rows[i]["occupation"]) + tokenizer.eos_token


def test_the_extra_loss_sees_hidden_states_and_source_flags(store, tmp_path) -> None:
    params = load_params("smoke", FAST)
    model, tokenizer, _ = f.trainable_student(params, store, "cpu", 0)
    examples = f.encode(_rows(store, params), tokenizer, params.finetune)
    seen = []

    def extra(hidden, mask, sources, groups):
        seen.append((hidden.shape[-1], set(sources), set(groups)))
        return 0.1 * hidden.pow(2).mean()

    params_one_epoch = load_params("smoke", [*FAST, "finetune.epochs={gender: 1, culture: 1}"])
    state = f.train(model, examples, None, 0, params_one_epoch.finetune, "gender", 0, tmp_path, extra, tokenizer.pad_token_id)
    assert seen and seen[0][0] == 64
    assert set().union(*(s for _, s, _ in seen)) == {"original", "augmented"}
    assert set().union(*(g for _, _, g in seen)) == {"male", "female"}
    assert all(c["loss"] == pytest.approx(c["ce"] + c["extra"], rel=1e-4) for c in state.curve)


def test_an_adapter_that_changes_nothing_is_refused(store) -> None:
    params = load_params("smoke")
    model, tokenizer, _ = f.trainable_student(params, store, "cpu", 0)  # fresh LoRA: B = 0, no change
    batch = f.collate(f.encode(_rows(store, params)[:4], tokenizer, params.finetune), None, "cpu", tokenizer.pad_token_id)
    with pytest.raises(f.FinetuneError, match="changes the answer logits by at most 0.00e\\+00"):
        f.check_adapter_changes_outputs(model, batch, None)


class _RaisingFinder(importlib.abc.MetaPathFinder):
    """Makes `import unsloth` raise what unsloth raises on a machine without a GPU."""

    def find_spec(self, name, path, target=None):
        if name == "unsloth":
            raise NotImplementedError("Unsloth cannot find any torch accelerator? You need a GPU.")
        return None


def test_unsloth_without_a_gpu_falls_back_to_peft_with_a_clear_warning(store, monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_RaisingFinder(), *sys.meta_path])
    params = load_params("smoke", ["finetune.backend=unsloth", "finetune.lora.top_layers=null"])
    with pytest.warns(UserWarning, match="unsloth cannot load here \\(NotImplementedError: Unsloth cannot find"):
        model, _, used = f.trainable_student(params, store, "cpu", 0)
    assert used == "peft" and hasattr(model, "disable_adapter")


KILLED_TRAINING = textwrap.dedent(
    """
    import sys, time
    from biasutils import finetune as f
    from biasutils.config import load_params
    from biasutils.store import Store
    original_save = f.training.save_checkpoint
    def slow_save(*args):
        original_save(*args)
        time.sleep(30)  # killed here, after the first epoch's checkpoint
    f.training.save_checkpoint = slow_save  # where train() looks it up
    params = load_params("smoke", sys.argv[2:])
    f.finetune_artifact(params, "gender", "contrastive-explicit", 0.2, 0, Store(sys.argv[1]))
    """
)


def test_a_killed_training_resumes_from_its_last_epoch(tmp_path) -> None:
    store_dir = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_TRAINING, str(store_dir), *FAST])
    deadline = time.time() + 180
    while time.time() < deadline and not list(store_dir.glob("finetune/*.scratch/checkpoint.pt")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoint = torch.load(next(store_dir.glob("finetune/*.scratch/checkpoint.pt")), weights_only=False)
    assert checkpoint["epoch"] == 1
    artifact = f.finetune_artifact(load_params("smoke", FAST), "gender", "contrastive-explicit", 0.2, 0, Store(store_dir))
    curve = json.loads(artifact.file("loss.json").read_text())
    assert curve[: len(checkpoint["curve"])] == checkpoint["curve"], "the first epoch was not trained again"
    assert {c["epoch"] for c in curve} == {0, 1, 2}


def _store_with_a_mix(params, root) -> Store:
    """A fresh store whose mix is already cached, as in every kernel after the mix stage."""
    from biasutils.mix import mix_artifact

    store = Store(root)
    mix_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store)
    return store


def _train(params, store: Store) -> tuple[Artifact, list[float]]:
    artifact = f.finetune_artifact(params, "gender", "contrastive-explicit", 0.2, 0, store)
    return artifact, [step["loss"] for step in json.loads(artifact.file("loss.json").read_text())]


def test_the_same_params_train_the_same_adapter_whatever_the_kernel_drew_before(tmp_path) -> None:
    from safetensors.torch import load_file

    params = load_params("smoke", FAST)
    curves, weights = [], []
    for earlier_seed in (1, 2):
        store = _store_with_a_mix(params, tmp_path / str(earlier_seed))
        torch.manual_seed(earlier_seed)  # stands in for whatever a kernel drew from the global generator before
        artifact, curve = _train(params, store)
        curves.append(curve)
        weights.append(load_file(artifact.path / "adapter" / "adapter_model.safetensors"))
    assert curves[0] == curves[1]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_gradient_checkpointing_trains_the_same_adapter(tmp_path) -> None:
    curves, keys = [], []
    for checkpointing in (False, True):
        params = load_params("smoke", [*FAST, f"finetune.gradient_checkpointing={str(checkpointing).lower()}"])
        store = _store_with_a_mix(params, tmp_path / str(checkpointing))
        model, _, _ = f.trainable_student(params, store, "cpu", 0)
        assert model.is_activation_checkpointing is checkpointing
        artifact, curve = _train(params, store)
        curves.append(curve)
        keys.append(artifact.key)
    assert keys[0] == keys[1]
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)


def test_gradient_checkpointing_auto_is_chosen_by_the_memory_a_step_needs(tmp_path) -> None:
    from transformers import LlamaConfig

    from biasutils.finetune.training import checkpointing_needed, step_activation_bytes

    llama_8b = LlamaConfig(hidden_size=4096, num_hidden_layers=32)
    free_after_weights = 64 * 2**30  # an 80 GB card holding 8B bf16 weights
    assert step_activation_bytes(llama_8b, 16 * 512) == 34 * 16 * 512 * 4096 * 32  # ~34 GiB
    assert not checkpointing_needed(llama_8b, 16 * 512, free_after_weights)
    assert checkpointing_needed(llama_8b, 32 * 1024, free_after_weights)  # ~136 GiB
    params = load_params("smoke", [*FAST, "finetune.gradient_checkpointing=auto"])
    model, _, _ = f.trainable_student(params, Store(tmp_path), "cpu", 0)
    assert model.is_activation_checkpointing is False  # never on a CPU
