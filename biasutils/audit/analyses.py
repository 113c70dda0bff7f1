"""The three analyses on the tidy frames, each through :mod:`biasutils.misalign`: group data (balance tests),
distribution (duplicates, then embedding and both two-sample tests) and values (references, stereotypes).

Why together: they are the audit's measurements, the only steps that load models (imported inside the
functions that use them), and each hands its numbers to :mod:`~biasutils.audit.verdicts` to be judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # installed with scikit-learn, which requires it

from .. import misalign
from ..config import load_params
from ..misalign import AUGMENTED, ORIGINAL, UNKNOWN
from ..store import Store
from .findings import (
    EMBED_BATCH_SIZE, MIN_ROWS, NOT_RUN, REFERENCES, SIDES, VALUE_PROFILE, AuditOptions, Distribution, Duplicates,
    StageClock, Values, Verdict,
)
from .verdicts import occupation_value_verdict, stereotype_verdict


# ---------------------------------------------------------------------------------------------- group data


def audited_groups(sides: Mapping[str, pd.DataFrame], options: AuditOptions) -> list[str]:
    """Groups that get a row in every label's table: both genders when inferred, else every value seen."""
    seen = sorted({group for frame in sides.values() for group in frame.group} - {UNKNOWN})
    fixed = misalign.ATTRIBUTE_GROUPS["gender"] if options.group_field is None else ()
    return list(dict.fromkeys([*fixed, *seen]))


def group_balance(augmented: pd.DataFrame, original: pd.DataFrame, groups: Sequence[str]) -> pd.DataFrame:
    """:func:`misalign.balance_tests` on the frames' ``group`` columns (given or already inferred)."""
    return misalign.balance_tests(augmented, original, group_field="group", groups=groups)


# ---------------------------------------------------------------------------------------------- distribution


def distribution_analysis(sides: Mapping[str, pd.DataFrame], options: AuditOptions, clock: StageClock) -> Distribution:
    """Count the duplicates; then embed a seeded subsample of each file's unshared texts and run both two-sample
    tests and the projection. With too few unshared texts no model loads and the reason is kept instead."""
    from ..models import load_embedder

    with clock.stage("duplicates"):
        duplicates = find_duplicates(sides)
    reason = untestable_reason(duplicates)
    if reason is not None:
        return Distribution(duplicates, None, None, None, reason)
    with clock.stage("load embedder"):
        embedder = load_embedder(options.embedder, Store(), _device())
    rng = np.random.default_rng(options.seed)
    texts = [subsample(duplicates.unshared[side], options.max_per_side, rng) for side in SIDES]
    with clock.stage("embed"):
        x, y = embed_pair(embedder, *texts)
    with clock.stage("mmd"):
        mmd = misalign.mmd_test(x, y, seed=options.seed, max_per_side=options.max_per_side)
    with clock.stage("c2st"), single_threaded_blas():
        c2st = misalign.classifier_two_sample_test(x, y, seed=options.seed)
    with clock.stage("projection"), single_threaded_blas():
        projection = misalign.projection_2d(x, y, seed=options.seed)
    return Distribution(duplicates, mmd, c2st, projection)


def text_key(text: str) -> str:
    """A text as duplicates are matched: runs of whitespace as one space, ends stripped, case folded.

    Why ignore case: a copy that only changes case is still a copy, and the default embedder (MiniLM,
    uncased) gives it the very same embedding, so it breaks the tests exactly as an exact copy does
    (measured: an upper-cased copy of a file gives the same below-chance AUC as the file itself). Spacing
    changes no token either. Punctuation and wording count: they change the text.
    """
    return " ".join(text.split()).casefold()


def find_duplicates(sides: Mapping[str, pd.DataFrame]) -> Duplicates:
    """Texts found in both files, and texts repeated within one, by :func:`text_key`.

    Why the tests leave out a text found in both files, on both sides: both tests assume two independent
    samples, and a copy breaks that. A text in both files cannot tell them apart, yet in cross-validation
    its copy in the training folds carries the other file's label, so the classifier's out-of-fold score
    turns against the held-out file (the same file on both sides gave AUC 0.06 [0.01, 0.12]); the MMD
    statistic falls below every permutation's (p = 1). Dropping it from both files, rather than from the
    augmented one only, treats the files alike: from two samples of one distribution the common texts
    would leave both, so what is left is still alike under the null.

    Repeats within a file are counted but kept: a generator that repeats itself is less diverse than the
    original, a real difference the tests should be able to see.
    """
    keys = {side: sides[side].text.map(text_key) for side in SIDES}
    shared = set(keys[ORIGINAL]) & set(keys[AUGMENTED])
    return Duplicates(shared_texts=len(shared), rows={side: len(key) for side, key in keys.items()},
                      repeated_rows={side: int(key.duplicated().sum()) for side, key in keys.items()},
                      unshared={side: sides[side].text[~key.isin(shared)].tolist() for side, key in keys.items()})


def untestable_reason(duplicates: Duplicates) -> str | None:
    """Why the two-sample tests cannot run (None when they can): a file has fewer than :data:`MIN_ROWS`
    texts the other lacks, the floor the input check sets for the tests on whole files."""
    for side, other in ((AUGMENTED, ORIGINAL), (ORIGINAL, AUGMENTED)):
        left, rows = len(duplicates.unshared[side]), duplicates.rows[side]
        if left == 0:
            return f"all {rows} {side} texts also appear in the {other} data"
        if left < MIN_ROWS:
            return (f"{rows - left} of {rows} {side} texts also appear in the {other} data, leaving {left} of the "
                    f"{MIN_ROWS} per file the two-sample tests need")
    return None


def single_threaded_blas() -> threadpool_limits:
    """One OpenBLAS thread for small LAPACK-bound steps (logistic regression, PCA).

    Why: with two threads on two shared cores, OpenBLAS made the SVD of a 1000 x 384 matrix take 7.9 s
    instead of 0.13 s and the classifier test 1.5 s instead of 0.24 s (bench/bench_audit.py machine);
    unshared, one thread is as fast at these sizes. Torch's embedding uses its own OpenMP pool, unaffected.
    """
    return threadpool_limits(limits=1, user_api="blas")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def subsample(texts: list[str], limit: int, rng: np.random.Generator) -> list[str]:
    """At most ``limit`` texts, drawn without replacement in file order: embedding is the audit's slow step."""
    if len(texts) <= limit:
        return texts
    return [texts[i] for i in np.sort(rng.choice(len(texts), limit, replace=False))]


def embed_pair(embedder: Any, original: list[str], augmented: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of both sides; a text found in both (or twice) is embedded once."""
    distinct = list(dict.fromkeys([*original, *augmented]))
    vectors = embedder.encode(distinct, batch_size=EMBED_BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)
    row = {text: i for i, text in enumerate(distinct)}
    return vectors[[row[text] for text in original]], vectors[[row[text] for text in augmented]]


# ---------------------------------------------------------------------------------------------- values


def reference_occupation(label: str) -> str:
    """A label as the study spells occupations ("Software engineer" -> "software_engineer")."""
    return label.strip().lower().replace(" ", "_").replace("-", "_")


def value_analysis(augmented: pd.DataFrame, options: AuditOptions) -> Values:
    """Shares of women against the references (labels that are study occupations) and, with a
    generator, its stereotype agreement; else one "not run" verdict that says why."""
    tables: dict[str, pd.DataFrame] = {}
    verdicts: list[Verdict] = []
    occupations = augmented.occupation.map(reference_occupation)
    known = occupations.isin(misalign.occupation_reference().occupation)
    if known.any():
        samples = augmented[known].assign(occupation=occupations[known])
        for name, (column, source) in REFERENCES.items():
            tables[name] = misalign.occupation_share_distance(samples, reference_column=column, seed=options.seed)
            verdicts.append(occupation_value_verdict(tables[name], name, source))
    if options.generator:
        tables["stereotypes"] = stereotype_table(options.generator)
        verdicts.append(stereotype_verdict(tables["stereotypes"], options.generator))
    if not verdicts:
        verdicts.append(Verdict("values", "Values", NOT_RUN, "; ".join(skipped_value_analyses(tables, options)) + "."))
    return Values(tables, verdicts)


def stereotype_table(generator: str) -> pd.DataFrame:
    """The generator's agreement with every GEST gender stereotype (:func:`misalign.stereotype_agreement`)."""
    from ..evaluate import Scorer
    from ..models import load_causal_lm

    model, tokenizer = load_causal_lm(generator, Store(), _device())
    items = misalign.stereotype_items()
    return misalign.stereotype_agreement(items, Scorer(model, tokenizer, load_params(VALUE_PROFILE)).choice(items))


def skipped_value_analyses(tables: Mapping[str, pd.DataFrame], options: AuditOptions) -> list[str]:
    """Which value analyses could not run and what they need: the report says so rather than stay silent."""
    skipped = []
    if not set(REFERENCES) & set(tables):
        occupations = ", ".join(misalign.occupation_reference().occupation)
        why = ("no --label-field was given" if options.label_field is None
               else f"{options.label_field!r} holds none of them")
        skipped.append(f"comparing the share of women per occupation with human references needs a --label-field "
                       f"holding the study's occupations ({occupations}); {why}")
    if "stereotypes" not in tables:
        skipped.append("scoring the generator's agreement with gender stereotypes needs --generator MODEL")
    return skipped
