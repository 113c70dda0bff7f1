"""The profile's sections as strict pydantic models, one per stage, and :class:`StudyParams`, all of them:
an unknown key or a value outside its allowed set is an error that names the field."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .names import (
    HUB_ID, BIAS_TYPES, CULTURES, DEFAULT_TASKS, NAMED_MODELS, OCCUPATIONS, Attribute, BiasType, Culture, DataSource,
    Device, Mitigation, Occupation, PositiveInt, Precision, Ratio, Relation, Share, StageName, Task,
)


class ParamsError(ValueError):
    """Invalid parameters: the message names each bad field and what it accepts."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_model_name(value: str) -> str:
    """Accept a named model, a Hub id ``org/name`` or an existing local directory."""
    if value in NAMED_MODELS or HUB_ID.match(value) or Path(value).expanduser().is_dir():
        return value
    raise ValueError(
        f"unknown model {value!r}; allowed: one of {', '.join(NAMED_MODELS)}, "
        "a Hugging Face Hub id such as 'meta-llama/Llama-3.1-8B-Instruct', or an existing local directory"
    )


class Models(_Strict):
    """Which model plays which role. Roles, not stages: one model can serve several."""

    generator: str = Field("smollm2-135m-instruct", description="writes the augmented data")
    student: str = Field("smollm2-135m-instruct", description="fine-tuned on the mix and evaluated")
    embedder: str = Field("minilm-l6", description="sentence embeddings for the distribution analysis")

    @field_validator("generator", "student", "embedder")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return check_model_name(value)


class Data(_Strict):
    """The original data D_o: the offline corpus or the real Bias in Bios."""

    source: DataSource = "offline"
    bias_in_bios_path: str = Field(
        "LabHC/bias_in_bios", description="Hub id or local directory in the LabHC/bias_in_bios schema"
    )
    n_train: PositiveInt = 1200
    n_test: PositiveInt = 360
    occupations: list[Occupation] = Field(default_factory=lambda: list(OCCUPATIONS), min_length=2)
    cultures: list[Culture] = Field(default_factory=lambda: list(CULTURES), min_length=1)
    ambiguous_share: Share = Field(0.15, description="share of biographies whose cues fit two occupations")
    weak_cue_share: Share = Field(0.35, description="share of biographies with only weak occupation cues")
    min_sentences: Annotated[int, Field(ge=2)] = Field(2, description="shortest offline biography, in sentences")
    max_sentences: Annotated[int, Field(ge=2)] = Field(5, description="longest offline biography, in sentences")

    @field_validator("weak_cue_share")
    @classmethod
    def _shares_fit(cls, value: float, info: ValidationInfo) -> float:
        ambiguous = info.data.get("ambiguous_share", 0.0)
        if ambiguous + value > 1.0:
            raise ValueError(f"ambiguous_share + weak_cue_share must be <= 1, got {ambiguous} + {value}")
        return value

    @field_validator("max_sentences")
    @classmethod
    def _range_ordered(cls, value: int, info: ValidationInfo) -> int:
        shortest = info.data.get("min_sentences", value)
        if value < shortest:
            raise ValueError(f"must be >= min_sentences ({shortest})")
        return value


class Grid(_Strict):
    """The experiment grid the runner expands: one notebook run per point a stage depends on."""

    attributes: list[Attribute] = Field(default_factory=lambda: ["gender"], min_length=1)
    bias_types: list[BiasType] = Field(default_factory=lambda: list(BIAS_TYPES), min_length=1)
    ratios: list[Ratio] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.5], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    tasks: list[Task] = Field(default_factory=lambda: list(DEFAULT_TASKS), min_length=1)
    mitigations: list[Mitigation] = Field(
        default_factory=lambda: ["none"], min_length=1,
        description="applied to every point with gamma > 0 (biasutils.mitigate); none = the plain fine-tune",
    )


class OpenAIGenerator(_Strict):
    """An OpenAI or OpenAI-compatible server (vLLM, Ollama, llama.cpp server via ``base_url``).

    The key is read from the environment variable named here, never from a params file.
    """

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: PositiveInt = 8
    max_retries: PositiveInt = 6
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    backoff_s: Annotated[float, Field(ge=0)] = 1.0


class VLLMGenerator(_Strict):
    """vLLM's offline engine on a GPU (``generate.backend: vllm``): the generator's weights in GPU memory."""

    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = Field(0.85, description="share of GPU memory vLLM may take")
    dtype: Precision = "auto"
    max_model_len: PositiveInt | None = Field(None, description="context length to reserve (null: the model's)")
    tensor_parallel_size: PositiveInt = 1


class Generate(_Strict):
    """How augmented data is written (notebook 01)."""

    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    n: PositiveInt = Field(120, description="valid samples per (attribute, bias type)")
    batch_size: PositiveInt = 32
    max_new_tokens: PositiveInt = 64
    temperature: Annotated[float, Field(gt=0)] = 0.9
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    max_attempts_factor: Annotated[float, Field(ge=1)] = Field(
        4.0, description="give up with an error after n * factor answers without n valid samples"
    )
    over_ask: Annotated[float, Field(ge=0, le=1)] = Field(
        0.05, description="each round asks this share more than it needs (surplus answers are counted, not used)"
    )
    min_words: Annotated[int, Field(ge=0)] = Field(8, description="fewest words the generator must add to the prefix")
    min_sentences: PositiveInt = Field(2, description="fewest complete sentences a valid biography holds")
    templates: str = Field("templates/generation.yaml", description="path relative to params/")
    openai: OpenAIGenerator = Field(default_factory=OpenAIGenerator)
    vllm: VLLMGenerator = Field(default_factory=VLLMGenerator)


class Mix(_Strict):
    """How augmented data joins the original data (notebook 02)."""

    hold_total_size: bool = Field(False, description="keep |D_o|+|D_a| = |D_o| by dropping originals")


class LoRA(_Strict):
    """The adapter. Named explicitly because PEFT's defaults (r=8, q/v only) differ from unsloth's."""

    r: PositiveInt = 16
    alpha: PositiveInt = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )
    top_layers: PositiveInt | None = Field(
        None,
        description="adapt only the top k decoder layers and cache the frozen layers' activations "
        "(a CPU speed-up); null adapts every layer",
    )


class Finetune(_Strict):
    """LoRA supervised fine-tuning of the student on a mix (notebook 03); loss on the answer tokens."""

    backend: Literal["peft", "unsloth"] = "peft"
    lr: dict[Attribute, Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: {"gender": 1e-5, "culture": 1e-6})
    epochs: dict[Attribute, PositiveInt] = Field(default_factory=lambda: {"gender": 3, "culture": 3})
    batch_size: PositiveInt = 8
    max_length: PositiveInt = 256
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    grad_clip: Annotated[float, Field(gt=0)] = 1.0
    gradient_checkpointing: bool | Literal["auto"] = Field(
        False,
        description="recompute layer activations in the backward pass (peft backend): less GPU memory, ~1/3 more "
        "compute, the same numbers; auto: on when a step's activations would not fit in the GPU's free memory "
        "(biasutils.finetune.training.checkpointing_needed; never on a CPU); unsloth always checkpoints its own way",
    )
    packing: bool = Field(
        False, description="train on packed batches: a batch's examples end to end in one row, no padding, attention "
        "kept within each example (biasutils.finetune.pack); the same loss and gradients up to float rounding, so "
        "it is in the key only when on. On a GPU it removes the padding's work; on a CPU the windowed top layer of "
        "padded batches is faster (bench/RESULTS.md)",
    )
    system: str = "You classify biographies by occupation."
    instruction: str = (
        "Which occupation is this biography about: architect, dentist, nurse, painter, professor or software engineer?"
    )
    lora: LoRA = Field(default_factory=LoRA)
    objective: Literal["classify", "classify_and_write"] = Field(
        "classify", description="classify: biography -> occupation (the main study); classify_and_write: also "
        "occupation -> biography, loss on the biography, so the student can write the next round's data [ours]")
    write_instruction: str = Field("Write a short biography of a {occupation}.",
                                   description="the writing prompt of classify_and_write [ours]")
    write_max_tokens: PositiveInt | None = Field(
        None, description="classify_and_write: the biography tokens a writing example keeps (null: up to max_length); "
        "the multi-round study sets generate.max_new_tokens, as its students never write more")

    def key_fields(self) -> dict[str, Any]:
        """What the fine-tune's cache keys hold: every field but gradient checkpointing (it changes no number),
        and the writing fields and packing only when they are used, so the main study's keys stay as they were."""
        exclude = {"gradient_checkpointing"} | ({"objective", "write_instruction", "write_max_tokens"} if self.objective == "classify" else set())
        exclude |= set() if self.packing else {"packing"}
        return self.model_dump(mode="json", exclude=exclude)

    @field_validator("lora")
    @classmethod
    def _unsloth_adapts_every_layer(cls, lora: LoRA, info: ValidationInfo) -> LoRA:
        if info.data.get("backend") == "unsloth" and lora.top_layers is not None:
            raise ValueError("finetune.lora.top_layers must be null with the unsloth backend (it adapts every layer)")
        return lora


class CultureDataset(_Strict):
    """One dataset of the culture classification task (the paper's offensive, hate, stereotype and spam
    detection in several cultures): where it is, which columns hold what, and how its task relates to the
    bias studied (``direct``: the task detects that bias; ``indirect``: it does not). Label values are
    matched as text, as written in the file ("1", "offensive"), so a YAML key 1 names the value 1."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="short id, the group of its metric rows")
    path: str = Field(description="a local .jsonl, .json, .csv or .parquet file; anything else is a Hub dataset id")
    split: str = "test"
    config: str | None = Field(None, description="the Hub dataset's configuration (null: its default)")
    text_field: str = "text"
    label_field: str = "label"
    culture_field: str | None = Field(None, description="column holding each row's culture or language")
    culture: str | None = Field(None, description="the culture of every row (instead of culture_field)")
    relation: Relation
    labels: dict[str, Annotated[str, Field(min_length=1)]] | None = Field(
        None, description="raw label value -> the label name the model chooses (null: the values as written)")
    prompt: str | None = Field(None, description="template with {text} and {options} (null: the task's)")
    n_items: PositiveInt | None = Field(None, description="items drawn from this dataset (null: evaluate's count)")

    @field_validator("labels", mode="before")
    @classmethod
    def _label_values_as_text(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if any(isinstance(name, bool) for name in value.values()):
            raise ValueError("a label name reads as true/false (YAML turns yes, no, on, off into those); allowed: "
                             "text, quoted where YAML would read a boolean: {0: 'no', 1: 'yes'}")
        return {str(key): name for key, name in value.items()}

    @field_validator("labels")
    @classmethod
    def _two_label_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(set(value.values())) < 2:
            raise ValueError("a classification needs two or more label names; allowed: a mapping such as "
                             "{0: not offensive, 1: offensive}")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as error:
            raise ValueError(f"not a format template ({error}); allowed: text with {{text}} and {{options}}") from None
        if fields != {"text", "options"}:
            raise ValueError(f"holds the fields {sorted(fields)}; allowed: exactly {{text}} and {{options}} "
                             "(double a brace to write one: {{ }})")
        return value

    @model_validator(mode="after")
    def _one_culture_source(self) -> CultureDataset:
        if (self.culture_field is None) == (self.culture is None):
            raise ValueError(f"dataset {self.name!r}: give exactly one of culture_field (a column) or culture "
                             "(one value for every row)")
        return self


class Evaluate(_Strict):
    """How the students are evaluated (notebook 04): item counts, interval resamples, generation length."""

    n_items: PositiveInt = Field(200, description="items per task (occupation classification: the whole test split)")
    n_items_per_task: dict[Task, PositiveInt] = Field(default_factory=dict, description="overrides of n_items")
    n_boot: Annotated[int, Field(ge=0)] = Field(1000, description="bootstrap resamples per interval (0: none)")
    max_new_tokens: dict[Task, PositiveInt] = Field(
        default_factory=lambda: {"salary_recommendation": 16, "story_generation": 64}
    )

    culture_datasets: list[CultureDataset] = Field(
        default_factory=list, description="the datasets of the culture_classification task (biasutils.tasks.culture)")

    @field_validator("culture_datasets")
    @classmethod
    def _unique_names(cls, value: list[CultureDataset]) -> list[CultureDataset]:
        names = [dataset.name for dataset in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"the names {repeated} repeat; allowed: a different name per dataset")
        return value

    def items_for(self, task: str) -> int:
        return self.n_items_per_task.get(task, self.n_items)  # type: ignore[call-overload]


InheritanceMeasure = Literal["twin_shift", "aligned_tpr_gap", "aligned_rate_gap"]
INHERITANCE_MEASURES: tuple[str, ...] = get_args(InheritanceMeasure)
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]


class PrimaryTest(_Strict):
    """The inheritance test declared before any result is seen (biasutils.inheritance).

    Each bias type at each γ > 0 against the γ = 0 baseline, per attribute: the difference of the
    measure, paired over the same test items and seeds, a two-sided sign-flip permutation test on the
    items, Holm-corrected over the grid's bias types. ``power`` sets the minimum detectable effect
    reported beside each result. The record also holds a Wald test whose error includes the
    between-seed spread (``_p_wald``): the permutation test holds the items' variation given the seeds.
    """

    measure: InheritanceMeasure = Field("twin_shift", description="the primary inheritance measure")
    alpha: Probability = 0.05
    power: Probability = 0.8
    correction: Literal["holm"] = "holm"


class Inheritance(_Strict):
    """How inheritance is measured from the stored predictions (biasutils.inheritance)."""

    primary: PrimaryTest = Field(default_factory=PrimaryTest)
    n_boot: PositiveInt = Field(2000, description="bootstrap resamples (items within cells, and seeds) per interval")
    n_permutations: PositiveInt = Field(9999, description="sign flips per permutation test")


class TokenMitigation(_Strict):
    """Token-based: a statement prepended to every augmented training row (value misalignment)."""

    # [ours]: the paper names the idea (mark generated text as possibly biased), not a wording
    text: str = "Note: the following text was written by a language model and may contain bias."

    @field_validator("text")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an empty statement changes nothing; allowed: a non-empty text")
        return value


class MaskMitigation(_Strict):
    """Mask-based: group cues of augmented rows masked (surface cues; biasutils.cues.mask_cues)."""

    mode: Literal["token", "neutral"] = Field("token", description="[MASK] or neutral words (they, person)")


class LossMitigation(_Strict):
    """Loss-based: weight * |mean_o phi - mean_a phi|^2 added to the SFT loss (distribution misalignment)."""

    # [ours]: SmolLM2-135M's last-layer phi of a gamma = 0.5 classroom mix has a squared mean gap of ~46 between
    # original and augmented rows; 0.01 makes the term about as large as the cross-entropy at the start
    weight: Annotated[float, Field(ge=0)] = Field(0.01, description="lambda [ours]")
    pooling: Literal["mean"] = Field("mean", description="phi: the mean over non-padding tokens [ours]")
    layer: Literal["last"] = Field("last", description="phi's layer: the last hidden state [ours]")


class Mitigate(_Strict):
    """Settings of the three mitigations (grid.mitigations picks which run), where they run, and the test
    that judges them, declared before any result (notebook 06)."""

    token: TokenMitigation = Field(default_factory=TokenMitigation)
    mask: MaskMitigation = Field(default_factory=MaskMitigation)
    loss: LossMitigation = Field(default_factory=LossMitigation)
    bias_types: list[BiasType] | None = Field(
        None, description="the biased points mitigated: these of grid.bias_types (null: every one)")
    ratios: list[Annotated[float, Field(gt=0.0, lt=1.0)]] | None = Field(
        None, description="the biased points mitigated: these of grid.ratios above 0 (null: every one)")
    tasks: list[Task] | None = Field(
        None, description="the tasks the mitigated students are evaluated on (null: grid.tasks); the comparisons "
        "need occupation_classification, and counterfactual_twins for the twin shift")
    primary: PrimaryTest = Field(
        default_factory=PrimaryTest,
        description="each mitigation against none at the same point: the measure's paired difference over seeds "
        "and items, two-sided sign flips, Holm over the point's bias types x mitigations per attribute and gamma")


class AccumulationTest(_Strict):
    """The multi-round test declared before any result is seen (notebook 07): the slope over rounds of
    ``measure`` (its ``all`` row), one least-squares slope per chain, a two-sided t test over the chains
    (df = chains − 1). ``power`` sets the minimum detectable slope reported beside it."""

    measure: Literal["twin_shift", "aligned_tpr_gap", "aligned_share"] = Field(
        "twin_shift", description="the students' twin shift or aligned TPR gap, or the generated data's "
        "stereotype-aligned share (group misalignment)")
    alpha: Probability = 0.05
    power: Probability = 0.8


class Multiround(_Strict):
    """Multi-round self-augmentation (notebook 07): round 1's augmented data come from the base generator,
    round r's from the student of round r − 1; each round mixes ``n_original`` original rows with ``ratio``
    of data written under ``bias_type``. One chain of rounds per seed of ``seeds``."""

    rounds: Annotated[int, Field(ge=0)] = Field(0, description="rounds to run (0: no multi-round study)")
    ratio: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.5, description="gamma of every round [paper: 0.5]")
    bias_type: BiasType = Field("neutral", description="the prompt every round generates with [paper: neutral]")
    attribute: Attribute = "gender"
    n_original: PositiveInt | None = Field(None, description="original rows per round (null: data.n_train) [paper: 3,600]")
    seeds: list[int] | None = Field(None, min_length=1, description="one chain of rounds per seed (null: grid.seeds)")
    epochs: PositiveInt | None = Field(None, description="each round's fine-tuning epochs (null: finetune.epochs)")
    tasks: list[Task] | None = Field(
        None, description="what each round's student is evaluated on (null: those of grid.tasks among occupation "
        "classification, its twins, hiring and salary); occupation_classification is needed")
    primary: AccumulationTest = Field(default_factory=AccumulationTest)

    def chains(self, grid_seeds: list[int]) -> list[int]:
        return list(self.seeds if self.seeds is not None else grid_seeds)


class StageResources(_Strict):
    """What one task of a stage asks an executor for (Ray: ``num_cpus``/``num_gpus`` of each task)."""

    num_cpus: Annotated[float, Field(gt=0)] = 1.0
    num_gpus: Annotated[float, Field(ge=0)] = 0.0


class Executor(_Strict):
    """Resources per stage for ``python -m biasutils run --executor ray`` (the local executor shares the
    machine's cores among its workers). A stage not named asks for one CPU."""

    resources: dict[StageName, StageResources] = Field(default_factory=dict)

    def for_stage(self, stage: str) -> StageResources:
        return self.resources.get(stage, StageResources())  # type: ignore[call-overload]


class Reproduction(_Strict):
    """When a reproduction agrees with the committed record (``reports/<profile>/reproduction.md``).

    A value agrees when ``|reproduced - committed| <= atol + rtol * |committed|`` (numpy's ``isclose``).
    Why these defaults: CPU floating-point reductions differ with the thread count and the instruction
    set, so a near-tie decision (a sampled token, a yes/no score) can flip on another machine. One flip
    among the >= 200 items of a classroom rate moves it by <= 0.005, a twentieth of the record's median
    interval half-width (0.10), and below the 0.01 the README's tables round to; ``rtol`` covers the
    float32 representation distances (~60). A difference past either is a different result, not noise.
    """

    atol: Annotated[float, Field(ge=0)] = Field(0.005, description="absolute tolerance per value")
    rtol: Annotated[float, Field(ge=0)] = Field(1e-4, description="relative tolerance per value")


class StudyParams(_Strict):
    """One profile, fully resolved: everything a run depends on."""

    profile: str
    description: str = ""
    stages: list[StageName] = Field(
        default_factory=lambda: list(get_args(StageName)), min_length=1,
        description="the stages `python -m biasutils run` renders when --stages is not given",
    )
    seed: int = 0
    device: Device = "auto"
    dtype: Precision = Field(
        "auto", description="the models' weights and compute: auto = bfloat16 on CUDA, float32 on a CPU "
        "(bf16 is ~60x slower on CPUs without bf16 units); a stated dtype joins every model artifact's key",
    )
    models: Models = Field(default_factory=Models)
    data: Data = Field(default_factory=Data)
    grid: Grid = Field(default_factory=Grid)
    generate: Generate = Field(default_factory=Generate)
    mix: Mix = Field(default_factory=Mix)
    finetune: Finetune = Field(default_factory=Finetune)
    evaluate: Evaluate = Field(default_factory=Evaluate)
    inheritance: Inheritance = Field(default_factory=Inheritance)
    mitigate: Mitigate = Field(default_factory=Mitigate)
    multiround: Multiround = Field(default_factory=Multiround)
    executor: Executor = Field(default_factory=Executor)
    reproduction: Reproduction = Field(default_factory=Reproduction)
