"""Multi-round self-augmentation (notebook 07): does bias accumulate when the student of round r writes the
augmented data of round r + 1?

A chain of rounds per seed: round 1 mixes the original data with data the base generator wrote under
``multiround.bias_type``; the student fine-tuned on it (with the writing objective, so it can write) writes
round 2's data, and so on. Each round's samples, mix, student, evaluations and measures are artifacts whose
keys hold their predecessor's, so a killed chain resumes in the round it stopped in and one more round adds
exactly that round's work.

A quantity measured per round and chain (a group share, a distance, an inheritance measure) accumulates
when it moves steadily with the round: its slope over rounds. The chains are the independent replicates
of a slope (their own generated data and students), and the rounds within a chain are not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .config import StudyParams, mix_sizes
from .stats import GROUP_COLUMNS, RECORD_KEYS
from .store import Artifact, Store, canonical_json, write_text_atomic


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
    """The settings every round runs with: the writing objective on (a student must write the next round; its
    biographies cut at ``generate.max_new_tokens``, the most it is asked to write),
    ``multiround.n_original`` originals (null: ``data.n_train``), ``multiround.epochs`` (null: the fine-tune's),
    and as many samples generated as the mix
    takes at ``multiround.ratio``, so a round's data are exactly what its student is trained on."""
    mr = params.multiround
    n_original = mr.n_original or params.data.n_train
    data = params.data.model_copy(update={"n_train": n_original})
    generate = params.generate.model_copy(update={"n": mix_sizes(n_original, mr.ratio, params.mix.hold_total_size)[1]})
    epochs = {attribute: mr.epochs for attribute in params.finetune.epochs} if mr.epochs else params.finetune.epochs
    finetune = params.finetune.model_copy(update={"objective": "classify_and_write", "epochs": epochs,
                                                  "write_max_tokens": params.generate.max_new_tokens})
    return params.model_copy(update={"data": data, "generate": generate, "finetune": finetune})


def round_artifacts(params: StudyParams, seed: int, index: int, store: Store) -> Round:
    """Round ``index`` (from 1) of the chain ``seed``: round 1's data come from the generator, round r's from
    the student of round r − 1. Each artifact's key holds its predecessor's (the samples' the adapter that
    wrote them), so a killed chain resumes in the round it stopped in and a later round never recomputes an
    earlier one.

    Every round of every chain samples with its own seed (:func:`generation_seed`), so the chains are
    independent replicates from round 1 on. A round whose writer gives too few valid samples fails,
    naming the chain and the round, never with a smaller round.
    """
    from .finetune import finetune_artifact
    from .generate import GenerationError, generate_samples
    from .mix import mix_artifact

    if index < 1:
        raise MultiroundError(f"round: {index}; rounds count from 1")
    mr, settings = params.multiround, round_params(params)
    writer = None if index == 1 else round_artifacts(params, seed, index - 1, store).student
    try:
        samples = generate_samples(settings, mr.attribute, mr.bias_type, store, adapter=writer,
                                   seed=generation_seed(params.seed, seed, index))
    except GenerationError as error:
        who = "the generator" if writer is None else f"round {index - 1}'s student"
        raise MultiroundError(f"multiround chain {seed}, round {index} (written by {who}): {error}") from None
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

ROUND_TASKS: tuple[str, ...] = ("occupation_classification", "counterfactual_twins", "hiring_recommendation",
                                "salary_recommendation")


def round_tasks(params: StudyParams) -> list[str]:
    """What each round's student is evaluated on: ``multiround.tasks``, else the grid's among :data:`ROUND_TASKS`."""
    chosen = params.multiround.tasks
    return list(chosen) if chosen is not None else [task for task in ROUND_TASKS if task in params.grid.tasks]


def aligned_share_rows(shares: pd.DataFrame, favoured: Mapping[str, str]) -> pd.DataFrame:
    """Who the generated data show per occupation, signed by the stereotype: the share of the samples (of a
    known group) whose group is the one the templates favour for that occupation, with its Wilson interval;
    ``all``: the mean over occupations, a normal interval from the occupations' binomial variances.

    Why signed: a generator that writes more men as engineers and more women as nurses moves both shares
    up here, where a pooled female share would see the two cancel.
    """
    rows = []
    for occupation, group in favoured.items():
        mine = shares[(shares.occupation == occupation) & (shares.group == group)]
        if len(mine) and mine.n.iloc[0] > 0:
            row = mine.iloc[0]
            rows.append({"group": occupation, "metric": "aligned_share", "value": float(row.share),
                         "ci_low": float(row.ci_low), "ci_high": float(row.ci_high), "n": int(row.n)})
    if rows:
        values, ns = np.array([r["value"] for r in rows]), np.array([r["n"] for r in rows])
        mean, half = values.mean(), 1.959964 * math.sqrt(float((values * (1 - values) / ns).sum())) / len(values)
        rows.append({"group": "all", "metric": "aligned_share", "value": float(mean), "ci_low": float(mean - half),
                     "ci_high": float(mean + half), "n": int(ns.sum())})
    return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))


MEASURES_STAGE, MEASURES_VERSION = "multiround-round", "1"


def round_measures(params: StudyParams, seed: int, index: int, store: Store) -> Artifact:
    """One round's measures, stored: ``rows.csv`` (:func:`round_rows`) and ``generation.json`` (how many
    samples the round's writer was asked for, how many were valid, and the drops per reason)."""
    from .evaluate import evaluate_artifact
    from .misalign import misalign_artifact

    mr, settings = params.multiround, round_params(params)
    chain = round_artifacts(params, seed, index, store)
    misaligned = misalign_artifact(settings, mr.attribute, mr.bias_type, store, generated=chain.samples)
    evaluations = {task: evaluate_artifact(settings, mr.attribute, mr.bias_type, mr.ratio, seed, task, store,
                                           adapter=chain.student) for task in round_tasks(params)}
    key_params = {"chain": seed, "round": index, "n_boot": params.inheritance.n_boot, "tasks": list(evaluations)}
    inputs = [chain.samples.key, chain.mix.key, chain.student.key, misaligned.key, *(a.key for a in evaluations.values())]

    def compute(out: Path, scratch: Path) -> None:
        rows = round_rows(params, seed, index, chain, misaligned, evaluations, store)
        write_text_atomic(out / "rows.csv", rows.to_csv(index=False))
        report = json.loads(chain.samples.file("report.json").read_text())
        write_text_atomic(out / "generation.json", canonical_json(
            {"requested": report["requested"], "valid": report["valid"], "attempts": report["attempts"], "drops": report["drops"]}))

    return store.get_or_compute(MEASURES_STAGE, key_params, compute, inputs=inputs, version=MEASURES_VERSION)


def round_rows(params: StudyParams, seed: int, index: int, chain: Round, misaligned: Artifact,
               evaluations: Mapping[str, Artifact], store: Store) -> pd.DataFrame:
    """One round's measures (columns ``part``, :data:`biasutils.stats.GROUP_COLUMNS`, ``round``, ``seed``):
    the data it generated against the original (``values``, ``group`` with the stereotype-aligned share,
    ``distribution``: MMD, classifier AUC), its student's inheritance measures (``downstream``: aligned
    gaps, twin flip rate and shift) and each evaluated task's rows by group (``part`` = the task)."""
    from .inheritance import favoured_groups, load_student, student_rows

    mr, settings = params.multiround, round_params(params)
    misalignment = pd.read_csv(misaligned.file("rows.csv"))
    shares = pd.read_csv(misaligned.file("shares.csv"))
    parts = [misalignment.assign(part=misalignment.task.str.removeprefix("misalignment_")).loc[:, ["part", *GROUP_COLUMNS]],
             aligned_share_rows(shares[shares.data == "augmented"], favoured_groups(params, mr.attribute)).assign(part="group")]
    student = load_student(settings, mr.attribute, mr.bias_type, mr.ratio, seed, store,
                           tasks=list(evaluations), mix=chain.mix, evaluation=evaluations.__getitem__)
    parts.append(student_rows(student, params.inheritance.n_boot, seed=seed).assign(part="downstream"))
    parts += [pd.read_csv(artifact.file("metrics.csv")).loc[:, list(GROUP_COLUMNS)].assign(part=task)
              for task, artifact in evaluations.items()]
    return pd.concat([p for p in parts if len(p)], ignore_index=True).assign(round=index, seed=seed)


def chain_measures(params: StudyParams, seed: int, store: Store) -> list[Artifact]:
    """Every round's measures of the chain ``seed``, round after round (what a chain's task computes)."""
    return [round_measures(params, seed, index, store) for index in range(1, params.multiround.rounds + 1)]


# ---------------------------------------------------------------------------------------------- the study over rounds

# the quantities whose slope over rounds is reported (every group row of each that a round holds)
ACCUMULATED: tuple[str, ...] = (
    "aligned_share", "share_female", "mmd2", "c2st_auc", "aligned_tpr_gap", "aligned_rate_gap", "twin_shift",
    "twin_flip_rate", "accuracy", "accuracy_gap", "mean_salary_gap", "selection_rate_gap", "preference_log_odds_gap",
)


def measured_slope(rows: pd.DataFrame, part: str, metric: str, group: str) -> Accumulation | None:
    """The :func:`accumulation` of one (part, metric, group) over the rounds and chains of ``rows`` (several
    :func:`round_rows` frames), the per-round intervals turned into standard errors (width / 3.92) for the
    measurement-only interval where every round has one; None where some chain's round lacks the value
    (no sample of a group) or fewer than 2 rounds hold it: no slope over a partial design."""
    mine = rows[(rows.part == part) & (rows.metric == metric) & (rows.group == group)].dropna(subset=["value"])
    if len(mine) < rows[["seed", "round"]].drop_duplicates().shape[0] or mine["round"].nunique() < 2:
        return None
    values = mine.pivot_table(index="seed", columns="round", values="value")
    errors = mine.assign(se=(mine.ci_high - mine.ci_low) / 3.92).pivot_table(index="seed", columns="round", values="se")
    with_errors = errors.shape == values.shape and bool(errors.notna().all().all())
    return accumulation(values.to_numpy(), list(values.columns), errors.to_numpy() if with_errors else None)


def accumulation_table(rows: pd.DataFrame, measures: Sequence[tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """:func:`measured_slope` of each (part, metric, group) in ``measures`` (default: every row of
    :data:`ACCUMULATED` that the rounds hold) that has one, with the number of chains."""
    if measures is None:
        keys = rows[rows.metric.isin(ACCUMULATED)][["part", "metric", "group"]].drop_duplicates()
        measures = list(keys.itertuples(index=False, name=None))
    out = []
    for part, metric, group in measures:
        result = measured_slope(rows, part, metric, group)
        if result is not None:
            out.append({"part": part, "metric": metric, "group": group,
                        **{k: v for k, v in vars(result).items() if k != "seed_slopes"}, "chains": len(result.seed_slopes)})
    return pd.DataFrame(out)


def minimum_detectable_slope(seed_slopes: Sequence[float], alpha: float, power: float) -> float:
    """The slope the chains' t test detects with ``power`` at two-sided ``alpha``, given their observed spread
    ((t_{1−α/2} + t_{power}) · SE, df = chains − 1); NaN with fewer than 2 chains."""
    slopes = np.asarray(seed_slopes, dtype=float)
    if len(slopes) < 2:
        return math.nan
    t = scipy_stats.t(df=len(slopes) - 1)
    return float((t.ppf(1 - alpha / 2) + t.ppf(power)) * slopes.std(ddof=1) / math.sqrt(len(slopes)))


STUDY_STAGE, STUDY_VERSION = "multiround", "1"


def multiround_artifact(params: StudyParams, store: Store) -> Artifact:
    """The study over rounds, stored: ``rows.csv`` (every round of every chain), ``accumulation.csv``
    (:func:`accumulation_table`), ``generation.csv`` (per chain and round: samples asked for, valid, drops)
    and ``primary.json`` (the declared test: its slope, interval, p, the minimum detectable slope)."""
    mr = params.multiround
    if mr.rounds < 1:
        raise MultiroundError("multiround.rounds: 0; the multi-round study needs at least 1 round (2 for a slope)")
    measured = {(seed, index + 1): artifact for seed in mr.chains(params.grid.seeds)
                for index, artifact in enumerate(chain_measures(params, seed, store))}
    key_params = {"multiround": mr.model_dump(mode="json"), "profile_seed": params.seed}

    def compute(out: Path, scratch: Path) -> None:
        rows = pd.concat([pd.read_csv(a.file("rows.csv")) for a in measured.values()], ignore_index=True)
        write_text_atomic(out / "rows.csv", rows.to_csv(index=False))
        table = accumulation_table(rows) if mr.rounds >= 2 else pd.DataFrame()
        write_text_atomic(out / "accumulation.csv", table.to_csv(index=False))
        generation = pd.DataFrame([{"chain": seed, "round": index, **_generation_counts(a)} for (seed, index), a in measured.items()])
        write_text_atomic(out / "generation.csv", generation.to_csv(index=False))
        write_text_atomic(out / "primary.json", canonical_json(primary_result(params, rows)))

    return store.get_or_compute(STUDY_STAGE, key_params, compute, inputs=[a.key for a in measured.values()],
                                version=STUDY_VERSION)


def _generation_counts(measures: Artifact) -> dict[str, int]:
    """A round's generation report flattened: requested, valid, attempts, ``dropped_<reason>``."""
    report = json.loads(measures.file("generation.json").read_text())
    drops = report.pop("drops")
    return {**report, **{f"dropped_{reason}": n for reason, n in drops.items()}}


PRIMARY_PART = {"twin_shift": "downstream", "aligned_tpr_gap": "downstream", "aligned_share": "group"}


def primary_result(params: StudyParams, rows: pd.DataFrame) -> dict[str, float | int | str]:
    """The declared test (``multiround.primary``): the slope of its measure's ``all`` row, the chains' t
    interval and p, the measurement-only interval, and the minimum detectable slope at its power."""
    primary = params.multiround.primary
    base = {"measure": primary.measure, "alpha": primary.alpha, "power": primary.power}
    result = measured_slope(rows, PRIMARY_PART[primary.measure], primary.measure, "all")
    if result is None:
        return {**base, "reason": "no slope: fewer than 2 rounds, or a round without the measure"}
    return {**base, **{k: v for k, v in vars(result).items() if k != "seed_slopes"}, "chains": len(result.seed_slopes),
            "seed_slopes": list(result.seed_slopes),
            "mde": minimum_detectable_slope(result.seed_slopes, primary.alpha, primary.power),
            "reject": bool(result.p_value < primary.alpha)}


def stored_multiround(params: StudyParams, store: Store) -> dict[str, pd.DataFrame | dict]:
    """What notebook 07 and the record read: the tables of :func:`multiround_artifact`."""
    artifact = multiround_artifact(params, store)
    read = lambda name: pd.read_csv(artifact.file(name))  # noqa: E731
    accumulation_file = artifact.file("accumulation.csv")
    return {"rows": read("rows.csv"), "generation": read("generation.csv"),
            "accumulation": read("accumulation.csv") if accumulation_file.stat().st_size > 1 else pd.DataFrame(),
            "primary": json.loads(artifact.file("primary.json").read_text())}


def record_rows(params: StudyParams, store: Store) -> pd.DataFrame:
    """The multi-round rows of ``metrics.csv``: each round's (task ``multiround_<part>``, seed the chain, column
    ``round``) and each slope (seed ``pooled``, ``round`` empty; metrics ``<measure>_slope`` with the chains'
    t interval, ``<measure>_slope_items`` with the measurement-only one, ``<measure>_slope_p``). Context:
    ``multiround.attribute``, ``bias_type`` and ``ratio``, mitigation ``none``. None when no round is run."""
    mr = params.multiround
    if mr.rounds < 1:
        return pd.DataFrame(columns=[*RECORD_KEYS, "round"])
    stored = stored_multiround(params, store)
    context = {"attribute": mr.attribute, "bias_type": mr.bias_type, "ratio": mr.ratio, "mitigation": "none"}
    rounds = stored["rows"].assign(**context, task="multiround_" + stored["rows"].part)
    slopes = []
    for row in stored["accumulation"].to_dict("records"):
        where = {**context, "seed": "pooled", "task": f"multiround_{row['part']}", "group": row["group"], "n": row["chains"]}
        slopes += [{**where, "metric": f"{row['metric']}_slope", "value": row["slope"], "ci_low": row["ci_low"], "ci_high": row["ci_high"]},
                   {**where, "metric": f"{row['metric']}_slope_items", "value": row["slope"], "ci_low": row["ci_low_items"],
                    "ci_high": row["ci_high_items"]},
                   {**where, "metric": f"{row['metric']}_slope_p", "value": row["p_value"], "ci_low": math.nan, "ci_high": math.nan}]
    return pd.concat([rounds, pd.DataFrame(slopes)], ignore_index=True).loc[:, [*RECORD_KEYS, "round"]]


# ---------------------------------------------------------------------------------------------- what notebook 07 shows

# (part, metric, group, label) of the per-round table and the trend figure: the data's group misalignment and
# distance, the students' inheritance measures and accuracy, and hiring and salary where they are evaluated
SHOWN: tuple[tuple[str, str, str, str], ...] = (
    ("group", "aligned_share", "all", "data: stereotype-aligned share"),
    ("distribution", "c2st_auc", "all", "data: classifier AUC vs original"),
    ("downstream", "aligned_tpr_gap", "all", "student: aligned TPR gap"),
    ("downstream", "twin_shift", "all", "student: twin shift (log-odds)"),
    ("occupation_classification", "accuracy", "all", "student: accuracy"),
    ("hiring_recommendation", "preference_log_odds_gap", "female-male", "student: hiring preference F − M (log-odds)"),
    ("salary_recommendation", "mean_salary_gap", "female-male", "student: mean salary F − M"),
)


def _shown(rows: pd.DataFrame) -> list[tuple[str, str, str, str, pd.DataFrame]]:
    """Each :data:`SHOWN` measure the rounds hold, with its rows."""
    out = []
    for part, metric, group, label in SHOWN:
        mine = rows[(rows.part == part) & (rows.metric == metric) & (rows.group == group)].dropna(subset=["value"])
        if len(mine):
            out.append((part, metric, group, label, mine))
    return out


def per_round_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The :data:`SHOWN` measures per round, the mean over chains with the range of the chains' values."""
    return pd.DataFrame([{"measure": label, "round": index, "mean": chains.value.mean(), "chain min": chains.value.min(),
                          "chain max": chains.value.max(), "chains": len(chains)}
                         for _, _, _, label, mine in _shown(rows) for index, chains in mine.groupby("round")])


def trend_figure(rows: pd.DataFrame, accumulation_rows: pd.DataFrame) -> Any:
    """One panel per :data:`SHOWN` measure: each chain's value per round with its interval, and the slope
    over chains with its interval in the title."""
    import matplotlib.pyplot as plt

    shown = _shown(rows)
    figure, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3.2), squeeze=False)
    for axis, (part, metric, group, label, mine) in zip(axes[0], shown):
        for chain, line in mine.groupby("seed"):
            line = line.sort_values("round")
            axis.errorbar(line["round"], line.value, yerr=[line.value - line.ci_low, line.ci_high - line.value],
                          marker="o", capsize=3, label=f"chain {chain}")
        slope = _slope_row(accumulation_rows, part, metric, group)
        axis.set_title(label + (f"\nslope {slope.slope:+.3f} [{slope.ci_low:+.3f}, {slope.ci_high:+.3f}]"
                                if slope is not None else ""), fontsize=9)
        axis.set_xlabel("round")
        axis.set_xticks(sorted(rows["round"].unique()))
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _slope_row(accumulation_rows: pd.DataFrame, part: str, metric: str, group: str) -> Any:
    """The row of :func:`accumulation_table` for one quantity, or None."""
    if accumulation_rows.empty:
        return None
    mine = accumulation_rows[(accumulation_rows.part == part) & (accumulation_rows.metric == metric)
                             & (accumulation_rows.group == group)]
    return mine.iloc[0] if len(mine) else None


def side_by_side(params: StudyParams, store: Store, chain: int, per_occupation: int = 1) -> pd.DataFrame:
    """Biographies of round 1 and of the last round of one chain, the first ``per_occupation`` of each
    occupation in each (the same prompt slot of either round), for reading what the rounds changed."""
    from .store import read_jsonl

    last = params.multiround.rounds
    texts = {}
    for index in sorted({1, last}):
        samples = pd.DataFrame(read_jsonl(round_artifacts(params, chain, index, store).samples.file("samples.jsonl")))
        texts[f"round {index}"] = samples.groupby("occupation", sort=True).head(per_occupation).set_index("occupation").text
    table = pd.DataFrame({name: column.groupby(level=0).apply(lambda t: list(t)[:per_occupation]).explode()
                          for name, column in texts.items()})
    return table


def save_trend_figure(rows: pd.DataFrame, accumulation_rows: pd.DataFrame, reports_dir: Path) -> Path:
    """:func:`trend_figure` written to ``<reports_dir>/figures/multiround.png``."""
    import matplotlib.pyplot as plt

    path = Path(reports_dir) / "figures" / "multiround.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = trend_figure(rows, accumulation_rows)
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)
    return path


def finding(params: StudyParams, primary: Mapping[str, Any], accumulation_rows: pd.DataFrame) -> str:
    """The declared test and the other shown slopes in words, beside the paper's claim of accumulation."""
    mr = params.multiround
    if "slope" not in primary:
        return f"No slope: {primary.get('reason', 'no rounds')}."
    verdict = "tells the slope from 0" if primary["reject"] else "cannot tell the slope from 0"
    lines = [f"Over {primary['n_rounds']} rounds × {primary['chains']} chains ({mr.attribute}, {mr.bias_type} prompt, "
             f"γ = {mr.ratio}), the declared test on the slope of `{primary['measure']}` {verdict} at "
             f"α = {primary['alpha']}: slope {primary['slope']:+.3f} per round, 95 % interval over chains "
             f"[{primary['ci_low']:+.3f}, {primary['ci_high']:+.3f}] (p = {primary['p_value']:.3g}); from the items' "
             f"noise alone [{primary['ci_low_items']:+.3f}, {primary['ci_high_items']:+.3f}] (p = {primary['p_items']:.3g}). "
             f"The chains' test detects a slope of {primary['mde']:.3f} per round with power {primary['power']}."]
    for part, metric, group, label in SHOWN:
        s = _slope_row(accumulation_rows, part, metric, group)
        if s is not None:
            lines.append(f"- {label}: {s.slope:+.3f} per round [{s.ci_low:+.3f}, {s.ci_high:+.3f}] over chains, "
                         f"[{s.ci_low_items:+.3f}, {s.ci_high_items:+.3f}] from the items")
    paper = ("The paper reports that bias accumulates over rounds (salaries of men rise while women's fall; "
             "overall performance degrades).")
    return "\n\n".join([lines[0], "\n".join(lines[1:]), paper])
