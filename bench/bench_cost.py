"""A cost model of a profile's grid (default: ``paper``): its work counted from params, each stage's throughput
measured on this machine, projected to the target's models by FLOPs, and scheduled on N workers.

    python bench/bench_cost.py [--target paper] [--measure-profile classroom] [--gpus 1,8]
        [--tokens-per-s vllm=2500] [--card h100 --mfu 0.4] [--set key=value ...]

What is counted (the runner's phases, in its order; each phase waits for the one before):
  generate             one task per (attribute, bias type): generate.n valid samples, each answer decoded
                       to generate.max_new_tokens (a lockstep batch runs to its longest answer), answers per
                       valid sample from the store's generation reports (else 1 + generate.over_ask);
  finetune             one task per distinct student (γ = 0 once per attribute and seed, and once for both
                       attributes when they train alike, as the store keys it): the mix's rows × epochs;
  evaluate             one task per student: the items of every task of grid.tasks;
  mitigate (inputs)    one task per mitigated point and mitigation but none: its fine-tune and evaluations
                       (mitigate.tasks), and every point's probe (the mix's rows and the GEST items, scored);
  multiround (inputs)  one task per chain: per round, generation, the fine-tune with the writing objective
                       (a classification and a writing example per row) and the evaluations.
The data, mix, misalign and report stages run on CPUs in seconds to minutes and are not counted.

FLOPs (N_body: the decoder layers' matmul weights; N_head: the LM head, vocab × d; N_lora: the adapter's
weights; L layers, d_attn = heads × head dim; per token, "attended" = the positions its query attends to):
  inference (prefill, scoring, decoding), per token   2·N_body + 4·L·d_attn·attended
                                     + per logit row  2·N_head  (only where logits are read or sampled)
  LoRA training, per token  2 × 2·N_body + 3 × 4·L·d_attn·attended + 6·N_lora
                                     + per answer token  4·N_head
Why: a frozen linear layer's backward computes the gradient with respect to its input (2·N, as much as
its forward) and none for its weights (another 2·N, which makes the usual 6·N of full training): 4·N_body.
Attention has no weights: its backward takes gradients for Q, K and V, twice its forward. The adapter's
weights get all three passes (6·N_lora). The LM head is frozen and applied at the answer tokens
only (biasutils.finetune). Not counted: norms, rotary embeddings, softmax, the optimiser (all small).

Projection: a stage's time = (FLOPs of the target's work) / (FLOP/s the same code achieved here on the
measured model). That assumes the rate carries over to the target's larger matrices (on a CPU they
usually run at least as fast per FLOP, so the CPU-hours are, if anything, overstated). On a GPU decoding
is bound by memory bandwidth, not FLOPs, so a FLOP projection of generation is a lower bound there. ``--card`` instead assumes a card's dense bf16 peak × ``--mfu``: an assumption, not a
measurement. ``--tokens-per-s backend=value`` gives a generation rate (generated tokens per second per
task) for a backend measured elsewhere; vllm and openai are never measured here.

Token counts use the measured model's tokenizer, and the target's items are built with the offline corpus
standing in for Bias in Bios (same n_train and n_test; its counterfactual twins include culture twins,
which Bias in Bios rows, carrying no culture, do not give).
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from biasutils.config import CULTURE_TASK, TASKS, ParamsError, StudyParams, load_params, mix_sizes, resolve_device
from biasutils.mix import canonical_bias_type, key_attribute
from biasutils.runner.grid import STAGES, expand

BACKENDS = ("transformers", "vllm", "openai")
# dense bf16 tensor-core peaks from the vendors' datasheets (FLOP/s), for --card
CARDS: dict[str, float] = {"a100": 312e12, "h100": 989e12, "h200": 989e12}
# the runner's phases that run models, in its order (biasutils.runner.compute.missing_tasks)
PHASES = ("generate", "finetune", "evaluate", "mitigate (inputs)", "multiround (inputs)")
# the stage whose executor.resources a phase's tasks ask for
PHASE_STAGE = {"generate": "generate", "finetune": "finetune", "evaluate": "evaluate",
               "mitigate (inputs)": "mitigate", "multiround (inputs)": "multiround"}
PROBE_TASK = "occupation_classification"  # the probe's forward passes are costed as this task's items
HOUR = 3600.0


class UsageError(ValueError):
    """A bad command-line value: the message names it and what is allowed."""


# ---------------------------------------------------------------------------------------------- the work


@dataclass(frozen=True)
class Job:
    """One runner task in natural units: generation answers, training example passes (classification and
    writing examples), evaluated items per task."""

    phase: str
    label: str
    answers: float = 0.0
    train: float = 0.0
    write: float = 0.0
    items: tuple[tuple[str, float], ...] = ()

    def __add__(self, other: Job) -> Job:
        return replace(self, answers=self.answers + other.answers, train=self.train + other.train,
                       write=self.write + other.write, items=self.items + other.items)


def stage(name: str) -> Any:
    return next(s for s in STAGES if s.name == name)


def student_key(params: StudyParams, point: Mapping[str, Any]) -> tuple[Any, ...]:
    """What tells two plain students apart in the store (biasutils.finetune.finetune_artifact's key): the
    γ = 0 student of two attributes is one student when their lr and epochs agree."""
    a, b = point["attribute"], canonical_bias_type(point["bias_type"], point["ratio"])
    return key_attribute(a, b), b, point["ratio"], point["seed"], params.finetune.lr[a], params.finetune.epochs[a]


def student_points(params: StudyParams) -> list[dict[str, Any]]:
    """The fine-tune stage's points (biasutils.runner.grid.expand), one per distinct student."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in expand(stage("finetune"), params):
        seen.setdefault(student_key(params, run.point), run.point)
    return list(seen.values())


def mix_rows(params: StudyParams, ratio: float, n_original: int | None = None) -> int:
    """Rows of a mix: originals kept plus augmented added (biasutils.config.mix_sizes)."""
    return sum(mix_sizes(n_original or params.data.n_train, ratio, params.mix.hold_total_size))


def evaluation(tasks: Iterable[str], items: Mapping[str, float]) -> Job:
    return Job("", "", items=tuple((task, items[task]) for task in tasks))


def generation_jobs(params: StudyParams, answers_per_valid: float) -> list[Job]:
    return [Job("generate", _label(run.point), answers=params.generate.n * answers_per_valid)
            for run in expand(stage("generate"), params)]


def finetune_jobs(params: StudyParams) -> list[Job]:
    return [Job("finetune", _label(p), train=mix_rows(params, p["ratio"]) * params.finetune.epochs[p["attribute"]])
            for p in student_points(params)]


def evaluate_jobs(params: StudyParams, items: Mapping[str, float]) -> list[Job]:
    return [replace(evaluation(params.grid.tasks, items), phase="evaluate", label=_label(p)) for p in student_points(params)]


def mitigation_jobs(params: StudyParams, items: Mapping[str, float], probe_items: int) -> list[Job]:
    """Each point notebook 06 compares: a mitigated student's fine-tune and evaluations, and every student's
    probe (its forward passes over the mix's rows and the GEST items)."""
    from biasutils.mitigate import mitigated_points, mitigated_tasks

    jobs = []
    for p in mitigated_points(params):
        rows = mix_rows(params, p["ratio"])
        probe = Job("", "", items=((PROBE_TASK, rows + probe_items),))
        work = probe if p["mitigation"] == "none" else (
            Job("", "", train=rows * params.finetune.epochs[p["attribute"]])
            + evaluation(mitigated_tasks(params), items) + probe)
        jobs.append(replace(work, phase="mitigate (inputs)", label=_label(p)))
    return jobs


def multiround_jobs(params: StudyParams, items: Mapping[str, float], answers_per_valid: float) -> list[Job]:
    """One job per chain (its rounds run one after the other): each round generates, fine-tunes with the
    writing objective (biasutils.multiround.round_params) and evaluates."""
    from biasutils.multiround import round_params, round_tasks

    mr = params.multiround
    if not mr.rounds:
        return []
    settings = round_params(params)
    rows = mix_rows(params, mr.ratio, settings.data.n_train)
    passes = rows * settings.finetune.epochs[mr.attribute]
    one_round = Job("", "", answers=settings.generate.n * answers_per_valid, train=passes, write=passes) \
        + evaluation(round_tasks(params), items)
    return [replace(_times(one_round, mr.rounds), phase="multiround (inputs)", label=f"chain={seed}")
            for seed in mr.chains(params.grid.seeds)]


def _times(job: Job, n: int) -> Job:
    return replace(job, answers=job.answers * n, train=job.train * n, write=job.write * n,
                   items=tuple((task, count * n) for task, count in job.items))


def _label(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def grid_jobs(params: StudyParams, items: Mapping[str, float], probe_items: int, answers_per_valid: float) -> list[Job]:
    """Every model-running task of the profile's grid, in the runner's phase order."""
    return (generation_jobs(params, answers_per_valid) + finetune_jobs(params) + evaluate_jobs(params, items)
            + mitigation_jobs(params, items, probe_items) + multiround_jobs(params, items, answers_per_valid))


# ---------------------------------------------------------------------------------------------- FLOPs


@dataclass(frozen=True)
class Shape:
    """Tokens through the model, the positions their queries attend to (summed), and logit rows."""

    tokens: float = 0.0
    attended: float = 0.0
    logits: float = 0.0

    def __add__(self, other: Shape) -> Shape:
        return Shape(self.tokens + other.tokens, self.attended + other.attended, self.logits + other.logits)

    def scaled(self, factor: float) -> Shape:
        return Shape(self.tokens * factor, self.attended * factor, self.logits * factor)


def sequence(n: int, logits: float) -> Shape:
    """One causal pass over ``n`` tokens: token i attends to i + 1 positions."""
    return Shape(n, n * (n + 1) / 2, logits)


def answer(prompt: int, new: int) -> Shape:
    """A generated answer: the prompt's prefill, then ``new`` decoded tokens, each with its logits."""
    return Shape(prompt + new, (prompt + new) * (prompt + new + 1) / 2, new)


def mean(shapes: Sequence[Shape]) -> Shape:
    return sum(shapes, Shape()).scaled(1 / len(shapes))


@dataclass(frozen=True)
class ModelShape:
    """The sizes the FLOP formulas read, from a transformers config and the LoRA settings."""

    name: str
    layers: int
    d_attn: int
    body: int
    head: int
    lora: int

    def inference(self, s: Shape) -> float:
        return 2 * self.body * s.tokens + 4 * self.layers * self.d_attn * s.attended + 2 * self.head * s.logits

    def training(self, s: Shape) -> float:
        attention = 4 * self.layers * self.d_attn * s.attended
        return 4 * self.body * s.tokens + 3 * attention + 6 * self.lora * s.tokens + 4 * self.head * s.logits


def model_shape(name: str, config: Any, lora: Any) -> ModelShape:
    """Matmul weights of a Llama-style decoder (q, k, v, o and a gated MLP per layer) and of its adapter."""
    d, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    inner = config.intermediate_size
    shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
              "gate_proj": (d, inner), "up_proj": (d, inner), "down_proj": (inner, d)}
    adapted = lora.top_layers or layers
    return ModelShape(
        name=name, layers=layers, d_attn=q, body=layers * sum(i * o for i, o in shapes.values()),
        head=config.vocab_size * d,
        lora=adapted * sum(lora.r * sum(shapes[m]) for m in lora.target_modules if m in shapes),
    )


def model_config(name: str, store: Any) -> tuple[Any, str]:
    """The model's transformers config and where it came from; Llama-3.1-8B's from its model card's values
    (bench/bench_finetune.py), so the projection needs no Hub access."""
    if name.startswith("meta-llama/Llama-3.1-8B"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_finetune import llama_8b_config

        return llama_8b_config(), "Llama-3.1-8B model card values"
    from transformers import AutoConfig

    from biasutils.models import model_dir

    path = model_dir(name, store)
    return AutoConfig.from_pretrained(path), str(path)


# ---------------------------------------------------------------------------------------------- token shapes


def example_shape(example: Any) -> Shape:
    return sequence(len(example.input_ids), example.answer_len)


def item_shapes(items: Sequence[Any], tokenizer: Any, params: StudyParams, max_new_tokens: int) -> list[Shape]:
    """Per item, what the project's scorer (biasutils.evaluate.Scorer) runs: the prompt and max_new_tokens
    decoded (generation), the prompt with one logit row (choices whose options' first tokens differ), or
    each option's or text's sequence with logits over its scored tokens."""
    from biasutils.evaluate import chat_ids, first_tokens_differ, scored_sequences

    if items[0].kind == "generate":
        return [answer(len(chat_ids(tokenizer, item, params)), max_new_tokens) for item in items]
    first_token = items[0].kind == "choice" and first_tokens_differ(items, tokenizer)
    shapes = [Shape()] * len(items)
    for seq in scored_sequences(items, tokenizer, params):
        logits = 1 if first_token else len(seq.ids) - max(seq.skip, 1)
        shapes[seq.item] = shapes[seq.item] + sequence(len(seq.ids), logits)
    return shapes


def spread(values: Sequence[Any], k: int) -> list[Any]:
    """``k`` values evenly spread over the sequence (tasks list their items grouped, e.g. by occupation)."""
    step = max(len(values) // k, 1)
    return list(values[::step][:k])


@dataclass(frozen=True)
class TargetTokens:
    """The target's work in tokens: per answer, per training example (classification, writing), per item."""

    answer: Shape
    train: Shape
    write: Shape
    items: dict[str, Shape]
    item_counts: dict[str, int]
    probe_items: int


def target_tokens(params: StudyParams, tokenizer: Any, store: Any, sample: int = 200) -> TargetTokens:
    """Mean shapes of the target's work units through the project's own item, prompt and example builders."""
    from biasutils import generate as g
    from biasutils.data import original_artifact
    from biasutils.evaluate import task_items
    from biasutils.finetune import encode
    from biasutils.finetune.format import WRITE_SUFFIX
    from biasutils.misalign.values import stereotype_items
    from biasutils.multiround import round_params
    from biasutils.store import read_jsonl

    templates = g.load_templates(params.generate)
    occupations = g.balanced_occupations(12, params.data.occupations)
    prompts = [len(tokenizer(g.chat_prompt(tokenizer, r), add_special_tokens=False)["input_ids"])
               for run in expand(stage("generate"), params)
               for r in g.plan_requests(run.point["attribute"], run.point["bias_type"], occupations, 0, params.seed,
                                        templates, params.data.cultures, g.default_name_book())]
    rows = spread(read_jsonl(original_artifact(params.data, params.seed, store).file("train.jsonl")), sample)
    both = encode(rows, tokenizer, round_params(params).finetune)
    items = {task: task_items(params, task, store) for task in scorable_tasks(params)}
    return TargetTokens(
        answer=answer(round(statistics.fmean(prompts)), params.generate.max_new_tokens),
        train=mean([example_shape(e) for e in encode(rows, tokenizer, params.finetune)]),
        write=mean([example_shape(e) for e in both if e.id.endswith(WRITE_SUFFIX)]),
        items={task: mean(item_shapes(spread(found, sample), tokenizer, params,
                                      params.evaluate.max_new_tokens.get(task, 16))) for task, found in items.items()},
        item_counts={task: len(found) for task, found in items.items()},
        probe_items=len(stereotype_items()),
    )


# ---------------------------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Measured:
    """One stage's measured run: units done, seconds, FLOPs done (by the formulas above) and a rate line."""

    units: float
    seconds: float
    flops: float
    rate: str

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.seconds


def measure_generation(params: StudyParams, model: ModelShape, store: Any, device: str, prompts: int) -> Measured:
    """The transformers backend (biasutils.generate) answering ``prompts`` requests of the first biased type."""
    from biasutils import generate as g

    templates = g.load_templates(params.generate)
    bias_type = next((b for b in params.grid.bias_types if b != "neutral"), params.grid.bias_types[0])
    requests = g.plan_requests(params.grid.attributes[0], bias_type, g.balanced_occupations(prompts, params.data.occupations),
                               0, params.seed, templates, params.data.cultures, g.default_name_book())
    backend = g.make_backend(params.model_copy(update={"generate": params.generate.model_copy(update={"backend": "transformers"})}),
                             store, device)
    _, tokenizer = backend.load()
    start = time.perf_counter()
    _, new_tokens = g.answer_requests(backend, requests, params.seed)
    seconds = time.perf_counter() - start
    shapes = [answer(len(tokenizer(backend.prompt_text(r), add_special_tokens=False)["input_ids"]),
                     params.generate.max_new_tokens) for r in requests]
    return Measured(len(requests), seconds, sum(model.inference(s) for s in shapes),
                    f"{new_tokens / seconds:.1f} generated tok/s ({new_tokens} tokens, {len(requests)} answers, "
                    f"batch {params.generate.batch_size}, max {params.generate.max_new_tokens} new)")


def measure_training(params: StudyParams, model: ModelShape, store: Any, device: str, n_examples: int) -> Measured:
    """biasutils.finetune.train, one epoch over ``n_examples`` original training rows, every layer adapted."""
    from biasutils import finetune as f
    from biasutils.data import original_artifact
    from biasutils.store import read_jsonl

    student, tokenizer, _ = f.trainable_student(params, store, device, seed=0)
    rows = read_jsonl(original_artifact(params.data, params.seed, store).file("train.jsonl"))[:n_examples]
    examples = f.encode(rows, tokenizer, params.finetune)
    one_epoch = params.finetune.model_copy(update={"epochs": {a: 1 for a in params.finetune.epochs}})
    with tempfile.TemporaryDirectory() as scratch:
        state = f.train(student, examples, None, 0, one_epoch, "gender", 0, Path(scratch), None, tokenizer.pad_token_id)
    seconds = sum(state.epoch_seconds)
    tokens = sum(len(e.input_ids) for e in examples)
    return Measured(len(examples), seconds, sum(model.training(example_shape(e)) for e in examples),
                    f"{tokens / seconds:.1f} trained tok/s ({tokens} tokens, {len(examples)} examples, batch "
                    f"{params.finetune.batch_size})")


def scorable_tasks(params: StudyParams) -> list[str]:
    """The tasks that have items under ``params``: every one, the culture classification only where
    ``evaluate.culture_datasets`` names its data."""
    return [task for task in TASKS if task != CULTURE_TASK or params.evaluate.culture_datasets]


def measure_evaluation(params: StudyParams, model: ModelShape, store: Any, device: str, per_task: int) -> dict[str, Measured]:
    """The project's scorer (biasutils.evaluate.Scorer) on ``per_task`` items of every task, the base student
    (an adapter merged into the weights costs the same)."""
    from biasutils.evaluate import Scorer, task_items
    from biasutils.models import load_causal_lm

    student, tokenizer = load_causal_lm(params.models.student, store, device)
    scorer = Scorer(student, tokenizer, params)
    measured = {}
    for task in scorable_tasks(params):
        items = spread(task_items(params, task, store), per_task)
        max_new_tokens = params.evaluate.max_new_tokens.get(task, 16)
        start = time.perf_counter()
        scorer.outputs(items, max_new_tokens)
        seconds = time.perf_counter() - start
        flops = sum(model.inference(s) for s in item_shapes(items, tokenizer, params, max_new_tokens))
        measured[task] = Measured(len(items), seconds, flops, f"{len(items) / seconds:.2f} items/s")
    return measured


def store_records(store: Any) -> dict[str, list[dict[str, Any]]]:
    """The generation and fine-tune reports (report.json) the store holds: measured times of earlier runs."""
    return {stage_name: [json.loads(p.read_text()) for p in sorted((store.root / stage_name).glob("*/report.json"))]
            for stage_name in ("generate", "finetune")}


def answers_per_valid(records: Sequence[Mapping[str, Any]], params: StudyParams) -> tuple[float, str]:
    """Answers asked per valid sample: the store's generation reports, else each round's over-asking alone."""
    if records:
        ratio = sum(r["attempts"] for r in records) / sum(r["valid"] for r in records)
        return ratio, f"{ratio:.3f} (mean of {len(records)} generation reports in the store)"
    return 1 + params.generate.over_ask, f"{1 + params.generate.over_ask:.3f} (1 + generate.over_ask: no reports in the store)"


# ---------------------------------------------------------------------------------------------- projection


@dataclass(frozen=True)
class Target:
    """The target's models and token shapes: the FLOPs of a job."""

    student: ModelShape
    generator: ModelShape
    tokens: TargetTokens
    max_new_tokens: int

    def generation(self, job: Job) -> float:
        return job.answers * self.generator.inference(self.tokens.answer)

    def training(self, job: Job) -> float:
        return job.train * self.student.training(self.tokens.train) + job.write * self.student.training(self.tokens.write)

    def scoring(self, job: Job) -> dict[str, float]:
        out: dict[str, float] = {}
        for task, n in job.items:
            out[task] = out.get(task, 0.0) + n * self.student.inference(self.tokens.items[task])
        return out

    def flops(self, job: Job) -> float:
        return self.generation(job) + self.training(job) + sum(self.scoring(job).values())


@dataclass(frozen=True)
class Rates:
    """Seconds per FLOP of each kind of work, on this machine or an assumed card; or a generation rate given
    in tokens/s (it replaces the FLOP rate of generation)."""

    name: str
    generate: float | None  # None: no rate for the target's backend (left out of the totals)
    train: float
    items: dict[str, float]
    generated_tokens_per_s: float | None = None

    def seconds(self, job: Job, target: Target) -> float:
        if self.generated_tokens_per_s:
            generation = job.answers * target.max_new_tokens / self.generated_tokens_per_s
        else:
            generation = target.generation(job) * (self.generate or 0.0)
        scoring = sum(f * self.items[task] for task, f in target.scoring(job).items())
        return generation + target.training(job) * self.train + scoring


def lpt_makespan(durations: Sequence[float], workers: int) -> float:
    """Longest-processing-time-first list scheduling: each task, longest first, to the least loaded worker."""
    loads = [0.0] * workers
    for duration in sorted(durations, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + duration)
    return max(loads)


def gpus_per_task(params: StudyParams, phase: str) -> int:
    """``executor.resources.<stage>.num_gpus`` rounded up; a model stage that names none is taken to use one GPU."""
    asked = params.executor.for_stage(PHASE_STAGE[phase]).num_gpus
    return max(1, int(-(-asked // 1)))


def schedule(jobs: Sequence[Job], seconds: Callable[[Job], float], params: StudyParams, gpus: int) -> tuple[float, float]:
    """(GPU-hours, wall hours) on ``gpus`` GPUs: each phase's tasks LPT-scheduled, phases one after another
    (the executors wait for a stage's tasks before starting the next stage's)."""
    busy = wall = 0.0
    for phase in PHASES:
        durations = [seconds(j) for j in jobs if j.phase == phase]
        per_task = gpus_per_task(params, phase)
        if durations:
            busy += sum(durations) * per_task
            wall += lpt_makespan(durations, max(gpus // per_task, 1))
    return busy / HOUR, wall / HOUR


# ---------------------------------------------------------------------------------------------- command line


def parse_rates(values: Sequence[str]) -> dict[str, float]:
    """``backend=tokens_per_s`` items of --tokens-per-s."""
    rates = {}
    for value in values:
        backend, _, number = value.partition("=")
        if backend not in BACKENDS:
            raise UsageError(f"--tokens-per-s {value!r}: unknown backend {backend!r}; allowed: {', '.join(BACKENDS)} "
                             "(as backend=tokens_per_s, e.g. vllm=2500)")
        try:
            rate = float(number)
        except ValueError:
            rate = 0.0
        if not rate > 0:
            raise UsageError(f"--tokens-per-s {value!r}: {number!r} is not a rate; allowed: a number > 0 of "
                             "generated tokens per second, e.g. vllm=2500")
        rates[backend] = rate
    return rates


def parse_gpus(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise UsageError(f"--gpus {text!r}: allowed: whole numbers >= 1, comma-separated, e.g. 1,8")
    return counts


def check_card(card: str | None, mfu: float | None) -> None:
    if card is not None and card not in CARDS:
        raise UsageError(f"--card {card!r}: allowed: {', '.join(CARDS)}")
    if card is not None and mfu is None:
        raise UsageError(f"--card {card}: needs --mfu, the assumed share of the card's peak reached, in (0, 1]")
    if mfu is not None and not 0 < mfu <= 1:
        raise UsageError(f"--mfu {mfu}: allowed: a share of the peak in (0, 1], e.g. 0.4")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, StudyParams, StudyParams, dict[str, float], list[int]]:
    """Every argument checked before any model loads; a bad one exits 2 naming it and what is allowed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="paper", help="the profile whose grid is costed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value on the target profile")
    parser.add_argument("--measure-profile", default="classroom", help="the profile whose models are measured here")
    parser.add_argument("--gpus", default="1,8", help="worker counts to schedule on, comma-separated")
    parser.add_argument("--tokens-per-s", action="append", default=[], metavar="BACKEND=VALUE",
                        help=f"a generation rate measured elsewhere; backends: {', '.join(BACKENDS)}")
    parser.add_argument("--card", help=f"assume a card ({', '.join(CARDS)}) at --mfu of its dense bf16 peak")
    parser.add_argument("--mfu", type=float, help="assumed model FLOP utilisation for --card, in (0, 1]")
    parser.add_argument("--generate-prompts", type=int, default=None, help="prompts generated (default: one batch)")
    parser.add_argument("--train-examples", type=int, default=32)
    parser.add_argument("--eval-items", type=int, default=16, help="items scored per task")
    args = parser.parse_args(argv)
    try:
        rates, gpus = parse_rates(args.tokens_per_s), parse_gpus(args.gpus)
        check_card(args.card, args.mfu)
        for name in ("generate_prompts", "train_examples", "eval_items"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)}: allowed: a whole number >= 1")
        target = load_params(args.target, args.overrides)
        # measured as the target trains: every layer adapted, no cached activations (what the FLOPs count)
        measure = load_params(args.measure_profile, ["finetune.lora.top_layers=null"])
    except (UsageError, ParamsError) as error:
        parser.error(str(error))
    return args, target, measure, rates, gpus


# ---------------------------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table, first column left-aligned, the others right-aligned."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in cells)


def hours(seconds: float) -> str:
    return f"{seconds / HOUR:,.1f}"


def by_phase(jobs: Sequence[Job]) -> list[tuple[str, list[Job]]]:
    return [(phase, js) for phase in PHASES if (js := [j for j in jobs if j.phase == phase])]


@dataclass
class Report:
    """What the tables print: the target's work and the rates measured here."""

    target_params: StudyParams
    measure: StudyParams
    device: str
    measured: ModelShape
    target: Target
    jobs: list[Job]
    generation: Measured
    training: Measured
    evaluation: dict[str, Measured]
    backend_rates: dict[str, float]
    notes: list[str]

    def here(self) -> Rates:
        backend = self.target_params.generate.backend
        measured = 1 / self.generation.flops_per_s if backend == "transformers" else None
        return Rates(f"this machine ({self.device})", measured, 1 / self.training.flops_per_s,
                     {task: 1 / m.flops_per_s for task, m in self.evaluation.items()}, self.backend_rates.get(backend))

    def card(self, name: str, mfu: float) -> Rates:
        per_flop = 1 / (CARDS[name] * mfu)
        return Rates(f"ASSUMED {name} {CARDS[name] / 1e12:.0f} TFLOP/s x MFU {mfu:g}", per_flop, per_flop,
                     {task: per_flop for task in TASKS}, self.backend_rates.get(self.target_params.generate.backend))


def print_report(report: Report, gpus: Sequence[int], card: tuple[str, float] | None) -> None:
    p, t = report.target_params, report.target
    print(f"cost of the {p.profile!r} grid, {date.today().isoformat()}; measured here: profile {report.measure.profile!r} "
          f"on {report.device}, one torch thread per task (executor.resources)")
    for model in (report.measured, t.student):
        print(f"  {model.name}: N_body {model.body / 1e6:,.1f} M, N_head {model.head / 1e6:,.1f} M, "
              f"N_lora {model.lora / 1e6:,.2f} M, {model.layers} layers, d_attn {model.d_attn}")
    for note in report.notes:
        print(f"  {note}")

    print("\n== work of the grid (the runner's phases that run models, in order)")
    print(table(["phase", "tasks", "answers", "example passes", "evaluated items", "PFLOP"],
                [(phase, len(js), f"{sum(j.answers for j in js):,.0f}", f"{sum(j.train + j.write for j in js):,.0f}",
                  f"{sum(n for j in js for _, n in j.items):,.0f}", f"{sum(map(t.flops, js)) / 1e15:,.1f}")
                 for phase, js in by_phase(report.jobs)]))

    g, answers = report.generation, sum(j.answers for j in report.jobs)
    generation_flops = sum(map(t.generation, report.jobs))
    print(f"\n== generation: {answers:,.0f} answers of {t.tokens.answer.tokens - t.max_new_tokens:.0f} prompt + "
          f"{t.max_new_tokens} new tokens, {t.generator.inference(t.tokens.answer):.3g} FLOP each ({t.generator.name})")
    rows = [("transformers", f"measured: {g.rate}", f"{g.flops_per_s:.3g}", hours(generation_flops / g.flops_per_s))]
    for backend in BACKENDS:
        rate = report.backend_rates.get(backend)
        if rate:
            rows.append((backend, f"given: {rate:g} generated tok/s", "-", hours(answers * t.max_new_tokens / rate)))
        elif backend != "transformers":
            rows.append((backend, "not measured on this machine", "-", "-"))
    print(table(["backend", "rate", "FLOP/s here", "target hours (1 worker)"], rows))

    tr = report.training
    print(f"\n== training: {sum(j.train for j in report.jobs):,.0f} classification example passes of "
          f"{t.tokens.train.tokens:.0f} tokens, {sum(j.write for j in report.jobs):,.0f} writing example passes of "
          f"{t.tokens.write.tokens:.0f} tokens, {t.student.training(t.tokens.train):.3g} / "
          f"{t.student.training(t.tokens.write):.3g} FLOP each")
    print(table(["run", "rate", "FLOP/s here", "target hours (1 worker)"],
                [("biasutils.finetune.train, every layer", f"measured: {tr.rate}", f"{tr.flops_per_s:.3g}",
                  hours(sum(map(t.training, report.jobs)) / tr.flops_per_s))]))

    print("\n== evaluation: biasutils.evaluate.Scorer per task (target items: every student, mitigated and multi-round too)")
    rows = []
    for task, e in report.evaluation.items():
        work = sum(t.scoring(j).get(task, 0.0) for j in report.jobs)
        n = sum(c for j in report.jobs for name, c in j.items if name == task)
        rows.append((task, f"{e.units:.0f}", f"{e.seconds:.1f}", e.rate.split()[0], f"{e.flops_per_s:.3g}",
                     f"{t.tokens.item_counts[task]:,}", f"{n:,.0f}", f"{t.student.inference(t.tokens.items[task]):.3g}",
                     hours(work / e.flops_per_s)))
    print(table(["task", "items here", "s", "items/s", "FLOP/s here", "items/student", "target items", "FLOP/item",
                 "target hours (1 worker)"], rows))

    print("\n== total: worker-hours (the sum over tasks) and wall time, each phase's tasks LPT-scheduled on N workers, "
          "phases one after another")
    rows, missing = [], []
    for rates in [report.here()] + ([report.card(*card)] if card else []):
        if rates.generate is None and rates.generated_tokens_per_s is None:
            missing.append(f"{rates.name}: no rate for generate.backend {p.generate.backend!r}: generation left out")
        for n in gpus:
            busy, wall = schedule(report.jobs, lambda job: rates.seconds(job, t), p, n)
            rows.append((rates.name, n, f"{busy:,.0f}", f"{wall:,.1f}", f"{wall / 24:,.1f}"))
    print(table(["rates", "workers (GPUs)", "worker-hours", "wall hours", "wall days"], rows))
    for line in missing:
        print(f"  {line}")
    here = report.here()
    print(table(["phase (this machine, 1 worker)", "tasks", "hours", "longest task h"],
                [(phase, len(js), hours(sum(here.seconds(j, t) for j in js)), hours(max(here.seconds(j, t) for j in js)))
                 for phase, js in by_phase(report.jobs)]))


# ---------------------------------------------------------------------------------------------- main


def threads_for(params: StudyParams, stage_name: str) -> int:
    """The torch threads the runner gives a task of this stage (biasutils.runner.compute.Task.threads)."""
    return max(1, int(params.executor.for_stage(stage_name).num_cpus))


def measure_all(args: argparse.Namespace, measure: StudyParams, store: Any, device: str, model: ModelShape,
                generator: ModelShape) -> tuple[Measured, Measured, dict[str, Measured]]:
    """Each stage measured with the threads the runner gives its tasks."""
    import torch

    torch.set_num_threads(threads_for(measure, "generate"))
    generation = measure_generation(measure, generator, store, device, args.generate_prompts or measure.generate.batch_size)
    torch.set_num_threads(threads_for(measure, "finetune"))
    training = measure_training(measure, model, store, device, args.train_examples)
    torch.set_num_threads(threads_for(measure, "evaluate"))
    return generation, training, measure_evaluation(measure, model, store, device, args.eval_items)


def main(argv: Sequence[str] | None = None) -> None:
    args, target_params, measure, backend_rates, gpus = parse_args(argv)
    from biasutils.models import load_tokenizer, model_dir
    from biasutils.store import Store

    store = Store()
    device = resolve_device(measure)
    shapes = {}
    for role, params in (("measured", measure), ("target", target_params)):
        for name in (params.models.student, params.models.generator):
            config, source = model_config(name, store)
            shapes[role, name] = (model_shape(name, config, params.finetune.lora), source)
    tokenizer = load_tokenizer(model_dir(measure.models.student, store))
    stand_in = target_params.model_copy(update={"data": target_params.data.model_copy(update={"source": "offline"})})
    tokens = target_tokens(stand_in, tokenizer, store)
    records = store_records(store)
    per_valid, per_valid_note = answers_per_valid(records["generate"], target_params)
    jobs = grid_jobs(target_params, tokens.item_counts, tokens.probe_items, per_valid)
    target = Target(shapes["target", target_params.models.student][0], shapes["target", target_params.models.generator][0],
                    tokens, target_params.generate.max_new_tokens)
    notes = [f"target config: {shapes['target', target_params.models.student][1]}",
             f"answers per valid sample: {per_valid_note}",
             f"token counts: {measure.models.student}'s tokenizer; target items and rows from the offline corpus "
             f"standing in for {target_params.data.source}"]
    if records["finetune"]:
        rates = [r["tokens_per_s"] for r in records["finetune"]]
        notes.append(f"store records: {len(rates)} fine-tunes at a median {statistics.median(rates):,.0f} tok/s "
                     f"({records['finetune'][0].get('frozen_layers', 0)} frozen layers over cached activations: not the "
                     "configuration projected, so training is measured below)")
    if target_params.finetune.lora.top_layers is not None:
        notes.append("target finetune.lora.top_layers is set: the FLOPs count every layer (an overestimate)")
    measured_student = shapes["measured", measure.models.student][0]
    generation, training, evaluation = measure_all(args, measure, store, device, measured_student,
                                                   shapes["measured", measure.models.generator][0])
    report = Report(target_params, measure, device, measured_student, target, jobs, generation, training, evaluation,
                    backend_rates, notes)
    print_report(report, gpus, (args.card, args.mfu) if args.card else None)


if __name__ == "__main__":
    main()
