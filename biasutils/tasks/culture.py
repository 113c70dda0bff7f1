"""Culture classification: a user's offensive, hate, stereotype or spam detection datasets in several
cultures, the macro-F1 per dataset and culture, and whether the tasks directly related to the bias studied
fare worse than the others.

The paper evaluates 16 public culture datasets split into tasks *directly* and *indirectly* related to the
bias; their names are not public, so the datasets are the user's (``evaluate.culture_datasets``, see
:class:`biasutils.config.CultureDataset`): a local JSON Lines, CSV or Parquet file (read with
:func:`biasutils.data.read_table`, as the audit reads its files) or a Hub dataset. Each row becomes a
``choice`` item whose options are the dataset's label names; the prediction is the best-scored name.

Rows drawn: up to ``n_items`` per dataset, seeded, an equal share per culture as far as each culture has
rows (round robin over the cultures), so a small culture still gets its estimate.

Metric rows (columns ``group, metric, value, ci_low, ci_high, n``):

* ``macro_f1`` per dataset (group ``<dataset>``) and per dataset and culture (group ``<dataset>:<culture>``),
  over the dataset's label names (``stats.macro_f1``: sklearn's ``f1_score(average="macro", labels=...,
  zero_division=0)``), with fairlearn's bootstrap interval (:func:`biasutils.stats.group_table`);
* ``mean_macro_f1`` per relation (groups ``direct`` and ``indirect``): the mean of the datasets' macro-F1,
  each dataset counting once whatever its size, as a table of per-dataset scores is averaged;
* ``mean_macro_f1_gap`` and ``mean_macro_f1_gap_p`` (group ``direct-indirect``): direct minus indirect.

The contrast's interval and p-value come from one stratified bootstrap over items: every resample draws
each (dataset, culture) cell's items with replacement (cell sizes fixed), recomputes every dataset's
macro-F1 and both means; the interval is the percentile interval of the difference and the p-value the
two-sided bootstrap test that interval inverts (:func:`biasutils.stats.bootstrap_p`). Why not a
permutation test: items cannot be exchanged between the relations, since each dataset has its own labels
and difficulty (a permuted "direct" set would mix label sets), and permuting the relation of whole
datasets has too few arrangements with a handful of datasets (two datasets: p is always 1). The bootstrap
answers the question the evaluation asks: with these datasets fixed and their items a sample, how sure is
the sign of the difference. The relations' items are different items, so the contrast is not paired.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from .. import stats
from ..config import CULTURE_TASK, HUB_ID, PARAMS_DIR, RELATIONS, CultureDataset, StudyParams, task_lists
from ..data import TABLE_FORMATS, read_table
from ..store import Store
from .base import Item, _choices, _round_robin, _Scoring, _table

if TYPE_CHECKING:  # datasets is imported where a Hub dataset is loaded: it takes ~1 s to load
    import datasets

CULTURE_PROMPT = "{text}\n\nWhich label fits this text? Answer with one of: {options}."  # [ours]
OPTION_SEPARATOR = "; "  # joins the label names in {options}
CELL_SEPARATOR = ":"  # joins dataset and culture in the group column: "osact:arabic"
CONTRAST_TEST = "stratified_bootstrap"


# ---------------------------------------------------------------------------------------------- data


def _where(dataset: CultureDataset, field: str) -> str:
    """How messages name a dataset's field: by the dataset's name, as the user wrote it in the params."""
    return f"evaluate.culture_datasets {dataset.name!r} {field}"


def dataset_file(dataset: CultureDataset) -> Path:
    """The local file ``path`` names. A relative path is read from the project folder (the one holding
    ``params/``), not from the working directory: the command line, its workers and the notebook kernels
    (which run in ``reports/<profile>/``) must all read the same file."""
    path = Path(dataset.path).expanduser()
    return path if path.is_absolute() else PARAMS_DIR.parent / path


def is_local(dataset: CultureDataset) -> bool:
    """A local file: ``path`` has a table extension, exists, or is no Hub id (``org/name``), so that a
    mistyped file name is reported as a missing file, not as an unknown Hub dataset."""
    path = dataset_file(dataset)
    return path.suffix.lower() in TABLE_FORMATS or path.exists() or not HUB_ID.match(dataset.path)


def load_rows(dataset: CultureDataset) -> pd.DataFrame:
    """Every row of the dataset: the local file, else the Hub dataset ``path`` (``config``, ``split``)
    through ``datasets.load_dataset``."""
    if is_local(dataset):
        return read_table(dataset_file(dataset), _where(dataset, "path"))
    try:
        return hub_rows(dataset).to_pandas()
    except (OSError, ValueError) as error:  # not found, no connection, an unknown split or configuration
        raise ValueError(f"{_where(dataset, 'path')}: the Hub dataset {dataset.path!r} (config {dataset.config!r}, "
                         f"split {dataset.split!r}) cannot be loaded: {error}") from None


def hub_rows(dataset: CultureDataset) -> datasets.Dataset:
    """The Hub dataset's split; its own module function so tests can stand a local dataset in for the Hub."""
    import datasets

    return datasets.load_dataset(dataset.path, dataset.config, split=dataset.split)


def check_columns(frame: pd.DataFrame, dataset: CultureDataset) -> None:
    """Every column the dataset's params name must be in its data, and hold no missing value."""
    for field in ("text_field", "label_field", "culture_field"):
        column = getattr(dataset, field)
        if column is None:
            continue
        if column not in frame.columns:
            raise ValueError(f"{_where(dataset, field)}: {column!r} is not a column of {dataset.path}; "
                             f"allowed: one of its columns: {', '.join(map(str, frame.columns))}")
        missing = np.flatnonzero(frame[column].isna().to_numpy())
        if len(missing):
            raise ValueError(f"{_where(dataset, field)}: column {column!r} of {dataset.path} misses {len(missing)} "
                             f"value(s) (first: row {missing[0] + 1}); allowed: a value in every row")


def as_text(value: Any) -> str:
    """A cell as the text label names are matched with: ``1.0`` (an integer column with a gap) reads "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def label_names(raw: Sequence[str], dataset: CultureDataset) -> dict[str, str]:
    """Raw label value -> the name the model chooses; refuses a value the ``labels`` mapping leaves out."""
    names = dataset.labels or {value: value for value in sorted(set(raw))}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ValueError(f"{_where(dataset, 'labels')}: column {dataset.label_field!r} of {dataset.path} holds "
                         f"{unknown[:5]} (label values are matched as text); allowed: {', '.join(map(repr, names))}")
    if len(set(names.values())) < 2:
        raise ValueError(f"{_where(dataset, 'label_field')}: column {dataset.label_field!r} of {dataset.path} holds "
                         f"the one label {sorted(set(raw))}; allowed: two or more labels to classify between")
    return names


def stratified_rows(cultures: Sequence[str], n: int, rng: random.Random) -> list[int]:
    """Up to ``n`` row indices, an equal share per culture (shuffled within each), in file order."""
    buckets: dict[str, list[int]] = {}
    for index, culture in enumerate(cultures):
        buckets.setdefault(culture, []).append(index)
    for bucket in buckets.values():
        rng.shuffle(bucket)
    return sorted(_round_robin([buckets[culture] for culture in sorted(buckets)], n))


def dataset_items(dataset: CultureDataset, n: int, seed: int) -> list[Item]:
    """The dataset's items: ``n`` rows at most (see :func:`stratified_rows`), one choice item each."""
    frame = load_rows(dataset)
    check_columns(frame, dataset)
    raw = [as_text(value) for value in frame[dataset.label_field]]
    names = label_names(raw, dataset)
    options = tuple(dict.fromkeys(names.values()))
    cultures = ([as_text(value) for value in frame[dataset.culture_field]] if dataset.culture_field
                else [str(dataset.culture)] * len(frame))
    template = dataset.prompt or CULTURE_PROMPT
    texts = frame[dataset.text_field].to_numpy(dtype=object)
    return [
        Item(id=f"culture-{dataset.name}-{index:06d}", kind="choice", options=options,
             prompt=template.format(text=str(texts[index]), options=OPTION_SEPARATOR.join(options)),
             meta={"dataset": dataset.name, "culture": cultures[index], "relation": dataset.relation,
                   "gold": names[raw[index]]})
        for index in stratified_rows(cultures, n, random.Random(f"culture-{dataset.name}-{seed}"))
    ]


def check_local_datasets(params: StudyParams) -> None:
    """Build the items of every local dataset a run evaluates, so a wrong column, label or path stops the
    command line with exit 2 before any training; a Hub dataset is checked when the evaluation loads it
    (that needs the network)."""
    if not any(CULTURE_TASK in tasks for tasks in task_lists(params).values()):
        return
    for dataset in params.evaluate.culture_datasets:
        if is_local(dataset):
            dataset_items(dataset, 1, params.seed)


# ---------------------------------------------------------------------------------------------- relations


def relation_means(frame: pd.DataFrame, options: Mapping[str, Sequence[str]]) -> Callable[[np.ndarray], np.ndarray]:
    """A function of sample indices -> [mean macro-F1 of the direct datasets, of the indirect ones] (NaN for
    a relation without datasets): the observed value on every index, a bootstrap draw on a resample."""
    gold, prediction, dataset_of = (frame[column].to_numpy() for column in ("gold", "prediction", "dataset"))
    metrics = {dataset: stats.macro_f1(labels) for dataset, labels in options.items()}
    relation_of = dict(zip(frame["dataset"], frame["relation"], strict=True))

    def means(index: np.ndarray) -> np.ndarray:
        drawn = dataset_of[index]
        scores = {dataset: metric(gold[index[drawn == dataset]], prediction[index[drawn == dataset]])
                  for dataset, metric in metrics.items()}
        return np.array([np.mean([score for dataset, score in scores.items() if relation_of[dataset] == relation]
                                 or [np.nan]) for relation in RELATIONS])

    return means


@dataclass(frozen=True, kw_only=True)
class CultureClassification(_Scoring):
    """The user's culture datasets as choice items: macro-F1 per dataset and culture, per relation, and the
    direct-minus-indirect contrast (see the module docstring)."""

    name: ClassVar[str] = CULTURE_TASK
    meta_in_key: ClassVar[bool] = True

    def items(self, params: StudyParams, store: Store) -> list[Item]:
        if not params.evaluate.culture_datasets:
            raise ValueError(f"evaluate.culture_datasets: empty; the {CULTURE_TASK} task needs one or more datasets")
        return [item for dataset in params.evaluate.culture_datasets
                for item in dataset_items(dataset, dataset.n_items or params.evaluate.items_for(self.name), params.seed)]

    def score(self, items: Sequence[Item], outputs: Sequence[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        frame = _choices(items, outputs)
        frame["correct"] = frame["prediction"] == frame["gold"]
        frame["cell"] = frame["dataset"] + CELL_SEPARATOR + frame["culture"]
        options = {item.meta["dataset"]: item.options for item in items}
        parts = []
        for dataset, rows in frame.groupby("dataset", sort=False):
            metrics = {"macro_f1": stats.macro_f1(options[str(dataset)])}
            parts += self.groups(rows, metrics, [("dataset",), ("cell",)], "prediction", "gold")
        return frame, _table(parts + self.relations(frame, options))

    def relations(self, frame: pd.DataFrame, options: Mapping[str, Sequence[str]]) -> list[pd.DataFrame]:
        """``mean_macro_f1`` per relation and the direct-minus-indirect gap table, from one stratified bootstrap."""
        means = relation_means(frame, options)
        observed = means(np.arange(len(frame)))
        draws = stats.stratified_bootstrap(means, frame["cell"], self.n_boot, self.seed).reshape(self.n_boot, len(RELATIONS))
        sizes = [int((frame["relation"] == relation).sum()) for relation in RELATIONS]
        rows = pd.DataFrame([
            {"group": relation, "metric": "mean_macro_f1", "value": float(observed[k]),
             **dict(zip(("ci_low", "ci_high"), stats.percentile_interval(draws[:, k], self.ci), strict=True)),
             "n": sizes[k]}
            for k, relation in enumerate(RELATIONS)
        ], columns=list(stats.GROUP_COLUMNS))
        low, high = stats.percentile_interval(draws[:, 0] - draws[:, 1], self.ci)
        gap = pd.DataFrame([{
            "metric": "mean_macro_f1", "group_a": RELATIONS[0], "group_b": RELATIONS[1],
            "value": float(observed[0] - observed[1]), "ci_low": low, "ci_high": high,
            "p_value": stats.bootstrap_p(draws[:, 0] - draws[:, 1]), "test": CONTRAST_TEST,
            "n_a": sizes[0], "n_b": sizes[1],
        }], columns=list(stats.GAP_COLUMNS))
        return [rows, gap]


# ---------------------------------------------------------------------------------------------- reading


def per_culture(metrics: pd.DataFrame, datasets: Sequence[CultureDataset]) -> pd.DataFrame:
    """The task's macro-F1 rows of one evaluation, one per dataset (culture ``all``) and per culture within
    it, each with its dataset's relation: what notebook 04 draws, one line per row."""
    relation = {dataset.name: dataset.relation for dataset in datasets}
    rows = metrics[metrics.metric == "macro_f1"]
    parts = rows.group.str.partition(CELL_SEPARATOR)
    return pd.DataFrame({
        "dataset": parts[0], "culture": parts[2].replace("", "all"), "relation": parts[0].map(relation),
        "macro_f1": rows.value, "ci_low": rows.ci_low, "ci_high": rows.ci_high, "n": rows.n,
    }).reset_index(drop=True)


def relation_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """The mean macro-F1 of the direct and of the indirect datasets, and their contrast with its p."""
    groups = [*RELATIONS, stats.GAP_SEPARATOR.join(RELATIONS)]
    return metrics[metrics.group.isin(groups)].reset_index(drop=True)
