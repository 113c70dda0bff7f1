"""Evaluate a (fine-tuned) student on the downstream tasks, per group.

Tasks (``biasutils.tasks``) describe items and how to score outputs; this module turns items into
outputs with the model (:class:`Scorer`) and stores per-sample predictions and per-group metrics as an
artifact per (adapter, task).

How items become outputs:
- ``choice``: one score per option. When the options' first tokens differ (the six occupation titles,
  "A"/"B", "yes"/"no"), the score is the log-probability of the option's first token at the answer
  position, the standard letter-scoring of multiple-choice evaluation: one forward pass per item.
  Otherwise each option's full continuation is scored.
- ``sequences``: the total log-likelihood of each text.
- ``generate``: greedy decoding, batched.
With ``finetune.lora.top_layers`` the bottom layers are frozen in every adapter, so their activations
for every sequence a task scores (:func:`scored_sequences`) are computed once and shared by every model
of the grid (as in training); only generation runs the whole model per student.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import StudyParams, precision_key, resolve_device
from .finetune import (
    Example, collate, decoder_parts, final_hidden, frozen_layer_count, head_logits, lower_activations, placement,
    prompt_text,
)
from .store import Artifact, Store, canonical_json, write_jsonl, write_text_atomic

if TYPE_CHECKING:  # torch is imported by the functions that compute with it: a notebook reading results needs none
    import torch

STAGE = "evaluate"
VERSION = "1"
TASK_CACHE_STAGE = "task-activations"


def chat_ids(tokenizer: Any, item: Any, params: StudyParams) -> list[int]:
    """Token ids of an item's prompt: the training format for occupation items, a plain user turn else."""
    if item.meta.get("format") == "occupation":
        text = prompt_text(tokenizer, item.prompt, params.finetune)
    else:
        text = tokenizer.apply_chat_template([{"role": "user", "content": item.prompt}], add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class ScoredSequence:
    """One token sequence the scorer runs through the model for an item, and its activation-cache key."""

    item: int  # position of the item in the task's list
    key: str  # the item id, or "<item id>/<k>" for an item's k-th option or text
    ids: tuple[int, ...]
    skip: int  # leading tokens whose log-probabilities are not scored (the prompt, or BOS)


def first_tokens_differ(items: Sequence[Any], tokenizer: Any) -> bool:
    """Whether every choice item's options start with distinct tokens, so one forward pass scores each item."""
    return all(len({ids[0] for ids in _option_ids(item, tokenizer)}) == len(item.options) for item in items)


def _option_ids(item: Any, tokenizer: Any) -> list[list[int]]:
    return [tokenizer(option, add_special_tokens=False)["input_ids"] for option in item.options]


def scored_sequences(items: Sequence[Any], tokenizer: Any, params: StudyParams) -> list[ScoredSequence]:
    """The sequences behind a task's outputs, in output order; empty for generation (it is not cacheable).

    ``choice`` items with distinct first tokens: the prompt alone (its last position scores every
    option); other ``choice`` items: prompt + option, scored over the option; ``sequences`` items:
    BOS + text, scored over the text.
    """
    kind = items[0].kind if items else "generate"
    if kind == "choice" and first_tokens_differ(items, tokenizer):
        return [ScoredSequence(i, item.id, tuple(chat_ids(tokenizer, item, params)), 0) for i, item in enumerate(items)]
    if kind == "choice":
        out = []
        for i, item in enumerate(items):
            prompt = chat_ids(tokenizer, item, params)
            out += [ScoredSequence(i, f"{item.id}/{k}", tuple(prompt + ids), len(prompt))
                    for k, ids in enumerate(_option_ids(item, tokenizer))]
        return out
    if kind == "sequences":
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        return [ScoredSequence(i, f"{item.id}/{k}", tuple(bos + tokenizer(text, add_special_tokens=False)["input_ids"]), len(bos))
                for i, item in enumerate(items) for k, text in enumerate(item.texts)]
    return []


class Scorer:
    """Outputs for items from one model; optional cached bottom-layer activations keyed by sequence key.

    Sequences are batched by length (little left padding) and the outputs come back in the items' order;
    with cached activations the top layer runs its queries and MLP only where log-probabilities are read.
    """

    def __init__(self, model: Any, tokenizer: Any, params: StudyParams, cached: Mapping[str, torch.Tensor] | None = None,
                 batch_size: int = 16) -> None:
        self.model, self.tokenizer, self.params = model, tokenizer, params
        self.cached = cached
        self.n_frozen = frozen_layer_count(model, params.finetune) if cached is not None else 0
        self.n_layers = decoder_parts(model)[0].config.num_hidden_layers
        self.batch_size = batch_size
        self.device, self.dtype = placement(model)

    # -- internals -----------------------------------------------------------------------------------

    def _hidden(self, sequences: Sequence[ScoredSequence], last: int) -> torch.Tensor:
        """Final hidden states of left-padded sequences (from cached activations when the scorer has them).

        Only the last ``last`` positions are read: the result may hold just those (index it from the end).
        """
        import torch

        examples = [Example(s.key, s.ids, 0, "", "") for s in sequences]
        batch = collate(examples, self.cached, self.device, self.tokenizer.pad_token_id, self.dtype)
        with torch.inference_mode():
            return final_hidden(self.model, batch, (self.n_frozen, self.n_layers) if self.cached is not None else None, last)

    def _by_length(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Batches of indices, shortest sequences first: left padding to the longest of a batch then pads
        little (mixed lengths of ~100 tokens waste about a quarter of every batch)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _last_logprobs(self, sequences: Sequence[ScoredSequence]) -> torch.Tensor:
        """Log-probabilities of the next token after each sequence, [len(sequences), vocab], in their order."""
        import torch

        out: list[torch.Tensor | None] = [None] * len(sequences)
        for indices in self._by_length([len(s.ids) for s in sequences]):
            hidden = self._hidden([sequences[i] for i in indices], last=1)
            with torch.inference_mode():
                logprobs = torch.log_softmax(head_logits(self.model, hidden[:, -1]), dim=-1).cpu()
            for row, i in enumerate(indices):
                out[i] = logprobs[row]
        return torch.stack(out) if out else torch.empty(0)

    def _sequence_logliks(self, sequences: Sequence[ScoredSequence]) -> list[float]:
        """Sum of log p(token) over each sequence, ignoring its first ``skip`` tokens, in their order.

        Left padding puts every scored tail at the end, so the LM head (a fifth of SmolLM2's FLOPs per
        position) and the top layer run on the last positions only, not on the prompt.
        """
        import torch

        totals: list[float] = [0.0] * len(sequences)
        for indices in self._by_length([len(s.ids) for s in sequences]):
            batch = [sequences[i] for i in indices]
            scored = [len(seq.ids) - max(seq.skip, 1) for seq in batch]  # targets per sequence
            window = max(scored)
            hidden = self._hidden(batch, last=window + 1)
            with torch.inference_mode():
                logprobs = torch.log_softmax(head_logits(self.model, hidden[:, -window - 1 : -1]), dim=-1).cpu()
            for row, (i, seq, n) in enumerate(zip(indices, batch, scored)):
                targets = torch.tensor(seq.ids[len(seq.ids) - n :])
                totals[i] = float(logprobs[row, window - n :].gather(1, targets[:, None]).sum())
        return totals

    def _per_item(self, items: Sequence[Any], sequences: Sequence[ScoredSequence], scores: Sequence[float]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in items]
        for seq, score in zip(sequences, scores):
            out[seq.item].append(score)
        return out

    # -- the three kinds ---------------------------------------------------------------------------------

    def choice(self, items: Sequence[Any]) -> list[list[float]]:
        sequences = scored_sequences(items, self.tokenizer, self.params)
        if first_tokens_differ(items, self.tokenizer):  # one prompt per item: first-token scores
            logprobs = self._last_logprobs(sequences)
            return [[float(logprobs[i, ids[0]]) for ids in _option_ids(item, self.tokenizer)] for i, item in enumerate(items)]
        return self._per_item(items, sequences, self._sequence_logliks(sequences))

    def sequences(self, items: Sequence[Any]) -> list[list[float]]:
        sequences = scored_sequences(items, self.tokenizer, self.params)
        return self._per_item(items, sequences, self._sequence_logliks(sequences))

    def generate(self, items: Sequence[Any], max_new_tokens: int) -> list[str]:
        """Greedy answers, in the items' order (batched by prompt length)."""
        import torch

        prompts = [chat_ids(self.tokenizer, item, self.params) for item in items]
        answers: list[str] = [""] * len(prompts)
        for indices in self._by_length([len(p) for p in prompts]):
            batch = [prompts[i] for i in indices]
            width = max(len(p) for p in batch)
            ids = torch.tensor([[self.tokenizer.pad_token_id] * (width - len(p)) + p for p in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
            for i, answer in zip(indices, self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)):
                answers[i] = answer
        return answers

    def outputs(self, items: Sequence[Any], max_new_tokens: int) -> list[Any]:
        """Outputs for a task's items, all of one kind."""
        kinds = {item.kind for item in items}
        if len(kinds) != 1:
            raise ValueError(f"items of one task must share one kind; got {sorted(kinds)}")
        kind = kinds.pop()
        if kind == "choice":
            return self.choice(items)
        if kind == "sequences":
            return self.sequences(items)
        if kind == "generate":
            return self.generate(items, max_new_tokens)
        raise ValueError(f"item kind {kind!r} is unknown; allowed: choice, sequences, generate")


def task_activations(params: StudyParams, task: str, items: Sequence[Any], store: Store) -> dict[str, torch.Tensor] | None:
    """Bottom-layer activations of every sequence a task scores, shared by every adapter of the grid.

    None without ``finetune.lora.top_layers`` (nothing is frozen) and for generation tasks.
    """
    from safetensors.torch import load_file, save_file

    from .models import load_study_lm, load_tokenizer, model_dir

    if params.finetune.lora.top_layers is None or not items:
        return None
    tokenizer = load_tokenizer(model_dir(params.models.student, store))
    sequences = scored_sequences(items, tokenizer, params)
    if not sequences:
        return None
    key_params = {"student": params.models.student, **precision_key(params.dtype),
                  "top_layers": params.finetune.lora.top_layers, "task": task,
                  "sequences": canonical_json([[s.key, s.ids] for s in sequences])}

    def compute(out: Path, scratch: Path) -> None:
        model, _ = load_study_lm(params, params.models.student, store)
        examples = [Example(s.key, s.ids, 0, "", "") for s in sequences]
        hidden = lower_activations(model, examples, frozen_layer_count(model, params.finetune))
        save_file({e.id: h.contiguous() for e, h in zip(examples, hidden)}, str(out / "activations.safetensors"))

    artifact = store.get_or_compute(TASK_CACHE_STAGE, key_params, compute, version=VERSION)
    return load_file(str(artifact.file("activations.safetensors")))


def configured_task(params: StudyParams, name: str, seed: int) -> Any:
    """The registered task with this run's resampling settings."""
    from dataclasses import replace

    from .config import TASKS as TASK_NAMES
    from .tasks import TASKS

    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; allowed: {', '.join(TASK_NAMES)}")
    return replace(TASKS[name], n_boot=params.evaluate.n_boot, seed=seed)


_ITEMS: dict[tuple[str, str, str], tuple[Any, ...]] = {}


def task_items(params: StudyParams, name: str, store: Store) -> list[Any]:
    """A task's items, built once per process for the same params and store.

    Why: building the 480 counterfactual twins takes about half a second, and planning, computing and the
    report each ask for a task's items at every student.
    """
    key = (name, params.model_dump_json(), str(store.root))
    if key not in _ITEMS:
        _ITEMS[key] = tuple(configured_task(params, name, 0).items(params, store))
    return list(_ITEMS[key])


_LOADED: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def loaded_student(params: StudyParams, adapter: Artifact, store: Store, device: str) -> tuple[Any, Any]:
    """The student with this adapter, loaded once for all tasks of a grid point (one kept in memory).

    Why: loading SmolLM2 and applying an adapter takes ~6 s on the CPU, more than scoring most tasks.
    """
    from .finetune import load_student

    key = (params.models.student, adapter.key, device)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_student(params, adapter, store, device)
    return _LOADED[key]


def evaluate_artifact(
    params: StudyParams, attribute: str, bias_type: str, ratio: float, seed: int, task_name: str, store: Store,
    adapter: Artifact | None = None,
) -> Artifact:
    """Raw outputs (``outputs.jsonl``), per-sample predictions (``predictions.jsonl``) and group metrics (``metrics.csv``) of one
    fine-tuned student on one task. ``adapter`` replaces the default fine-tune (mitigations pass theirs)."""
    from .finetune import finetune_artifact

    adapter = adapter or finetune_artifact(params, attribute, bias_type, ratio, seed, store)
    task = configured_task(params, task_name, seed)
    items = task_items(params, task_name, store)
    max_new_tokens = params.evaluate.max_new_tokens.get(task_name, 16)
    key_params = {
        "task": task_name, "n_boot": params.evaluate.n_boot, "seed": seed, "max_new_tokens": max_new_tokens,
        "items": canonical_json([[item.id, item.kind, item.prompt, item.options, item.texts] for item in items]),
    }
    if task.meta_in_key:  # gold labels and groups read from a user's files (the culture task)
        key_params["meta"] = canonical_json([item.meta for item in items])

    def compute(out: Path, scratch: Path) -> None:
        model, tokenizer = loaded_student(params, adapter, store, resolve_device(params))
        cached = task_activations(params, task_name, items, store)
        outputs = Scorer(model, tokenizer, params, cached).outputs(items, max_new_tokens)
        predictions, metrics = task.score(items, outputs)
        write_jsonl(({"id": item.id, "output": output} for item, output in zip(items, outputs)), out / "outputs.jsonl")
        write_jsonl(predictions.to_dict("records"), out / "predictions.jsonl")
        write_text_atomic(out / "metrics.csv", metrics.to_csv(index=False))

    return store.get_or_compute(STAGE, key_params, compute, inputs=[adapter.key], version=VERSION)
