"""The data-side mitigations: what the token- and mask-based mitigations do to the augmented rows.

* token-based (value misalignment): a statement that the text was machine-written and may be biased,
  prepended to every *augmented* training row (:func:`token_rows`); original rows and test inputs stay
  as they are;
* mask-based (surface cues): every group cue of each augmented row masked (:func:`mask_rows`), by the
  one lexicon the twins and group inference use (:func:`biasutils.cues.mask_cues`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ORIGINAL, AUGMENTED = "original", "augmented"


class MitigationError(ValueError):
    """A mitigation setting or input that cannot work; the message names the field and what is allowed."""


def token_rows(rows: Sequence[Mapping[str, Any]], text: str, field: str = "hard_text") -> tuple[list[dict[str, Any]], list[str]]:
    """(the rows with ``text`` prepended to each augmented row's ``field``, the ids of the rows changed).

    Why only augmented rows: the statement is meant to tell the student which data to distrust; on
    original rows or at test time it would only shift every input alike.
    """
    if not text.strip():
        raise MitigationError("mitigate.token.text: empty; allowed: a non-empty statement")
    out, changed = [], []
    for row in rows:
        row = dict(row)
        if row.get("source") == AUGMENTED:
            row[field] = f"{text.strip()} {row[field]}"
            changed.append(row["id"])
        out.append(row)
    return out, changed


def label_words(row: Mapping[str, Any]) -> list[str]:
    """The words of a row's occupation label, which masking keeps readable ("software engineer")."""
    return str(row.get("occupation", "")).replace("_", " ").split()


def mask_rows(rows: Sequence[Mapping[str, Any]], mode: str, field: str = "hard_text") -> tuple[list[dict[str, Any]], list[int]]:
    """(the rows with every group cue of each augmented row's ``field`` masked, the cues masked per
    augmented row). The row's occupation words are kept (its label stays readable)."""
    from ..cues import mask_cues

    out, counts = [], []
    for row in rows:
        row = dict(row)
        if row.get("source") == AUGMENTED:
            row[field], count = mask_cues(row[field], mode, keep=label_words(row))
            counts.append(count)
        out.append(row)
    return out, counts


def cue_counts(rows: Sequence[Mapping[str, Any]], field: str = "hard_text") -> list[int]:
    """The group cues (:func:`biasutils.cues.mask_cues`' count) in each augmented row: the surface cues the
    mask-based mitigation targets, counted the same way before and after it."""
    from ..cues import mask_cues

    return [mask_cues(row[field], keep=label_words(row))[1] for row in rows if row.get("source") == AUGMENTED]
