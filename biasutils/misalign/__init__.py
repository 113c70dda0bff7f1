"""The study's three misalignments between generated and real data: values, group data, distribution.

Why measure them: bias inheritance is the claim that what a generator gets wrong about people carries
into the students trained on its data. Before any student is trained, the augmented data can already
be compared with the real data in three ways, and each names a different way the generator is off:

* **Value misalignment**: the generator's values vs a human reference, per group, as a distance with a
  bootstrap interval. The distance is the Jensen-Shannon *distance*
  ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` (0 = same distribution, 1 = disjoint);
  GlobalOpinionQA (Durmus et al. 2023) reports the similarity ``1 - distance``. Offline references:
  the share of women per occupation from US labour statistics and from human ratings of how male an
  occupation sounds (:func:`occupation_reference`), and agreement with GEST gender stereotypes
  (:func:`stereotype_items`, :func:`stereotype_agreement`). Online: GlobalOpinionQA's per-country survey
  answers (:func:`load_global_opinions`, :func:`opinion_distance`). No installed package ships human
  value statistics per culture (see :data:`CULTURE_VALUE_REFERENCE_OFFLINE`).
* **Group-data misalignment**: who the generator writes about when the prompt names no group (the
  ``neutral`` control): counts and shares of each gender (or culture) per occupation with Wilson
  intervals, an exact binomial test of each generated share against the original data's share, and a
  stratified chi-square test over occupations (:func:`group_shares`, :func:`balance_tests`). Groups are
  inferred from the text by one documented rule (:func:`infer_group`, :func:`infer_culture`), applied
  to generated and original texts alike so that inference errors do not masquerade as misalignment.
* **Distribution misalignment**: whether original and augmented texts are told apart in embedding
  space: a kernel two-sample test (:func:`mmd_test`), a classifier two-sample test
  (:func:`classifier_two_sample_test`) and a 2-D projection to look at (:func:`projection_2d`).

Value result frames follow :data:`biasutils.stats.GROUP_COLUMNS` (``group, metric, value, ci_low,
ci_high, n``, plus columns of their own), so :func:`misalignment_rows` turns every result into rows of
the study's record (:data:`biasutils.stats.RECORD_KEYS`). Intervals are 95% (percentile bootstrap, or
Wilson for a share of counts).

The stage is a package, one module per concept: :mod:`~biasutils.misalign.values`,
:mod:`~biasutils.misalign.group` and :mod:`~biasutils.misalign.distribution` (the three measures),
:mod:`~biasutils.misalign.stereotype` (stereotype agreement scored through an API, and its artifact),
:mod:`~biasutils.misalign.figures`, :mod:`~biasutils.misalign.stage` (the stored artifact, its cache-key
constants and the record rows) and ``_common`` (labels, argument checks, intervals). Every public name
is re-exported here, so callers write ``misalign.X`` without knowing which module holds it.
"""

from __future__ import annotations

from ..tasks import ALL
from ._common import ATTRIBUTE_GROUPS, AUGMENTED, CI_LEVEL, ORIGINAL, UNKNOWN, wilson_interval
from .distribution import classifier_two_sample_test, mmd_test, projection_2d
from .figures import group_share_figure, projection_figure, share_female_figure
from .group import balance_tests, group_shares, infer_culture, infer_group, inferred_groups, row_groups
from .stage import (
    DISTRIBUTION_KEYS,
    N_PERMUTATIONS,
    RECORD_MITIGATION,
    RECORD_RATIO,
    STAGE,
    STEREOTYPE_STAGE,
    STEREOTYPE_VERSION,
    TASK_DISTRIBUTION,
    TASK_GROUP,
    TASK_VALUES,
    TEXT_FIELD,
    VERSION,
    embed,
    misalign_artifact,
    misalignment_rows,
)
from .stereotype import (
    STEREOTYPE_TOP_LOGPROBS,
    TopLogprobs,
    openai_option_scores,
    stereotype_artifact,
    stereotype_note,
    stereotype_rows,
    stereotype_scorer,
    stereotype_status,
)
from .values import (
    AGREEMENT_COLUMNS,
    AGREEMENT_OPTIONS,
    CULTURE_VALUE_REFERENCE_OFFLINE,
    GLOBAL_OPINIONS_HUB_ID,
    OPINION_PROMPT,
    REFERENCE_METRICS,
    REFERENCE_NOUNS,
    STEREOTYPE_PROMPT,
    load_global_opinions,
    occupation_reference,
    occupation_share_distance,
    opinion_distance,
    opinion_items,
    opinion_probs,
    parse_global_opinions,
    share_distance,
    stereotype_agreement,
    stereotype_items,
)

__all__ = [
    # labels and intervals (_common; ALL is the pooled row's label, from biasutils.tasks)
    "ALL", "ATTRIBUTE_GROUPS", "AUGMENTED", "CI_LEVEL", "ORIGINAL", "UNKNOWN", "wilson_interval",
    # values
    "AGREEMENT_COLUMNS", "AGREEMENT_OPTIONS", "CULTURE_VALUE_REFERENCE_OFFLINE", "GLOBAL_OPINIONS_HUB_ID",
    "OPINION_PROMPT", "REFERENCE_METRICS", "REFERENCE_NOUNS", "STEREOTYPE_PROMPT", "load_global_opinions",
    "occupation_reference", "occupation_share_distance", "opinion_distance", "opinion_items", "opinion_probs",
    "parse_global_opinions", "share_distance", "stereotype_agreement", "stereotype_items",
    # group data
    "balance_tests", "group_shares", "infer_culture", "infer_group", "inferred_groups", "row_groups",
    # distribution
    "classifier_two_sample_test", "mmd_test", "projection_2d",
    # figures
    "group_share_figure", "projection_figure", "share_female_figure",
    # stereotype agreement: the API scorer and its artifact
    "STEREOTYPE_TOP_LOGPROBS", "TopLogprobs", "openai_option_scores", "stereotype_artifact", "stereotype_note",
    "stereotype_rows", "stereotype_scorer", "stereotype_status",
    # the stage: artifact, cache-key constants, record rows
    "DISTRIBUTION_KEYS", "N_PERMUTATIONS", "RECORD_MITIGATION", "RECORD_RATIO", "STAGE", "STEREOTYPE_STAGE",
    "STEREOTYPE_VERSION", "TASK_DISTRIBUTION", "TASK_GROUP", "TASK_VALUES", "TEXT_FIELD", "VERSION", "embed",
    "misalign_artifact", "misalignment_rows",
]
