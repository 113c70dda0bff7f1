"""Where tasks run: warm local worker processes, or Ray tasks on a local instance or a cluster.

Both run a stage's tasks after the previous stage's are done (a stage reads what the one before it
stored) and stop at the first failure with the grid point and the error; finished artifacts stay in the
store, so a rerun starts from them.

Local: one pool of ``jobs`` worker processes for the whole run. A worker pays the imports of torch and
transformers once and keeps its process-wide caches (tokenizers, the last loaded student) between
tasks. Every task runs with the torch threads its stage's ``executor.resources`` names (one by
default), on either executor, so the numbers do not depend on where or beside what a task ran.

Ray: the same :class:`~.compute.Task` objects as Ray tasks, each asking for the CPUs and GPUs that
``executor.resources`` names for its stage. The store must be one directory that every Ray worker
sees at the same path (a shared file system such as NFS); a worker that cannot see it is refused before
any work.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from .compute import Task
from .render import RunError

Progress = Callable[[str, str], None]  # (event: "start" | "done", task label)


def task_failed(task: Task, error: BaseException) -> RunError:
    """The error of a failed task, with where it failed (the last frame of the worker's traceback)."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    cause = getattr(error, "__cause__", None)
    remote = str(cause).strip().splitlines()[-3:] if cause is not None else []
    detail = ("\n" + "\n".join(remote)) if remote else ""
    return RunError(f"{task.label()} failed: {type(error).__name__}: {error}{where}{detail}\n"
                    "finished artifacts are kept; fix the cause and run again to continue from them")


class LocalExecutor:
    """A pool of ``jobs`` warm worker processes, kept for the whole run (use as a context manager).

    ``preload``: modules every worker imports before the first task (torch and transformers for
    compute), so all workers are up and warm when the work starts, not spawned one by one on demand.
    """

    def __init__(self, jobs: int, preload: Sequence[str] = ()) -> None:
        self.jobs = jobs
        self.preload = tuple(preload)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalExecutor:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited locks or event loops
        self._pool = ProcessPoolExecutor(self.jobs, mp_context=context, initializer=share_cores, initargs=(self.jobs,))
        # submitted together, the warm-ups start every worker at once (the pool spawns while none is idle)
        for future in [self._pool.submit(_import_modules, self.preload) for _ in range(self.jobs)]:
            future.result()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def run_stage(self, tasks: Sequence[Task], progress: Progress) -> None:
        """The stage's tasks, ``jobs`` at a time (tasks that need one shared artifact wait on its lock)."""
        self.map(tasks, progress)

    def map(self, tasks: Sequence[Callable[[], Any]], progress: Progress) -> None:
        """Run callables in the pool; the first failure cancels what has not started and is raised once
        the running ones finish (their results are kept)."""
        assert self._pool is not None, "use LocalExecutor as a context manager"
        running: dict[Future, Any] = {}
        for task in tasks:
            running[self._pool.submit(task)] = task
            progress("start", task.label())
        failure: RunError | None = None
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                if future.cancelled():
                    continue
                error = future.exception()
                if error is None:
                    progress("done", task.label())
                elif failure is None:
                    failure = error if isinstance(error, RunError) else task_failed(task, error)
                    for pending in running:
                        pending.cancel()  # not started yet: dropped; started: runs to the end
        if failure is not None:
            raise failure


class RayExecutor:
    """The tasks as Ray tasks, each asking for its stage's resources (``executor.resources`` in params); a
    local instance of ``num_cpus`` CPUs (default: the machine's) unless ``address`` names a cluster."""

    def __init__(self, address: str | None, store_root: str, num_cpus: int | None = None) -> None:
        self.address, self.store_root, self.num_cpus = address, store_root, num_cpus

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise RunError("--executor ray: Ray is not installed; pip install 'ray>=2.60' (or use --executor local)") from None
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            ray.init(num_cpus=self.num_cpus or machine_cores(), include_dashboard=False, log_to_driver=False)
        self._check_store_visible(ray)
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        ray.shutdown()

    def _check_store_visible(self, ray: Any) -> None:
        """Refuse a cluster whose workers cannot see the store: each alive node reads a token the driver wrote."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex
        probe = Path(self.store_root) / f".ray-probe-{token}"
        probe.write_text(token)
        try:
            reader = ray.remote(num_cpus=0)(_read_token)
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            answers = ray.get([reader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                               .remote(str(probe)) for n in nodes])
        finally:
            probe.unlink(missing_ok=True)
        blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, answer in zip(nodes, answers) if answer != token]
        if blind:
            raise RunError(
                f"--executor ray: the store {self.store_root} is not visible on Ray node(s) {', '.join(blind)}; "
                "put it on a file system every node mounts at the same path (e.g. NFS) and point BIAS_STORE there"
            )

    def run_stage(self, tasks: Sequence[Task], progress: Progress) -> None:
        """Every task of the stage at once; Ray places them by their resource requests."""
        import ray

        if not tasks:
            return
        remote = ray.remote(max_retries=0)(_run_task)
        pending = {}
        for task in tasks:
            need = task.resources
            pending[remote.options(num_cpus=need.num_cpus, num_gpus=need.num_gpus).remote(task)] = task
            progress("start", task.label())
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(done[0])
            try:
                ray.get(done[0])
            except Exception as error:  # noqa: BLE001 - a RayTaskError wraps whatever the task raised
                for ref in pending:
                    ray.cancel(ref)
                raise task_failed(task, getattr(error, "cause", None) or error) from None
            progress("done", task.label())


def share_cores(workers: int) -> None:
    """Give each concurrent kernel an equal share of the cores (kernels inherit this environment).

    Why: two kernels with all cores each oversubscribe the CPU; on a 2-core machine two 1-thread
    fine-tunes finish in 0.71x the time of the same two run one after the other with 2 threads.
    A thread count the user set explicitly is kept.
    """
    threads = str(max(1, machine_cores() // workers))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, threads)


def machine_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _import_modules(names: Sequence[str]) -> None:
    import importlib

    for name in names:
        importlib.import_module(name)


def _read_token(path: str) -> str | None:
    target = Path(path)
    return target.read_text() if target.exists() else None


def _run_task(task: Task) -> str:
    return task()
