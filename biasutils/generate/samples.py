"""From answer to sample: parsing and validating an answer (each drop with its reason), masking occupation
titles, the key duplicates are matched by, and the sample in the original data's schema with its provenance.

Why apart from the loop: these are pure functions of one answer, the rules that decide what counts as a
valid biography; the loop (:mod:`~biasutils.generate.stage`) only counts what they keep and drop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import OCCUPATIONS, Generate
from ..cues import infer_gender
from ..store import canonical_json
from .prompts import Request


DROP_REASONS = ("empty", "refused", "truncated", "off_format", "too_short", "duplicate")

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_OFF_FORMAT = re.compile(r"(^|\n)\s*([-*•#]|\d+[.)])\s|\bI am\b|\bmy name\b|\bbiography\b|\bsentence\b", re.I)


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


def to_record(request: Request, sample: Mapping[str, str], settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """A sample in the original data's schema plus its provenance. Neutral samples get the inferred gender."""
    from ..data import LABHC_PROFESSIONS

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
