"""Cold wall time of one grid by the notebook-per-point path and by plan-compute-render, side by side in
one run on the same machine; then a warm rerun, and the render times.

* old: every notebook computes its own point in its kernel (``runner.execute(compute_first=False)``),
  stage by stage, ``--jobs`` kernels at a time; with ``--old-rev REV`` the old path is the code of that
  revision instead (a git worktree; ``python -m biasutils run`` there, its renders of the profile removed
  first), e.g. the commit before plan-compute-render existed, so the package's own speed-ups since then
  count for the new path only;
* new: the missing tasks computed in ``--jobs`` warm workers, stage by stage (the first stage's time
  includes starting the workers), then every notebook rendered from the store.

Each mode starts from an empty store of its own (only the converted model checkpoints are copied in,
so neither pays the one-off GGUF conversion) and an empty reports directory.

    python bench/bench_runner.py [--profile classroom] [--set KEY=VALUE ...] [--jobs 2] [--old-rev REV]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from biasutils import runner
from biasutils.config import load_params
from biasutils.store import Store, default_root

CHECKPOINTS = "model-checkpoint"
REPO = Path(__file__).resolve().parent.parent


def fresh_store(root: Path) -> Path:
    """An empty store holding only the converted model checkpoints of the default store."""
    source = Path(os.environ.get("BIAS_STORE") or default_root()) / CHECKPOINTS
    if source.is_dir():
        shutil.copytree(source, root / CHECKPOINTS)
    root.mkdir(parents=True, exist_ok=True)
    return root


def render_seconds(reports: Path) -> list[float]:
    """Each rendered notebook's execution time, from papermill's metadata."""
    return [json.loads(path.read_text())["metadata"]["papermill"]["duration"] for path in reports.rglob("*.ipynb")]


def old_path(params, overrides: list[str], jobs: int, work: Path) -> dict[str, float]:
    times = {}
    for stage in runner.select_stages(params.stages):
        start = time.perf_counter()
        runner.execute(params, overrides, [stage.name], reports_dir=work / "reports", progress=False, jobs=jobs,
                       compute_first=False)
        times[f"{stage.name} (render, computing)"] = time.perf_counter() - start
    return times


def old_revision_path(rev: str, profile: str, overrides: list[str], jobs: int, work: Path) -> dict[str, float]:
    """``python -m biasutils run`` of another revision's code (a detached worktree), per stage from papermill."""
    from stage_times import stage_times

    tree = work / "old-tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True, capture_output=True)
    try:
        shutil.rmtree(tree / "reports" / profile, ignore_errors=True)  # its committed renders would count as current
        command = [sys.executable, "-m", "biasutils", "run", "--profile", profile, "--jobs", str(jobs)]
        command += [item for override in overrides for item in ("--set", override)]
        start = time.perf_counter()
        subprocess.run(command, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True)
        total = time.perf_counter() - start
        times = {f"{stage} (render, computing)": wall for stage, _, wall, _ in stage_times(profile, tree / "reports")}
        times["(between stages)"] = total - sum(times.values())
        return times
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False, capture_output=True)


def new_path(params, overrides: list[str], jobs: int, work: Path) -> dict[str, float]:
    """Plan, compute in one pool of warm workers (a stage's time ends with its last task), render."""
    times = {}
    start = time.perf_counter()
    stages = runner.select_stages(params.stages)
    tasks = runner.missing_tasks(params, stages, Store())
    times["plan"] = time.perf_counter() - start
    left = {phase: len(phase_tasks) for phase, phase_tasks in tasks.items()}
    phase_of = {task.label(): phase for phase, phase_tasks in tasks.items() for task in phase_tasks}
    mark = [time.perf_counter()]

    def stage_finished(event: str, label: str) -> None:
        stage = phase_of[label]
        if event == "done":
            left[stage] -= 1
            if not left[stage]:
                now = time.perf_counter()
                times[f"{stage} (compute)"] = now - mark[0]
                mark[0] = now

    runner.compute_tasks(tasks, params, Store(), stage_finished, jobs=jobs)
    start = time.perf_counter()
    runner.execute(params, overrides, reports_dir=work / "reports", progress=False, jobs=jobs)
    times["render all"] = time.perf_counter() - start
    return times


def timed_mode(name: str, run, params, overrides: list[str], jobs: int) -> tuple[dict[str, float], Path]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-runner-{name}-"))
    os.environ["BIAS_STORE"] = str(fresh_store(work / "store"))
    start = time.perf_counter()
    times = run(params, overrides, jobs, work)
    times["total"] = time.perf_counter() - start
    return times, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="classroom")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--old-rev", help="run the old path from this git revision's code (default: this tree's)")
    args = parser.parse_args()
    params = load_params(args.profile, args.overrides)
    default_store = os.environ.get("BIAS_STORE")

    if args.old_rev:
        def old_run(_params, overrides, jobs, work):
            return old_revision_path(args.old_rev, args.profile, overrides, jobs, work)
    else:
        old_run = old_path
    # the new path first (a failure there shows before the long old run), then its warm rerun on its store
    new, work = timed_mode("new", new_path, params, args.overrides, args.jobs)
    print(f"new path's store and reports: {work}", flush=True)
    start = time.perf_counter()
    runner.execute(params, args.overrides, reports_dir=work / "reports", progress=False, jobs=args.jobs)
    warm = time.perf_counter() - start
    renders = render_seconds(work / "reports")
    old, _ = timed_mode("old", old_run, params, args.overrides, args.jobs)
    if default_store is not None:
        os.environ["BIAS_STORE"] = default_store

    print(f"profile {args.profile} {' '.join(args.overrides)}, jobs {args.jobs}, {os.cpu_count()} CPUs")
    print(f"{'phase':34} {'seconds':>8}")
    old_name = f"old: notebook per point{f' (code of {args.old_rev})' if args.old_rev else ''}"
    for name, times in ((old_name, old), ("new: plan, compute, render", new)):
        print(name)
        for phase, seconds in times.items():
            print(f"  {phase:32} {seconds:8.1f}")
    print(f"new / old total: {new['total'] / old['total']:.2f}x")
    print(f"warm rerun (everything current): {warm:.1f} s")
    print(f"renders from the store: {len(renders)} notebooks, mean {sum(renders) / len(renders):.1f} s, "
          f"max {max(renders):.1f} s (papermill's execution time; kernel start excluded)")


if __name__ == "__main__":
    main()
