"""The fine-tune stage's artifacts: the frozen layers' activations per data set, and the adapter of one grid
point (keyed by the student, the seed, the fine-tune settings and the extra loss), and the student loaded
with it for evaluation."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import StudyParams, precision_key, resolve_device
from ..store import Artifact, Store, canonical_json, read_jsonl, write_text_atomic
from .format import collate, encode
from .forward import ExtraLoss, frozen_layer_count, lower_activations, placement, trained_slice
from .training import BatchPlan, check_adapter_changes_outputs, peft_wrapping, train, trainable_student

if TYPE_CHECKING:
    import torch
    from torch import nn

STAGE = "finetune"


ACTIVATIONS_STAGE = "activations"


VERSION = "2"  # 2: LoRA initialised from the grid seed


def activations_artifact(
    params: StudyParams, source: Artifact, filename: str, store: Store, with_answer: bool = True
) -> Artifact:
    """Cached bottom-layer activations of every row of ``source/filename`` for the student model."""
    from safetensors.torch import save_file

    from ..models import load_study_lm

    ft = params.finetune
    key_params = {
        "student": params.models.student, **precision_key(params.dtype), "top_layers": ft.lora.top_layers,
        "file": filename, "with_answer": with_answer, "system": ft.system, "instruction": ft.instruction, "max_length": ft.max_length,
        **{k: v for k, v in ft.key_fields().items() if k in ("objective", "write_instruction", "write_max_tokens")},
    }

    def compute(out: Path, scratch: Path) -> None:
        model, tokenizer = load_study_lm(params, params.models.student, store)
        examples = encode(read_jsonl(source.file(filename)), tokenizer, ft, with_answer)
        hidden = lower_activations(model, examples, frozen_layer_count(model, ft))
        save_file({e.id: h.contiguous() for e, h in zip(examples, hidden)}, str(out / "activations.safetensors"))

    return store.get_or_compute(ACTIVATIONS_STAGE, key_params, compute, inputs=[source.key], version=VERSION)


def load_activations(artifact: Artifact) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(artifact.file("activations.safetensors")))


def cached_activations(params: StudyParams, sources: Sequence[tuple[Artifact, str]], store: Store) -> dict[str, torch.Tensor]:
    """The frozen layers' activations of every row of ``sources`` ((data set, file) pairs), by example id."""
    cached: dict[str, torch.Tensor] = {}
    for source, filename in sources:
        cached.update(load_activations(activations_artifact(params, source, filename, store)))
    return cached


def training_sources(params: StudyParams, attribute: str, bias_type: str, store: Store) -> list[tuple[Artifact, str]]:
    """The data sets a mix draws from: the original train split and, unless γ = 0, the generated samples."""
    from ..data import original_artifact
    from ..generate import generate_samples
    from ..mix import BASELINE

    sources = [(original_artifact(params.data, params.seed, store), "train.jsonl")]
    if bias_type != BASELINE:
        sources.append((generate_samples(params, attribute, bias_type, store), "samples.jsonl"))
    return sources


def finetune_artifact(
    params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, store: Store,
    extra_loss: ExtraLoss | None = None, extra_loss_key: Mapping[str, Any] | None = None,
    mix: Artifact | None = None, sources: Sequence[tuple[Artifact, str]] | None = None,
    batch_plan: Callable[[Sequence[str]], BatchPlan] | None = None,
) -> Artifact:
    """The stored adapter for one grid point: ``adapter/`` (PEFT format), ``loss.json``, ``report.json``.

    ``extra_loss_key`` names the extra loss term, or the mitigation, and its settings (part of the cache
    key); ``mix`` replaces the default mix and ``sources`` the data sets whose cached activations its rows
    are (a mitigation that transforms the augmented rows passes both); ``batch_plan``, given each
    example's source, makes the epochs' batches (the loss-based mitigation needs both sources in each).
    """
    from ..mix import canonical_bias_type, key_attribute, mix_artifact

    bias_type = canonical_bias_type(bias_type, ratio)
    mix = mix or mix_artifact(params, attribute, bias_type, ratio, seed, store)
    ft = params.finetune
    key_params = {
        # the baseline's lr and epochs are in the key, so attributes trained alike share its student
        "student": params.models.student, **precision_key(params.dtype), "seed": seed,
        "attribute": attribute if extra_loss_key else key_attribute(attribute, bias_type),
        # gradient checkpointing trades memory for time and leaves every number as it was: not in the key
        "finetune": {
            **ft.key_fields(),
            "lr": ft.lr[attribute], "epochs": ft.epochs[attribute],
        },
        "extra_loss": dict(extra_loss_key or {"name": "none"}),
    }

    def compute(out: Path, scratch: Path) -> None:
        device = resolve_device(params)  # here, not above: a render that finds the adapter stored imports no torch
        model, tokenizer, backend_used = trainable_student(params, store, device, seed)
        rows = read_jsonl(mix.file("train.jsonl"))
        examples = encode(rows, tokenizer, ft, group_field="gender_name" if attribute == "gender" else "culture")
        n_frozen = frozen_layer_count(model, ft) if backend_used == "peft" else 0
        cached = cached_activations(params, sources or training_sources(params, attribute, bias_type, store), store) if n_frozen else None
        plan = batch_plan([e.source for e in examples]) if batch_plan else None
        state = train(model, examples, cached, n_frozen, ft, attribute, seed, scratch, extra_loss, tokenizer.pad_token_id, plan)
        seconds = sum(state.epoch_seconds)  # every kept epoch, timed in the process that ran it
        on, dtype = placement(model)
        probe = collate(examples[:8], cached, on, tokenizer.pad_token_id, dtype)
        change = check_adapter_changes_outputs(model, probe, trained_slice(model, n_frozen))
        model.save_pretrained(str(out / "adapter"))
        write_text_atomic(out / "loss.json", json.dumps(state.curve))
        tokens = sum(len(e.input_ids) for e in examples) * ft.epochs[attribute]
        report = {
            "backend_used": backend_used, "examples": len(examples), "epochs": ft.epochs[attribute],
            "train_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
            "processes": state.processes,
            "frozen_layers": n_frozen, "adapter_logit_change": change, "device": device,
        }
        write_text_atomic(out / "report.json", canonical_json(report))

    return store.get_or_compute(STAGE, key_params, compute, inputs=[mix.key], version=VERSION)


def load_student(
    params: StudyParams, adapter: Artifact | None, store: Store, device: str, merge: bool = True
) -> tuple[nn.Module, Any]:
    """The student for evaluation: the base model, with the stored adapter applied when given.

    ``merge``: fold the adapter into float32 weights (PEFT's ``merge_and_unload``), so scoring and
    generation run plain linear layers instead of each one plus its two LoRA matmuls; the function is
    the same up to float rounding. Only the adapted (top) layers change, so cached activations of the
    frozen layers stay valid. Half-precision weights (bf16 on a GPU) keep the adapter separate: adding
    the small update into bf16 weights would round part of it away. The merged model has no adapter to
    disable; pass ``merge=False`` where that is needed.
    """
    from ..models import load_causal_lm

    model, tokenizer = load_causal_lm(params.models.student, store, device, params.dtype)
    if adapter is None:
        return model, tokenizer
    return with_adapter(model, adapter, merge), tokenizer


def with_adapter(model: nn.Module, adapter: Artifact, merge: bool = True) -> nn.Module:
    """``model`` with a stored adapter applied, in eval mode; merged into float32 weights (see :func:`load_student`)."""
    import torch
    from peft import PeftModel

    with peft_wrapping():
        tuned = PeftModel.from_pretrained(model, str(adapter.path / "adapter")).eval()
    if merge and all(p.dtype == torch.float32 for p in tuned.parameters()):
        return tuned.merge_and_unload(safe_merge=True).eval()
    return tuned
