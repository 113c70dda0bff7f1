"""Prompt planning: the templates, the names and traits that fill their slots, and the requests of one round.

A *request* is one prompt (system message, instruction, answer prefix) rendered from the templates in
``params/templates/generation.yaml`` for one occupation and one intended group, with the metadata its
sample must record. Why :class:`GenerationError` lives here too: a bad template is the first thing that
can fail, and every later step (backends, journal, loop) imports this module for :class:`Request` anyway.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import PARAMS_DIR, Generate
from ..corpus import NameDrawer, NameTable, name_tables
from ..cues import CULTURE_WORDS, GENDER_WORDS


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
    from ..benchmarks import gender_inventories

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
