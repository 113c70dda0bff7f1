"""The generation loop and its stored artifact: ask, parse, validate and deduplicate until ``n`` valid
samples exist, journalling every answer as it arrives so that a killed run resumes.

Holds the cache-key constants (:data:`STAGE`, :data:`STAGE_VERSION`), the report of what happened
(:class:`GenerationReport`), the scratch journal of batch plans and answers (:class:`AnswerJournal`), the
loop (:func:`collect_samples`) and the artifact (:func:`generate_samples`): everything that keeps state
across rounds and processes, where the other modules are stateless.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Generate, StudyParams
from ..store import Artifact, JsonlJournal, Store, canonical_json, write_jsonl, write_text_atomic
from .backends import Backend, make_backend
from .prompts import (
    GenerationError, NameBook, Request, balanced_occupations, default_name_book, load_templates, plan_requests,
)
from .samples import DROP_REASONS, normalized, parse_answer, to_record


STAGE = "generate"
# 2: retries refill the occupations still short; 3: batch plans journalled, answers stored; 4: each round
# asks generate.over_ask more (surplus answers counted, not used)
STAGE_VERSION = "4"


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
