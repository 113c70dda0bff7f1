"""Checks across sections that no single field can make: the sizes the mixes and cells need, the
mitigation, multi-round and culture settings, and lengths against the models' context windows."""

from __future__ import annotations

from collections.abc import Sequence

from .names import BIAS_IN_BIOS_ROWS, CULTURE_TASK, NAMED_CONTEXT
from .sections import StudyParams


def rows_per_cell(n: int, field: str, occupations: Sequence[str]) -> int:
    """Rows per occupation x gender cell; ``n`` must split evenly so every occupation is gender-balanced."""
    cells = 2 * len(occupations)
    if n % cells:
        lower, upper = n - n % cells, n - n % cells + cells
        raise ValueError(
            f"data.{field}={n} must be a multiple of 2 x {len(occupations)} occupations = {cells}, so that "
            f"every occupation has as many male as female biographies; nearest allowed: "
            f"{', '.join(str(v) for v in (lower, upper) if v > 0)}"
        )
    return n // cells


def mix_sizes(n_original: int, ratio: float, hold_total_size: bool = False) -> tuple[int, int]:
    """(originals kept, augmented added) for a bias ratio γ; rounding to the nearest whole sample.

    The paper holds D_o fixed and grows D_a, so |D_a| = γ/(1−γ)·|D_o|; ``hold_total_size`` keeps
    |D_o| + |D_a| = |D_o| instead. Here, not in the mix stage, because params are checked with it.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio: {ratio!r} is not a valid bias ratio; allowed: 0 <= ratio < 1")
    if n_original <= 0:
        raise ValueError(f"n_original: {n_original} must be a positive number of original samples")
    if hold_total_size:
        n_augmented = int(round(ratio * n_original))
        return n_original - n_augmented, n_augmented
    return n_original, int(round(ratio / (1.0 - ratio) * n_original))


def size_problems(params: StudyParams) -> list[str]:
    """Every size the design cannot hold, one message each: found when params load, not in a kernel."""
    problems = []
    for field in ("n_train", "n_test"):
        n, limit = getattr(params.data, field), BIAS_IN_BIOS_ROWS[field]
        if n > limit:
            problems.append(f"data.{field}: {n} rows; allowed: at most {limit:,}, the rows of Bias in Bios' "
                            f"{field.removeprefix('n_')} split (the offline corpus stands in for it)")
            continue
        try:
            rows_per_cell(n, field, params.data.occupations)
        except ValueError as error:
            problems.append(str(error))
    for ratio in params.grid.ratios:
        _, needed = mix_sizes(params.data.n_train, ratio, params.mix.hold_total_size)
        if needed > params.generate.n:
            problems.append(
                f"generate.n: {params.generate.n} samples per bias type cannot fill grid.ratios γ = {ratio} with "
                f"data.n_train = {params.data.n_train} (it needs {needed}); allowed: generate.n >= {needed}, or smaller ratios"
            )
            break
    return (problems + context_problems(params) + mitigation_problems(params) + multiround_problems(params)
            + culture_problems(params))


def task_lists(params: StudyParams) -> dict[str, list[str]]:
    """Each params field that lists tasks to evaluate, and its tasks: where a task is asked for."""
    return {"grid.tasks": list(params.grid.tasks), "multiround.tasks": list(params.multiround.tasks or [])}


def culture_problems(params: StudyParams) -> list[str]:
    """The culture classification task asked for without a dataset: it has no items of its own."""
    return [f"evaluate.culture_datasets: empty, but {field} includes {CULTURE_TASK}; allowed: one or more datasets "
            f"(name, path, text_field, label_field, culture_field or culture, relation), or {field} without it"
            for field, tasks in task_lists(params).items() if CULTURE_TASK in tasks and not params.evaluate.culture_datasets]


def mitigation_problems(params: StudyParams) -> list[str]:
    """Mitigated points or tasks outside the grid: ``mitigate.bias_types``, ``ratios`` and ``tasks`` pick among the grid's."""
    chosen = {"bias_types": (params.mitigate.bias_types, params.grid.bias_types),
              "ratios": (params.mitigate.ratios, [r for r in params.grid.ratios if r > 0]),
              "tasks": (params.mitigate.tasks, params.grid.tasks)}
    problems = [f"mitigate.{field}: {', '.join(map(str, sorted(set(values) - set(grid))))} not in the grid; allowed: "
                f"{', '.join(map(str, grid)) or 'none (the grid has no biased point)'} (grid.{field}" + (", above 0)" if field == "ratios" else ")")
                for field, (values, grid) in chosen.items() if values is not None and set(values) - set(grid)]
    tasks = params.mitigate.tasks or params.grid.tasks
    needed = ["occupation_classification"] + (["counterfactual_twins"] if params.mitigate.primary.measure == "twin_shift" else [])
    if set(params.grid.mitigations) - {"none"} and set(needed) - set(tasks):
        problems.append(f"mitigate.tasks: {', '.join(tasks)}; the comparisons of grid.mitigations need "
                        f"{' and '.join(needed)} (mitigate.primary.measure = {params.mitigate.primary.measure})")
    return problems


def multiround_problems(params: StudyParams) -> list[str]:
    """A multi-round study a run could not finish: a round r >= 2 is written by a fine-tuned student, which
    only the transformers backend runs; the rounds' measures need the occupation task."""
    mr = params.multiround
    if mr.rounds == 0:
        return []
    problems = []
    if mr.rounds >= 2 and params.generate.backend != "transformers":
        problems.append(f"generate.backend: {params.generate.backend!r}; multiround.rounds >= 2 has fine-tuned students "
                        "write rounds 2 on; allowed: transformers")
    if mr.tasks is not None and "occupation_classification" not in mr.tasks:
        problems.append(f"multiround.tasks: {', '.join(mr.tasks)}; the rounds' measures need occupation_classification")
    if mr.primary.measure == "twin_shift" and "counterfactual_twins" not in (mr.tasks or params.grid.tasks):
        problems.append("multiround.primary.measure: twin_shift needs counterfactual_twins in "
                        + ("multiround.tasks" if mr.tasks is not None else "grid.tasks"))
    return problems


def context_problems(params: StudyParams) -> list[str]:
    """Lengths past a named model's context window (a Hub model's window is only known once it loads)."""
    problems = []
    generator = NAMED_CONTEXT.get(params.models.generator)
    if generator and params.generate.backend == "transformers" and params.generate.max_new_tokens >= generator:
        problems.append(f"generate.max_new_tokens: {params.generate.max_new_tokens}; allowed: below "
                        f"{generator}, the context window of models.generator {params.models.generator!r}")
    student = NAMED_CONTEXT.get(params.models.student)
    lengths = {"finetune.max_length": params.finetune.max_length,
               **{f"evaluate.max_new_tokens.{task}": n for task, n in params.evaluate.max_new_tokens.items()}}
    problems += [f"{name}: {value}; allowed: at most {student}, the context window of models.student "
                 f"{params.models.student!r}" for name, value in lengths.items() if student and value > student]
    return problems
