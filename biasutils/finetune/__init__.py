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

The package, by concept: :mod:`.format` (examples and batches), :mod:`.forward` (the forward pass, the
frozen layers' activations, the windowed top layer, the step loss), :mod:`.training` (the trainable
student, the loop, checkpoints) and :mod:`.stage` (the artifacts).
"""

from __future__ import annotations

from .format import (
    Batch, Example, FinetuneError, PackedBatch, answer_text, collate, encode, pack, prompt_text,
)
from .forward import (
    ExtraLoss, WINDOWED_MODEL_TYPES, decoder_parts, final_hidden, frozen_layer_count, head_logits, layer_slice,
    lower_activations, placement, step_loss, trained_slice, unpacked,
)
from .training import (
    BatchPlan, TrainState, answer_logits, check_adapter_changes_outputs, lora_config, restore_rng_state, resume,
    rng_state, save_checkpoint, train, trainable_student,
)
from .stage import (
    ACTIVATIONS_STAGE, STAGE, VERSION, activations_artifact, cached_activations, finetune_artifact, load_activations,
    load_student, training_sources, with_adapter,
)

__all__ = [
    "ACTIVATIONS_STAGE", "Batch", "BatchPlan", "Example", "ExtraLoss", "FinetuneError", "PackedBatch", "STAGE",
    "TrainState", "VERSION", "WINDOWED_MODEL_TYPES", "activations_artifact", "answer_logits", "answer_text",
    "cached_activations", "check_adapter_changes_outputs", "collate", "decoder_parts", "encode", "final_hidden",
    "finetune_artifact", "frozen_layer_count", "head_logits", "layer_slice", "load_activations", "load_student",
    "lora_config", "lower_activations", "pack", "placement", "prompt_text", "restore_rng_state", "resume",
    "rng_state", "save_checkpoint", "step_loss", "train", "trainable_student", "trained_slice", "training_sources",
    "unpacked", "with_adapter",
]
