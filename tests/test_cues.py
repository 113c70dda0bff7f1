"""Group cues and counterfactual twins: hand-made sentences, the "her" rule, and every offline biography."""

from __future__ import annotations

import re

import pytest

from biasutils import cues, generate, misalign
from biasutils.config import CULTURES, Data
from biasutils.corpus import _fold, build_corpus, name_tables

NO_CUE = "The studio opened in 1990."
ALL_CULTURES = "arabic, chinese, portuguese, spanish"
MALE_PRONOUNS = re.compile(r"\b(he|him|his|himself)\b", re.I)
FEMALE_PRONOUNS = re.compile(r"\b(she|her|hers|herself)\b", re.I)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    corpus = build_corpus(Data(n_train=120, n_test=120), seed=0)
    return corpus["train"] + corpus["test"]


def in_table(name: str, culture: str, kind: str) -> bool:
    """Whether ``name`` is a given name of (culture, kind) or, for kind "family", a family name of culture."""
    table = name_tables()[culture, "male" if kind == "family" else kind]
    return _fold(name) in {_fold(n) for n in (table.last if kind == "family" else table.first)}


def test_swap_gender_swaps_every_gendered_word_and_nothing_else() -> None:
    text = "He told his wife that she should call him, and his son met her brother in Boston."
    swapped, count = cues.swap_gender(text, {})
    assert swapped == "She told her husband that he should call her, and her daughter met his sister in Boston."
    assert count == 9
    tokens, new_tokens = re.findall(r"\w+|[^\w\s]", text), re.findall(r"\w+|[^\w\s]", swapped)
    gendered = [t.lower() in cues.MALE_WORDS | cues.FEMALE_WORDS for t in tokens]
    assert sum(gendered) == 9
    assert [t for t, g in zip(tokens, gendered) if not g] == [t for t, g in zip(new_tokens, gendered) if not g]
    assert all(old != new for old, new, g in zip(tokens, new_tokens, gendered) if g)


def test_swap_gender_keeps_case_and_counts() -> None:
    swapped, count = cues.swap_gender("HE and His Father met Mr. Haddad's son.", {})
    assert (swapped, count) == ("SHE and Her Mother met Mrs. Haddad's daughter.", 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She thanked her team.", "He thanked his team."),
        ("She thanked her mother.", "He thanked his father."),
        ("Clients book her again.", "Clients book him again."),
        ("Private clients book her for years.", "Private clients book him for years."),
        ("She fills sketchbooks with everything around her.", "He fills sketchbooks with everything around him."),
        ("They gave her a prize and her own studio.", "They gave him a prize and his own studio."),
        ("The prize is hers.", "The prize is his."),
        ("The prize is his.", "The prize is hers."),
        ("Ms. Haddad met her.", "Mr. Haddad met him."),
    ],
)
def test_her_is_object_or_possessive_by_the_next_word(text: str, expected: str) -> None:
    assert cues.swap_gender(text, {})[0] == expected


def test_names_swap_as_whole_words_only() -> None:
    text = "Omar met Omari and Shu-Fen; Omar's dog likes him."
    swapped, count = cues.swap_gender(text, {"Omar": "Layla", "Shu": "X"})
    assert (swapped, count) == ("Layla met Omari and Shu-Fen; Layla's dog likes her.", 3)


def test_gender_twin_of_every_offline_biography_round_trips_and_changes_gender(rows) -> None:
    tables = name_tables()
    both_inferred = 0
    for row in rows:
        text, gender, culture = row["hard_text"], row["gender_name"], row["culture"]
        other = "female" if gender == "male" else "male"
        twin = cues.gender_twin(text, gender, name=row["name"], culture=culture)
        assert twin is not None and twin.group == other
        assert cues.swap_gender(twin.text, cues.inverse(twin.name_map))[0] == text
        first = next(key for key in twin.name_map if key != row["name"])
        new_name, new_first = twin.name_map[row["name"]], twin.name_map[first]
        assert new_name == new_first + row["name"].removeprefix(first)  # the family name stays
        assert _fold(new_first) in {_fold(n) for n in tables[culture, other].first}
        assert new_first in twin.text and row["name"] not in twin.text
        # the family name may itself read as a pronoun ("She" is a Chinese family name), so drop the name
        pronouns = MALE_PRONOUNS if gender == "male" else FEMALE_PRONOUNS
        assert not pronouns.search(twin.text.replace(new_name, ""))
        if cues.infer_gender(text) == gender:
            both_inferred += 1
            assert cues.infer_gender(twin.text) == other
        found = cues.gender_twin(text, gender)  # names found in the text instead of given
        assert found is not None and cues.swap_gender(found.text, cues.inverse(found.name_map))[0] == text
    assert len(rows) == 240
    assert both_inferred >= 230  # the rest use the first name only and hold no gendered word


def test_culture_twin_of_every_offline_biography_round_trips(rows) -> None:
    for row in rows:
        text, gender, culture = row["hard_text"], row["gender_name"], row["culture"]
        target = cues.twin_culture(culture)
        twin = cues.culture_twin(text, culture, target, gender, name=row["name"])
        assert twin is not None and twin.group == target
        assert cues.swap_culture(twin.text, cues.inverse(twin.name_map), target, culture)[0] == text
        first = next(key for key in twin.name_map if row["name"].startswith(key + " "))
        new_first = twin.name_map[first]
        new_last = twin.name_map[row["name"]].removeprefix(new_first + " ")
        assert in_table(new_first, target, gender) and in_table(new_last, target, "family")
        assert twin.name_map[row["name"]] in twin.text and row["name"] not in twin.text
        found = cues.culture_twin(text, culture, target, gender)
        assert found is not None
        assert cues.swap_culture(found.text, cues.inverse(found.name_map), target, culture)[0] == text


def test_text_without_a_group_cue_has_no_twin() -> None:
    assert cues.gender_twin(NO_CUE, "male") is None
    assert cues.gender_twin(NO_CUE, "female") is None
    assert cues.culture_twin(NO_CUE, "arabic", "chinese", "male") is None
    assert cues.swap_gender(NO_CUE, {}) == (NO_CUE, 0)


@pytest.mark.parametrize("name", ["Ahmed Haddad", None])
def test_culture_twin_swaps_names_and_culture_words(name: str | None) -> None:
    text = "Ahmed Haddad is an Arab architect. Arabs and Arabic speakers hire Ahmed."
    for target in ("chinese", "portuguese", "spanish"):
        twin = cues.culture_twin(text, "arabic", target, "male", name=name)
        assert twin is not None and twin.group == target
        first, last = twin.name_map["Ahmed"], twin.name_map["Haddad"]
        assert in_table(first, target, "male") and in_table(last, target, "family")
        adjective, plural = cues.CULTURE_TERMS[target][:2]
        article = "an" if adjective[0] in "AEIOU" else "a"
        expected = f"{first} {last} is {article} {adjective} architect. {plural} and {adjective} speakers hire {first}."
        assert twin.text == expected
        # full name (one swap when given, first + family when found), "an Arab", "Arabs", "Arabic", first name
        assert twin.swaps == (5 if name else 6)
        assert cues.culture_twin(text, "arabic", target, "male", name=name) == twin  # deterministic
    assert cues.culture_twin("An Arab painter.", "arabic", "chinese", "female").text == "A Chinese painter."


def test_gender_twin_finds_names_of_either_gender_in_the_text() -> None:
    twin = cues.gender_twin("Layla met Ahmed at work.", "female")
    assert twin is not None and twin.swaps == 2
    assert cues.given_name_owner(twin.name_map["Layla"]) == ("arabic", "male")
    assert cues.given_name_owner(twin.name_map["Ahmed"]) == ("arabic", "female")
    assert twin.text == f"{twin.name_map['Layla']} met {twin.name_map['Ahmed']} at work."


def test_name_index_and_name_maps() -> None:
    assert cues.given_name_owner("Layla") == ("arabic", "female")
    assert cues.given_name_owner("LAYLA") == ("arabic", "female")
    assert cues.given_name_owner("Fatima") is None  # also Portuguese ("Fátima"), so it signals no culture
    assert cues.given_name_owner("She") is None  # an English word, though a Chinese family name
    assert cues.family_name_culture("Haddad") == "arabic"
    assert cues.family_name_culture("Boston") is None
    mapping = cues.gender_name_map("Ahmed", "arabic", "male")
    assert mapping == cues.gender_name_map("Ahmed", "arabic", "male")
    assert cues.given_name_owner(mapping["Ahmed"]) == ("arabic", "female")
    assert cues.inverse(mapping) == {mapping["Ahmed"]: "Ahmed"}
    with pytest.raises(ValueError, match="two names to one"):
        cues.inverse({"Omar": "Layla", "Ali": "Layla"})


def test_culture_rotation_targets_every_culture_once() -> None:
    assert cues.CULTURE_ROTATION == {
        "arabic": "chinese", "chinese": "portuguese", "portuguese": "spanish", "spanish": "arabic"
    }
    assert sorted(cues.twin_culture(c) for c in CULTURES) == sorted(CULTURES)


def test_one_lexicon_decides_gender() -> None:
    old_male = {"he", "him", "his", "himself", "man", "men", "male", "mr", "father", "husband", "son", "boy"}
    old_female = {"she", "her", "hers", "herself", "woman", "women", "female", "mrs", "ms", "mother", "wife",
                  "daughter", "girl"}
    assert old_male <= cues.MALE_WORDS and old_female <= cues.FEMALE_WORDS
    assert not cues.MALE_WORDS & cues.FEMALE_WORDS
    assert generate.infer_gender is cues.infer_gender is misalign.group.infer_gender
    for module in (generate.prompts, generate.markers):  # where the generate package plans prompts and reads samples
        assert module.GENDER_WORDS is cues.GENDER_WORDS and module.CULTURE_WORDS is cues.CULTURE_WORDS
    assert cues.infer_gender("The actress met her niece.") == "female"
    assert cues.infer_gender("He and she founded it.") == "unknown"


@pytest.mark.parametrize(
    ("call", "argument", "allowed"),
    [
        (lambda: cues.gender_twin("He left.", "other"), "gender", "male, female"),
        (lambda: cues.gender_twin("He left.", "male", culture="french"), "culture", "arabic, chinese"),
        (lambda: cues.culture_twin("He left.", "french", "arabic", "male"), "culture", ALL_CULTURES),
        (lambda: cues.culture_twin("He left.", "arabic", "french", "male"), "target", ALL_CULTURES),
        (lambda: cues.culture_twin("He left.", "arabic", "chinese", "x"), "gender", "male, female"),
        (lambda: cues.culture_twin("He left.", "arabic", "arabic", "male"), "target", "chinese, portuguese, spanish"),
        (lambda: cues.swap_culture("He left.", {}, "arabic", "klingon"), "to_culture", "arabic, chinese"),
        (lambda: cues.twin_culture("dutch"), "culture", ALL_CULTURES),
        (lambda: cues.gender_name_map("Ahmed", "arabic", "female"), "first", "'Ahmed'"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_allowed_values(call, argument: str, allowed: str) -> None:
    with pytest.raises(ValueError) as error:
        call()
    assert argument in str(error.value) and allowed in str(error.value)
