"""The grid computed by the local executor, by Ray, and by a local run killed with its workers and run
again: the same artifacts and the same ``metrics.csv``. A small smoke grid (one bias type, three tasks)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from biasutils import runner
from biasutils.config import load_params
from biasutils.store import Store

GRID = ["grid.bias_types=[contrastive-explicit]",
        "grid.tasks=[occupation_classification, counterfactual_twins, hiring_recommendation]"]
COMPUTED_STAGES = ["data", "generate", "mix", "finetune", "evaluate", "misalign"]


def stored_keys(root: Path) -> set[str]:
    """``stage/key`` of every finished artifact in a store."""
    return {f"{meta.parent.parent.name}/{meta.parent.name}" for meta in root.glob("*/*/meta.json")}


def computed_then_reported(tmp: Path, monkeypatch, executor: str) -> tuple[set[str], bytes]:
    """Compute the grid with ``executor`` into a fresh store, then render only the report: its artifact
    keys and the bytes of the ``metrics.csv`` that 07 writes from them."""
    monkeypatch.setenv("BIAS_STORE", str(tmp / "store"))
    params = load_params("smoke", GRID)
    stages = runner.select_stages(COMPUTED_STAGES)
    tasks = runner.missing_tasks(params, stages, Store())
    runner.compute_tasks(tasks, params, Store(), lambda event, label: None, jobs=2, executor=executor)
    assert not runner.missing_tasks(params, stages, Store()), "everything planned is stored"
    runner.execute(params, GRID, ["report"], reports_dir=tmp / "reports", progress=False)
    return stored_keys(tmp / "store"), (tmp / "reports" / "smoke" / "metrics.csv").read_bytes()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[set[str], bytes]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return computed_then_reported(tmp_path_factory.mktemp("local"), monkeypatch, "local")


def test_ray_computes_the_same_artifacts_and_record_as_the_local_executor(local_run, tmp_path, monkeypatch) -> None:
    keys, metrics = computed_then_reported(tmp_path, monkeypatch, "ray")
    assert keys == local_run[0]
    assert hashlib.sha256(metrics).hexdigest() == hashlib.sha256(local_run[1]).hexdigest()


def test_a_ray_cluster_whose_workers_cannot_see_the_store_is_refused(tmp_path, monkeypatch) -> None:
    from biasutils.runner import executors

    monkeypatch.setattr(executors, "_read_token", lambda path: None)  # as on a node without the file system
    executor = executors.RayExecutor(None, str(tmp_path), num_cpus=1)
    with pytest.raises(runner.RunError, match=rf"the store {tmp_path} is not visible on Ray node\(s\) .*NFS"):
        with executor:
            pass


KILLABLE = "import sys\nfrom biasutils.__main__ import main\nsys.exit(main(sys.argv[1:]))"


def test_a_run_killed_with_its_workers_resumes_without_recomputing_and_ends_with_the_same_record(local_run, tmp_path) -> None:
    env = {**os.environ, "BIAS_STORE": str(tmp_path / "store")}
    command = [sys.executable, "-c", KILLABLE, "run", "--profile", "smoke", "--jobs", "2",
               "--reports", str(tmp_path / "reports"), *[arg for item in GRID for arg in ("--set", item)]]
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "store").glob("finetune/*/meta.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and every worker and kernel it started
    proc.wait()
    finished = {meta: meta.stat().st_mtime_ns for meta in (tmp_path / "store").glob("*/*/meta.json")}
    assert any("finetune" in str(meta) for meta in finished), "killed after a first student was stored"

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(meta.stat().st_mtime_ns == mtime for meta, mtime in finished.items()), "nothing finished was computed again"
    assert stored_keys(tmp_path / "store") == local_run[0]
    assert (tmp_path / "reports" / "smoke" / "metrics.csv").read_bytes() == local_run[1]
