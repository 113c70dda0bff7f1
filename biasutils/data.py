"""The original data D_o, from the offline corpus or from the real Bias in Bios, in one schema.

Both sources produce the LabHC/bias_in_bios Hub columns (``hard_text``, ``profession`` as the LabHC
label id, ``gender`` with 0 = male and 1 = female) plus ours (``occupation``, ``gender_name``, ``name``,
``culture``, ``cue_strength``, ``id``), so every later stage has a single code path. Fields a source does
not know are empty strings: real biographies carry no name, culture or cue strength.

Both splits are balanced: every occupation gets the same number of rows, half male and half female.
For the test split that is what the study measures on (accuracy for male vs female biographies); for
the training split it makes D_o the "unbiased samples" the paper mixes the augmented data into, so
that a gender gap after fine-tuning comes from the augmented data. The real data's own skew (most
nurses in Bias in Bios are women) is therefore not in D_o.

The result is an artifact of the store (stage ``original-data``, files ``train.jsonl`` and
``test.jsonl``) keyed by the fields that shape it, so later stages can name it as an input.
"""

from __future__ import annotations

import functools
import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from biasutils.config import GENDERS, Data, rows_per_cell
from biasutils.corpus import SPLITS, build_corpus
from biasutils.store import Artifact, Store, read_jsonl, write_jsonl

if TYPE_CHECKING:  # datasets is imported by the functions that build datasets: it takes ~1 s to load
    import datasets

STAGE = "original-data"
VERSION = "1"  # bump when the corpus templates or the loader change the rows they produce

# LabHC/bias_in_bios label ids: the numerical labels of the "Classification labels" table in the
# dataset card (huggingface.co/datasets/LabHC/bias_in_bios, README.md): the 28 professions of
# De-Arteaga et al. (2019) in alphabetical order, label = position in this tuple.
LABHC_PROFESSIONS: tuple[str, ...] = (
    "accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist", "dietitian",
    "dj", "filmmaker", "interior_designer", "journalist", "model", "nurse", "painter", "paralegal",
    "pastor", "personal_trainer", "photographer", "physician", "poet", "professor", "psychologist",
    "rapper", "software_engineer", "surgeon", "teacher", "yoga_teacher",
)
LABHC_GENDERS: tuple[str, ...] = ("male", "female")  # LabHC gender label = position (0 male, 1 female)

# files :func:`read_table` reads, by extension, and what each holds
TABLE_FORMATS: dict[str, str] = {".jsonl": "JSON Lines", ".json": "JSON Lines or a JSON array of objects",
                                 ".csv": "CSV", ".parquet": "Parquet"}

HUB_COLUMNS: dict[str, str] = {
    "hard_text": "string",
    "profession": "int (LabHC label id 0-27)",
    "gender": "int (0 = male, 1 = female)",
}
# the schema: column -> Arrow dtype (:data:`FEATURES`, the ``datasets.Features``, is built on first use)
SCHEMA_DTYPES: dict[str, str] = {
    "id": "string",
    "hard_text": "string",
    "profession": "int64",
    "gender": "int64",
    "occupation": "string",
    "gender_name": "string",
    "name": "string",
    "culture": "string",
    "cue_strength": "string",
}
SCHEMA_COLUMNS: tuple[str, ...] = tuple(SCHEMA_DTYPES)


@functools.cache
def schema_features() -> datasets.Features:
    """The schema as ``datasets.Features`` (also ``data.FEATURES``)."""
    import datasets

    return datasets.Features({column: datasets.Value(dtype) for column, dtype in SCHEMA_DTYPES.items()})


def __getattr__(name: str) -> Any:
    """``FEATURES`` (the schema's ``datasets.Features``), built on first access: importing datasets takes ~1 s."""
    if name == "FEATURES":
        return schema_features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_OFFLINE_FIELDS = {
    "n_train", "n_test", "occupations", "cultures",
    "ambiguous_share", "weak_cue_share", "min_sentences", "max_sentences",
}
_BIAS_IN_BIOS_FIELDS = {"bias_in_bios_path", "n_train", "n_test", "occupations"}


def load_original(data: Data, seed: int, store: Store) -> datasets.DatasetDict:
    """D_o as a ``DatasetDict`` with "train" and "test" in the schema, computed once per key."""
    return read_original(original_artifact(data, seed, store))


def original_artifact(data: Data, seed: int, store: Store) -> Artifact:
    """The store artifact holding D_o; its key is the input key of every stage that uses D_o."""
    return store.get_or_compute(
        STAGE,
        original_params(data, seed),
        lambda out_dir, _scratch: _write_splits(original_splits(data, seed), out_dir),
        version=VERSION,
    )


def original_params(data: Data, seed: int) -> dict[str, Any]:
    """Only the fields that shape the rows, so that changing anything else keeps the artifact (and the
    fine-tuned models built on it). A local Bias in Bios copy adds a hash of its files, so edited files
    under the same path are not mistaken for the cached ones."""
    if data.source == "offline":
        return {"source": data.source, "seed": seed, **data.model_dump(mode="json", include=_OFFLINE_FIELDS)}
    fields = data.model_dump(mode="json", include=_BIAS_IN_BIOS_FIELDS)
    return {"source": data.source, "seed": seed, "files": local_fingerprint(data.bias_in_bios_path), **fields}


def read_original(artifact: Artifact) -> datasets.DatasetDict:
    """The artifact's splits with the schema's dtypes spelled out, so both sources read back alike."""
    import datasets

    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(read_jsonl(artifact.file(f"{split}.jsonl")), features=schema_features())
            for split in SPLITS
        }
    )


def original_splits(data: Data, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The rows of both splits in the schema, from the source the parameters name."""
    if data.source == "offline":
        corpus = build_corpus(data, seed)
        return {split: [schema_row(row) for row in corpus[split]] for split in SPLITS}
    return sample_bias_in_bios(load_bias_in_bios(data.bias_in_bios_path), data, seed)


def schema_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with our columns, completed with the LabHC label ids and put in schema order."""
    labelled = row | {
        "profession": LABHC_PROFESSIONS.index(row["occupation"]),
        "gender": LABHC_GENDERS.index(row["gender_name"]),
    }
    return {column: labelled[column] for column in SCHEMA_COLUMNS}


def _write_splits(splits: dict[str, list[dict[str, Any]]], out_dir: Path) -> None:
    for split, rows in splits.items():
        write_jsonl(rows, out_dir / f"{split}.jsonl")


# ----------------------------------------------------------------------------------------------------
# Bias in Bios
# ----------------------------------------------------------------------------------------------------


def load_bias_in_bios(path: str) -> datasets.DatasetDict:
    """The dataset at a Hub id or local directory, checked against the LabHC/bias_in_bios schema."""
    import datasets

    dataset = datasets.load_dataset(path)
    check_hub_schema(dataset, path)
    return dataset


def check_hub_schema(dataset: datasets.DatasetDict, path: str) -> None:
    """Fail early, naming the field and what is missing, rather than deep inside sampling."""
    where = f"data.bias_in_bios_path={path!r}"
    missing_splits = [split for split in SPLITS if split not in dataset]
    if missing_splits:
        raise ValueError(f"{where}: the dataset has splits {sorted(dataset)}; missing {missing_splits}")
    expected = ", ".join(f"{column} ({kind})" for column, kind in HUB_COLUMNS.items())
    for split in SPLITS:
        features = dataset[split].features
        missing = [column for column in HUB_COLUMNS if column not in features]
        if missing:
            raise ValueError(
                f"{where}: split {split!r} lacks column(s) {missing}; "
                f"the LabHC/bias_in_bios schema has {expected}"
            )
        for column in ("profession", "gender"):
            if not str(features[column].dtype).startswith("int"):
                raise ValueError(
                    f"{where}: split {split!r} column {column!r} is {features[column].dtype}, not an integer "
                    f"label; the LabHC/bias_in_bios schema has {expected}"
                )


def sample_bias_in_bios(dataset: datasets.DatasetDict, data: Data, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Draw ``n_train``/``n_test`` rows of the chosen occupations, balanced per occupation x gender."""
    rng = random.Random(f"bias-in-bios-{seed}")
    splits = {}
    for split, n, field in (("train", data.n_train, "n_train"), ("test", data.n_test, "n_test")):
        per_cell = rows_per_cell(n, field, data.occupations)
        indices = balanced_indices(dataset[split], split, data.occupations, per_cell, rng, field)
        rows = dataset[split].select(indices)
        splits[split] = [schema_row(_our_columns(row, split, i)) for row, i in zip(rows, indices, strict=True)]
    return splits


def balanced_indices(
    rows: datasets.Dataset, split: str, occupations: list[str], per_cell: int, rng: random.Random, field: str
) -> list[int]:
    """Row indices: ``per_cell`` random rows of each occupation x gender, in random order."""
    professions, genders = (_int_column(rows, column) for column in ("profession", "gender"))
    chosen: list[int] = []
    shortfalls = []
    for occupation in occupations:
        for gender in GENDERS:
            label, gender_label = LABHC_PROFESSIONS.index(occupation), LABHC_GENDERS.index(gender)
            candidates = np.flatnonzero((professions == label) & (genders == gender_label)).tolist()
            if len(candidates) < per_cell:
                shortfalls.append(f"{occupation}/{gender} has {len(candidates)}")
            else:
                chosen += rng.sample(candidates, per_cell)
    if shortfalls:
        raise ValueError(
            f"data.{field}: {per_cell} rows per occupation x gender are needed "
            f"(data.{field} / (2 x {len(occupations)} occupations)) but split {split!r} "
            f"falls short: {'; '.join(shortfalls)}. Lower data.{field} or choose other data.occupations."
        )
    rng.shuffle(chosen)
    return chosen


def _int_column(rows: datasets.Dataset, column: str) -> np.ndarray:
    """A whole integer column as one array, read in bulk (row by row takes seconds on 257k rows)."""
    return rows.select_columns([column]).with_format("numpy")[:][column]


def _our_columns(row: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    """Our columns for a Bias in Bios row; the id names the source row, so it is stable across draws."""
    return {
        "id": f"bias_in_bios-{split}-{index}",
        "hard_text": row["hard_text"],
        "occupation": LABHC_PROFESSIONS[row["profession"]],
        "gender_name": LABHC_GENDERS[row["gender"]],
        "name": "",
        "culture": "",
        "cue_strength": "",
    }


def local_fingerprint(path: str) -> str:
    """SHA-256 of a local directory's files (names and bytes); empty for a Hub id."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return ""
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _hidden(relative: Path) -> bool:
    """Dot-files and dot-directories (caches, version control) are not part of the data."""
    return any(part.startswith(".") for part in relative.parts)


# ---------------------------------------------------------------------------------------------- user tables


def read_table(path: Path, where: str, error: type[Exception] = ValueError, min_rows: int = 1) -> pd.DataFrame:
    """A user's data file as a frame, the reader chosen by extension (:data:`TABLE_FORMATS`).

    Why here: the audit command and the culture classification task both read a user's JSON Lines, CSV or
    Parquet file, and must refuse the same bad files the same way. Anything missing, unreadable or empty
    raises ``error`` with a message that starts with ``where`` (the flag or the params field that named
    the file), so each caller keeps its own error type and exit code.
    """
    if not path.exists():
        raise error(f"{where}: {path} does not exist")
    if not path.is_file():
        raise error(f"{where}: {path} is not a file; give a {', '.join(TABLE_FORMATS)} file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise error(f"{where}: {path} has the unsupported extension {suffix or '(none)'!r}; "
                    f"allowed: {', '.join(TABLE_FORMATS)}")
    if path.stat().st_size == 0:
        raise error(f"{where}: {path} is empty; give at least {_rows(min_rows)}")
    try:
        frame = _READERS[suffix](path)
    except (ValueError, OSError) as problem:  # pandas' and pyarrow's parse errors are ValueErrors
        raise error(f"{where}: {path} cannot be read as {TABLE_FORMATS[suffix]}: {problem}") from None
    if frame.empty:
        raise error(f"{where}: {path} holds no rows; give at least {_rows(min_rows)}")
    return frame


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _read_json(path: Path) -> pd.DataFrame:
    """JSON Lines, or one JSON array of objects; ``dtype=False`` keeps every value as written."""
    with path.open(encoding="utf-8") as handle:
        is_array = handle.read(4096).lstrip().startswith("[")
    return pd.read_json(path, lines=not is_array, dtype=False)


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as the string written (CSV has no types; "NA" stays a word, an empty cell stays "")."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


_READERS = {".jsonl": _read_json, ".json": _read_json, ".csv": _read_csv, ".parquet": pd.read_parquet}
