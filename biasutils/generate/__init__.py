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

The package, by concept: :mod:`.prompts` (templates, names and traits, the requests of a round, and
:class:`GenerationError`), :mod:`.backends` (the :class:`Backend` interface, the three backends and
how params pick one), :mod:`.samples` (parsing and validating an answer, the sample's record),
:mod:`.stage` (the journal, the loop and the stored artifact with its cache-key constants) and
:mod:`.markers` (what to look at in generated samples). Every public name is re-exported here, so
callers write ``generate.X`` without knowing which module holds it.
"""

from __future__ import annotations

from ..cues import infer_gender
from .backends import (
    Backend, BatchAnswers, OpenAIBackend, TransformersBackend, VLLMBackend, answer_requests, batch_seed,
    chat_prompt, check_backend, make_backend, vllm_problem,
)
from .markers import bias_markers
from .prompts import (
    GenerationError, NameBook, Request, balanced_occupations, default_name_book, load_templates, plan_requests,
    render, slots_for, template_for,
)
from .samples import DROP_REASONS, mask_titles, normalized, parse_answer, split_sentences, to_record
from .stage import (
    STAGE, STAGE_VERSION, AnswerJournal, GenerationReport, collect_samples, generate_samples, with_margin,
)

__all__ = [
    # prompts
    "GenerationError", "NameBook", "Request", "balanced_occupations", "default_name_book", "load_templates",
    "plan_requests", "render", "slots_for", "template_for",
    # backends
    "Backend", "BatchAnswers", "OpenAIBackend", "TransformersBackend", "VLLMBackend", "answer_requests",
    "batch_seed", "chat_prompt", "check_backend", "make_backend", "vllm_problem",
    # samples
    "DROP_REASONS", "mask_titles", "normalized", "parse_answer", "split_sentences", "to_record",
    # the loop and the artifact
    "STAGE", "STAGE_VERSION", "AnswerJournal", "GenerationReport", "collect_samples", "generate_samples",
    "with_margin",
    # what to look at (infer_gender: the pronoun rule bias_markers applies, from biasutils.cues)
    "bias_markers", "infer_gender",
]
