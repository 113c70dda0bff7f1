"""Multi-round self-augmentation (issue 13, in progress): does bias accumulate when the student of round r
writes the augmented data of round r + 1?

Here so far: the accumulation arithmetic. A quantity measured per round and seed (a group share, a
distance, an inheritance measure) accumulates when it moves steadily with the round: its slope over
rounds. Each seed is one chain of rounds (its own students, its own generated data), so the seeds are
the independent replicates of a slope, and the rounds within a seed are not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .config import StudyParams
from .store import Artifact, Store


class MultiroundError(ValueError):
    """A design the multi-round measures cannot be computed on; the message names what is missing."""


@dataclass(frozen=True)
class Accumulation:
    """The slope of a per-round quantity over rounds, pooled over seeds (chains).

    ``slope``: the mean of the per-seed least-squares slopes (units per round). ``ci_low``/``ci_high`` and
    ``p_value``: a t interval and test over the seeds' slopes (df = seeds − 1): the between-chain spread,
    which holds everything that differs between chains (their generated data, their students, the items'
    noise). ``ci_low_items``/``ci_high_items`` and ``p_items``: from the per-round standard errors alone
    (normal), the error if the chains did not differ beyond their measurement noise; NaN without them.
    Where the two disagree, the between-chain one is the honest error and the other says how much of it
    is measurement.
    """

    slope: float
    ci_low: float
    ci_high: float
    p_value: float
    ci_low_items: float
    ci_high_items: float
    p_items: float
    seed_slopes: tuple[float, ...]
    n_rounds: int


def _slope_weights(rounds: np.ndarray) -> np.ndarray:
    """w with slope = w · y for the least-squares line through (rounds, y)."""
    centred = rounds - rounds.mean()
    return centred / (centred @ centred)


def accumulation(values: Sequence[Sequence[float]], rounds: Sequence[float],
                 standard_errors: Sequence[Sequence[float]] | None = None, ci: float = 0.95) -> Accumulation:
    """The slope over ``rounds`` of ``values`` [seeds x rounds], with its interval and a two-sided test of 0.

    ``standard_errors`` [seeds x rounds], optional: each value's own standard error (e.g. its bootstrap
    over test items), for the measurement-only interval.
    """
    y = np.asarray(values, dtype=float)
    x = np.asarray(rounds, dtype=float)
    if y.ndim != 2 or y.shape[1] != len(x):
        raise MultiroundError(f"values: expected seeds x {len(x)} rounds, got shape {y.shape}")
    if len(np.unique(x)) < 2:
        raise MultiroundError(f"rounds: {list(rounds)}; a slope needs at least 2 distinct rounds")
    if not np.isfinite(y).all():
        raise MultiroundError("values: NaN or infinite entries; every seed needs every round measured")
    weights = _slope_weights(x)
    slopes = y @ weights
    slope, n = float(slopes.mean()), len(slopes)
    if n >= 2:
        se = float(slopes.std(ddof=1) / math.sqrt(n))
        t = scipy_stats.t(df=n - 1)
        half = t.ppf((1 + ci) / 2) * se
        low, high = slope - half, slope + half
        p = float(2 * t.sf(abs(slope) / se)) if se > 0 else (1.0 if slope == 0 else 0.0)
    else:  # one chain: no between-chain error
        low = high = p = math.nan
    low_items = high_items = p_items = math.nan
    if standard_errors is not None:
        s = np.asarray(standard_errors, dtype=float)
        if s.shape != y.shape:
            raise MultiroundError(f"standard_errors: shape {s.shape}, expected the values' {y.shape}")
        se_items = float(math.sqrt(((s**2) @ weights**2).sum()) / n)
        z = scipy_stats.norm.ppf((1 + ci) / 2)
        low_items, high_items = slope - z * se_items, slope + z * se_items
        p_items = float(2 * scipy_stats.norm.sf(abs(slope) / se_items)) if se_items > 0 else (1.0 if slope == 0 else 0.0)
    return Accumulation(slope, float(low), float(high), float(p), float(low_items), float(high_items), float(p_items),
                        tuple(float(v) for v in slopes), len(x))


# ---------------------------------------------------------------------------------------------- the chain of rounds


@dataclass(frozen=True)
class Round:
    """One round of one chain: the data its generator wrote, the mix, and the student trained on it."""

    index: int
    samples: Artifact
    mix: Artifact
    student: Artifact


def round_params(params: StudyParams) -> StudyParams:
    """The settings every round trains with: the writing objective on (a student must write the next round),
    ``multiround.n_original`` originals (null: ``data.n_train``)."""
    mr = params.multiround
    data = params.data.model_copy(update={"n_train": mr.n_original or params.data.n_train})
    finetune = params.finetune.model_copy(update={"objective": "classify_and_write"})
    return params.model_copy(update={"data": data, "finetune": finetune})


def round_artifacts(params: StudyParams, seed: int, index: int, store: Store) -> Round:
    """Round ``index`` (from 1) of the chain ``seed``: round 1's data come from the generator, round r's from
    the student of round r − 1. Each artifact's key holds its predecessor's (the samples' the adapter that
    wrote them), so a killed chain resumes in the round it stopped in and a later round never recomputes an
    earlier one.

    Every round of every chain samples with its own seed (:func:`generation_seed`), so the chains are
    independent replicates from round 1 on.
    """
    from .finetune import finetune_artifact
    from .generate import generate_samples
    from .mix import mix_artifact

    if index < 1:
        raise MultiroundError(f"round: {index}; rounds count from 1")
    mr, settings = params.multiround, round_params(params)
    writer = None if index == 1 else round_artifacts(params, seed, index - 1, store).student
    samples = generate_samples(settings, mr.attribute, mr.bias_type, store, adapter=writer,
                               seed=generation_seed(params.seed, seed, index))
    mix = mix_artifact(settings, mr.attribute, mr.bias_type, mr.ratio, seed, store, generated=samples)
    student = finetune_artifact(settings, mr.attribute, mr.bias_type, mr.ratio, seed, store, mix=mix,
                                sources=[(_original(settings, store), "train.jsonl"), (samples, "samples.jsonl")])
    return Round(index, samples, mix, student)


def generation_seed(profile_seed: int, chain: int, index: int) -> int:
    """The sampling seed of a chain's round: a function of the profile seed, the chain and the round only."""
    return int(np.random.default_rng([profile_seed, chain, index]).integers(0, 2**31 - 1))


def _original(params: StudyParams, store: Store) -> Artifact:
    from .data import original_artifact

    return original_artifact(params.data, params.seed, store)


# ---------------------------------------------------------------------------------------------- what each round shows

ROUND_TASKS: tuple[str, ...] = ("occupation_classification", "counterfactual_twins")


def round_rows(params: StudyParams, seed: int, index: int, store: Store) -> pd.DataFrame:
    """One round's measures (columns ``round`` + :data:`biasutils.stats.GROUP_COLUMNS`, tagged ``part``):
    who appears in the data it generated (``group``: its misalignment rows, the share of each group per
    occupation), how far that data is from the original (``distribution``: MMD, classifier AUC), and its
    student's inheritance measures and accuracy on the occupation task and its twins (``downstream``)."""
    from .evaluate import evaluate_artifact
    from .inheritance import load_student, student_rows
    from .misalign import misalign_artifact

    mr, settings = params.multiround, round_params(params)
    chain = round_artifacts(params, seed, index, store)
    misaligned = misalign_artifact(settings, mr.attribute, mr.bias_type, store, generated=chain.samples)
    misalignment = pd.read_csv(misaligned.file("rows.csv"))
    tasks = [t for t in ROUND_TASKS if t in params.grid.tasks]
    student = load_student(settings, mr.attribute, mr.bias_type, mr.ratio, seed, store, tasks=tasks, mix=chain.mix,
                           evaluation=lambda task: evaluate_artifact(settings, mr.attribute, mr.bias_type, mr.ratio, seed,
                                                                     task, store, adapter=chain.student))
    parts = [misalignment.assign(part=misalignment.task.str.removeprefix("misalignment_")).drop(
                 columns=["attribute", "bias_type", "ratio", "mitigation", "seed", "task"]),
             student_rows(student, params.inheritance.n_boot, seed=seed).assign(part="downstream")]
    return pd.concat(parts, ignore_index=True).assign(round=index, seed=seed)


def accumulation_table(rows: pd.DataFrame, measures: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """For each (metric, group) in ``measures``, its :func:`accumulation` over the rounds and chains of
    ``rows`` (several :func:`round_rows` frames), with the per-round values' intervals turned into standard
    errors (width / 3.92) for the measurement-only interval."""
    out = []
    for metric, group in measures:
        mine = rows[(rows.metric == metric) & (rows.group == group)]
        if mine.empty:
            continue
        values = mine.pivot_table(index="seed", columns="round", values="value")
        errors = mine.assign(se=(mine.ci_high - mine.ci_low) / 3.92).pivot_table(index="seed", columns="round", values="se")
        result = accumulation(values.to_numpy(), list(values.columns),
                              errors.to_numpy() if errors.notna().all().all() and errors.shape == values.shape else None)
        out.append({"metric": metric, "group": group, **{k: v for k, v in vars(result).items() if k != "seed_slopes"},
                    "chains": len(values)})
    return pd.DataFrame(out)
