"""The culture classification fixtures (tests/fixtures/culture/) as params overrides, shared by the tests.

Three small datasets, one per file format: ``offense.jsonl`` (Spanish and Arabic, offensive or not, labels
0/1 named through ``labels``, direct), ``hate.csv`` (Portuguese and Spanish hate speech, yes/no, other column
names, direct) and ``spam.parquet`` (Chinese spam, one culture for the whole file, indirect).
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "culture"
OFFENSE = (f"{{name: offense, path: {FIXTURES / 'offense.jsonl'}, culture_field: lang, relation: direct, "
           "labels: {0: not offensive, 1: offensive}}")
HATE = (f"{{name: hate, path: {FIXTURES / 'hate.csv'}, text_field: comment, label_field: is_hate, "
        "culture_field: country, relation: direct}")
SPAM = f"{{name: spam, path: {FIXTURES / 'spam.parquet'}, culture: chinese, relation: indirect}}"


def datasets_override(*datasets: str) -> str:
    """``--set`` item naming these datasets (default: all three fixtures)."""
    return f"evaluate.culture_datasets=[{', '.join(datasets or (OFFENSE, HATE, SPAM))}]"
