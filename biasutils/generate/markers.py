"""What to look at in generated samples: the shares that carry the surface signs of each bias dimension.

Why apart: notebooks call it on stored samples (and on original rows) to show what a bias type did to
the texts; it reads samples and never generates, parses or stores any.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..cues import CULTURE_WORDS, GENDER_WORDS, infer_gender


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
