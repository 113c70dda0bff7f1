"""The generation backends behind one small interface (:class:`Backend`), and how params choose one.

``transformers`` runs a local model with batched, seeded sampling; ``vllm`` runs the same local model in
vLLM's offline engine on a GPU, each request with its own seed; ``openai`` calls the OpenAI API or any
OpenAI-compatible server (``vllm serve`` included) concurrently with backoff. Another backend is one class
with ``settings``, ``plan_batches`` and ``stream``. Each imports its heavy package (torch, vllm, openai)
inside the methods that use it, so importing this module loads none of them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import ParamsError, StudyParams, VLLMGenerator, precision_key
from ..store import Artifact, Store
from .prompts import GenerationError, Request


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
            **precision_key(self.dtype),
        }

    def load(self) -> tuple[Any, Any]:
        """The model and tokenizer, loaded on first use (left padding: generation appends on the right); with
        ``adapter``, the model with that adapter applied (merged where the weights are float32)."""
        if self._loaded is None:
            from ..config import concrete_device
            from ..models import load_causal_lm

            model, tokenizer = load_causal_lm(self.model_name, self.store, concrete_device(self.device), self.dtype)
            if self.adapter is not None:
                from ..finetune import with_adapter

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

            from ..models import model_dir

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
