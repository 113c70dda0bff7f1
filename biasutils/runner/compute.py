"""Compute a profile's artifacts before any notebook renders: the work of each stage at each point.

A :class:`Task` is one stage at one grid point. Its work calls the very package functions its notebook
calls (``generate_samples``, ``mix_artifact``, ``finetune_artifact``, ``evaluate_artifact``, ...), so a
notebook that renders afterwards finds everything in the store; one opened alone in JupyterLab
computes on a miss through the same functions. Which tasks a run needs is decided by probing the
store (:meth:`Store.probing`) with those same calls: the keys that decide are the keys that compute.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import StudyParams
from ..store import ArtifactMissing, Store
from .grid import RunPoint, Stage, expand

Point = Mapping[str, Any]


def _data(params: StudyParams, point: Point, store: Store) -> None:
    from ..data import original_artifact

    original_artifact(params.data, params.seed, store)


def _generate(params: StudyParams, point: Point, store: Store) -> None:
    from ..generate import generate_samples

    generate_samples(params, point["attribute"], point["bias_type"], store)


def _mix(params: StudyParams, point: Point, store: Store) -> None:
    from ..mix import mix_artifact

    mix_artifact(params, point["attribute"], point["bias_type"], point["ratio"], point["seed"], store)


def _finetune(params: StudyParams, point: Point, store: Store) -> None:
    from ..finetune import finetune_artifact

    finetune_artifact(params, point["attribute"], point["bias_type"], point["ratio"], point["seed"], store)


def _evaluate(params: StudyParams, point: Point, store: Store) -> None:
    from ..evaluate import evaluate_artifact

    for task in params.grid.tasks:
        evaluate_artifact(params, point["attribute"], point["bias_type"], point["ratio"], point["seed"], task, store)


def _misalign(params: StudyParams, point: Point, store: Store) -> None:
    from ..misalign import misalign_artifact, stereotype_artifact

    misalign_artifact(params, point["attribute"], point["bias_type"], store)
    stereotype_artifact(params, store)


# stage -> the artifacts its notebook reads at one point; a stage not named here computes nothing
# ahead (the report reads what the others stored and summarises it as it renders)
STAGE_WORK: dict[str, Callable[[StudyParams, Point, Store], None]] = {
    "data": _data, "generate": _generate, "mix": _mix, "finetune": _finetune, "evaluate": _evaluate,
    "misalign": _misalign,
}


@dataclass(frozen=True)
class Task:
    """One stage's work at one grid point: everything a worker process (local or Ray) needs to run it."""

    run: RunPoint
    params: StudyParams
    store_root: str
    work: Callable[[StudyParams, Point, Store], None]  # a module-level function: pickled by reference

    def label(self) -> str:
        return f"{self.run.stage.name} [{', '.join(f'{k}={v}' for k, v in self.run.point.items())}]"

    @property
    def threads(self) -> int:
        """torch threads for this task: ``executor.resources.<stage>.num_cpus``, whichever executor runs it.

        Why fixed by params, not by how busy the machine is: a float reduction split over another
        number of threads rounds differently, and the numbers must not depend on where a task ran.
        """
        return max(1, int(self.params.executor.for_stage(self.run.stage.name).num_cpus))

    def __call__(self) -> str:
        """Compute the task's artifacts, with its fixed number of torch threads."""
        import torch

        torch.set_num_threads(self.threads)
        self.work(self.params, self.run.point, Store(self.store_root))
        return self.label()

    def is_stored(self, store: Store) -> bool:
        """Whether every artifact of the task is already in the store (nothing is computed to find out)."""
        with store.probing():
            try:
                self.work(self.params, self.run.point, store)
            except ArtifactMissing:
                return False
        return True


def missing_tasks(params: StudyParams, stages: Sequence[Stage], store: Store) -> dict[str, list[Task]]:
    """The tasks each stage still needs, in pipeline order (stages with nothing to do are left out)."""
    plan: dict[str, list[Task]] = {}
    for stage in stages:
        if stage.name not in STAGE_WORK:
            continue
        tasks = [Task(run, params, str(store.root), STAGE_WORK[stage.name]) for run in expand(stage, params)]
        todo = [task for task in tasks if not task.is_stored(store)]
        if todo:
            plan[stage.name] = todo
    return plan


def machine_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
