"""Mitigations of bias inheritance (notebook 06): token-, mask- and loss-based, each aimed at one misalignment.

* :mod:`.transforms`: what the token- and mask-based mitigations do to the augmented training rows;
* :mod:`.loss`: the loss-based mitigation's alignment term and the batches that hold both sources;
* :mod:`.students`: a point trained and evaluated under a mitigation (reusing its generation and mix),
  and the probe of the misalignment each mitigation targets;
* :mod:`.compare`: each mitigation against the plain student, paired over seeds and items, and the record.
"""

from .compare import (
    OVERALL, PROBE_TASK, TEST_TASK, comparison_artifact, comparison_table, compared_measures, mitigation_students,
    probe_rows, stored_comparisons, summary_table,
)
from .loss import AlignmentLoss, StratifiedPlan, alignment_loss, pooled_states, stratified_batches
from .students import (
    MIX_STAGE, PROBE_STAGE, mitigated_adapter, mitigated_evaluation, mitigated_mix, mitigated_points, mitigated_tasks, probe_artifact,
    representation_distance, settings, student_representations,
)
from .transforms import AUGMENTED, ORIGINAL, MitigationError, cue_counts, mask_rows, token_rows

__all__ = [
    "AUGMENTED", "MIX_STAGE", "ORIGINAL", "OVERALL", "PROBE_STAGE", "PROBE_TASK", "TEST_TASK", "AlignmentLoss",
    "MitigationError", "StratifiedPlan", "alignment_loss", "compared_measures", "comparison_artifact",
    "comparison_table", "cue_counts", "mask_rows", "mitigated_adapter", "mitigated_evaluation", "mitigated_mix",
    "mitigated_points", "mitigated_tasks", "mitigation_students", "pooled_states", "probe_artifact", "probe_rows",
    "representation_distance", "settings", "stored_comparisons", "stratified_batches", "student_representations",
    "summary_table", "token_rows",
]
