"""Group cues in a text, and counterfactual twins: texts in which only the group changes.

Why one module: generation writes group words into prompts, group inference reads them back, and the
twin tests swap them. If each kept its own word list, a twin could change a word that inference
ignores (or the reverse), and that mismatch would read as bias. So the gender words
(:data:`GENDER_PAIRS`), the culture words (:data:`CULTURE_TERMS`) and the name index
(:func:`given_name_owner`, :func:`family_name_culture`, built from :func:`biasutils.corpus.name_tables`)
live here and nowhere else.

A *counterfactual twin* (:func:`gender_twin`, :func:`culture_twin`) swaps every gendered word and name
(gender), or the names and culture words (culture), and nothing else. Swaps are deterministic and
undone by swapping back with :func:`inverse` of the twin's name map, so a twin never depends on luck.
A text without any cue of the group gives no twin (``None``): callers count and skip it, never guess.

Limits: word swaps are English and lexical. "her" is possessive or object by the next word only
(:data:`OBJECT_FOLLOWERS`); a few words swap one way only ("hers", "ms", "Arabic", "Spaniard"); names
are found only when capitalised and listed in the name tables.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .config import CULTURES, GENDERS
from .corpus import NameTable, _fold, name_tables

UNKNOWN = "unknown"

# (male, female), lower-case. "her" stands for both "him" and "his"; see OBJECT_FOLLOWERS for the way back.
GENDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"),
    ("man", "woman"), ("men", "women"), ("male", "female"), ("males", "females"), ("mr", "mrs"),
    ("father", "mother"), ("fathers", "mothers"), ("husband", "wife"), ("husbands", "wives"),
    ("son", "daughter"), ("sons", "daughters"), ("boy", "girl"), ("boys", "girls"),
    ("brother", "sister"), ("brothers", "sisters"), ("gentleman", "lady"), ("gentlemen", "ladies"),
    ("boyfriend", "girlfriend"), ("king", "queen"), ("sir", "madam"), ("uncle", "aunt"), ("nephew", "niece"),
    ("grandfather", "grandmother"), ("grandson", "granddaughter"), ("businessman", "businesswoman"),
    ("businessmen", "businesswomen"), ("chairman", "chairwoman"), ("spokesman", "spokeswoman"),
    ("actor", "actress"), ("waiter", "waitress"),
)
MALE_WORDS: frozenset[str] = frozenset(male for male, _ in GENDER_PAIRS)
FEMALE_WORDS: frozenset[str] = frozenset(female for _, female in GENDER_PAIRS) | {"hers", "ms"}

# Words for prompts (biasutils.generate fills its templates with them).
GENDER_WORDS = {
    "male": {"noun": "man", "plural": "men", "pronoun": "he", "possessive": "his", "object": "him"},
    "female": {"noun": "woman", "plural": "women", "pronoun": "she", "possessive": "her", "object": "her"},
}

# Culture words as written in text. Positions correspond across cultures and swap both ways:
# 0 the adjective (Arab <-> Chinese <-> Portuguese <-> Spanish), 1 the plural noun (Arabs <-> Chinese
# people <-> Portuguese people <-> Spaniards). Later positions are further words of the culture that
# swap one way, to the target's adjective (Arabic -> Chinese, Spaniard -> Arab).
CULTURE_TERMS: dict[str, tuple[str, ...]] = {
    "arabic": ("Arab", "Arabs", "Arabic"),
    "chinese": ("Chinese", "Chinese people"),
    "portuguese": ("Portuguese", "Portuguese people"),
    "spanish": ("Spanish", "Spaniards", "Spaniard"),
}
CULTURE_WORDS = {culture: {"adj": terms[0], "plural": terms[1]} for culture, terms in CULTURE_TERMS.items()}

# The target of a culture twin: a fixed rotation, so every culture is a target equally often.
CULTURE_ROTATION: dict[str, str] = dict(zip(CULTURES, CULTURES[1:] + CULTURES[:1], strict=True))

# Words after which "her" is an object ("book her again", "around her."), not a possessive: words that
# cannot start the noun phrase a possessive governs. Built from every {obj} use in the corpus templates
# ("around {obj}.", "{obj} for years", "{obj} again and again") plus the common cases of the same kinds.
OBJECT_FOLLOWERS: frozenset[str] = frozenset(
    # prepositions
    "about above across after against along among around as at before behind below beside besides between "
    "beyond by despite down during for from in into like near of off on onto out over since through "
    "throughout to toward towards under until up upon via with within without "
    # conjunctions
    "and or but nor so yet because if when whenever while where although though unless than that whether "
    # determiners, articles, pronouns
    "a an the this these those some any each every no his her their its my your our both what which who "
    "whom whose it he she they we you i him them me us himself herself "
    # adverbs
    "again too also back away there here now then today tonight yesterday tomorrow once twice often always "
    "never already soon together instead anyway".split()
)

_TO_FEMALE = dict(GENDER_PAIRS)
_TO_MALE = {female: male for male, female in GENDER_PAIRS if female != "her"} | {"hers": "his", "ms": "mr"}
_WORD = r"[^\W\d_]+"
_NEXT_WORD = re.compile(r"\s*([^\W_]+)?")  # the word (letters or digits) after a token, if any
_NAME_TOKEN = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")  # hyphenated given names ("Shu-Fen") kept whole


def infer_gender(text: str) -> str:
    """Gender a text refers to: the majority of :data:`MALE_WORDS` vs :data:`FEMALE_WORDS` tokens.

    Rule (documented for the group-data analysis): more male than female tokens -> male, more female ->
    female, a tie (including none) -> ``unknown``.
    """
    tokens = re.findall(r"[a-z]+", text.lower())
    male = sum(t in MALE_WORDS for t in tokens)
    female = sum(t in FEMALE_WORDS for t in tokens)
    if male > female:
        return "male"
    if female > male:
        return "female"
    return UNKNOWN


@functools.cache
def _tables() -> dict[tuple[str, str], NameTable]:
    return name_tables()


def _is_word(name: str) -> bool:
    """An English function word ("She", "An", "I" are Chinese family names) never counts as a name."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return name.lower() in ENGLISH_STOP_WORDS


@functools.cache
def _given_owners() -> dict[str, tuple[str, str]]:
    return {_fold(n): key for key, table in _tables().items() for n in table.first if not _is_word(n)}


@functools.cache
def _family_cultures() -> dict[str, str]:
    return {_fold(n): culture for (culture, _), table in _tables().items() for n in table.last if not _is_word(n)}


def given_name_owner(token: str) -> tuple[str, str] | None:
    """The (culture, gender) whose given name ``token`` is (accents and case ignored), else None."""
    return _given_owners().get(_fold(token))


def family_name_culture(token: str) -> str | None:
    """The culture whose family name ``token`` is (accents and case ignored), else None."""
    return _family_cultures().get(_fold(token))


@functools.cache
def _targets(culture: str, kind: str) -> tuple[str, ...]:
    """Names a map may write (kind: a gender or "family"): no English word, and no name that is also a
    name of the other kind, so the swapped text reads back the same way."""
    if kind == "family":
        return tuple(sorted(n for n in _tables()[culture, GENDERS[0]].last
                            if not _is_word(n) and _fold(n) not in _given_owners()))
    return tuple(sorted(n for n in _tables()[culture, kind].first
                        if not _is_word(n) and _fold(n) not in _family_cultures()))


def _pick(name: str, source: Iterable[str], targets: Sequence[str], argument: str, table: str) -> str:
    """The target at the name's index in its sorted source table (modulo), so a map never varies."""
    positions = _folded_positions(tuple(source))
    if _fold(name) not in positions:
        raise ValueError(f"{argument}={name!r} is not one of the {table} names of corpus.name_tables")
    return targets[positions[_fold(name)] % len(targets)]


@functools.cache
def _folded_positions(source: tuple[str, ...]) -> dict[str, int]:
    """Each folded name's first index in the sorted table. Cached: every twin of every test item looks a
    name up, and folding the whole table each time was most of what building the twin items cost."""
    positions: dict[str, int] = {}
    for index, name in enumerate(sorted(source)):
        positions.setdefault(_fold(name), index)
    return positions


def gender_name_map(first: str, culture: str, gender: str) -> dict[str, str]:
    """``{first: a given name of the other gender in the same culture}``."""
    _check(CULTURES, culture=culture)
    _check(GENDERS, gender=gender)
    targets = _targets(culture, _other(gender))
    return {first: _pick(first, _tables()[culture, gender].first, targets, "first", f"{culture} {gender} given")}


def culture_name_map(first: str, last: str, culture: str, gender: str, to_culture: str) -> dict[str, str]:
    """First, family and full name mapped to names of ``to_culture`` (same gender).

    The full name is an entry of its own so that a family name that is also an English word ("An")
    is swapped where it follows the first name and nowhere else.
    """
    _check(CULTURES, culture=culture, to_culture=to_culture)
    _check(GENDERS, gender=gender)
    table = _tables()[culture, gender]
    new_first = _pick(first, table.first, _targets(to_culture, gender), "first", f"{culture} {gender} given")
    new_last = _pick(last, table.last, _targets(to_culture, "family"), "last", f"{culture} family")
    mapping = {f"{first} {last}": f"{new_first} {new_last}", first: new_first}
    return mapping if _is_word(last) else mapping | {last: new_last}


def inverse(name_map: Mapping[str, str]) -> dict[str, str]:
    """The map that undoes ``name_map``; it must be one-to-one."""
    inverted = {new: old for old, new in name_map.items()}
    if len(inverted) != len(name_map):
        raise ValueError(f"name_map maps two names to one, so it cannot be undone: {dict(name_map)}")
    return inverted


def _found_names(text: str) -> list[str]:
    """Capitalised words of the text, two-word given names ("Ana Beatriz") kept together."""
    tokens = [m for m in _NAME_TOKEN.finditer(text) if m.group()[0].isupper()]
    names, i = [], 0
    while i < len(tokens):
        spaced = i + 1 < len(tokens) and text[tokens[i].end():tokens[i + 1].start()] == " "
        pair = text[tokens[i].start():tokens[i + 1].end()] if spaced else ""
        if pair and given_name_owner(pair):
            names.append(pair)
            i += 2
        else:
            names.append(tokens[i].group())
            i += 1
    return names


def _split_name(name: str, gender: str, culture: str | None) -> tuple[str, str, str]:
    """(first, family, culture) of a full name: the longest leading words that are a given name."""
    words = name.split()
    for k in range(len(words), 0, -1):
        owner = given_name_owner(" ".join(words[:k]))
        if owner and owner[1] == gender and culture in (None, owner[0]):
            return " ".join(words[:k]), " ".join(words[k:]), owner[0]
    table = f"{culture} {gender}" if culture else gender
    raise ValueError(f"name={name!r} does not start with one of the {table} given names of corpus.name_tables")


_WordSwap = Callable[[str, str, int], str | None]  # (token, text, end of token) -> replacement or None


def _replace(text: str, fixed: Mapping[str, str], word: _WordSwap | None) -> tuple[str, int]:
    """Replace whole occurrences of ``fixed``'s keys (longest first) and, if given, of words ``word`` maps."""
    keys = sorted(fixed, key=len, reverse=True)
    parts = [rf"(?<![\w-])(?P<fixed>{'|'.join(map(re.escape, keys))})(?![\w-])"] if keys else []
    parts += [rf"(?P<word>{_WORD})"] if word else []
    if not parts:
        return text, 0
    count = 0

    def substitute(match: re.Match[str]) -> str:
        nonlocal count
        token = match.group()
        new = fixed[token] if match.lastgroup == "fixed" else word(token, text, match.end())
        count += new is not None and new != token
        return token if new is None else new

    return re.sub("|".join(parts), substitute, text), count


def _cased(word: str, like: str) -> str:
    if len(like) > 1 and like.isupper():
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def _gender_word(token: str, text: str, end: int) -> str | None:
    """The other gender's word for ``token`` (rule in :func:`swap_gender`), or None for other words."""
    lower, following = token.lower(), (_NEXT_WORD.match(text, end).group(1) or "").lower()
    if lower == "her":
        new = "him" if not following or following in OBJECT_FOLLOWERS else "his"
    elif lower == "his" and not following:
        new = "hers"
    else:
        new = _TO_FEMALE.get(lower) or _TO_MALE.get(lower)
    return None if new is None else _cased(new, token)


def swap_gender(text: str, name_map: Mapping[str, str]) -> tuple[str, int]:
    """Swap every gendered word (case kept) and every name of ``name_map``; the new text and the count.

    Female "her" becomes "him" before punctuation, the end of the text or a word of
    :data:`OBJECT_FOLLOWERS` ("book her again"), else "his" ("her mother"); "hers" becomes "his".
    Male "his" becomes "hers" before punctuation or the end ("the prize is his."), else "her".
    """
    return _replace(text, name_map, _gender_word)


def swap_culture(text: str, name_map: Mapping[str, str], from_culture: str, to_culture: str) -> tuple[str, int]:
    """Swap the names of ``name_map`` and ``from_culture``'s words for ``to_culture``'s; text and count.

    Round trips hold when the text holds no ``to_culture`` words of its own to begin with.
    """
    _check(CULTURES, from_culture=from_culture, to_culture=to_culture)
    return _replace(text, _term_map(from_culture, to_culture) | dict(name_map), None)


def _term_map(from_culture: str, to_culture: str) -> dict[str, str]:
    """Culture words by position (CULTURE_TERMS), with "a"/"an" before singular words made to agree."""
    old, new = CULTURE_TERMS[from_culture], CULTURE_TERMS[to_culture]
    pairs = list(zip(old[:2], new[:2])) + [(extra, new[0]) for extra in old[2:]]
    mapping = dict(pairs)
    for i, (source, target) in enumerate(pairs):
        if i == 1:  # the plural noun takes no article
            continue
        article = "an" if target[0].lower() in "aeiou" else "a"
        for written in ("a", "an", "A", "An"):
            mapping[f"{written} {source}"] = f"{_cased(article, written)} {target}"
    return mapping


@dataclass(frozen=True)
class Twin:
    """A counterfactual twin: its text, its group, the number of replacements (a full name in the name map
    counts once) and the name map, whose :func:`inverse` turns the twin back into the original."""

    text: str
    group: str
    swaps: int
    name_map: dict[str, str]


def gender_twin(text: str, gender: str, name: str | None = None, culture: str | None = None) -> Twin | None:
    """The twin of the other gender, or None when the text holds no gendered word and no known given name.

    ``name``: the person's full name when known (then ``culture`` too, or it is read from the name);
    otherwise every given name found in the text is swapped to the other gender of its own culture.
    """
    _check(GENDERS, gender=gender)
    _check((*CULTURES, None), culture=culture)
    if name:
        first, last, culture = _split_name(name, gender, culture)
        name_map = gender_name_map(first, culture, gender)
        name_map |= {f"{first} {last}": f"{name_map[first]} {last}"} if last else {}
    else:
        name_map = {}
        for found in _found_names(text):
            if owner := given_name_owner(found):
                name_map |= gender_name_map(found, *owner)
    new_text, swaps = swap_gender(text, name_map)
    return Twin(new_text, _other(gender), swaps, name_map) if swaps else None


def culture_twin(text: str, culture: str, target: str, gender: str, name: str | None = None) -> Twin | None:
    """The twin of culture ``target``, or None when the text holds no name of ``culture`` and no culture word.

    ``name``: the person's full name when known; otherwise every given and family name of ``culture``
    found in the text is swapped (given names keep their own gender).
    """
    _check(CULTURES, culture=culture, target=target)
    _check(GENDERS, gender=gender)
    if target == culture:
        others = ", ".join(c for c in CULTURES if c != culture)
        raise ValueError(f"target={target!r} must differ from culture={culture!r}; allowed: {others}")
    if name:
        first, last, _ = _split_name(name, gender, culture)
        name_map = culture_name_map(first, last, culture, gender, target)
    else:
        name_map = _found_culture_map(text, culture, target)
    new_text, swaps = swap_culture(text, name_map, culture, target)
    return Twin(new_text, target, swaps, name_map) if swaps else None


def _found_culture_map(text: str, culture: str, target: str) -> dict[str, str]:
    """Every given and family name of ``culture`` in the text, mapped to one of ``target``."""
    name_map = {}
    for found in _found_names(text):
        owner = given_name_owner(found)
        if owner and owner[0] == culture:  # a given name keeps its own gender
            source, targets = _tables()[owner].first, _targets(target, owner[1])
        elif not owner and family_name_culture(found) == culture:
            source, targets = _tables()[culture, GENDERS[0]].last, _targets(target, "family")
        else:
            continue
        name_map[found] = _pick(found, source, targets, "name", culture)
    return name_map


def twin_culture(culture: str) -> str:
    """The target culture of ``culture``'s twins (:data:`CULTURE_ROTATION`)."""
    _check(CULTURES, culture=culture)
    return CULTURE_ROTATION[culture]


def _other(gender: str) -> str:
    return GENDERS[1 - GENDERS.index(gender)]


def _check(allowed: Sequence[str | None], **arguments: object) -> None:
    """Raise a ValueError naming the argument and the allowed values."""
    for argument, value in arguments.items():
        if value not in allowed:
            raise ValueError(f"{argument}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


# ---------------------------------------------------------------------------------------------- masking

MASK_TOKEN = "[MASK]"
# The neutral word for each gendered word (mask mode "neutral"); a word not listed becomes "person(s)".
NEUTRAL_WORDS: dict[str, str] = {
    "he": "they", "she": "they", "him": "them", "his": "their", "her": "their", "hers": "theirs",
    "himself": "themselves", "herself": "themselves", "mr": "Mx", "mrs": "Mx", "ms": "Mx",
    "man": "person", "woman": "person", "men": "people", "women": "people", "male": "", "female": "",
    "father": "parent", "mother": "parent", "husband": "partner", "wife": "partner", "son": "child",
    "daughter": "child", "brother": "sibling", "sister": "sibling", "boyfriend": "partner", "girlfriend": "partner",
}
_ALL_CULTURE_WORDS: tuple[str, ...] = tuple(sorted({w for terms in CULTURE_TERMS.values() for w in terms}, key=len, reverse=True))


def mask_cues(text: str, mode: str = "token", keep: Iterable[str] = ()) -> tuple[str, int]:
    """Every group cue of the text masked: names of the name tables (a full name as one), gendered words
    (:data:`GENDER_PAIRS`) and culture words (:data:`CULTURE_TERMS`); the new text and the count.

    ``mode``: ``token`` writes :data:`MASK_TOKEN`, ``neutral`` a neutral word ("they", "their",
    "person"; names become "the person", culture words "local"). Words in ``keep`` (case ignored) are
    never masked: a biography's label-bearing words stay, even when they are also a cue.
    """
    _check(("token", "neutral"), mode=mode)
    kept = {word.lower() for word in keep}
    masked = 0

    def replacement(token: str, kind: str) -> str:
        if mode == "token":
            return MASK_TOKEN
        if kind == "name":
            return "the person"
        if kind == "culture":
            return "local"
        return _cased(NEUTRAL_WORDS.get(token.lower(), "person" if not token.lower().endswith("s") else "people"), token)

    def one_word(token: str) -> tuple[str, str | None]:
        """(the word or its replacement, the kind of cue it was or None)."""
        lower = token.lower()
        if lower in kept:
            return token, None
        if lower in MALE_WORDS | FEMALE_WORDS:
            return replacement(token, "gender"), "gender"
        if token[:1].isupper() and _is_name(token):
            return replacement(token, "name"), "name"
        return token, None

    def substitute(match: re.Match[str]) -> str:
        nonlocal masked
        if match.lastgroup == "culture":
            if match.group().lower() in kept:
                return match.group()
            masked += 1
            return replacement(match.group(), "culture")
        words: list[str] = []
        previous = None
        for token in match.group().split(" "):
            new, kind = one_word(token)
            if kind == "name" and previous == "name":  # a full name is one cue
                previous = kind
                continue
            masked += kind is not None
            words.append(new)
            previous = kind
        return " ".join(words)

    culture = "|".join(map(re.escape, _ALL_CULTURE_WORDS))
    name = r"[A-Z][^\W\d_]*(?:-[^\W\d_]+)*(?: [A-Z][^\W\d_]*(?:-[^\W\d_]+)*)*"
    pattern = rf"(?<![\w-])(?P<culture>{culture})(?![\w-])|(?P<words>{name}|{_WORD})"
    return re.sub(pattern, substitute, text), masked


def _is_name(span: str) -> bool:
    """Whether every word of a capitalised span is a given or family name of the tables (not a plain
    word at the start of a sentence)."""
    return all((given_name_owner(word) or family_name_culture(word)) and not _is_word(word) for word in span.split())
