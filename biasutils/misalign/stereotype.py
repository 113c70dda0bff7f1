"""The generator's agreement with gender stereotypes as a stored artifact, scored locally or through an API.

Holds the scorer for an OpenAI-compatible server (:func:`openai_option_scores`: the Yes/No
log-probabilities of the first answer token, with retries, and a bound for an option outside the top
ones) and the artifact that stores the agreement once per generator, or the reason it could not be
scored (:func:`stereotype_artifact`, :func:`stereotype_status`, :func:`stereotype_note`,
:func:`stereotype_rows`). Apart from :mod:`biasutils.misalign.values`, which builds the items and
reads the scores, because this part talks to servers and to the store.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import StudyParams, precision_key
from ..store import Artifact, Store, artifact_key, canonical_json, write_text_atomic
from ..tasks import Item
from .stage import STEREOTYPE_STAGE, STEREOTYPE_VERSION, misalignment_rows
from .values import AGREEMENT_COLUMNS, stereotype_agreement, stereotype_items

STEREOTYPE_TOP_LOGPROBS = 20  # the most the OpenAI API returns, and vLLM's default --max-logprobs
TopLogprobs = list[tuple[str, float]]  # (token, log-probability) of the first answer token's candidates


class _StereotypeSkip(Exception):
    """The stereotype agreement cannot be scored, and why. ``lasting``: the cause holds as long as the
    settings do (the server offers no log-probabilities), so the skip may be stored like a result; else
    (no API key, no answer after the retries) a later call may succeed and must ask again."""

    def __init__(self, reason: str, lasting: bool) -> None:
        super().__init__(reason)
        self.reason, self.lasting = reason, lasting


def openai_option_scores(items: Sequence[Item], params: StudyParams, store: Store) -> tuple[list[list[float]], int]:
    """Per item, a log-probability per option as the first answer token, from an OpenAI-compatible server,
    and how many items needed a bound; raises :class:`_StereotypeSkip` when the server cannot say.

    The API counterpart of :meth:`biasutils.evaluate.Scorer.choice`'s first-token scores: the prompt is
    one user turn as in :func:`biasutils.evaluate.chat_ids` (the server applies its chat template), and the
    answer is one greedy token with its top :data:`STEREOTYPE_TOP_LOGPROBS` log-probabilities
    (``logprobs``, which the OpenAI API and ``vllm serve`` offer). An API shows only those, so each option
    takes its best spelling among them (:func:`_option_scores`). The first item is asked alone: a server
    without log-probabilities, or one that is down, is found after one request instead of one per item.
    """
    import openai

    from ..generate import GenerationError, make_backend

    try:
        client = make_backend(params, store, "cpu").client()
    except GenerationError as error:
        raise _StereotypeSkip(f"{error}; not stored, so a run with the key set scores it", lasting=False) from None
    settings, where = params.generate.openai, str(client.base_url)

    def ask(item: Item) -> TopLogprobs:
        response = _with_retries(lambda: client.chat.completions.create(
            model=settings.model, messages=[{"role": "user", "content": item.prompt}], max_tokens=1, temperature=0,
            logprobs=True, top_logprobs=STEREOTYPE_TOP_LOGPROBS), settings.max_retries, settings.backoff_s)
        return _first_token_logprobs(response, where)

    try:
        first = ask(items[0])
        with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
            tops = [first, *pool.map(ask, items[1:])]  # a failure cancels the requests not yet sent
    except openai.APIError as error:
        raise _api_skip(error, where, settings.max_retries + 1) from None
    scored = [_option_scores(top, item.options) for item, top in zip(items, tops)]
    return [scores for scores, _ in scored], sum(bounded for _, bounded in scored)


def _with_retries(call: Callable[[], Any], max_retries: int, backoff_s: float) -> Any:
    """``call()``, retried with jittered exponential backoff on rate limits, 5xx, timeouts and lost
    connections, as :class:`biasutils.generate.OpenAIBackend` does; the last attempt's error propagates."""
    for attempt in range(max_retries):
        try:
            return call()
        except _retryable():
            time.sleep(backoff_s * 2**attempt * (0.5 + random.random() / 2))
    return call()


def _retryable() -> tuple[type[Exception], ...]:
    """API errors that may pass if asked again."""
    import openai

    return openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError


def _first_token_logprobs(response: Any, where: str) -> TopLogprobs:
    """The first answer token and its top alternatives; a server that ignored ``logprobs`` offers none."""
    logprobs = response.choices[0].logprobs if response.choices else None
    if logprobs is None or not logprobs.content:
        raise _StereotypeSkip(f"the server at {where} returned no logprobs for chat completions; stereotype "
                              "agreement needs the Yes/No log-probabilities of the first answer token", lasting=True)
    first = logprobs.content[0]
    return [(first.token, first.logprob), *((top.token, top.logprob) for top in first.top_logprobs or ())]


def _option_scores(top: TopLogprobs, options: Sequence[str]) -> tuple[list[float], bool]:
    """Each option's best log-probability among the tokens that spell it (stripped, case-folded: "Yes",
    " yes", "YES"), and whether an option was missing from ``top``.

    A missing option's log-probability is at most the smallest one shown, so it gets the next float below
    that: an upper bound, which still orders it under every option that was shown.
    """
    best: dict[str, float] = {}
    for token, logprob in top:
        key = token.strip().casefold()
        best[key] = max(logprob, best.get(key, -math.inf))
    bound = math.nextafter(min(logprob for _, logprob in top), -math.inf)
    keys = [option.strip().casefold() for option in options]
    return [best.get(key, bound) for key in keys], not set(keys) <= set(best)


def _api_skip(error: Exception, where: str, attempts: int) -> _StereotypeSkip:
    """Why an API error skips the scoring: a refused request (400, 404, 422) lasts, anything else may pass."""
    import openai

    detail = f"{type(error).__name__}: {getattr(error, 'message', error)}"
    if isinstance(error, (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError)):
        return _StereotypeSkip(f"the server at {where} refused chat completions with logprobs ({detail}); stereotype "
                               "agreement needs the Yes/No log-probabilities of the first answer token", lasting=True)
    tries = f" after {attempts} attempts" if isinstance(error, _retryable()) else ""
    return _StereotypeSkip(f"no answer from the server at {where}{tries} ({detail}); not stored, so the next run "
                           "asks again", lasting=False)


def stereotype_scorer(params: StudyParams) -> dict[str, str | None]:
    """What scores the stereotype items: part of the cache key (another model or server, another
    artifact) and of ``status.json``. Never the API key. The ``vllm`` backend runs the generator's own
    weights locally, so the transformers scorer reads the same model and shares the ``transformers`` key."""
    if params.generate.backend == "openai":
        settings = params.generate.openai
        return {"backend": "openai", "model": settings.model, "base_url": settings.base_url}
    return {"backend": "transformers", "model": params.models.generator, **precision_key(params.dtype)}


def stereotype_artifact(params: StudyParams, store: Store) -> Artifact:
    """The generator's agreement with GEST gender stereotypes: a property of the generator, not of a bias
    type, so it is computed once per generator.

    Files: ``agreement.csv`` (:func:`stereotype_agreement`; no rows, same columns, when skipped) and
    ``status.json`` (``scored``, ``backend``, ``model``, ``reason``, ``items_bounded``). A local generator
    is scored by :class:`biasutils.evaluate.Scorer`, the ``openai`` backend by :func:`openai_option_scores`.
    That one never raises over a skip: a skip whose cause lasts while the settings do (the server offers no
    log-probabilities) is stored like a result; one a later call may undo (no API key, no answer after the
    retries) is written to the key's scratch directory and returned from there, which the store never
    serves as the artifact, so the next call asks again.
    """
    items = stereotype_items()
    scorer = stereotype_scorer(params)
    key_params = {"scorer": scorer, "items": canonical_json([[i.id, i.prompt] for i in items])}

    def compute(out: Path, scratch: Path) -> None:
        try:
            scores, bounded = _stereotype_scores(items, params, store)
            table, status = stereotype_agreement(items, scores), _stereotype_status(scorer, "", bounded)
        except _StereotypeSkip as skip:
            table, status = pd.DataFrame(columns=list(AGREEMENT_COLUMNS)), _stereotype_status(scorer, skip.reason)
            if not skip.lasting:
                _write_stereotype(scratch, table, status)
                raise
        _write_stereotype(out, table, status)

    try:
        return store.get_or_compute(STEREOTYPE_STAGE, key_params, compute, version=STEREOTYPE_VERSION)
    except _StereotypeSkip:
        key = artifact_key(STEREOTYPE_STAGE, key_params, version=STEREOTYPE_VERSION)
        return Artifact(STEREOTYPE_STAGE, key, store.scratch_for(STEREOTYPE_STAGE, key))


def _stereotype_scores(items: Sequence[Item], params: StudyParams, store: Store) -> tuple[list[list[float]], int]:
    """Option scores of the stereotype items by the generator, and how many needed a bound."""
    if params.generate.backend == "openai":
        return openai_option_scores(items, params, store)
    from ..evaluate import Scorer
    from ..models import load_study_lm

    model, tokenizer = load_study_lm(params, params.models.generator, store)
    return Scorer(model, tokenizer, params).choice(items), 0


def _stereotype_status(scorer: Mapping[str, Any], reason: str, items_bounded: int = 0) -> dict[str, Any]:
    """``status.json``: scored unless there is a reason not to."""
    return {"scored": not reason, "backend": scorer["backend"], "model": scorer["model"], "reason": reason,
            "items_bounded": items_bounded}


def _write_stereotype(directory: Path, table: pd.DataFrame, status: Mapping[str, Any]) -> None:
    write_text_atomic(directory / "agreement.csv", table.to_csv(index=False))
    write_text_atomic(directory / "status.json", canonical_json(status))


def stereotype_status(artifact: Artifact) -> dict[str, Any]:
    """A :func:`stereotype_artifact`'s ``status.json``: whether it was scored, by what, and if not, why."""
    return json.loads(artifact.file("status.json").read_text())


def stereotype_note(artifact: Artifact) -> str:
    """One line for the notebook and the record: what scored the stereotype agreement, or why it was skipped."""
    status = stereotype_status(artifact)
    scorer = f"{status['model']} ({status['backend']} backend)"
    if not status["scored"]:
        return f"stereotype agreement not scored for {scorer}: {status['reason']}"
    bounded = status["items_bounded"]
    return f"stereotype agreement scored by {scorer}" + (
        f"; {bounded} item(s) had an option outside the top {STEREOTYPE_TOP_LOGPROBS} log-probabilities and were "
        "scored with an upper bound on it" if bounded else "")


def stereotype_rows(params: StudyParams, store: Store) -> list[dict[str, Any]]:
    """Record rows of the generator's stereotype agreement, under bias type ``none`` (no bias type: the
    generator's own); none when it was skipped (:func:`stereotype_note` says why)."""
    from ..mix import BASELINE

    artifact = stereotype_artifact(params, store)
    if not stereotype_status(artifact)["scored"]:
        return []
    table = pd.read_csv(artifact.file("agreement.csv"))
    return misalignment_rows(params.grid.attributes[0], BASELINE, params.seed, values=[table])
