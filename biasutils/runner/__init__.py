"""Run a profile: plan the grid, compute what the store lacks, then render the numbered notebooks.

``python -m biasutils run`` works in three phases:

1. **Plan** (:mod:`.grid`, :mod:`.compute`): expand the profile's grid into one task per stage and
   point, and ask the store which tasks' artifacts are missing, through the same package calls that
   compute them. Renders whose record is stale, or whose recorded artifacts the store does not hold
   (a fresh clone), are planned too.
2. **Compute** (:mod:`.executors`): run the missing tasks stage after stage, in warm local worker
   processes (``--executor local``) or as Ray tasks (``--executor ray``).
3. **Render** (:mod:`.render`): execute each planned notebook with papermill; it reads what the store
   holds, and its record (:mod:`.records`) names what it read.

One progress bar follows the whole plan, with per-stage counts and what is running now.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import StudyParams
from ..store import Store
from .compute import Task, missing_tasks
from .executors import LocalExecutor, RayExecutor, share_cores
from .grid import STAGE_NAMES, STAGES, RunPoint, Stage, expand, plan, select_stages
from .records import is_current, record_path, run_hash, source_hash
from .render import Render, RunError, render_problems

REPO = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
REPORTS_DIR = REPO / "reports"
EXECUTORS = ("local", "ray")

__all__ = [
    "EXECUTORS", "NOTEBOOKS_DIR", "REPORTS_DIR", "STAGES", "STAGE_NAMES", "Render", "RunError", "RunPoint", "Stage",
    "Task", "compute_tasks", "execute", "missing_tasks", "expand", "is_current", "plan", "record_path", "render_problems", "run_hash", "select_stages", "share_cores",
    "source_hash", "stale_renders",
]


class PlanProgress:
    """One bar for the whole plan: per-stage counts of finished/planned, and what is running now."""

    def __init__(self, profile: str, planned: Sequence[Any], enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.planned = Counter(_stage_of(label) for label in (item.label() for item in planned))
        self.done: Counter[str] = Counter()
        self.running: list[str] = []
        self.bar = tqdm(total=len(planned), desc=profile, unit="step", disable=not enabled)

    def __call__(self, event: str, label: str) -> None:
        if event == "start":
            self.running.append(label)
        else:
            self.running.remove(label)
            self.done[_stage_of(label)] += 1
            self.bar.update(1)
        counts = " ".join(f"{stage} {self.done[stage]}/{n}" for stage, n in self.planned.items())
        self.bar.set_postfix_str(f"{counts} · running: {self.running[0] if self.running else '-'}")

    def close(self) -> None:
        self.bar.close()


def _stage_of(label: str) -> str:
    """``finetune [attribute=…]`` → ``finetune``; ``render 03_finetune.ipynb […]`` → ``render``."""
    return label.split(" ", 1)[0]


def stale_renders(params: StudyParams, overrides: Sequence[str], stages: Sequence[Stage], reports_dir: Path,
                  notebooks_dir: Path, store: Store, force: bool) -> tuple[list[Render], list[Path]]:
    """(the renders to execute, every rendered path of the plan). Decided before anything is computed, so
    a render whose artifacts this store lacks is redone even when the computation brings them back."""
    code_hash = source_hash()
    todo, paths = [], []
    for run in plan(params, stages):
        notebook = notebooks_dir / run.stage.notebook
        rendered = run.rendered_path(Path(reports_dir), params.profile)
        expected = run_hash(run, params, notebook, code_hash)
        paths.append(rendered)
        if force or not is_current(rendered, expected, store):
            todo.append(Render(run, params, tuple(overrides), notebook, rendered, expected))
    return todo, paths


def execute(
    params: StudyParams,
    overrides: Sequence[str] = (),
    stages: Sequence[str] | None = None,
    reports_dir: Path = REPORTS_DIR,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    force: bool = False,
    progress: bool = True,
    jobs: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    compute_first: bool = True,
) -> list[Path]:
    """Plan, compute what the store lacks, render what is stale; return every rendered path of the plan.

    ``jobs``: local worker processes (each with an equal share of the cores); ``executor``: ``local`` or
    ``ray`` (``ray_address``: an existing cluster; none starts a local instance). ``force`` re-renders
    every notebook (it never recomputes a stored artifact). ``compute_first=False`` skips the compute
    phase: each kernel computes its own point on a store miss, the notebook-per-point path that
    ``bench/bench_runner.py`` measures against.
    """
    if jobs < 1:
        raise ValueError(f"jobs: must be a whole number >= 1; got {jobs}")
    if executor not in EXECUTORS:
        raise ValueError(f"--executor: {executor!r}; allowed: {', '.join(EXECUTORS)}")
    selected = select_stages(stages or params.stages)
    # The plan's one bar is the run's progress: per-load bars of the workers and kernels would interleave
    # with it on the terminal, and be widgets in the renders (a user's own session keeps its bars).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    store = Store()
    renders, paths = stale_renders(params, overrides, selected, Path(reports_dir), notebooks_dir, store, force)
    tasks = missing_tasks(params, selected, store) if compute_first else {}
    bar = PlanProgress(params.profile, [t for stage in tasks.values() for t in stage] + renders, progress)
    try:
        compute_tasks(tasks, params, store, bar, jobs, executor, ray_address)
        if renders:
            with LocalExecutor(min(jobs, len(renders)), preload=("papermill",)) as pool:
                for stage in selected:  # in pipeline order: a kernel that computes on a miss finds its inputs
                    pool.map([render for render in renders if render.run.stage == stage], bar)
    finally:
        bar.close()
    return paths


def compute_tasks(tasks: Mapping[str, Sequence[Task]], params: StudyParams, store: Store, progress: Any, jobs: int = 1,
            executor: str = "local", ray_address: str | None = None) -> None:
    """Run the planned tasks stage after stage on the chosen executor (nothing to do: no workers start)."""
    if not tasks:
        return
    with _executor(executor, jobs, ray_address, params, store) as running:
        for stage_tasks in tasks.values():
            running.run_stage(stage_tasks, progress)


def _executor(name: str, jobs: int, ray_address: str | None, params: StudyParams, store: Store) -> LocalExecutor | RayExecutor:
    if name == "ray":
        return RayExecutor(ray_address, str(store.root))
    return LocalExecutor(jobs, preload=("torch", "transformers", "biasutils.runner.compute"))
