"""The downstream tasks of the study as model-independent items, and the scoring of a model's outputs.

A task turns the study parameters into :class:`Item` s; a model-side scorer (outside this module)
answers each item, and the task's ``score`` turns the answers into a per-sample table and metric rows
(columns ``group, metric, value, ci_low, ci_high, n``; gaps as ``<metric>_gap`` / ``<metric>_gap_p``
rows, see :mod:`biasutils.stats`). No model code lives here, so scoring is tested with hand-made outputs.

Item kinds and what the scorer returns for ``outputs[i]``:

* ``"choice"``: one score per option (higher = preferred); the prediction is the best option (the first
  one on a tie, which is why the hiring task balances the candidates' order);
* ``"sequences"``: the total log-likelihood of each text;
* ``"generate"``: the generated string. Generations we cannot read are counted (``unparsed_share`` rows
  and a ``parsed`` column), never dropped silently.

The tasks (``config.TASKS``) follow the paper's four (occupation classification, salary, hiring,
story generation) plus five packaged bias benchmarks, and the paper's culture classification on datasets
the user names (no default grid runs it: it has no data of its own). Prompt wordings are [ours]: short,
because a 135M model answers them on a CPU. Approximations, all [ours]:

* story generation: the packaged gender inventories carry no Agency/Beliefs/Communion labels; we read
  masculine-coded words as agency and feminine-coded ones as communion (the inventories were built from
  agentic vs communal traits), and keep only words VADER's lexicon gives a valence. Nothing packaged
  covers Beliefs, so its rows are NaN.
* WinoBias: the packaged rows are pro-stereotypical only; each gets an anti-stereotypical twin with the
  pronoun swapped to the other gender, which is how WinoBias builds its anti set (same sentence, same
  referent). Pro and anti items are paired, so Fisher's test on their accuracy gap is conservative.
* hiring: each item yields two candidate rows, exactly one selected; the tests treat them as independent.
  A small model answers "A" nearly always, so selections alone show no group gap; the position-free
  measure is each candidate's log-odds of being chosen (score_A - score_B, the scores being
  log-probabilities of "A" and "B") averaged over the twin pair's two orders, where any constant
  position bias cancels exactly. One value per candidate per pair, so Welch's test counts candidates,
  not items.

The package holds one module per concept: :mod:`~biasutils.tasks.base` (items, the task protocol, output
checks and metric rows), :mod:`~biasutils.tasks.occupation` (the student's task and its counterfactual
twins), :mod:`~biasutils.tasks.recommendation` (salary, hiring), :mod:`~biasutils.tasks.story`,
:mod:`~biasutils.tasks.bias_benchmarks` (BBQ, WinoBias, StereoSet, CrowS-Pairs, discrim-eval) and
:mod:`~biasutils.tasks.culture` (the user's culture classification datasets). Every public
name is re-exported here, so callers write ``tasks.X`` without knowing which module holds it.
"""

from __future__ import annotations

from .base import ALL, KINDS, Item, Task
from .bias_benchmarks import (
    BBQ_PROMPT,
    DISCRIM_OPTIONS,
    DISCRIM_PROMPT,
    DISCRIM_REFERENCE,
    DISCRIM_REFERENCE_AGE,
    WINOBIAS_PROMPT,
    BBQGender,
    DiscrimEval,
    PairPreference,
    WinoBias,
    _crows_pair,
    _stereoset_pair,
    age_bucket,
    bbq_ambiguous_bias,
    bbq_disambiguated_bias,
    bbq_role,
    winobias_options,
)
from .culture import CULTURE_PROMPT, CultureClassification
from .occupation import CounterfactualTwins, OccupationClassification, twin_item
from .recommendation import (
    HIRING_OPTIONS,
    HIRING_PROMPT,
    HIRING_QUALIFICATIONS,
    SALARY_PROMPT,
    SALARY_RANGE,
    HiringRecommendation,
    SalaryRecommendation,
    cell_pair_schedule,
    parse_salary,
)
from .story import (
    DIMENSIONS,
    INVENTORY_DIMENSIONS,
    STORY_PROMPT,
    StoryGeneration,
    negative_share,
    trait_counts,
    trait_lexicon,
)

__all__ = [
    "ALL", "BBQ_PROMPT", "CULTURE_PROMPT", "DIMENSIONS", "DISCRIM_OPTIONS", "DISCRIM_PROMPT", "DISCRIM_REFERENCE", "DISCRIM_REFERENCE_AGE",
    "HIRING_OPTIONS", "HIRING_PROMPT", "HIRING_QUALIFICATIONS", "INVENTORY_DIMENSIONS", "KINDS", "SALARY_PROMPT",
    "SALARY_RANGE", "STORY_PROMPT", "TASKS", "WINOBIAS_PROMPT", "BBQGender", "CounterfactualTwins", "CultureClassification", "DiscrimEval",
    "HiringRecommendation", "Item", "OccupationClassification", "PairPreference", "SalaryRecommendation",
    "StoryGeneration", "Task", "WinoBias", "age_bucket", "bbq_ambiguous_bias", "bbq_disambiguated_bias", "bbq_role",
    "cell_pair_schedule", "negative_share", "parse_salary", "trait_counts", "trait_lexicon", "twin_item",
    "winobias_options",
]

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        OccupationClassification(),
        CounterfactualTwins(),
        SalaryRecommendation(),
        HiringRecommendation(),
        StoryGeneration(),
        BBQGender(),
        WinoBias(),
        PairPreference(name="stereoset", benchmark="stereoset", pair=_stereoset_pair,
                       meta_columns=("task", "bias_type", "target")),
        PairPreference(name="crows_pairs", benchmark="crows_pairs", pair=_crows_pair,
                       meta_columns=("bias_type", "pair_id")),
        DiscrimEval(),
        CultureClassification(),
    )
}
