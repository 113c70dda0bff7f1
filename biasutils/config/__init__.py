"""Study parameters: profiles in ``params/profiles/*.yaml``, validated once, before any work starts.

A profile names the models, data sizes, seeds and the grid (attributes, bias types, ratios, tasks).
Every choice the paper does not pin down is a field here, never a constant buried in code, so a user
with the paper's exact values can set them. Validation is strict: an unknown key, bias type, model
or profile, a ratio outside [0, 1) or a non-positive size raises :class:`ParamsError`, whose message
names the field and the allowed values. The package imports no torch, so a bad command line fails in
well under a second.

By concept: :mod:`.names` (the allowed values), :mod:`.sections` (the pydantic sections and
:class:`StudyParams`), :mod:`.problems` (checks across sections) and :mod:`.loading` (profiles, overrides,
error wording, device and dtype).
"""

from __future__ import annotations

from .names import (
    BIAS_IN_BIOS_ROWS, BIAS_TYPES, CULTURES, CULTURE_TASK, DEFAULT_TASKS, GENDERS, MITIGATIONS, NAMED_CONTEXT,
    NAMED_MODELS, OCCUPATIONS, RELATIONS, TASKS, HUB_ID, Attribute, BiasType, Culture, DataSource, Device, Gender,
    Mitigation, Occupation, PositiveInt, Precision, Ratio, Relation, Share, StageName, Task,
)
from .sections import (
    INHERITANCE_MEASURES, AccumulationTest, CultureDataset, Data, Evaluate, Executor, Finetune, Generate, Grid,
    Inheritance, InheritanceMeasure, LoRA, LossMitigation, MaskMitigation, Mitigate, Mix, Models, Multiround,
    OpenAIGenerator, ParamsError, PrimaryTest, Probability, Reproduction, StageResources, StudyParams,
    TokenMitigation, VLLMGenerator, check_model_name,
)
from .problems import (
    context_problems, culture_problems, mitigation_problems, mix_sizes, multiround_problems, rows_per_cell,
    size_problems, task_lists,
)
from .loading import (
    PARAMS_DIR, apply_override, available_profiles, concrete_device, describe_error, load_params,
    parse_override_value, precision_key, resolve_device, validate_params,
)

__all__ = [
    'AccumulationTest', 'Attribute', 'BIAS_IN_BIOS_ROWS', 'BIAS_TYPES', 'BiasType', 'CULTURES', 'CULTURE_TASK',
    'Culture', 'CultureDataset', 'DEFAULT_TASKS', 'Data', 'DataSource', 'Device', 'Evaluate', 'Executor',
    'Finetune', 'GENDERS', 'Gender', 'Generate', 'Grid', 'HUB_ID', 'INHERITANCE_MEASURES', 'Inheritance',
    'InheritanceMeasure', 'LoRA', 'LossMitigation', 'MITIGATIONS', 'MaskMitigation', 'Mitigate', 'Mitigation',
    'Mix', 'Models', 'Multiround', 'NAMED_CONTEXT', 'NAMED_MODELS', 'OCCUPATIONS', 'Occupation', 'OpenAIGenerator',
    'PARAMS_DIR', 'ParamsError', 'PositiveInt', 'Precision', 'PrimaryTest', 'Probability', 'RELATIONS', 'Ratio',
    'Relation', 'Reproduction',
    'Share', 'StageName', 'StageResources', 'StudyParams', 'TASKS', 'Task', 'TokenMitigation', 'VLLMGenerator',
    'apply_override', 'available_profiles', 'check_model_name', 'concrete_device', 'context_problems',
    'culture_problems', 'describe_error', 'load_params', 'mitigation_problems', 'mix_sizes', 'multiround_problems',
    'parse_override_value', 'precision_key', 'resolve_device', 'rows_per_cell', 'size_problems', 'task_lists',
    'validate_params',
]
