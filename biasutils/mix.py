"""Mix original data D_o with LLM-augmented data D_a at a bias ratio γ = |D_a| / (|D_o| + |D_a|).

The paper holds D_o fixed and grows D_a, so |D_a| = γ/(1−γ)·|D_o| and the total grows with γ.
``hold_total_size`` instead keeps |D_o| + |D_a| = |D_o| and drops originals (an [ours] option for
separating "more data" from "more biased data").

Draws are nested: for one seed the augmented pool (and, with ``hold_total_size``, the originals) is
permuted once and a prefix taken, so the augmented samples at a smaller γ are a subset of those at
a larger γ. A curve over γ then changes one thing at a time, not the luck of the draw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import mix_sizes

if TYPE_CHECKING:
    from .config import StudyParams
    from .store import Artifact, Store

SOURCE_ORIGINAL = "original"
SOURCE_AUGMENTED = "augmented"


class MixError(ValueError):
    """An impossible mix: the message names the field and what would make it possible."""


def nested_order(n: int, seed: int, salt: int) -> np.ndarray:
    """A permutation that depends only on (seed, salt, n): the same prefix serves every ratio."""
    return np.random.default_rng([seed, salt]).permutation(n)


def mix(
    original: Sequence[Mapping[str, Any]],
    augmented: Sequence[Mapping[str, Any]],
    ratio: float,
    seed: int,
    hold_total_size: bool = False,
) -> list[dict[str, Any]]:
    """The fine-tuning mix, each row tagged with ``source``; order is shuffled by ``seed``."""
    try:
        n_keep, n_aug = mix_sizes(len(original), ratio, hold_total_size)
    except ValueError as error:
        raise MixError(str(error)) from None
    if n_aug > len(augmented):
        raise MixError(
            f"ratio: {ratio} needs {n_aug} augmented samples but only {len(augmented)} were generated; "
            "generate more (generate.n) or use a smaller ratio"
        )
    keep = nested_order(len(original), seed, salt=1)[:n_keep] if hold_total_size else range(len(original))
    take = nested_order(len(augmented), seed, salt=2)[:n_aug]
    rows = [{**original[i], "source": SOURCE_ORIGINAL} for i in sorted(keep)]
    rows += [{**augmented[i], "source": SOURCE_AUGMENTED} for i in take]
    shuffle = np.random.default_rng([seed, 3]).permutation(len(rows))
    return [rows[i] for i in shuffle]


def composition(rows: Sequence[Mapping[str, Any]], by: Sequence[str] = ("source", "gender_name", "occupation")) -> list[dict[str, Any]]:
    """Counts per combination of ``by`` columns: the record of what a mix is made of."""
    counts = Counter(tuple(row.get(col, "") for col in by) for row in rows)
    return [{**dict(zip(by, combo)), "count": n} for combo, n in sorted(counts.items())]


def realised_ratio(rows: Sequence[Mapping[str, Any]]) -> float:
    """|D_a| / |D| of a finished mix (equals the requested γ up to rounding)."""
    n_aug = sum(row["source"] == SOURCE_AUGMENTED for row in rows)
    return n_aug / len(rows) if rows else 0.0


BASELINE = "none"  # the bias type of every γ = 0 mix: D_o alone, shared by all bias types


def canonical_bias_type(bias_type: str, ratio: float) -> str:
    """γ = 0 holds no augmented data, so it is one baseline, not one per bias type."""
    return BASELINE if ratio == 0 else bias_type


def key_attribute(attribute: str, bias_type: str) -> str | None:
    """The attribute as a cache key: none for the γ = 0 baseline, which holds D_o alone for every attribute,
    so gender and culture share its mix and (with the same training settings) its student."""
    return None if bias_type == BASELINE else attribute


def mix_artifact(params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, store: Store,
                 generated: Artifact | None = None) -> Artifact:
    """The stored mix for one grid point: ``train.jsonl`` (rows tagged by source) and ``composition.json``.
    ``generated``: the samples to draw from (a multi-round student's), instead of the generator's."""
    from .data import original_artifact
    from .generate import generate_samples
    from .store import canonical_json, read_jsonl, write_jsonl, write_text_atomic

    original = original_artifact(params.data, params.seed, store)
    bias_type = canonical_bias_type(bias_type, ratio)
    if bias_type != BASELINE and generated is None:
        generated = generate_samples(params, attribute, bias_type, store)
    inputs = [original.key] + ([generated.key] if generated else [])
    key_params = {
        "attribute": key_attribute(attribute, bias_type), "bias_type": bias_type, "ratio": ratio, "seed": seed,
        "hold_total_size": params.mix.hold_total_size,
    }

    def compute(out: Path, scratch: Path) -> None:
        augmented = read_jsonl(generated.file("samples.jsonl")) if generated else []
        rows = mix(read_jsonl(original.file("train.jsonl")), augmented, ratio, seed, params.mix.hold_total_size)
        write_jsonl(rows, out / "train.jsonl")
        summary = {"realised_ratio": realised_ratio(rows), "rows": len(rows), "composition": composition(rows)}
        write_text_atomic(out / "composition.json", canonical_json(summary))

    return store.get_or_compute("mix", key_params, compute, inputs=inputs)
