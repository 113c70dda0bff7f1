"""Training: the trainable student (PEFT, or unsloth on a GPU), the loop with its epoch checkpoints and the
generators that make a resumed run bit-identical, and the check that the adapter changes the outputs."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import Finetune, StudyParams
from ..store import Store
from .format import Batch, Example, FinetuneError, collate, pack
from .forward import (
    ExtraLoss, decoder_parts, final_hidden, frozen_layer_count, head_logits, placement, step_loss, trained_slice,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

# the batches of one epoch (lists of example indices), drawn from that epoch's generator
BatchPlan = Callable[["np.random.Generator"], list[list[int]]]


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """PEFT 0.21 (the newest) reads transformers' deprecated ``is_gradient_checkpointing`` whenever it wraps
    a model, a FutureWarning only PEFT can fix: exactly that warning is silenced, and only while wrapping."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


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

    from ..models import load_causal_lm

    ft = params.finetune
    if ft.backend == "unsloth":
        loaded = _unsloth_student(params, store, seed)
        if loaded is not None:
            return (*loaded, "unsloth")
    from peft import get_peft_model

    model, tokenizer = load_causal_lm(params.models.student, store, device, params.dtype)
    n_layers = decoder_parts(model)[0].config.num_hidden_layers
    torch.manual_seed(seed)
    with peft_wrapping():
        peft_model = get_peft_model(model, lora_config(ft, n_layers, frozen_layer_count(model, ft)))
    if checkpointing_chosen(ft, model):
        peft_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return peft_model, tokenizer, "peft"


# bytes of activations a bf16 decoder layer keeps per token and hidden unit for its backward pass, with
# attention that stores no score matrix (SDPA/flash): Korthikanti et al. 2022, "Reducing Activation
# Recomputation in Large Transformer Models", eq. 2 without its 5·a·s/h term
ACTIVATION_BYTES_PER_TOKEN_AND_UNIT = 34
ACTIVATION_MEMORY_SHARE = 0.8  # of the free memory after the weights are loaded; the rest is the allocator's


def step_activation_bytes(config: Any, tokens: int) -> int:
    """What one training step's decoder activations take, for ``tokens`` tokens in the batch."""
    return ACTIVATION_BYTES_PER_TOKEN_AND_UNIT * tokens * config.hidden_size * config.num_hidden_layers


def checkpointing_needed(config: Any, tokens: int, free_bytes: int) -> bool:
    """Whether a step's activations exceed the share of free memory they may take."""
    return step_activation_bytes(config, tokens) > ACTIVATION_MEMORY_SHARE * free_bytes


def checkpointing_chosen(ft: Finetune, model: nn.Module) -> bool:
    """``finetune.gradient_checkpointing`` as asked, or for ``auto`` by memory: on a GPU when the largest
    step (``batch_size`` x ``max_length`` tokens) would not fit beside the loaded weights, never on a CPU
    (its memory is the machine's and checkpointing only costs time there)."""
    import torch

    if ft.gradient_checkpointing != "auto":
        return bool(ft.gradient_checkpointing)
    device, _ = placement(model)
    if device.type != "cuda":
        return False
    return checkpointing_needed(model.config, ft.batch_size * ft.max_length, torch.cuda.mem_get_info(device)[0])


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
    from ..models import model_dir

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
    device, dtype = placement(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=finetune.lr[attribute], weight_decay=finetune.weight_decay)
    state = resume(scratch, model, optimizer)
    layers = trained_slice(model, n_frozen)
    batcher = pack if finetune.packing else collate
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
            batch = batcher([examples[i] for i in rows], cached, device, pad_id, dtype)
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
        tuned = answer_logits(model, batch, layers)
        with model.disable_adapter():
            base = answer_logits(model, batch, layers)
    change = float((tuned - base).abs().max())
    if change <= tolerance:
        raise FinetuneError(
            f"the trained adapter changes the answer logits by at most {change:.2e} on a probe batch: it is not "
            "applied or did not learn; check finetune.lora.target_modules and finetune.lr"
        )
    return change


def answer_logits(model: nn.Module, batch: Batch, layers: tuple[int, int] | None) -> torch.Tensor:
    """The logits at a batch's answer positions (the window), as training and the adapter check read them."""
    return head_logits(model, final_hidden(model, batch, layers, batch.window)[:, -batch.window : -1])
