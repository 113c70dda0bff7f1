"""Compute a profile's artifacts before any notebook renders: the work of each stage at each point.

A :class:`Task` is one stage at one grid point. Its work calls the very package functions its notebook
calls (``generate_samples``, ``mix_artifact``, ``finetune_artifact``, ``evaluate_artifact``, ...), so a
notebook that renders afterwards finds everything in the store; one opened alone in JupyterLab
computes on a miss through the same functions. Which tasks a run needs is decided by probing the
store (:meth:`Store.probing`) with those same calls: the keys that decide are the keys that compute.
"""

from __future__ import annotations

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


def _item_activations(params: StudyParams, point: Point, store: Store) -> None:
    from ..evaluate import task_activations, task_items

    task_activations(params, point["task"], task_items(params, point["task"], store), store)


def _training_activations(params: StudyParams, point: Point, store: Store) -> None:
    from ..data import original_artifact
    from ..finetune import activations_artifact
    from ..generate import generate_samples

    if point["source"] == "original":
        activations_artifact(params, original_artifact(params.data, params.seed, store), "train.jsonl", store)
    else:
        samples = generate_samples(params, point["attribute"], point["source"], store)
        activations_artifact(params, samples, "samples.jsonl", store)


def _misalign(params: StudyParams, point: Point, store: Store) -> None:
    from ..misalign import misalign_artifact, stereotype_artifact

    misalign_artifact(params, point["attribute"], point["bias_type"], store)
    stereotype_artifact(params, store)


def _mitigated_student(params: StudyParams, point: Point, store: Store) -> None:
    from ..mitigate import mitigated_evaluation, mitigated_tasks, probe_artifact

    where = (point["attribute"], point["bias_type"], point["ratio"], point["seed"], point["mitigation"])
    for task in mitigated_tasks(params):
        mitigated_evaluation(params, *where, task, store)
    probe_artifact(params, *where, store)


def _mitigate(params: StudyParams, point: Point, store: Store) -> None:
    from ..mitigate import comparison_artifact, mitigated_points

    if mitigated_points(params):  # no mitigation chosen: 06 says so, nothing to compute
        comparison_artifact(params, store)


def _chain(params: StudyParams, point: Point, store: Store) -> None:
    from ..multiround import chain_measures

    chain_measures(params, point["chain"], store)


def _multiround(params: StudyParams, point: Point, store: Store) -> None:
    from ..multiround import multiround_artifact

    if params.multiround.rounds:  # no round chosen: 07 says so, nothing to compute
        multiround_artifact(params, store)


def _report(params: StudyParams, point: Point, store: Store) -> None:
    from ..report import record_artifact

    record_artifact(params, store)


# stage -> the artifacts its notebook reads at one point
STAGE_WORK: dict[str, Callable[[StudyParams, Point, Store], None]] = {
    "data": _data, "generate": _generate, "mix": _mix, "finetune": _finetune, "evaluate": _evaluate,
    "misalign": _misalign, "mitigate": _mitigate, "multiround": _multiround, "report": _report,
}


# Work that many tasks of a later stage read, or that a stage's one task summarises: tasks of their own,
# spread over the workers, instead of inside the first task that needs them while the other workers wait
# on its lock. The frozen layers' activations over the original data, each generated set and each task's
# items run alongside the stage named here; those of the generated sets, the mitigated students and the
# multi-round chains (one task per chain: its rounds run one after the other) in a phase of their own just
# before it ("finetune (inputs)", "mitigate (inputs)", "multiround (inputs)"). Each is computed with
# the resources of the stage that reads it.
ACTIVATIONS = Stage("activations", "")
MITIGATED = Stage("mitigated-student", "")
CHAIN = Stage("multiround-chain", "")


@dataclass(frozen=True)
class SharedWork:
    alongside: str  # the stage whose phase runs these tasks
    reader: str  # the stage that reads them: its resources, and nothing to do unless it is selected
    work: Callable[[StudyParams, Point, Store], None]
    points: Callable[[StudyParams], list[dict[str, Any]]]
    before: bool = False  # in a phase of their own before the stage's tasks, which read them
    stage: Stage = ACTIVATIONS


def _frozen(params: StudyParams) -> bool:
    """Whether the bottom layers are frozen, so their activations are cached (else no activation task)."""
    return params.finetune.lora.top_layers is not None


def _item_points(params: StudyParams) -> list[dict[str, Any]]:
    return [{"task": task} for task in params.grid.tasks] if _frozen(params) else []


def _original_points(params: StudyParams) -> list[dict[str, Any]]:
    return [{"source": "original"}] if _frozen(params) else []


def _generated_points(params: StudyParams) -> list[dict[str, Any]]:
    if not _frozen(params) or not any(ratio > 0 for ratio in params.grid.ratios):  # only baselines: none is read
        return []
    return [{"attribute": a, "source": b} for a in params.grid.attributes for b in params.grid.bias_types]


def _mitigated_points(params: StudyParams) -> list[dict[str, Any]]:
    from ..mitigate import mitigated_points

    return mitigated_points(params)


def _chain_points(params: StudyParams) -> list[dict[str, Any]]:
    mr = params.multiround
    return [{"chain": seed} for seed in mr.chains(params.grid.seeds)] if mr.rounds else []


SHARED_WORK: tuple[SharedWork, ...] = (
    SharedWork("generate", "evaluate", _item_activations, _item_points),
    SharedWork("generate", "finetune", _training_activations, _original_points),
    SharedWork("finetune", "finetune", _training_activations, _generated_points, before=True),
    SharedWork("mitigate", "mitigate", _mitigated_student, _mitigated_points, before=True, stage=MITIGATED),
    SharedWork("multiround", "multiround", _chain, _chain_points, before=True, stage=CHAIN),
)


@dataclass(frozen=True)
class Task:
    """One stage's work at one grid point: everything a worker process (local or Ray) needs to run it."""

    run: RunPoint
    params: StudyParams
    store_root: str
    work: Callable[[StudyParams, Point, Store], None]  # a module-level function: pickled by reference
    resource_stage: str = ""  # whose resources the task asks for; its own stage's when empty

    @property
    def resources(self) -> Any:
        """``executor.resources`` of the task's stage (or of the stage that reads what it computes)."""
        return self.params.executor.for_stage(self.resource_stage or self.run.stage.name)

    def label(self) -> str:
        return f"{self.run.stage.name} [{', '.join(f'{k}={v}' for k, v in self.run.point.items())}]"

    @property
    def threads(self) -> int:
        """torch threads for this task: ``executor.resources.<stage>.num_cpus``, whichever executor runs it.

        Why fixed by params, not by how busy the machine is: a float reduction split over another
        number of threads rounds differently, and the numbers must not depend on where a task ran.
        """
        return max(1, int(self.resources.num_cpus))

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
    """The tasks each phase still needs, in pipeline order (phases with nothing to do are left out).

    A phase is a stage's tasks plus the shared work that runs alongside it (:data:`SHARED_WORK`):
    the activations the finetune and evaluate tasks read are computed while the generator runs, or
    just before the fine-tunes, as tasks of their own.
    """
    names = {stage.name for stage in stages}
    plan: dict[str, list[Task]] = {}
    for stage in stages:
        if stage.name not in STAGE_WORK:
            continue
        tasks = [Task(run, params, str(store.root), STAGE_WORK[stage.name]) for run in expand(stage, params)]
        shared = {before: [Task(RunPoint(item.stage, point), params, str(store.root), item.work, item.reader)
                           for item in SHARED_WORK if item.alongside == stage.name and item.before == before
                           and item.reader in names for point in item.points(params)]
                  for before in (True, False)}
        phases = {f"{stage.name} (inputs)": shared[True], stage.name: tasks + shared[False]}
        for phase, phase_tasks in phases.items():
            todo = [task for task in phase_tasks if not task.is_stored(store)]
            if todo:
                plan[phase] = todo
    return plan
