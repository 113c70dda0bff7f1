"""The vocabulary of the parameters: the values each choice allows (bias types, occupations, cultures, tasks,
mitigations, devices, dtypes), the models known by name and the sizes the data sources bound."""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import Field


Attribute = Literal["gender", "culture"]
BiasType = Literal[
    "neutral",
    "contextual-explicit",
    "contextual-implicit",
    "contrastive-explicit",
    "contrastive-implicit",
    "intersectional-contextual",
    "intersectional-contrastive",
]
Occupation = Literal["architect", "dentist", "nurse", "painter", "professor", "software_engineer"]
Culture = Literal["arabic", "chinese", "portuguese", "spanish"]
Gender = Literal["male", "female"]
Task = Literal[
    "occupation_classification",
    "counterfactual_twins",
    "salary_recommendation",
    "hiring_recommendation",
    "story_generation",
    "bbq_gender",
    "winobias",
    "stereoset",
    "crows_pairs",
    "discrim_eval",
    "culture_classification",
]
DataSource = Literal["offline", "bias_in_bios"]
Mitigation = Literal["none", "token", "mask", "loss"]
StageName = Literal["data", "generate", "mix", "finetune", "evaluate", "misalign", "mitigate", "multiround", "report"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "float32", "bfloat16", "float16"]
Relation = Literal["direct", "indirect"]  # a culture dataset's task: does it detect the bias studied?

BIAS_TYPES: tuple[str, ...] = get_args(BiasType)
MITIGATIONS: tuple[str, ...] = get_args(Mitigation)
OCCUPATIONS: tuple[str, ...] = get_args(Occupation)
CULTURES: tuple[str, ...] = get_args(Culture)
GENDERS: tuple[str, ...] = get_args(Gender)
RELATIONS: tuple[str, ...] = get_args(Relation)
TASKS: tuple[str, ...] = get_args(Task)
# Tasks that read only the data a user names (evaluate.culture_datasets), so no default grid runs them.
CULTURE_TASK = "culture_classification"
DEFAULT_TASKS: tuple[str, ...] = tuple(task for task in TASKS if task != CULTURE_TASK)

# Models resolved by name in biasutils.models; anything else must be a Hub id or a local directory.
NAMED_MODELS: tuple[str, ...] = ("smollm2-135m-instruct", "minilm-l6", "tiny-random-llama")
# Context windows (tokens) of the named causal LMs, so lengths are bounded when params load.
NAMED_CONTEXT: dict[str, int] = {"smollm2-135m-instruct": 8192, "tiny-random-llama": 2048}
# Rows of LabHC/bias_in_bios per split: the most either data source can hold (the offline corpus stands
# in for it, and a corpus past this size only exhausts memory).
BIAS_IN_BIOS_ROWS: dict[str, int] = {"n_train": 257_478, "n_test": 99_069}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

PositiveInt = Annotated[int, Field(gt=0)]
Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
