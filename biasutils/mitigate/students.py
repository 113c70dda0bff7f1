"""Mitigated students: one grid point trained under a mitigation, evaluated, and probed for the
misalignment the mitigation targets.

A mitigated point reuses its generation, its mix and the γ = 0 baseline: only what the mitigation
changes is computed (the transformed rows and their activations, the adapter, its evaluations). The
probe (:func:`probe_artifact`) measures, for the plain and each mitigated student of a point, the two
student-side misalignments: its agreement with gender stereotypes (what the token-based mitigation
aims at) and how far apart its representations of the mix's original and augmented rows are (what the
loss-based one aims at). The mask-based one's target, the cues in the training data, is counted from
the transformed rows (:func:`biasutils.mitigate.transforms.cue_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import MITIGATIONS, StudyParams
from ..store import Artifact, Store, canonical_json, read_jsonl, write_jsonl, write_text_atomic
from .loss import AlignmentLoss, StratifiedPlan, pooled_states
from .transforms import AUGMENTED, ORIGINAL, MitigationError, mask_rows, token_rows

MIX_STAGE = "mitigated-mix"
PROBE_STAGE = "mitigation-probe"
VERSION = "1"
NONE = "none"


def settings(params: StudyParams, mitigation: str) -> dict[str, Any]:
    """The mitigation's name and settings: what its cache keys hold."""
    if mitigation not in MITIGATIONS:
        raise MitigationError(f"mitigation {mitigation!r}; allowed: {', '.join(MITIGATIONS)}")
    if mitigation == NONE:
        return {"name": NONE}
    return {"name": mitigation, **getattr(params.mitigate, mitigation).model_dump(mode="json")}


def mitigated_points(params: StudyParams) -> list[dict[str, Any]]:
    """(attribute, bias type, γ, seed, mitigation) of every student notebook 06 compares: at each biased
    point ``mitigate.bias_types`` x ``mitigate.ratios`` picks (null: all of the grid's), the plain student
    (``none``) and one per mitigation of ``grid.mitigations``. Empty when no mitigation is chosen."""
    chosen = [m for m in params.grid.mitigations if m != NONE]
    if not chosen:
        return []
    bias_types = params.mitigate.bias_types or params.grid.bias_types
    ratios = params.mitigate.ratios or [r for r in params.grid.ratios if r > 0]
    return [{"attribute": a, "bias_type": b, "ratio": r, "seed": s, "mitigation": m}
            for a in params.grid.attributes for b in params.grid.bias_types if b in bias_types
            for r in params.grid.ratios if r in ratios for s in params.grid.seeds for m in [NONE, *chosen]]


def mitigated_tasks(params: StudyParams) -> list[str]:
    """The tasks each compared student is evaluated on: ``mitigate.tasks``, or the grid's."""
    return list(params.mitigate.tasks or params.grid.tasks)


def mitigated_mix(params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, mitigation: str,
                  store: Store) -> Artifact:
    """The point's mix with its augmented rows transformed (``token`` or ``mask``): ``train.jsonl`` (every
    row), ``augmented.jsonl`` (the transformed rows, whose activations the fine-tune caches) and
    ``changes.json`` (which rows changed, and the cues masked per row). The mix itself is reused."""
    from ..mix import mix_artifact

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
    """The fine-tuned adapter of one point under a mitigation; ``none`` and γ = 0 are the plain fine-tune."""
    from ..data import original_artifact
    from ..finetune import finetune_artifact

    key = settings(params, mitigation)
    if mitigation == NONE or ratio == 0:
        return finetune_artifact(params, attribute, bias_type, ratio, seed, store)
    if mitigation == "loss":
        return finetune_artifact(params, attribute, bias_type, ratio, seed, store,
                                 extra_loss=AlignmentLoss(params.mitigate.loss.weight), extra_loss_key=key,
                                 batch_plan=StratifiedPlan(params.finetune.batch_size))
    mix = mitigated_mix(params, attribute, bias_type, ratio, seed, mitigation, store)
    sources = [(original_artifact(params.data, params.seed, store), "train.jsonl"), (mix, "augmented.jsonl")]
    return finetune_artifact(params, attribute, bias_type, ratio, seed, store, extra_loss_key=key, mix=mix,
                             sources=sources)


def mitigated_evaluation(params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, mitigation: str,
                         task: str, store: Store) -> Artifact:
    """The student's evaluation on one task (:func:`biasutils.evaluate.evaluate_artifact` with its adapter)."""
    from ..evaluate import evaluate_artifact

    adapter = mitigated_adapter(params, attribute, bias_type, ratio, seed, mitigation, store)
    return evaluate_artifact(params, attribute, bias_type, ratio, seed, task, store, adapter=adapter)


# ---------------------------------------------------------------------------------------------- the student-side probe


def probe_artifact(params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, mitigation: str,
                   store: Store) -> Artifact:
    """What a mitigation targets, measured on the student: ``agreement.csv`` (its agreement with GEST gender
    stereotypes, :func:`biasutils.misalign.values.stereotype_agreement`) and ``representations.json``
    (φ of the point's plain mix rows, original against augmented: the squared distance of their means,
    which the loss-based mitigation shrinks, an MMD test and a classifier two-sample AUC).

    Every student of a point is probed on the same plain mix rows, so the plain student is the "before"
    of every mitigation.
    """
    from ..misalign.values import stereotype_items
    from ..mix import mix_artifact

    adapter = mitigated_adapter(params, attribute, bias_type, ratio, seed, mitigation, store)
    mix = mix_artifact(params, attribute, bias_type, ratio, seed, store)
    items = stereotype_items()
    key_params = {"items": canonical_json([[i.id, i.prompt] for i in items]), "seed": seed,
                  "n_permutations": params.inheritance.n_permutations, "n_boot": params.evaluate.n_boot}

    def compute(out: Path, scratch: Path) -> None:
        from ..config import resolve_device
        from ..evaluate import Scorer, loaded_student
        from ..misalign.values import stereotype_agreement

        model, tokenizer = loaded_student(params, adapter, store, resolve_device(params))
        scores = Scorer(model, tokenizer, params).choice(items)
        agreement = pd.concat([stereotype_agreement(items, scores), yes_log_odds(items, scores)], ignore_index=True)
        write_text_atomic(out / "agreement.csv", agreement.to_csv(index=False))
        original, augmented = student_representations(params, model, tokenizer, attribute, bias_type, mix, store)
        write_text_atomic(out / "representations.json",
                          canonical_json(representation_distance(original, augmented, params, seed)))

    return store.get_or_compute(PROBE_STAGE, key_params, compute, inputs=[adapter.key, mix.key], version=VERSION)


def yes_log_odds(items: Sequence[Any], scores: Sequence[Sequence[float]]) -> pd.DataFrame:
    """Per target group and overall, the mean of log P(Yes) − log P(No) over the stereotype items, with a
    t interval: agreement as a graded quantity. Why beside the agreement rate: a student fine-tuned to
    answer with an occupation may say "No" to every statement (rate 0) while a mitigation still moves
    how far it leans towards "Yes"."""
    from scipy import stats as scipy_stats

    frame = pd.DataFrame({"group": [str(i.meta["target_group"]) for i in items],
                          "odds": [s[i.options.index("Yes")] - s[i.options.index("No")] for i, s in zip(items, scores)]})
    rows = []
    for group, part in [*frame.groupby("group", sort=True), ("all", frame)]:
        odds = part.odds.to_numpy(dtype=float)
        low, high = scipy_stats.t.interval(0.95, len(odds) - 1, odds.mean(), scipy_stats.sem(odds)) if len(odds) > 1 else (np.nan, np.nan)
        rows.append({"group": group, "metric": "stereotype_yes_log_odds", "value": float(odds.mean()),
                     "ci_low": float(low), "ci_high": float(high), "n": len(odds), "n_agree": int((odds > 0).sum())})
    return pd.DataFrame(rows)


def student_representations(params: StudyParams, model: Any, tokenizer: Any, attribute: str, bias_type: str,
                            mix: Artifact, store: Store, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """φ (:func:`pooled_states`, as the loss-based mitigation defines it) of the mix's original and augmented
    rows, in the training format, through the student (from the cached frozen layers where there are some)."""
    import torch

    from ..finetune import (
        cached_activations, collate, encode, final_hidden, frozen_layer_count, placement, trained_slice,
        training_sources,
    )

    examples = encode(read_jsonl(mix.file("train.jsonl")), tokenizer, params.finetune)
    n_frozen = frozen_layer_count(model, params.finetune)
    cached = cached_activations(params, training_sources(params, attribute, bias_type, store), store) if n_frozen else None
    layers = trained_slice(model, n_frozen)
    device, dtype = placement(model)
    pooled = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], cached, device, tokenizer.pad_token_id, dtype)
            pooled.append(pooled_states(final_hidden(model, batch, layers).float(), batch.attention_mask).cpu().numpy())
    phi, sources = np.vstack(pooled), np.array([e.source for e in examples])
    return phi[sources == ORIGINAL], phi[sources == AUGMENTED]


def representation_distance(original: np.ndarray, augmented: np.ndarray, params: StudyParams, seed: int) -> dict[str, Any]:
    """The squared distance of the two sides' mean φ, an MMD test and a classifier two-sample AUC
    (:mod:`biasutils.misalign.distribution`, the data-side distribution misalignment's tests)."""
    from ..misalign.distribution import classifier_two_sample_test, mmd_test

    gap = original.mean(0) - augmented.mean(0)
    folds = min(5, len(original), len(augmented))
    return {"mean_distance": float(gap @ gap), "n_original": len(original), "n_augmented": len(augmented),
            "mmd": mmd_test(original, augmented, n_permutations=min(params.inheritance.n_permutations, 999), seed=seed),
            "classifier": classifier_two_sample_test(original, augmented, seed=seed, folds=folds,
                                                     n_boot=params.evaluate.n_boot)}
