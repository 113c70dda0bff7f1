"""Mitigations of bias inheritance (issue 12, in progress): the pieces each mitigation is made of.

* token-based (value misalignment): a statement that the text was machine-written and may be biased,
  prepended to every *augmented* training row (:func:`token_rows`); original rows and test inputs stay
  as they are;
* loss-based (distribution misalignment): ``λ‖mean_o φ − mean_a φ‖²`` added to the SFT loss, φ the
  mean-pooled hidden state over non-padding tokens, the means over the batch's original and augmented
  rows (:func:`alignment_loss`), with batches that hold both sources (:func:`stratified_batches`).

* mask-based (surface cues): every group cue of each augmented row masked (:func:`mask_rows`).

:func:`mitigated_adapter` trains one point's student under a mitigation, reusing its generation and
mix. Not yet here: the stage in the runner, the evaluation rows with ``mitigation`` set, notebook 06.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import MITIGATIONS, StudyParams
from .store import Artifact, Store, canonical_json, read_jsonl, write_jsonl, write_text_atomic

if TYPE_CHECKING:
    import torch

ORIGINAL, AUGMENTED = "original", "augmented"


class MitigationError(ValueError):
    """A mitigation setting or input that cannot work; the message names the field and what is allowed."""


def token_rows(rows: Sequence[Mapping[str, Any]], text: str, field: str = "hard_text") -> tuple[list[dict[str, Any]], list[str]]:
    """(the rows with ``text`` prepended to each augmented row's ``field``, the ids of the rows changed).

    Why only augmented rows: the statement is meant to tell the student which data to distrust; on
    original rows or at test time it would only shift every input alike.
    """
    if not text.strip():
        raise MitigationError("mitigate.token.text: empty; allowed: a non-empty statement")
    out, changed = [], []
    for row in rows:
        row = dict(row)
        if row.get("source") == AUGMENTED:
            row[field] = f"{text.strip()} {row[field]}"
            changed.append(row["id"])
        out.append(row)
    return out, changed


def alignment_loss(hidden: torch.Tensor, attention_mask: torch.Tensor, sources: Sequence[str], weight: float) -> torch.Tensor:
    """``weight * ‖mean_o φ − mean_a φ‖²`` over one batch, φ = the mean of ``hidden`` over non-padding positions.

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
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    gap = pooled[is_original].mean(0) - pooled[is_augmented].mean(0)
    return weight * (gap * gap).sum()


def stratified_batches(sources: Sequence[str], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of about ``batch_size`` rows, each holding both sources in about their overall
    proportion (each source shuffled and dealt out over the batches in turn).

    Too few rows of a source for every batch to hold one is an error naming the counts: the loss-based
    mitigation cannot be computed on a batch that lacks a source.
    """
    by_source = {name: np.flatnonzero(np.asarray(sources) == name) for name in (ORIGINAL, AUGMENTED)}
    n_batches = math.ceil(len(sources) / batch_size)
    short = {name: len(rows) for name, rows in by_source.items() if len(rows) < n_batches}
    if short:
        raise MitigationError(
            f"finetune.batch_size={batch_size} makes {n_batches} batches, but there are only "
            + ", ".join(f"{n} {name} rows" for name, n in short.items())
            + "; every batch of the loss-based mitigation needs both: raise finetune.batch_size or γ")
    batches: list[list[int]] = [[] for _ in range(n_batches)]
    for rows in by_source.values():
        for position, row in enumerate(rng.permutation(rows)):
            batches[position % n_batches].append(int(row))
    return [list(rng.permutation(batch)) for batch in rng.permutation(np.array(batches, dtype=object))]


def mask_rows(rows: Sequence[Mapping[str, Any]], mode: str, field: str = "hard_text") -> tuple[list[dict[str, Any]], list[int]]:
    """(the rows with every group cue of each augmented row's ``field`` masked, the cues masked per
    augmented row) — :func:`biasutils.cues.mask_cues`, the lexicon group inference and the twins use.
    The row's occupation words are kept (its label stays readable)."""
    from .cues import mask_cues

    out, counts = [], []
    for row in rows:
        row = dict(row)
        if row.get("source") == AUGMENTED:
            row[field], count = mask_cues(row[field], mode, keep=str(row.get("occupation", "")).split())
            counts.append(count)
        out.append(row)
    return out, counts


# ---------------------------------------------------------------------------------------------- mitigated students

MIX_STAGE = "mitigated-mix"
VERSION = "1"


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


def settings(params: StudyParams, mitigation: str) -> dict[str, Any]:
    """The mitigation's name and settings: what its cache keys hold."""
    if mitigation not in MITIGATIONS:
        raise MitigationError(f"mitigation {mitigation!r}; allowed: {', '.join(MITIGATIONS)}")
    if mitigation == "none":
        return {"name": "none"}
    return {"name": mitigation, **getattr(params.mitigate, mitigation).model_dump(mode="json")}


def mitigated_mix(params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, mitigation: str,
                  store: Store) -> Artifact:
    """The point's mix with its augmented rows transformed (``token`` or ``mask``): ``train.jsonl`` (every
    row), ``augmented.jsonl`` (the transformed rows, whose activations the fine-tune caches) and
    ``changes.json`` (which rows changed, and the cues masked per row). The mix itself is reused."""
    from .mix import mix_artifact

    if mitigation not in ("token", "mask"):
        raise MitigationError(f"mitigation {mitigation!r} transforms no data; allowed here: token, mask")
    mix = mix_artifact(params, attribute, bias_type, ratio, seed, store)

    def compute(out: Path, scratch: Path) -> None:
        rows = read_jsonl(mix.file("train.jsonl"))
        if mitigation == "token":
            new, changed = token_rows(rows, params.mitigate.token.text)
            changes: dict[str, Any] = {"changed_ids": changed}
        else:
            new, counts = mask_rows(rows, params.mitigate.mask.mode)
            changes = {"changed_ids": [r["id"] for r in new if r.get("source") == AUGMENTED], "masked_per_row": counts}
        write_jsonl(new, out / "train.jsonl")
        write_jsonl([r for r in new if r.get("source") == AUGMENTED], out / "augmented.jsonl")
        write_text_atomic(out / "changes.json", canonical_json(changes))

    return store.get_or_compute(MIX_STAGE, settings(params, mitigation), compute, inputs=[mix.key], version=VERSION)


def mitigated_adapter(params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, mitigation: str,
                      store: Store) -> Artifact:
    """The fine-tuned adapter of one point under a mitigation; ``none`` and γ = 0 are the plain fine-tune.

    Reuses the point's generation and mix (and the γ = 0 baseline): only what the mitigation changes
    is computed (the transformed rows and their activations, the adapter).
    """
    from .data import original_artifact
    from .finetune import finetune_artifact

    key = settings(params, mitigation)
    if mitigation == "none" or ratio == 0:
        return finetune_artifact(params, attribute, bias_type, ratio, seed, store)
    if mitigation == "loss":
        return finetune_artifact(params, attribute, bias_type, ratio, seed, store,
                                 extra_loss=AlignmentLoss(params.mitigate.loss.weight), extra_loss_key=key,
                                 batch_plan=StratifiedPlan(params.finetune.batch_size))
    mix = mitigated_mix(params, attribute, bias_type, ratio, seed, mitigation, store)
    sources = [(original_artifact(params.data, params.seed, store), "train.jsonl"), (mix, "augmented.jsonl")]
    return finetune_artifact(params, attribute, bias_type, ratio, seed, store, extra_loss_key=key, mix=mix,
                             sources=sources)
