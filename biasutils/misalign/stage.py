"""The misalign stage: one generated data set's three misalignments, stored, and as rows of the record.

Holds the cache-key constants of the stage's two artifacts (:data:`STAGE`/:data:`VERSION`, and
:data:`STEREOTYPE_STAGE`/:data:`STEREOTYPE_VERSION` for :mod:`biasutils.misalign.stereotype`),
:func:`misalign_artifact`, which runs values, group data and distribution on the generated and the
original texts, and :func:`misalignment_rows`, which turns their results into rows of the study's record
(:data:`biasutils.stats.RECORD_KEYS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import stats
from ..config import StudyParams
from ..store import Artifact, Store, canonical_json, write_text_atomic
from ..tasks import ALL
from ._common import AUGMENTED, ORIGINAL, _check_attribute
from .distribution import classifier_two_sample_test, mmd_test, projection_2d
from .group import balance_tests, group_shares
from .values import REFERENCE_METRICS, occupation_share_distance

# Record context: misalignment describes the augmented data alone (ratio 1), before any mitigation.
RECORD_RATIO = 1.0
RECORD_MITIGATION = "none"
TASK_VALUES, TASK_GROUP, TASK_DISTRIBUTION = "misalignment_values", "misalignment_group", "misalignment_distribution"


# ---------------------------------------------------------------------------------------------- record rows


def _group_metric_table(balance: pd.DataFrame) -> pd.DataFrame:
    """:func:`balance_tests` rows as group-table rows: ``share_<group>`` and ``share_<group>_binom_p`` per
    occupation, ``chi2_p`` for all."""
    rows = []
    for row in balance.to_dict("records"):
        if row["test"] == "chi2_stratified":
            rows.append({"group": ALL, "metric": "chi2_p", "value": row["p_value"], "ci_low": math.nan,
                         "ci_high": math.nan, "n": row["n"]})
            continue
        common = {"group": row["occupation"], "n": row["n"]}
        rows.append(common | {"metric": f"share_{row['group']}", "value": row["share"], "ci_low": row["ci_low"],
                              "ci_high": row["ci_high"]})
        rows.append(common | {"metric": f"share_{row['group']}_binom_p", "value": row["p_value"],
                              "ci_low": math.nan, "ci_high": math.nan})
    return pd.DataFrame(rows, columns=list(stats.GROUP_COLUMNS))


DISTRIBUTION_KEYS = ("mmd", "c2st")


def _distribution_metric_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """``{"mmd": mmd_test(...), "c2st": classifier_two_sample_test(...)}`` (either optional) as group-table rows."""
    unknown = [key for key in results if key not in DISTRIBUTION_KEYS]
    if unknown:
        raise ValueError(f"distribution: unknown key(s) {unknown}; allowed: {', '.join(DISTRIBUTION_KEYS)}")
    nan = math.nan
    rows = []
    if "mmd" in results:
        mmd = results["mmd"]
        n = mmd["n_x"] + mmd["n_y"]
        rows += [{"metric": "mmd2", "value": mmd["statistic"], "ci_low": nan, "ci_high": nan, "n": n},
                 {"metric": "mmd_p", "value": mmd["p_value"], "ci_low": nan, "ci_high": nan, "n": n}]
    if "c2st" in results:
        c2st = results["c2st"]
        n = c2st["n_x"] + c2st["n_y"]
        rows += [{"metric": "c2st_auc", "value": c2st["auc"], "ci_low": c2st["ci_low"], "ci_high": c2st["ci_high"],
                  "n": n},
                 {"metric": "c2st_p", "value": c2st["p_value"], "ci_low": nan, "ci_high": nan, "n": n}]
    return pd.DataFrame([{"group": ALL} | row for row in rows], columns=list(stats.GROUP_COLUMNS))


def misalignment_rows(
    attribute: str,
    bias_type: str,
    seed: int,
    *,
    values: Sequence[pd.DataFrame] | None = None,
    group: pd.DataFrame | None = None,
    distribution: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows of the study's record (keys :data:`biasutils.stats.RECORD_KEYS`) for one generated data set.

    ``values``: value result frames (:func:`occupation_share_distance`, :func:`stereotype_agreement`,
    :func:`opinion_distance`), task ``misalignment_values``; ``group``: a :func:`balance_tests` frame,
    task ``misalignment_group``; ``distribution``: ``{"mmd": ..., "c2st": ...}`` results, task
    ``misalignment_distribution``. Ratio is 1.0 (the augmented data alone) and mitigation ``none``;
    p-values sit in ``value`` with NaN intervals, as :func:`biasutils.stats.metric_rows` writes gap p-values.
    """
    _check_attribute(attribute)
    context = {"attribute": attribute, "bias_type": bias_type, "ratio": RECORD_RATIO,
               "mitigation": RECORD_MITIGATION, "seed": seed}
    rows: list[dict[str, Any]] = []
    for table in values or ():
        rows += stats.record_rows(table, **context, task=TASK_VALUES)
    if group is not None:
        rows += stats.record_rows(_group_metric_table(group), **context, task=TASK_GROUP)
    if distribution is not None:
        rows += stats.record_rows(_distribution_metric_table(distribution), **context, task=TASK_DISTRIBUTION)
    return rows


# ---------------------------------------------------------------------------------------------- the study's stage

STAGE = "misalign"
STEREOTYPE_STAGE = "stereotype-agreement"
VERSION = "2"  # 2: a culture's empty values table keeps its columns (version 1 wrote an unreadable empty file)
STEREOTYPE_VERSION = "2"  # 2: status.json; the openai backend scored from top log-probabilities; keyed by the scorer
TEXT_FIELD = "hard_text"  # what the student is trained on: the biography without its title sentence
N_PERMUTATIONS = 1000


def embed(texts: Sequence[str], params: StudyParams, store: Store) -> np.ndarray:
    """Sentence embeddings of ``texts`` with the profile's embedder (MiniLM offline), in float32 on the CPU
    whatever ``device`` and ``dtype`` say: the embedder is the distribution misalignment's instrument, not a
    model under study, so its numbers must not move with the machine (MiniLM embeds ~150 sentences/s there)."""
    from ..models import load_embedder

    return np.asarray(load_embedder(params.models.embedder, store).encode(list(texts), batch_size=64))


def misalign_artifact(params: StudyParams, attribute: str, bias_type: str, store: Store,
                      generated: Artifact | None = None) -> Artifact:
    """The three misalignments of one generated data set against the original training split, as tables.

    Files: ``values.csv`` (gender: the implied share of women per occupation against the labour and
    perceived references; empty for culture, which has no offline reference), ``shares.csv``
    (:func:`group_shares` of the generated and the original data, column ``data``), ``balance.csv``
    (:func:`balance_tests`), ``distribution.json`` (MMD and classifier tests on ``hard_text``
    embeddings), ``projection.csv`` and ``rows.csv`` (record rows). ``generated``: another data set than the
    generator's for (attribute, bias type), e.g. a multi-round student's.
    """
    from ..data import load_original, original_artifact
    from ..generate import generate_samples

    generated_artifact = generated or generate_samples(params, attribute, bias_type, store)
    key_params = {"attribute": attribute, "bias_type": bias_type, "seed": params.seed, "embedder": params.models.embedder,
                  "n_permutations": N_PERMUTATIONS, "n_boot": params.evaluate.n_boot}
    inputs = [generated_artifact.key, original_artifact(params.data, params.seed, store).key]

    def compute(out: Path, scratch: Path) -> None:
        # both sides are read from the text the student sees, by the same rules (the original data has no
        # other text: Bias in Bios ships hard_text only)
        generated = pd.read_json(generated_artifact.file("samples.jsonl"), lines=True)
        generated = generated.assign(text=generated[TEXT_FIELD])
        original = load_original(params.data, params.seed, store)["train"].to_pandas()
        original = original.assign(text=original[TEXT_FIELD])
        values = _value_tables(generated, attribute, params)
        shares = pd.concat([group_shares(generated, attribute).assign(data=AUGMENTED),
                            group_shares(original, attribute).assign(data=ORIGINAL)], ignore_index=True)
        balance = balance_tests(generated, original, attribute)
        x, y = embed(original.text, params, store), embed(generated.text, params, store)
        distribution = {"mmd": mmd_test(x, y, N_PERMUTATIONS, params.seed),
                        "c2st": classifier_two_sample_test(x, y, params.seed, n_boot=max(params.evaluate.n_boot, 1))}
        rows = misalignment_rows(attribute, bias_type, params.seed, values=values, group=balance, distribution=distribution)
        no_values = pd.DataFrame(columns=list(stats.GROUP_COLUMNS))  # culture: no offline reference, still a readable table
        for name, table in (("values", pd.concat(values, ignore_index=True) if values else no_values),
                            ("shares", shares), ("balance", balance), ("projection", projection_2d(x, y, params.seed)),
                            ("rows", pd.DataFrame(rows, columns=list(stats.RECORD_KEYS)))):
            write_text_atomic(out / f"{name}.csv", table.to_csv(index=False))
        write_text_atomic(out / "distribution.json", canonical_json(distribution))

    return store.get_or_compute(STAGE, key_params, compute, inputs=inputs, version=VERSION)


def _value_tables(generated: pd.DataFrame, attribute: str, params: StudyParams) -> list[pd.DataFrame]:
    if attribute != "gender":
        return []  # CULTURE_VALUE_REFERENCE_OFFLINE: no human reference per culture ships offline
    return [occupation_share_distance(generated, reference_column=column, n_boot=params.evaluate.n_boot, seed=params.seed)
            for column in REFERENCE_METRICS]
