"""Occupation classification, the student's own task, and its counterfactual twins.

Occupation items carry the raw biography and ``meta["format"] = "occupation"``: the scorer builds exactly
the prompt the student was fine-tuned on (``finetune.prompt_text`` with ``params.finetune``), so no
wording lives here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from .. import stats
from ..config import StudyParams
from ..data import load_original
from ..store import Store
from .base import Item, _choices, _Scoring, _table

def _title(occupation: str) -> str:
    """The occupation as the student answers it; imported here because finetune imports torch."""
    from ..finetune import answer_text

    return answer_text(occupation)


def _titles(params: StudyParams) -> tuple[str, ...]:
    """The options of an occupation item: every studied occupation as the student answers it."""
    return tuple(_title(occupation) for occupation in params.data.occupations)



@dataclass(frozen=True, kw_only=True)
class OccupationClassification(_Scoring):
    """The student's own task on the whole test split: accuracy and macro-F1 by gender and culture."""

    name: ClassVar[str] = "occupation_classification"

    def items(self, params: StudyParams, store: Store) -> list[Item]:
        titles = _titles(params)
        return [
            Item(
                id=row["id"], kind="choice", prompt=row["hard_text"], options=titles,
                meta={"format": "occupation", "gold": _title(row["occupation"]), "occupation": row["occupation"],
                      "gender": row["gender_name"], "culture": row["culture"]},
            )
            for row in load_original(params.data, params.seed, store)["test"]
        ]

    def score(self, items: Sequence[Item], outputs: Sequence[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        frame = _choices(items, outputs)
        frame["correct"] = frame["prediction"] == frame["gold"]
        metrics = {"accuracy": stats.ACCURACY, "macro_f1": stats.macro_f1(items[0].options)}
        # real Bias in Bios biographies carry no culture (empty strings): no culture rows then
        by = [(), ("gender",)] + ([("culture",)] if (frame["culture"] != "").all() else [])
        return frame, _table([
            *self.groups(frame, metrics, by, "prediction", "gold"),
            *self.gaps(frame, metrics, ("gender",), [("female", "male")], "prediction", "gold"),
        ])


def twin_item(row: Mapping[str, Any], attribute: str, titles: tuple[str, ...]) -> Item | None:
    """The counterfactual twin of a test biography in which only the ``attribute`` group changes, or None
    when the text holds no cue of that group (counted by :mod:`biasutils.inheritance`, never guessed)."""
    from ..cues import culture_twin, gender_twin, twin_culture

    if attribute == "gender":
        twin = gender_twin(row["hard_text"], row["gender_name"], name=row.get("name") or None,
                           culture=row.get("culture") or None)
    elif row.get("culture"):
        twin = culture_twin(row["hard_text"], row["culture"], twin_culture(row["culture"]), row["gender_name"],
                            name=row.get("name") or None)
    else:  # real Bias in Bios rows carry no culture
        twin = None
    if twin is None:
        return None
    groups = {"gender": row["gender_name"], "culture": row.get("culture", "")} | {attribute: twin.group}
    return Item(
        id=f"{row['id']}~{attribute}", kind="choice", prompt=twin.text, options=titles,
        meta={"format": "occupation", "gold": _title(row["occupation"]), "occupation": row["occupation"],
              "twin_of": row["id"], "attribute": attribute, "original_group": row["gender_name" if attribute == "gender"
                                                                                 else "culture"], **groups},
    )


@dataclass(frozen=True, kw_only=True)
class CounterfactualTwins(OccupationClassification):
    """Every test biography again with only its group changed, once per attribute of the grid.

    Gender twins swap pronouns, gendered nouns and the first name (to a name of the other gender from
    the same culture); culture twins swap the names and culture words to another culture
    (:mod:`biasutils.cues`). Scored like occupation classification, so the stored outputs pair with the
    originals' item by item: :mod:`biasutils.inheritance` reads the flip rate and the shift of the class
    log-probabilities towards the twin group's stereotyped occupations.
    """

    name: ClassVar[str] = "counterfactual_twins"

    def items(self, params: StudyParams, store: Store) -> list[Item]:
        titles = _titles(params)
        test = load_original(params.data, params.seed, store)["test"]
        twins = (twin_item(row, attribute, titles) for attribute in params.grid.attributes for row in test)
        return [twin for twin in twins if twin is not None]
