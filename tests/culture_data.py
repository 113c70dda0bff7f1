"""The culture classification fixtures (tests/fixtures/culture/) as params overrides, shared by the tests.

Three small datasets, one per file format: ``offense.jsonl`` (Spanish and Arabic, offensive or not, labels
0/1 named through ``labels``, direct), ``hate.csv`` (Portuguese and Spanish hate speech, yes/no, other column
names, direct) and ``spam.parquet`` (Chinese spam, one culture for the whole file, indirect).
"""

from __future__ import annotations

from pathlib import Path

from biasutils.config import PARAMS_DIR

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "culture"


def fixture_datasets(folder: Path = FIXTURES) -> tuple[str, str, str]:
    """The three datasets as params items, their files under ``folder`` (absolute, or relative to the project)."""
    return (f"{{name: offense, path: {folder / 'offense.jsonl'}, culture_field: lang, relation: direct, "
            "labels: {0: not offensive, 1: offensive}}",
            f"{{name: hate, path: {folder / 'hate.csv'}, text_field: comment, label_field: is_hate, "
            "culture_field: country, relation: direct}",
            f"{{name: spam, path: {folder / 'spam.parquet'}, culture: chinese, relation: indirect}}")


OFFENSE, HATE, SPAM = fixture_datasets()
RELATIVE = fixture_datasets(FIXTURES.relative_to(PARAMS_DIR.parent))  # as README writes paths: no machine path


def datasets_override(*datasets: str) -> str:
    """``--set`` item naming these datasets (default: all three fixtures)."""
    return f"evaluate.culture_datasets=[{', '.join(datasets or (OFFENSE, HATE, SPAM))}]"
