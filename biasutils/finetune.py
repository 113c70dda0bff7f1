"""LoRA supervised fine-tuning of the student on a mix: "biography -> occupation", loss on the answer.

Every example carries its ``source`` (original or augmented) and ``group``, and the training step
accepts an extra loss term computed from the batch's last hidden states and those flags
(:data:`ExtraLoss`): the loss-based mitigation plugs in there.

Backends: ``peft`` (CPU and GPU, a plain training loop over a PEFT model) and ``unsloth`` (GPU only,
imported lazily; where it cannot load, e.g. without a GPU it raises NotImplementedError, training falls
back to ``peft`` with a warning and the report says which backend trained). Both build the adapter from
the same named values in ``params.finetune`` and run the same loop.

Why the loop is hand-written: on a CPU the cost is FLOPs. With ``finetune.lora.top_layers = k`` only
the top k decoder layers get adapters; the frozen layers below compute the same activations for an
example in every epoch and every run, so they are computed once per data set and cached in the store
(:func:`lower_activations`), and training runs the top k layers only. The language-model head, a fifth
of SmolLM2's FLOPs, is applied at the answer positions only, and so is the top layer's work past its keys
and values (:func:`final_hidden`; ~3/4 of a layer). A killed run resumes from its last
finished epoch. After training, a sanity check refuses an adapter that does not change the model's
outputs (instead of silently reporting base-model numbers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import Finetune, StudyParams, resolve_device
from .store import Artifact, Store, canonical_json, read_jsonl, write_text_atomic

if TYPE_CHECKING:  # torch is imported by the functions that compute with it: a notebook reading results needs none
    import torch
    from torch import nn

STAGE = "finetune"
ACTIVATIONS_STAGE = "activations"
VERSION = "2"  # 2: LoRA initialised from the grid seed

# the batches of one epoch (lists of example indices), drawn from that epoch's generator
BatchPlan = Callable[["np.random.Generator"], list[list[int]]]
# extra_loss(last_hidden [B,T,H], attention_mask [B,T], sources, groups) -> scalar tensor
ExtraLoss = Callable[["torch.Tensor", "torch.Tensor", Sequence[str], Sequence[str]], "torch.Tensor"]


class FinetuneError(RuntimeError):
    """Training cannot go on or produced a useless adapter; the message says what to change."""


@dataclass(frozen=True)
class Example:
    """One tokenised training or test example. ``answer_len`` counts the answer tokens and the end token."""

    id: str
    input_ids: tuple[int, ...]
    answer_len: int
    source: str
    group: str


# ---------------------------------------------------------------------------------------------- format


def answer_text(occupation: str) -> str:
    return occupation.replace("_", " ")


def prompt_text(tokenizer: Any, hard_text: str, finetune: Finetune) -> str:
    """The chat-formatted question the student answers (the biography first, then the question)."""
    messages = [
        {"role": "system", "content": finetune.system},
        {"role": "user", "content": f"{hard_text}\n\n{finetune.instruction}"},
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(
    rows: Sequence[Mapping[str, Any]], tokenizer: Any, finetune: Finetune, with_answer: bool = True,
    group_field: str = "gender_name",
) -> list[Example]:
    """Tokenise rows; a biography too long for ``max_length`` is cut at its end, never the question."""
    examples = []
    for row in rows:
        answer = tokenizer(answer_text(row["occupation"]) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        prompt = tokenizer(prompt_text(tokenizer, row["hard_text"], finetune), add_special_tokens=False)["input_ids"]
        overflow = len(prompt) + len(answer) - finetune.max_length
        if overflow > 0:
            prompt = tokenizer(
                prompt_text(tokenizer, _cut_tokens(tokenizer, row["hard_text"], overflow), finetune), add_special_tokens=False
            )["input_ids"]
        ids = prompt + answer if with_answer else prompt
        examples.append(Example(
            id=row["id"], input_ids=tuple(ids), answer_len=len(answer) if with_answer else 0,
            source=row.get("source", "original"), group=row.get(group_field, ""),
        ))
    return examples


def _cut_tokens(tokenizer: Any, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[: max(len(ids) - n, 1)])


# ---------------------------------------------------------------------------------------------- model parts


def decoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder stack and the LM head of a (possibly PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


@contextlib.contextmanager
def layer_slice(decoder: nn.Module, start: int, stop: int, final_norm: bool = True) -> Iterator[nn.Module]:
    """Make ``decoder`` run only ``layers[start:stop]`` (and skip its final norm if asked).

    The decoder's forward still builds the causal mask and rotary embeddings from the position ids,
    so feeding it cached activations of layer ``start`` as ``inputs_embeds`` continues the exact
    computation of the full model.
    """
    from torch import nn

    layers, norm, count = decoder.layers, decoder.norm, decoder.config.num_hidden_layers
    decoder.layers = nn.ModuleList(list(layers)[start:stop])
    decoder.config.num_hidden_layers = stop - start
    if not final_norm:
        decoder.norm = nn.Identity()
    try:
        yield decoder
    finally:
        decoder.layers, decoder.norm, decoder.config.num_hidden_layers = layers, norm, count


def frozen_layer_count(model: nn.Module, finetune: Finetune) -> int:
    """How many bottom layers stay frozen (and cacheable): all but ``top_layers``, or 0."""
    total = decoder_parts(model)[0].config.num_hidden_layers
    top = finetune.lora.top_layers
    if top is None:
        return 0
    if top > total:
        raise FinetuneError(f"finetune.lora.top_layers: {top} exceeds the model's {total} layers; allowed: 1..{total} or null")
    return total - top


# ---------------------------------------------------------------------------------------------- cached activations


def lower_activations(model: nn.Module, examples: Sequence[Example], n_frozen: int, batch_size: int = 16) -> list[torch.Tensor]:
    """Activations after the ``n_frozen`` bottom layers, one [length, hidden] tensor per example."""
    import torch

    decoder, _ = decoder_parts(model)
    device = next(model.parameters()).device
    outputs: list[torch.Tensor] = []
    with torch.inference_mode(), layer_slice(decoder, 0, n_frozen, final_norm=False):
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            ids, mask = _right_padded([e.input_ids for e in batch], pad=0, device=device)
            hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            outputs += [hidden[i, : len(e.input_ids)].float().cpu() for i, e in enumerate(batch)]
    return outputs


def _right_padded(sequences: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def activations_artifact(
    params: StudyParams, source: Artifact, filename: str, store: Store, with_answer: bool = True
) -> Artifact:
    """Cached bottom-layer activations of every row of ``source/filename`` for the student model."""
    from safetensors.torch import save_file

    from .models import load_causal_lm

    ft = params.finetune
    key_params = {
        "student": params.models.student, "top_layers": ft.lora.top_layers, "file": filename,
        "with_answer": with_answer, "system": ft.system, "instruction": ft.instruction, "max_length": ft.max_length,
    }

    def compute(out: Path, scratch: Path) -> None:
        model, tokenizer = load_causal_lm(params.models.student, store, resolve_device(params))
        examples = encode(read_jsonl(source.file(filename)), tokenizer, ft, with_answer)
        hidden = lower_activations(model, examples, frozen_layer_count(model, ft))
        save_file({e.id: h.contiguous() for e, h in zip(examples, hidden)}, str(out / "activations.safetensors"))

    return store.get_or_compute(ACTIVATIONS_STAGE, key_params, compute, inputs=[source.key], version=VERSION)


def load_activations(artifact: Artifact) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(artifact.file("activations.safetensors")))


# ---------------------------------------------------------------------------------------------- the training step


@dataclass
class Batch:
    """Left-padded inputs (token ids, or cached activations), the answer labels and the example flags."""

    inputs: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor  # [B, K-1] targets of the last K-1 positions, -100 where not an answer token
    window: int  # K: the positions whose logits are needed
    sources: list[str]
    groups: list[str]

    def forward_kwargs(self) -> dict[str, torch.Tensor]:
        import torch

        key = "input_ids" if self.inputs.dtype == torch.long else "inputs_embeds"
        return {key: self.inputs, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


def collate(examples: Sequence[Example], cached: Mapping[str, torch.Tensor] | None, device: Any, pad: int = 0) -> Batch:
    """Left padding puts every answer at the end, so one window of K positions covers all answers."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    window = max(e.answer_len for e in examples) + 1
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    tokens = torch.full((len(examples), width), pad, dtype=torch.long)
    for i, e in enumerate(examples):
        mask[i, width - len(e.input_ids) :] = 1
        tokens[i, width - len(e.input_ids) :] = torch.tensor(e.input_ids)
    if cached is not None:
        hidden = next(iter(cached.values())).shape[-1]
        inputs = torch.zeros((len(examples), width, hidden))
        for i, e in enumerate(examples):
            inputs[i, width - len(e.input_ids) :] = cached[e.id]
    else:
        inputs = tokens
    labels = tokens[:, width - window + 1 :].clone()
    for i, e in enumerate(examples):
        labels[i, : window - 1 - e.answer_len] = -100
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(
        inputs.to(device), mask.to(device), position_ids.to(device), labels.to(device), window,
        [e.source for e in examples], [e.group for e in examples],
    )


def final_hidden(model: nn.Module, batch: Batch, layers: tuple[int, int] | None, last: int | None = None) -> torch.Tensor:
    """The decoder's last hidden states for a batch; ``layers`` runs only that slice (cached inputs).

    ``last``: only the last ``last`` positions will be read. Then the top layer of the slice may compute
    its output there only (:func:`_windowed_top_layer`) and the result may hold just those positions
    ([B, last, H] instead of [B, T, H]): callers index it from the end. Where that shortcut does not
    apply (no slice, an unsupported model, active dropout, gradient checkpointing) it is the full forward.
    """
    decoder, _ = decoder_parts(model)
    dtype = next(decoder.parameters()).dtype
    if batch.inputs.is_floating_point() and batch.inputs.dtype != dtype:  # fp32 cached activations, a bf16 student
        batch = dataclasses.replace(batch, inputs=batch.inputs.to(dtype))
    if layers is None or last is None or not _windowed_top_layer_applies(decoder, batch, layers, last):
        with layer_slice(decoder, *layers) if layers else contextlib.nullcontext():
            return decoder(**batch.forward_kwargs(), use_cache=False).last_hidden_state
    start, stop = layers
    with layer_slice(decoder, start, stop - 1, final_norm=False):  # may run no layer (top_layers = 1)
        below = decoder(**batch.forward_kwargs(), use_cache=False).last_hidden_state
    return _windowed_top_layer(decoder, stop - 1, below, batch.attention_mask, batch.position_ids, last)


# Decoder layers whose outputs at a position depend on the other positions only through the keys and
# values their attention stores in the cache (pre-norm Llama blocks); others take the full forward.
WINDOWED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class _KeysValuesStored(Exception):
    """Raised by the cache of :func:`_one_layer_cache_class` once a layer's keys and values are stored."""


@functools.cache
def _one_layer_cache_class() -> type:
    from transformers import DynamicCache

    class OneLayerCache(DynamicCache):
        """A ``DynamicCache`` holding one decoder layer's keys and values, whatever the layer's index.

        The decoder runs that layer alone (:func:`layer_slice`) and sizes the attention mask on cache
        layer 0, so the layer's entries are kept there. ``stop_after_update``: end the forward (raise
        :class:`_KeysValuesStored`) right after the keys and values are stored.
        """

        def __init__(self, stop_after_update: bool = False) -> None:
            super().__init__()
            self.stop_after_update = stop_after_update

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
            out = super().update(key_states, value_states, 0, *args, **kwargs)
            if self.stop_after_update:
                self.stop_after_update = False
                raise _KeysValuesStored
            return out

    return OneLayerCache


def _windowed_top_layer_applies(decoder: nn.Module, batch: Batch, layers: tuple[int, int], last: int) -> bool:
    """Whether :func:`_windowed_top_layer` computes exactly what the full forward computes for this batch."""
    import torch
    from torch import nn

    config = decoder.config
    width = batch.inputs.shape[1]
    top = decoder.layers[layers[1] - 1]
    window = getattr(config, "sliding_window", None)
    dropout = top.training and (
        getattr(config, "attention_dropout", 0.0) > 0
        or any(isinstance(m, nn.Dropout) and m.p > 0 for m in top.modules())  # LoRA dropout draws other masks
    )
    checkpointing = getattr(top, "gradient_checkpointing", False) and top.training and torch.is_grad_enabled()
    return (
        getattr(config, "model_type", None) in WINDOWED_MODEL_TYPES and layers[0] < layers[1]
        and 0 < last < width and (window is None or width <= window) and not dropout and not checkpointing
    )


def _windowed_top_layer(
    decoder: nn.Module, index: int, below: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
    last: int,
) -> torch.Tensor:
    """Decoder layer ``index`` (the top one) and the final norm at the last ``last`` positions only.

    Why: the outputs of the top layer are read only where the LM head runs, but its queries, attention
    output, MLP and residuals cost ~3/4 of a layer's FLOPs at every position. Its keys and values are
    still needed at every position. Both passes are the decoder's own forward (Hugging Face's code for
    the norms, rotary embeddings, causal + padding mask and attention): the first runs the layer over
    the earlier positions until the keys and values are stored in a cache and stops there (their query
    projection is the only wasted work); the second runs the layer on the window with that cache, as in
    generation, so every window query attends to exactly the keys of the full forward.
    """
    cache = {_cache_keyword(type(decoder)): _one_layer_cache_class()(stop_after_update=True)}
    split = below.shape[1] - last
    with layer_slice(decoder, index, index + 1):
        try:
            decoder(inputs_embeds=below[:, :split], attention_mask=attention_mask[:, :split],
                    position_ids=position_ids[:, :split], use_cache=True, **cache)
        except _KeysValuesStored:
            pass
        else:
            raise FinetuneError(f"decoder layer {index} ({type(decoder.layers[0]).__name__}) stored no keys and values "
                                "in its cache; it cannot run on the answer positions alone")
        return decoder(inputs_embeds=below[:, split:], attention_mask=attention_mask,
                       position_ids=position_ids[:, split:], use_cache=True, **cache).last_hidden_state


@functools.cache
def _cache_keyword(decoder_class: type) -> str:
    """The decoder's keyword for a cache: ``cache`` (transformers 5.24; ``past_key_values`` is deprecated there)
    or ``past_key_values`` (5.17, which takes an unknown ``cache=`` silently and builds a cache of its own)."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 logits of the LM head for hidden states [..., H] (e.g. a window sliced out of [B, T, H]).

    Why contiguous: on a strided 3-D input torch's linear takes a batched-matmul path; on a CPU the
    backward of SmolLM2's 49152 x 576 head through it took ~3.7x the time of the same product on a
    contiguous input (bench/bench_forward.py). Same products, other kernel.
    """
    return decoder_parts(model)[1](hidden.contiguous()).float()


def step_loss(
    model: nn.Module, batch: Batch, layers: tuple[int, int] | None, extra_loss: ExtraLoss | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy on the answer tokens (+ the extra term); ``layers`` restricts the decoder to a slice.

    The extra term reads the hidden states of every position, so with one the top layer runs everywhere.
    """
    from torch import nn

    hidden = final_hidden(model, batch, layers, None if extra_loss is not None else batch.window)
    logits = head_logits(model, hidden[:, -batch.window : -1])
    ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.labels.reshape(-1), ignore_index=-100)
    parts = {"ce": float(ce.detach())}
    if extra_loss is None:
        return ce, parts
    extra = extra_loss(hidden, batch.attention_mask, batch.sources, batch.groups)
    parts["extra"] = float(extra.detach())
    return ce + extra, parts


# ---------------------------------------------------------------------------------------------- models and adapters


def lora_config(finetune: Finetune, n_layers: int, n_frozen: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=finetune.lora.r, lora_alpha=finetune.lora.alpha, lora_dropout=finetune.lora.dropout,
        target_modules=list(finetune.lora.target_modules), bias="none", task_type="CAUSAL_LM",
        layers_to_transform=list(range(n_frozen, n_layers)) if n_frozen else None,
    )


def trainable_student(params: StudyParams, store: Store, device: str, seed: int) -> tuple[nn.Module, Any, str]:
    """The student with fresh LoRA adapters, from the backend asked for (or peft when unsloth cannot load).

    Why the seed: LoRA draws its A matrices at random; left to the global generator, the same params
    trained a different adapter in every kernel (classroom accuracies moved by up to 0.08 between runs).
    """
    import torch

    from .models import load_causal_lm

    ft = params.finetune
    if ft.backend == "unsloth":
        loaded = _unsloth_student(params, store, seed)
        if loaded is not None:
            return (*loaded, "unsloth")
    from peft import get_peft_model

    model, tokenizer = load_causal_lm(params.models.student, store, device)
    n_layers = decoder_parts(model)[0].config.num_hidden_layers
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, lora_config(ft, n_layers, frozen_layer_count(model, ft)))
    if ft.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model, tokenizer, "peft"


def _unsloth_student(params: StudyParams, store: Store, seed: int) -> tuple[nn.Module, Any] | None:
    """unsloth's model and adapter, or None with a warning where it cannot load (no GPU, not installed)."""
    try:
        from unsloth import FastLanguageModel  # raises NotImplementedError, not ImportError, without a GPU
    except (ImportError, NotImplementedError, RuntimeError) as error:
        warnings.warn(
            f"finetune.backend=unsloth cannot load here ({type(error).__name__}: {error}); "
            "training with the peft backend and the same adapter settings instead",
            stacklevel=3,
        )
        return None
    from .models import model_dir

    ft = params.finetune
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_dir(params.models.student, store), max_seq_length=ft.max_length, dtype=None, load_in_4bit=False,
    )
    model = FastLanguageModel.get_peft_model(
        model, r=ft.lora.r, lora_alpha=ft.lora.alpha, lora_dropout=ft.lora.dropout,
        target_modules=list(ft.lora.target_modules), bias="none", random_state=seed,
        use_gradient_checkpointing="unsloth",
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# ---------------------------------------------------------------------------------------------- training


@dataclass
class TrainState:
    """What a resumed run needs: finished epochs, the loss curve, adapter, optimiser and RNG state.

    ``epoch_seconds`` times each finished epoch in the process that ran it, and ``processes`` counts the
    processes that trained (1 + resumptions), so a resumed run's report adds up both honestly.
    """

    epoch: int
    curve: list[dict[str, float]]
    epoch_seconds: list[float] = field(default_factory=list)
    processes: int = 1

    @staticmethod
    def path(scratch: Path) -> Path:
        return scratch / "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every generator a training step draws from: torch's CPU generator (LoRA dropout on a CPU) and each
    CUDA device's. The batch order needs none: it is drawn afresh from (seed, epoch) in every epoch."""
    import torch

    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(scratch: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """Atomically replace the epoch checkpoint (a kill mid-write leaves the previous one)."""
    import torch
    from peft import get_peft_model_state_dict

    tmp = scratch / "checkpoint.pt.tmp"
    torch.save({"adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(), "rng": rng_state(),
                "epoch": state.epoch, "curve": state.curve, "epoch_seconds": state.epoch_seconds,
                "processes": state.processes}, tmp)
    tmp.replace(TrainState.path(scratch))


def resume(scratch: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """The state after the last finished epoch, with the generators where they were; a fresh state when
    there is no checkpoint, or only one without RNG state (it could not continue the same run)."""
    import torch
    from peft import set_peft_model_state_dict

    path = TrainState.path(scratch)
    saved = torch.load(path, weights_only=False) if path.exists() else {}
    if "rng" not in saved:
        return TrainState(epoch=0, curve=[])
    set_peft_model_state_dict(model, saved["adapter"])
    optimizer.load_state_dict(saved["optimizer"])
    restore_rng_state(saved["rng"])
    return TrainState(epoch=saved["epoch"], curve=saved["curve"], epoch_seconds=saved["epoch_seconds"],
                      processes=saved["processes"] + 1)


def train(
    model: nn.Module, examples: Sequence[Example], cached: Mapping[str, torch.Tensor] | None, n_frozen: int,
    finetune: Finetune, attribute: str, seed: int, scratch: Path, extra_loss: ExtraLoss | None = None,
    pad_id: int = 0, batch_plan: BatchPlan | None = None,
) -> TrainState:
    """AdamW at a constant learning rate over shuffled batches; checkpoints after every epoch.

    A resumed run restores the generators saved with the checkpoint, so dropout draws the masks the
    uninterrupted run would have drawn and the adapter comes out the same, bit for bit.
    """
    import torch

    torch.manual_seed(seed)
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=finetune.lr[attribute], weight_decay=finetune.weight_decay)
    state = resume(scratch, model, optimizer)
    n_layers = decoder_parts(model)[0].config.num_hidden_layers
    layers = (n_frozen, n_layers) if n_frozen else None
    model.train()
    for epoch in range(state.epoch, finetune.epochs[attribute]):
        started = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        if batch_plan is None:
            order = rng.permutation(len(examples))
            batches = [order[start : start + finetune.batch_size] for start in range(0, len(order), finetune.batch_size)]
        else:
            batches = batch_plan(rng)
        for rows in batches:
            batch = collate([examples[i] for i in rows], cached, device, pad_id)
            loss, parts = step_loss(model, batch, layers, extra_loss)
            if not math.isfinite(float(loss.detach())):
                raise FinetuneError(f"the loss became {float(loss)} at epoch {epoch}; lower finetune.lr")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, finetune.grad_clip)
            optimizer.step()
            state.curve.append({"step": len(state.curve), "epoch": epoch, "loss": float(loss.detach()), **parts})
        state.epoch = epoch + 1
        state.epoch_seconds.append(round(time.perf_counter() - started, 3))
        save_checkpoint(scratch, model, optimizer, state)
    model.eval()
    return state


def check_adapter_changes_outputs(model: nn.Module, batch: Batch, layers: tuple[int, int] | None, tolerance: float = 1e-6) -> float:
    """Largest change the adapter makes to the answer logits of a probe batch; an error if none.

    Other tools have been seen to save adapters that were never applied; numbers from such a model
    would be the base model's, reported as the fine-tuned one's.
    """
    import torch

    with torch.inference_mode():
        tuned = _answer_logits(model, batch, layers)
        with model.disable_adapter():
            base = _answer_logits(model, batch, layers)
    change = float((tuned - base).abs().max())
    if change <= tolerance:
        raise FinetuneError(
            f"the trained adapter changes the answer logits by at most {change:.2e} on a probe batch: it is not "
            "applied or did not learn; check finetune.lora.target_modules and finetune.lr"
        )
    return change


def _answer_logits(model: nn.Module, batch: Batch, layers: tuple[int, int] | None) -> torch.Tensor:
    return head_logits(model, final_hidden(model, batch, layers, batch.window)[:, -batch.window : -1])


# ---------------------------------------------------------------------------------------------- the stage


def training_sources(params: StudyParams, attribute: str, bias_type: str, store: Store) -> list[tuple[Artifact, str]]:
    """The data sets a mix draws from: the original train split and, unless γ = 0, the generated samples."""
    from .data import original_artifact
    from .generate import generate_samples
    from .mix import BASELINE

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
    from .mix import canonical_bias_type, key_attribute, mix_artifact

    bias_type = canonical_bias_type(bias_type, ratio)
    mix = mix or mix_artifact(params, attribute, bias_type, ratio, seed, store)
    ft = params.finetune
    key_params = {
        # the baseline's lr and epochs are in the key, so attributes trained alike share its student
        "student": params.models.student, "seed": seed,
        "attribute": attribute if extra_loss_key else key_attribute(attribute, bias_type),
        # gradient checkpointing trades memory for time and leaves every number as it was: not in the key
        "finetune": {
            **ft.model_dump(mode="json", exclude={"gradient_checkpointing"}),
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
        cached = None
        if n_frozen:
            cached = {}
            for source, filename in sources or training_sources(params, attribute, bias_type, store):
                cached.update(load_activations(activations_artifact(params, source, filename, store)))
        plan = batch_plan([e.source for e in examples]) if batch_plan else None
        state = train(model, examples, cached, n_frozen, ft, attribute, seed, scratch, extra_loss, tokenizer.pad_token_id, plan)
        seconds = sum(state.epoch_seconds)  # every kept epoch, timed in the process that ran it
        probe = collate(examples[:8], cached, next(model.parameters()).device, tokenizer.pad_token_id)
        change = check_adapter_changes_outputs(model, probe, (n_frozen, decoder_parts(model)[0].config.num_hidden_layers) if n_frozen else None)
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
    import torch
    from peft import PeftModel

    from .models import load_causal_lm

    model, tokenizer = load_causal_lm(params.models.student, store, device)
    if adapter is None:
        return model, tokenizer
    tuned = PeftModel.from_pretrained(model, str(adapter.path / "adapter")).eval()
    if merge and all(p.dtype == torch.float32 for p in tuned.parameters()):
        return tuned.merge_and_unload(safe_merge=True).eval(), tokenizer
    return tuned, tokenizer
