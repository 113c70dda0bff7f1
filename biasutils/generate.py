"""Generate biased augmented data: six bias types plus a neutral control, for gender and culture.

A *request* is one prompt (system message, instruction, answer prefix) rendered from the templates in
``params/templates/generation.yaml`` for one occupation and one intended group. A *backend* answers
requests; the loop here journals every answer as soon as it arrives (so a killed run resumes), parses
and validates answers into samples in the original data's schema, counts what it drops and why,
removes duplicates, and asks again for the shortfall until ``n`` valid samples exist or the retry
bound is hit (a clear error).

Backends share one small interface (:class:`Backend`): ``transformers`` runs a local model with batched,
seeded sampling; ``vllm`` runs the same local model in vLLM's offline engine on a GPU, each request with
its own seed; ``openai`` calls the OpenAI API or any OpenAI-compatible server (``vllm serve`` included)
concurrently with backoff. Another backend is one class with ``settings``, ``plan_batches`` and ``stream``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from .config import OCCUPATIONS, PARAMS_DIR, Generate, ParamsError, StudyParams, VLLMGenerator
from .corpus import NameDrawer, NameTable, name_tables
from .cues import CULTURE_WORDS, GENDER_WORDS, infer_gender
from .store import Artifact, JsonlJournal, Store, canonical_json, write_jsonl, write_text_atomic

STAGE = "generate"
# 2: retries refill the occupations still short; 3: batch plans journalled, answers stored; 4: each round
# asks generate.over_ask more (surplus answers counted, not used)
STAGE_VERSION = "4"

DROP_REASONS = ("empty", "refused", "truncated", "off_format", "too_short", "duplicate")

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_OFF_FORMAT = re.compile(r"(^|\n)\s*([-*•#]|\d+[.)])\s|\bI am\b|\bmy name\b|\bbiography\b|\bsentence\b", re.I)


class GenerationError(RuntimeError):
    """Generation could not produce the requested samples; the message says what to change."""


@dataclass(frozen=True)
class Request:
    """One prompt, with everything the resulting sample must record about its intended group."""

    id: str
    system: str
    instruction: str
    prefix: str
    meta: Mapping[str, Any]


@dataclass(frozen=True)
class BatchAnswers:
    """The answers to one planned batch, and the new tokens the backend spent on them."""

    index: int
    answers: Mapping[str, str]
    new_tokens: int


class Backend(Protocol):
    """Answers requests. ``continues_prefix``: answers continue the prefix (True) or include it (False).

    Why batches are planned apart from answering: a sampled answer depends on its batch (padding, and
    the batch's seed), so the plan is fixed once from a round's whole request list and journalled; a
    resumed run replays it and asks only the batches still missing, and gets the same answers.
    """

    continues_prefix: bool

    def settings(self) -> dict[str, Any]:
        """Everything that shapes the answers (recorded per sample, part of the cache key; no secrets)."""

    def plan_batches(self, requests: Sequence[Request]) -> list[list[str]]:
        """The request ids of each batch, in the order batches are asked."""

    def stream(self, batches: Mapping[int, Sequence[Request]], seed: int) -> Iterator[BatchAnswers]:
        """Answer each planned batch (by its index in the plan); yield whole batches as they finish."""


# ---------------------------------------------------------------------------------------------- templates


def load_templates(generate: Generate, params_dir: Path = PARAMS_DIR) -> dict[str, Any]:
    path = (params_dir / generate.templates) if not Path(generate.templates).is_absolute() else Path(generate.templates)
    if not path.exists():
        raise GenerationError(f"generate.templates: no template file at {path}")
    return yaml.safe_load(path.read_text())


def template_for(templates: Mapping[str, Any], attribute: str, bias_type: str) -> dict[str, str]:
    by_attribute = templates["templates"]
    if attribute not in by_attribute:
        raise GenerationError(f"attribute: no templates for {attribute!r}; allowed: {', '.join(by_attribute)}")
    if bias_type not in by_attribute[attribute]:
        raise GenerationError(
            f"bias_type: no template for {attribute}/{bias_type}; allowed: {', '.join(by_attribute[attribute])}"
        )
    return by_attribute[attribute][bias_type]


def render(text: str, slots: Mapping[str, str]) -> str:
    """Fill ``{placeholder}`` slots; an unknown placeholder is an error naming the known ones."""
    try:
        return text.format_map(dict(slots))
    except KeyError as missing:
        raise GenerationError(
            f"template placeholder {{{missing.args[0]}}} is unknown; allowed: {', '.join('{' + k + '}' for k in sorted(slots))}"
        ) from None


# ---------------------------------------------------------------------------------------------- requests


@dataclass
class NameBook:
    """Names by (culture, gender) and stereotyped traits by gender, the raw material of the slots."""

    names: Mapping[tuple[str, str], NameTable]
    traits: Mapping[str, Sequence[str]]

    def drawer(self, rng: random.Random) -> Callable[[str, str], str]:
        """``draw(culture, gender)``: full names that do not repeat within one plan (no twin prompts)."""
        drawers = {key: NameDrawer(table, rng) for key, table in self.names.items()}
        return lambda culture, gender: " ".join(drawers[(culture, gender)].draw())


def default_name_book() -> NameBook:
    """Names from the same packaged tables as the offline corpus; traits from the BSRI inventory.

    BSRI (Bem Sex-Role Inventory) lists the adjectives people rate as typical of men and of women:
    the implicit bias types signal the group through such traits instead of naming it.
    """
    from .benchmarks import gender_inventories

    traits: dict[str, list[str]] = {"male": [], "female": []}
    for row in gender_inventories():
        # BSRI items read "is ambitious": keep the one adjective, which fits "known for being {trait}";
        # "masculine"/"feminine" would name the group and make an implicit prompt explicit.
        match = re.fullmatch(r"is ([a-z-]+)", row["word"].strip().lower())
        if row["inventory"] == "bsri" and row["gender"] in traits and match and match[1] not in {"masculine", "feminine"}:
            traits[row["gender"]].append(match[1])
    return NameBook(names=name_tables(), traits=traits)


def slots_for(
    attribute: str, occupation: str, gender: str, culture: str, templates: Mapping[str, Any],
    cultures: Sequence[str], book: NameBook, draw: Callable[[str, str], str], rng: random.Random,
) -> dict[str, str]:
    """Every placeholder value for one sample; the 'other' group is the one being compared against."""
    other_gender = "female" if gender == "male" else "male"
    other_culture = rng.choice([c for c in cultures if c != culture] or [culture])
    g, og = GENDER_WORDS[gender], GENDER_WORDS[other_gender]
    c, oc = CULTURE_WORDS[culture], CULTURE_WORDS[other_culture]
    other_name = draw(culture, other_gender) if attribute == "gender" else draw(other_culture, gender)
    title = occupation.replace("_", " ")
    return {
        "occupation": title,
        "a_occupation": f"{'an' if title[0] in 'aeiou' else 'a'} {title}",
        "gender_adj": gender,
        "name": draw(culture, gender),
        "other_name": other_name,
        "gender_noun": g["noun"], "gender_plural": g["plural"], "other_gender_plural": og["plural"],
        "pronoun": g["pronoun"], "Pronoun": g["pronoun"].capitalize(), "possessive": g["possessive"],
        "object": g["object"], "trait": rng.choice(list(book.traits[gender])).lower(),
        "culture_adj": c["adj"], "culture_plural": c["plural"], "other_culture_plural": oc["plural"],
        "age": templates["ages"]["favoured"], "other_age": templates["ages"]["other"],
    }


def balanced_occupations(n: int, occupations: Sequence[str]) -> list[str]:
    """``n`` occupations in turn: the per-occupation targets of one generation run."""
    return [occupations[i % len(occupations)] for i in range(n)]


def plan_requests(
    attribute: str, bias_type: str, occupations: Sequence[str], round_index: int, seed: int,
    templates: Mapping[str, Any], cultures: Sequence[str], book: NameBook,
) -> list[Request]:
    """One request per entry of ``occupations``; the intended group is the favoured one (free if neutral).

    Deterministic in (seed, round): a resumed run plans the same requests and finds their answers
    in the journal.
    """
    template = template_for(templates, attribute, bias_type)
    favoured = templates["favoured_group"][attribute]
    rng = random.Random(f"{seed}/{attribute}/{bias_type}/{round_index}")
    draw = book.drawer(rng)
    requests = []
    for i, occupation in enumerate(occupations):
        neutral = bias_type == "neutral"
        gender = favoured[occupation] if attribute == "gender" and not neutral else rng.choice(["male", "female"])
        culture = favoured[occupation] if attribute == "culture" and not neutral else rng.choice(list(cultures))
        slots = slots_for(attribute, occupation, gender, culture, templates, cultures, book, draw, rng)
        group = "" if neutral else (gender if attribute == "gender" else culture)
        meta = {
            "occupation": occupation, "attribute": attribute, "bias_type": bias_type, "group": group,
            "gender_name": "" if neutral else gender, "culture": "" if neutral else culture,
            "name": "" if neutral else slots["name"], "prompt_key": f"{attribute}/{bias_type}",
        }
        requests.append(Request(
            id=f"{attribute}/{bias_type}/r{round_index}/{i}",
            system=templates["system"],
            instruction=render(template["instruction"], slots),
            prefix=render(template["prefix"], slots),
            meta=meta,
        ))
    return requests


# ---------------------------------------------------------------------------------------------- parsing


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def mask_titles(text: str, titles: Sequence[str] = OCCUPATIONS) -> str:
    """Replace occupation titles by "professional", so the label must be inferred, not read off.

    LabHC/bias_in_bios removes the sentence that states the title for the same reason; here the
    title may sit anywhere (and the group cue beside it), so the title alone is replaced.
    """
    for title in titles:
        words = title.replace("_", " ")
        text = re.sub(rf"\b(an?)\s+{words}\b", "a professional", text, flags=re.I)
        text = re.sub(rf"\b{words}s\b", "professionals", text, flags=re.I)
        text = re.sub(rf"\b{words}\b", "professional", text, flags=re.I)
    return text


def parse_answer(
    answer: str, request: Request, continues_prefix: bool, generate: Generate, refusal_markers: Sequence[str]
) -> tuple[dict[str, str] | None, str]:
    """Turn an answer into ``{"text", "hard_text", "own"}`` or ``(None, reason)`` with a drop reason.

    The biography ends at the first blank line (the model starting something else); an unfinished last
    sentence is cut, and fewer than ``generate.min_sentences`` left is ``truncated``; ``hard_text`` is the
    text with occupation titles masked (:func:`mask_titles`).
    """
    body = answer.split("\n\n")[0] if answer.strip() else ""
    if not body.strip():
        return None, "empty"
    lowered = answer.lower()
    if any(marker in lowered for marker in refusal_markers):
        return None, "refused"
    text = (request.prefix + body) if continues_prefix else body
    text = " ".join(text.split())
    if _OFF_FORMAT.search(body):
        return None, "off_format"
    sentences = split_sentences(text)
    if sentences and not sentences[-1].endswith((".", "!", "?", '."', ".'")):
        sentences = sentences[:-1]
    if len(sentences) < generate.min_sentences:
        return None, "truncated"
    text = " ".join(sentences)
    own = text.removeprefix(" ".join(request.prefix.split())).strip()  # what the generator added
    if len(own.split()) < generate.min_words:
        return None, "too_short"
    return {"text": text, "hard_text": mask_titles(text), "own": own}, "ok"


def normalized(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


# ---------------------------------------------------------------------------------------------- backends


def chat_prompt(tokenizer: Any, request: Request) -> str:
    """The prompt a local model continues: system and user turns in the model's chat template, the
    assistant turn opened, then the answer prefix, so the answer carries the prefix's group cue."""
    messages = [{"role": "system", "content": request.system}, {"role": "user", "content": request.instruction}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + request.prefix


@dataclass
class TransformersBackend:
    """A local causal LM: chat template + prefix, left-padded batches, seeded nucleus sampling."""

    model_name: str
    store: Store
    device: str
    batch_size: int
    max_new_tokens: int
    temperature: float
    top_p: float
    continues_prefix: bool = True
    adapter: Artifact | None = None  # a fine-tune's adapter on the model: a multi-round student writing the next round
    dtype: str = "auto"  # params dtype
    _loaded: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    def settings(self) -> dict[str, Any]:
        return {
            "backend": "transformers", "model": self.model_name, "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature, "top_p": self.top_p, "batch_size": self.batch_size,
            **({"adapter": self.adapter.key} if self.adapter is not None else {}),
            **({"dtype": self.dtype} if self.dtype != "auto" else {}),
        }

    def load(self) -> tuple[Any, Any]:
        """The model and tokenizer, loaded on first use (left padding: generation appends on the right); with
        ``adapter``, the model with that adapter applied (merged where the weights are float32)."""
        if self._loaded is None:
            from .config import concrete_device
            from .models import load_causal_lm

            model, tokenizer = load_causal_lm(self.model_name, self.store, concrete_device(self.device), self.dtype)
            if self.adapter is not None:
                from .finetune import with_adapter

                model = with_adapter(model, self.adapter)
            tokenizer.padding_side = "left"
            self._loaded = (model, tokenizer)
        return self._loaded

    def prompt_text(self, request: Request) -> str:
        return chat_prompt(self.load()[1], request)

    def plan_batches(self, requests: Sequence[Request]) -> list[list[str]]:
        """Prompts of similar length batched together (less padding), ties broken by id."""
        ordered = sorted(requests, key=lambda r: (len(self.prompt_text(r)), r.id))
        return [[r.id for r in ordered[i : i + self.batch_size]] for i in range(0, len(ordered), self.batch_size)]

    def stream(self, batches: Mapping[int, Sequence[Request]], seed: int) -> Iterator[BatchAnswers]:
        for index, batch in batches.items():
            yield self.answer_batch(index, batch, seed)

    def answer_batch(self, index: int, batch: Sequence[Request], seed: int) -> BatchAnswers:
        """One left-padded batch, sampled with a seed fixed by the plan (:func:`batch_seed`)."""
        import torch

        model, tokenizer = self.load()
        encoded = tokenizer([self.prompt_text(r) for r in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(model.device)
        torch.manual_seed(batch_seed(seed, batch))
        with torch.inference_mode():
            output = model.generate(
                **encoded, do_sample=True, temperature=self.temperature, top_p=self.top_p,
                max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                stop_strings=["\n\n"], tokenizer=tokenizer,
            )
        new = output[:, encoded["input_ids"].shape[1] :]
        answers = tokenizer.batch_decode(new, skip_special_tokens=True)
        return BatchAnswers(index, {r.id: a for r, a in zip(batch, answers)}, int((new != tokenizer.pad_token_id).sum()))


@dataclass
class VLLMBackend:
    """vLLM's offline engine on a GPU: the transformers backend's prompts (chat template + prefix), each
    request sampled with its own seed, so an answer does not depend on which requests share its batch.

    Why per-request seeds: vLLM schedules requests into its own batches as memory allows, so a seed per
    planned batch could not fix what a request samples; a seed per request can, and then the plan only
    sets how many answers are asked and journalled together (``generate.batch_size``). A resumed run asks
    the missing requests with the same seeds. What no seed fixes: vLLM does not promise bitwise-identical
    logits across batch compositions, so a request asked in another batch may differ in rounding.
    """

    model_name: str
    store: Store
    engine_settings: VLLMGenerator
    batch_size: int
    max_new_tokens: int
    temperature: float
    top_p: float
    continues_prefix: bool = True
    _engine: Any = field(default=None, init=False, repr=False)

    def settings(self) -> dict[str, Any]:
        # gpu_memory_utilization and tensor_parallel_size lay the work out on the GPU(s) (KV-cache room,
        # weights split over devices): like which GPU runs it, which no backend keys on, they change speed,
        # not the model or the sampling, so a rerun on another machine finds the same artifact. batch_size
        # only groups journal lines (per-request seeds, above).
        return {
            "backend": "vllm", "model": self.model_name, "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature, "top_p": self.top_p, "dtype": self.engine_settings.dtype,
            "max_model_len": self.engine_settings.max_model_len,
        }

    def engine(self) -> Any:
        """The engine, started on first use (weights onto the GPU: seconds to minutes), never for a stored
        artifact; refused with :class:`GenerationError` where vLLM cannot run (:func:`vllm_problem`)."""
        if self._engine is None:
            problem = vllm_problem()
            if problem:
                raise GenerationError(problem)
            import vllm

            from .models import model_dir

            e = self.engine_settings
            self._engine = vllm.LLM(
                model=model_dir(self.model_name, self.store), dtype=e.dtype, max_model_len=e.max_model_len,
                gpu_memory_utilization=e.gpu_memory_utilization, tensor_parallel_size=e.tensor_parallel_size,
            )
        return self._engine

    def plan_batches(self, requests: Sequence[Request]) -> list[list[str]]:
        """Requests by id in chunks of ``batch_size``: the chunks are journal lines, not sampling batches."""
        ordered = [r.id for r in sorted(requests, key=lambda r: r.id)]
        return [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]

    def stream(self, batches: Mapping[int, Sequence[Request]], seed: int) -> Iterator[BatchAnswers]:
        for index, batch in batches.items():
            yield self.answer_batch(index, batch, seed)

    def answer_batch(self, index: int, batch: Sequence[Request], seed: int) -> BatchAnswers:
        """One planned batch in one engine call, each request with the seed :func:`batch_seed` gives it alone.

        Prompts go as token ids, tokenized without special tokens as the transformers backend does: a text
        prompt would get a second BOS token where the chat template already opens with one (Llama 3).
        """
        import vllm

        engine = self.engine()
        tokenizer = engine.get_tokenizer()
        prompts = [{"prompt_token_ids": tokenizer(chat_prompt(tokenizer, r), add_special_tokens=False)["input_ids"]}
                   for r in batch]
        sampling = [vllm.SamplingParams(
            temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_new_tokens, stop=["\n\n"],
            seed=batch_seed(seed, [r]) % 2**31) for r in batch]
        outputs = engine.generate(prompts, sampling, use_tqdm=False)
        answers = {r.id: output.outputs[0].text for r, output in zip(batch, outputs)}
        return BatchAnswers(index, answers, sum(len(output.outputs[0].token_ids) for output in outputs))


@dataclass
class OpenAIBackend:
    """The OpenAI API or an OpenAI-compatible server; bounded concurrency, backoff on 429/5xx/timeouts."""

    model: str
    base_url: str | None
    api_key_env: str
    concurrency: int
    max_retries: int
    timeout_s: float
    backoff_s: float
    max_new_tokens: int
    temperature: float
    top_p: float
    continues_prefix: bool = False

    def settings(self) -> dict[str, Any]:
        return {
            "backend": "openai", "model": self.model, "base_url": self.base_url,
            "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
        }

    def client(self) -> Any:
        """An OpenAI client for the configured server (the key read from the environment, never stored)."""
        import openai

        key = os.environ.get(self.api_key_env)
        if not key and self.base_url is None:
            raise GenerationError(
                f"generate.openai.api_key_env: the environment variable {self.api_key_env} is not set; "
                "export your key there (it is never written to params, the store or a notebook)"
            )
        return openai.OpenAI(api_key=key or "not-needed", base_url=self.base_url, max_retries=0, timeout=self.timeout_s)

    def plan_batches(self, requests: Sequence[Request]) -> list[list[str]]:
        """One request per batch: each is sent alone, with its own seed, so no batch depends on another."""
        return [[r.id] for r in sorted(requests, key=lambda r: r.id)]

    def stream(self, batches: Mapping[int, Sequence[Request]], seed: int) -> Iterator[BatchAnswers]:
        client = self.client()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._ask, client, batch[0], seed): (index, batch[0].id) for index, batch in batches.items()}
            for future in as_completed(futures):
                index, request_id = futures[future]
                answer, tokens = future.result()
                yield BatchAnswers(index, {request_id: answer}, tokens)

    def _ask(self, client: Any, request: Request, seed: int) -> tuple[str, int]:
        """The answer and its completion tokens, retried with backoff on rate limits and server errors."""
        import openai

        instruction = request.instruction
        if request.prefix:
            instruction += f'\nBegin your answer with: "{request.prefix}"'
        messages = [{"role": "system", "content": request.system}, {"role": "user", "content": instruction}]
        retryable = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError)
        for attempt in range(self.max_retries + 1):
            try:
                response = client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=self.max_new_tokens,
                    temperature=self.temperature, top_p=self.top_p, seed=batch_seed(seed, [request]) % 2**31,
                )
            except retryable as error:
                if attempt == self.max_retries:
                    raise GenerationError(
                        f"request {request.id}: gave up after {attempt + 1} attempts: {type(error).__name__}; "
                        "raise generate.openai.max_retries or lower generate.openai.concurrency"
                    ) from None
                time.sleep(self.backoff_s * 2**attempt * (0.5 + random.random() / 2))
                continue
            tokens = (response.usage.completion_tokens or 0) if response.usage is not None else 0
            return response.choices[0].message.content or "", tokens
        raise AssertionError("unreachable")


def vllm_problem() -> str | None:
    """Why vLLM's engine cannot run on this machine (the package missing, no CUDA GPU), as one line naming
    ``generate.backend`` and what runs instead; None where it can."""
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("the vllm package is not installed (pip install -e '.[gpu]')")
    import torch

    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible")
    if not missing:
        return None
    return (f"generate.backend: 'vllm' cannot run here: {' and '.join(missing)}; allowed: 'transformers' (a local "
            "model on CPU or GPU), or 'openai' with generate.openai.base_url at a `vllm serve <model>` server, "
            "e.g. http://host:8000/v1")


def check_backend(params: StudyParams) -> None:
    """Refuse a generator backend this machine cannot run when params load (:class:`ParamsError`, so the
    command line exits 2 with one line), not minutes later in a notebook kernel after other stages ran."""
    problem = vllm_problem() if params.generate.backend == "vllm" else None
    if problem:
        raise ParamsError(problem)


def make_backend(params: StudyParams, store: Store, device: str, adapter: Artifact | None = None) -> Backend:
    """The backend ``generate.backend`` names; ``device`` is the transformers backend's (vLLM runs on the GPU).

    ``adapter``: a fine-tuned student writes instead of the generator (``models.student`` with that adapter:
    a multi-round study's round r ≥ 2); only the transformers backend runs one.
    """
    g = params.generate
    if adapter is not None:
        if g.backend != "transformers":
            raise GenerationError(f"generate.backend: {g.backend!r} cannot run a fine-tuned student's adapter; "
                                  "allowed for multi-round generation: transformers")
        return TransformersBackend(
            model_name=params.models.student, store=store, device=device, batch_size=g.batch_size,
            max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, adapter=adapter,
            dtype=params.dtype,
        )
    if g.backend == "vllm":
        return VLLMBackend(
            model_name=params.models.generator, store=store, engine_settings=g.vllm, batch_size=g.batch_size,
            max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
        )
    if g.backend == "openai":
        o = g.openai
        return OpenAIBackend(
            model=o.model, base_url=o.base_url, api_key_env=o.api_key_env, concurrency=o.concurrency,
            max_retries=o.max_retries, timeout_s=o.timeout_s, backoff_s=o.backoff_s,
            max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
        )
    return TransformersBackend(
        model_name=params.models.generator, store=store, device=device, batch_size=g.batch_size,
        max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, dtype=params.dtype,
    )


def answer_requests(backend: Backend, requests: Sequence[Request], seed: int) -> tuple[dict[str, str], int]:
    """Every request's answer under the backend's batch plan, and the new tokens spent; no journal
    (benchmarks and checks: the study's loop goes through :class:`AnswerJournal`)."""
    by_id = {r.id: r for r in requests}
    batches = {i: [by_id[id_] for id_ in ids] for i, ids in enumerate(backend.plan_batches(requests))}
    answers, tokens = {}, 0
    for done in backend.stream(batches, seed):
        answers.update(done.answers)
        tokens += done.new_tokens
    return answers, tokens


def batch_seed(seed: int, batch: Sequence[Request]) -> int:
    """A batch's sampling seed, from the run's seed and the batch's first request id (both fixed by the plan)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{batch[0].id}".encode()).digest()[:8], "little")


# ---------------------------------------------------------------------------------------------- the loop


@dataclass
class GenerationReport:
    """What happened: counts of valid samples and of drops per reason, attempts, time and tokens.

    ``seconds`` and ``new_tokens`` add up every process that worked on the artifact (a killed run and
    its resumption), read from the journal; ``processes`` says how many there were.
    """

    requested: int
    valid: int = 0
    attempts: int = 0
    rounds: int = 0
    drops: Counter = field(default_factory=Counter)
    surplus: int = 0  # valid answers for an occupation already at its target (the over-asked ones)
    seconds: float = 0.0
    new_tokens: int = 0
    processes: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested, "valid": self.valid, "attempts": self.attempts, "rounds": self.rounds,
            "drops": {reason: self.drops.get(reason, 0) for reason in DROP_REASONS}, "surplus": self.surplus,
            "seconds": round(self.seconds, 3), "new_tokens": self.new_tokens, "processes": self.processes,
        }


class AnswerJournal:
    """The scratch record of one generation: each round's batch plan, then each answered batch, whole.

    One line per batch means a kill leaves a batch either answered or not (a torn line is dropped), and
    the plan line lets a resumed run ask exactly the batches the first run would have asked. Each batch
    line also carries its process's id, elapsed seconds and new tokens, so the report can add up
    every process honestly.
    """

    def __init__(self, journal: JsonlJournal) -> None:
        self.journal = journal
        self.process = uuid.uuid4().hex[:12]
        self.started = time.perf_counter()
        records = journal.read()
        self.plans: dict[int, list[list[str]]] = {r["round"]: r["plan"] for r in records if "plan" in r}
        self.batches: dict[tuple[int, int], dict[str, Any]] = {(r["round"], r["batch"]): r for r in records if "answers" in r}

    def plan(self, round_index: int, requests: Sequence[Request], backend: Backend) -> list[list[str]]:
        """The round's batch plan: the journalled one when resuming, else the backend's, journalled first."""
        if round_index not in self.plans:
            self.plans[round_index] = backend.plan_batches(requests)
            self.journal.append({"round": round_index, "plan": self.plans[round_index]})
        plan = self.plans[round_index]
        if sorted(i for batch in plan for i in batch) != sorted(r.id for r in requests):
            raise GenerationError(
                f"the journal {self.journal.path} holds a batch plan for round {round_index} that does not match its "
                "requests; it belongs to another run: delete that scratch directory and run again"
            )
        return plan

    def answer_round(self, round_index: int, requests: Sequence[Request], backend: Backend, seed: int) -> dict[str, str]:
        """Every request's answer: journalled batches as they were, the missing ones asked now."""
        by_id = {r.id: r for r in requests}
        plan = self.plan(round_index, requests, backend)
        missing = {i: [by_id[id_] for id_ in ids] for i, ids in enumerate(plan) if (round_index, i) not in self.batches}
        for done in backend.stream(missing, seed):
            record = {"round": round_index, "batch": done.index, "answers": dict(done.answers),
                      "new_tokens": done.new_tokens, "process": self.process,
                      "seconds": round(time.perf_counter() - self.started, 3)}
            self.journal.append(record)
            self.batches[(round_index, done.index)] = record
        return {id_: answer for i in range(len(plan)) for id_, answer in self.batches[(round_index, i)]["answers"].items()}

    def answer_rows(self) -> list[dict[str, Any]]:
        """Every raw answer in plan order, for the artifact (what was asked, including what was dropped)."""
        return [{"id": id_, "round": r, "batch": i, "answer": self.batches[(r, i)]["answers"][id_]}
                for r in sorted(self.plans) for i, ids in enumerate(self.plans[r]) for id_ in ids]

    def totals(self) -> tuple[float, int, int]:
        """(seconds, new tokens, processes) over every process, this one up to now."""
        last: dict[str, float] = {self.process: time.perf_counter() - self.started}
        for record in self.batches.values():
            last[record["process"]] = max(last.get(record["process"], 0.0), record["seconds"])
        tokens = sum(record["new_tokens"] for record in self.batches.values())
        return sum(last.values()), tokens, len(last)


def collect_samples(
    backend: Backend, attribute: str, bias_type: str, n: int, seed: int, generate: Generate,
    templates: Mapping[str, Any], occupations: Sequence[str], cultures: Sequence[str], book: NameBook,
    journal: AnswerJournal,
) -> tuple[list[dict[str, Any]], GenerationReport]:
    """Ask, parse, validate and deduplicate until ``n`` valid samples exist or the bound is hit."""
    targets = Counter(balanced_occupations(n, occupations))
    report = GenerationReport(requested=n)
    samples: list[dict[str, Any]] = []
    seen: set[str] = set()
    max_attempts = int(n * generate.max_attempts_factor)
    while len(samples) < n:
        missing = n - len(samples)
        if report.attempts + missing > max_attempts:
            raise GenerationError(
                f"{attribute}/{bias_type}: only {len(samples)} valid samples of {n} after {report.attempts} answers "
                f"(dropped: {dict(report.drops)}); raise generate.max_attempts_factor "
                f"(now {generate.max_attempts_factor}) or check the templates"
            )
        have = Counter(sample["occupation"] for sample in samples)
        wanted = [occ for occ in occupations for _ in range(targets[occ] - have[occ])]  # ask again where short
        wanted = with_margin(wanted, generate.over_ask)
        batch = plan_requests(attribute, bias_type, wanted, report.rounds, seed, templates, cultures, book)
        answered = journal.answer_round(report.rounds, batch, backend, seed)
        for request in batch:
            sample, reason = parse_answer(
                answered[request.id], request, backend.continues_prefix, generate, templates["refusal_markers"]
            )
            # duplicates: the same words from the generator, whatever name the prefix put in front
            key = normalized(sample["own"] or sample["text"]) if sample else ""
            if sample and key in seen:
                sample, reason = None, "duplicate"
            if sample is None:
                report.drops[reason] += 1
                continue
            occupation = request.meta["occupation"]
            if have[occupation] >= targets[occupation]:
                report.surplus += 1
                continue
            seen.add(key)
            have[occupation] += 1
            samples.append(to_record(request, sample, backend.settings(), seed))
        report.attempts += len(batch)
        report.rounds += 1
    report.valid = len(samples)
    report.seconds, report.new_tokens, report.processes = journal.totals()
    return samples, report


def with_margin(wanted: Sequence[str], over_ask: float) -> list[str]:
    """``wanted``, then its occupations again in turn, ``ceil(len(wanted) * over_ask)`` more.

    Why: a batch decodes in lockstep, so a round that re-asks the few dropped answers costs a whole
    generation length for a handful of requests (about a tenth of a classroom generation); asking a few
    more in each round usually leaves no next round. Valid answers past an occupation's target are
    counted as surplus and not used.
    """
    extra = math.ceil(len(wanted) * over_ask)
    return list(wanted) + [wanted[i % len(wanted)] for i in range(extra)] if wanted else []


def to_record(request: Request, sample: Mapping[str, str], settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """A sample in the original data's schema plus its provenance. Neutral samples get the inferred gender."""
    from .data import LABHC_PROFESSIONS

    meta = dict(request.meta)
    gender_name = meta["gender_name"] or infer_gender(sample["text"])
    return {
        "id": f"gen/{request.id}",
        "hard_text": sample["hard_text"],
        "text": sample["text"],
        "profession": LABHC_PROFESSIONS.index(meta["occupation"]),
        "gender": {"male": 0, "female": 1}.get(gender_name, -1),
        "gender_name": gender_name,
        **{k: meta[k] for k in ("occupation", "culture", "name", "attribute", "bias_type", "group", "prompt_key")},
        "cue_strength": "",
        "generator": canonical_json({**settings, "seed": seed}),
    }


def generate_samples(params: StudyParams, attribute: str, bias_type: str, store: Store, device: str | None = None,
                     adapter: Artifact | None = None, seed: int | None = None) -> Artifact:
    """The stored artifact of ``params.generate.n`` valid samples for (attribute, bias type); ``adapter``: written
    by that fine-tuned student instead of the generator (its key is in the artifact's); ``seed``: the sampling
    seed (default ``params.seed``; a multi-round chain draws its own)."""
    seed = params.seed if seed is None else seed
    templates = load_templates(params.generate)
    # "auto" is resolved when the model loads: a render that finds the samples stored imports no torch
    backend = make_backend(params, store, device or params.device, adapter)
    key_params = {
        "attribute": attribute, "bias_type": bias_type, "n": params.generate.n, "seed": seed,
        "generator": backend.settings(), "min_words": params.generate.min_words,
        "min_sentences": params.generate.min_sentences,
        "max_attempts_factor": params.generate.max_attempts_factor, "over_ask": params.generate.over_ask,
        "templates": templates, "occupations": params.data.occupations, "cultures": params.data.cultures,
    }

    def compute(out: Path, scratch: Path) -> None:
        book = default_name_book()
        journal = AnswerJournal(JsonlJournal(scratch / "answers.jsonl"))
        samples, report = collect_samples(
            backend, attribute, bias_type, params.generate.n, seed, params.generate, templates,
            params.data.occupations, params.data.cultures, book, journal,
        )
        write_jsonl(samples, out / "samples.jsonl")
        write_jsonl(journal.answer_rows(), out / "answers.jsonl")
        write_text_atomic(out / "report.json", canonical_json(report.as_dict()))

    return store.get_or_compute(STAGE, key_params, compute, version=STAGE_VERSION)


# ---------------------------------------------------------------------------------------------- what to look at

_EXPLICIT_WORDS = {"male", "female", "man", "woman", "men", "women"}
_COMPARISON = re.compile(r"\b(unlike|than|compared|instead of|rather than)\b", re.I)


def bias_markers(samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Shares of samples that carry the surface signs of each bias dimension.

    explicit: names a gender outright; pronoun_matches: the pronoun majority (:func:`infer_gender`) is
    the intended group; comparison: compares with another group; mentions_culture: names a culture.
    """
    if not samples:
        return {}
    n = len(samples)
    texts = [s.get("text") or s["hard_text"] for s in samples]  # original rows have hard_text only
    words = [set(re.findall(r"[a-z]+", t.lower())) for t in texts]
    cultures = {w["adj"].lower() for w in CULTURE_WORDS.values()}
    with_group = [(s.get("group", ""), t) for s, t in zip(samples, texts) if s.get("group", "") in GENDER_WORDS]
    return {
        "explicit gender word": sum(bool(w & _EXPLICIT_WORDS) for w in words) / n,
        "pronouns match intended gender": (
            sum(infer_gender(t) == group for group, t in with_group) / len(with_group) if with_group else float("nan")
        ),
        "compares groups": sum(bool(_COMPARISON.search(t)) for t in texts) / n,
        "names a culture": sum(bool(w & cultures) for w in words) / n,
    }
