"""The loss-based mitigation (distribution misalignment): ``λ‖mean_o φ − mean_a φ‖²`` added to the SFT loss.

φ is the mean of a row's last-layer hidden states over its non-padding tokens (:func:`pooled_states`), the
means run over the batch's original and augmented rows (:func:`alignment_loss`), and every batch holds
both sources (:func:`stratified_batches`). The term plugs into the fine-tune's extra-loss hook
(:class:`AlignmentLoss`) and its batch plan (:class:`StratifiedPlan`); with ``finetune.lora.top_layers``
the hidden states come from the cached frozen layers plus the trained top ones, as in training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .transforms import AUGMENTED, ORIGINAL, MitigationError

if TYPE_CHECKING:
    import torch


def pooled_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """φ per row: the mean of ``hidden`` [B, T, H] over the positions ``attention_mask`` [B, T] marks."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def alignment_loss(hidden: torch.Tensor, attention_mask: torch.Tensor, sources: Sequence[str], weight: float) -> torch.Tensor:
    """``weight * ‖mean_o φ − mean_a φ‖²`` over one batch (φ: :func:`pooled_states`), in float32.

    A batch without both sources is an error, never a silent zero: the sampler must stratify
    (:func:`stratified_batches`).
    """
    import torch

    if weight < 0:
        raise MitigationError(f"mitigate.loss.weight: {weight}; allowed: >= 0")
    is_augmented = torch.tensor([s == AUGMENTED for s in sources], device=hidden.device)
    is_original = torch.tensor([s == ORIGINAL for s in sources], device=hidden.device)
    if not (is_augmented.any() and is_original.any()):
        raise MitigationError(
            f"the loss-based mitigation needs original and augmented rows in every batch; this one holds "
            f"{int(is_original.sum())} original and {int(is_augmented.sum())} augmented")
    pooled = pooled_states(hidden.float(), attention_mask)
    gap = pooled[is_original].mean(0) - pooled[is_augmented].mean(0)
    return weight * (gap * gap).sum()


def stratified_batches(sources: Sequence[str], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches, each holding both sources in about their overall proportion (each source shuffled
    and dealt out over the batches in turn), every row once.

    ``ceil(rows / batch_size)`` batches, or fewer and larger ones when a source has fewer rows than that
    (γ = 0.1 of 60 originals adds 7 augmented rows to 9 batches of 8: 7 batches of 9–10), so that no batch
    lacks a source; the fine-tune's ``loss.json`` shows the steps taken. A source with no row at all is an
    error naming the counts.
    """
    by_source = {name: np.flatnonzero(np.asarray(sources) == name) for name in (ORIGINAL, AUGMENTED)}
    empty = [name for name, rows in by_source.items() if not len(rows)]
    if empty:
        raise MitigationError(
            f"the loss-based mitigation needs original and augmented rows; the mix has no {' or '.join(empty)} "
            f"rows ({', '.join(f'{len(rows)} {name}' for name, rows in by_source.items())}): mitigate points with γ > 0")
    n_batches = min(math.ceil(len(sources) / batch_size), *(len(rows) for rows in by_source.values()))
    batches: list[list[int]] = [[] for _ in range(n_batches)]
    for rows in by_source.values():
        for position, row in enumerate(rng.permutation(rows)):
            batches[position % n_batches].append(int(row))
    return [[int(i) for i in rng.permutation(batches[b])] for b in rng.permutation(n_batches)]


@dataclass(frozen=True)
class AlignmentLoss:
    """The finetune extra-loss hook for the loss-based mitigation (:func:`alignment_loss` at ``weight``)."""

    weight: float

    def __call__(self, hidden: torch.Tensor, attention_mask: torch.Tensor, sources: Sequence[str],
                 groups: Sequence[str]) -> torch.Tensor:
        return alignment_loss(hidden, attention_mask, sources, self.weight)


@dataclass(frozen=True)
class StratifiedPlan:
    """The finetune batch-plan hook: given each example's source, each epoch's :func:`stratified_batches`."""

    batch_size: int

    def __call__(self, sources: Sequence[str]) -> Callable[[np.random.Generator], list[list[int]]]:
        return lambda rng: stratified_batches(sources, self.batch_size, rng)
