"""The student's forward pass as training and scoring use it: the decoder's parts, a slice of its layers,
the frozen layers' activations (:func:`lower_activations`), the last hidden states (:func:`final_hidden`,
with the top layer at the read positions only where that computes the same), the LM head and the loss
of one step (:func:`step_loss`, with the extra-loss hook)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..config import Finetune
from .format import Batch, Example, FinetuneError, PackedBatch

if TYPE_CHECKING:
    import torch
    from torch import nn

# extra_loss(last_hidden [B,T,H], attention_mask [B,T], sources, groups) -> scalar tensor
ExtraLoss = Callable[["torch.Tensor", "torch.Tensor", Sequence[str], Sequence[str]], "torch.Tensor"]


def decoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder stack and the LM head of a (possibly PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the student computes: its device and the dtype of its hidden states (the input embeddings').

    Why the embeddings' and not any parameter's: PEFT keeps LoRA weights in float32 beside bf16 base
    weights; what the decoder layers take as ``inputs_embeds`` is the embeddings' dtype.
    """
    weight = decoder_parts(model)[0].get_input_embeddings().weight
    return weight.device, weight.dtype


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


def trained_slice(model: nn.Module, n_frozen: int) -> tuple[int, int] | None:
    """The decoder layers that run on cached activations of the ``n_frozen`` bottom ones: (first, stop), or
    None when nothing is frozen (the whole model runs from the tokens)."""
    return (n_frozen, decoder_parts(model)[0].config.num_hidden_layers) if n_frozen else None


def lower_activations(model: nn.Module, examples: Sequence[Example], n_frozen: int, batch_size: int = 16) -> list[torch.Tensor]:
    """Activations after the ``n_frozen`` bottom layers, one [length, hidden] tensor per example, on the CPU.

    They keep the dtype the model computed them in (bf16 for a bf16 student: exact, and half of float32's
    bytes, ~6 GB per 1,000 examples of 200 tokens at 8B); the cache key holds a stated dtype
    (:func:`biasutils.config.precision_key`), and :func:`~.format.collate` casts to the student's dtype.
    """
    import torch

    decoder, _ = decoder_parts(model)
    device, _ = placement(model)
    outputs: list[torch.Tensor] = []
    with torch.inference_mode(), layer_slice(decoder, 0, n_frozen, final_norm=False):
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            ids, mask = _right_padded([e.input_ids for e in batch], pad=0, device=device)
            hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            outputs += [hidden[i, : len(e.input_ids)].cpu() for i, e in enumerate(batch)]
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


def in_student_dtype(model: nn.Module, batch: Any) -> Any:
    """``batch`` with cached activations in the student's dtype (a batch collated without it: a cast here)."""
    _, dtype = placement(model)
    if batch.inputs.is_floating_point() and batch.inputs.dtype != dtype:
        batch = dataclasses.replace(batch, inputs=batch.inputs.to(dtype))
    return batch


def final_hidden(
    model: nn.Module, batch: Batch | PackedBatch, layers: tuple[int, int] | None, last: int | None = None
) -> torch.Tensor:
    """The decoder's last hidden states for a batch; ``layers`` runs only that slice (cached inputs). A packed
    batch is one row; ``last`` applies to left-padded batches only.

    ``last``: only the last ``last`` positions will be read. Then the top layer of the slice may compute
    its output there only (:func:`_windowed_top_layer`) and the result may hold just those positions
    ([B, last, H] instead of [B, T, H]): callers index it from the end. Where that shortcut does not
    apply (no slice, an unsupported model, active dropout, gradient checkpointing) it is the full forward.
    """
    decoder, _ = decoder_parts(model)
    batch = in_student_dtype(model, batch)
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
    model: nn.Module, batch: Batch | PackedBatch, layers: tuple[int, int] | None, extra_loss: ExtraLoss | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy on the answer tokens (+ the extra term); ``layers`` restricts the decoder to a slice.

    The extra term reads the hidden states of every position, so with one the top layer runs everywhere.
    A batch with writing examples (answers of ~70 tokens beside classification answers of 2-4) runs the
    LM head on the answer tokens only: the head is most of a small model's step and half the window is
    padding (bench/bench_writing.py). Classification alone keeps the dense product the main study's
    students were trained with (the two round differently in the last bits). A packed batch
    (``finetune.packing``) gives the same loss: the head at its answer positions, the extra term on its
    examples set side by side.
    """
    cross_entropy = _packed_cross_entropy if isinstance(batch, PackedBatch) else _padded_cross_entropy
    ce, hidden, mask = cross_entropy(model, batch, layers, extra_loss is not None)
    parts = {"ce": float(ce.detach())}
    if extra_loss is None:
        return ce, parts
    extra = extra_loss(hidden, mask, batch.sources, batch.groups)
    parts["extra"] = float(extra.detach())
    return ce + extra, parts


def _padded_cross_entropy(
    model: nn.Module, batch: Batch, layers: tuple[int, int] | None, every_position: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The answer tokens' cross-entropy of a left-padded batch, its last hidden states and mask [B, T];
    ``every_position``: the hidden states are read everywhere (else the top layer may run on the window)."""
    from torch import nn

    hidden = final_hidden(model, batch, layers, None if every_position else batch.window)
    window, labels = hidden[:, -batch.window : -1], batch.labels
    if batch.writes:
        scored = labels != -100
        window, labels = window[scored], labels[scored]
    logits = head_logits(model, window)
    ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    return ce, hidden, batch.attention_mask


def _packed_cross_entropy(
    model: nn.Module, batch: PackedBatch, layers: tuple[int, int] | None, every_position: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The same mean cross-entropy over a packed batch's answer tokens (the LM head at those positions only),
    and its examples' hidden states set side by side with their mask (:func:`unpacked`) when they are read."""
    from torch import nn

    hidden = final_hidden(model, batch, layers)[0]  # [N, H]: the whole row, no window to cut
    ce = nn.functional.cross_entropy(head_logits(model, hidden[batch.reads]), batch.targets)
    return (ce, *unpacked(hidden, batch.lengths)) if every_position else (ce, hidden, None)


def unpacked(hidden: torch.Tensor, lengths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed hidden states [N, H] as right-padded [B, T, H] and their mask [B, T]: the shape the extra
    loss hook takes (it pools each example over its own positions)."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    padded = pad_sequence(list(hidden.split(list(lengths))), batch_first=True)
    mask = pad_sequence([torch.ones(n, dtype=torch.long, device=hidden.device) for n in lengths], batch_first=True)
    return padded, mask
