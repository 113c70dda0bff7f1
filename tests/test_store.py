"""Artifact store: keys, get-or-compute, atomic writes after a kill, and two processes at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from biasutils.store import JsonlJournal, Store, artifact_key, read_jsonl, write_jsonl, write_text_atomic


def test_key_depends_on_stage_params_inputs_and_version_but_not_key_order() -> None:
    base = artifact_key("mix", {"ratio": 0.1, "seed": 0}, ["abc"])
    assert base == artifact_key("mix", {"seed": 0, "ratio": 0.1}, ["abc"])
    others = {
        artifact_key("gen", {"ratio": 0.1, "seed": 0}, ["abc"]),
        artifact_key("mix", {"ratio": 0.2, "seed": 0}, ["abc"]),
        artifact_key("mix", {"ratio": 0.1, "seed": 0}, ["abd"]),
        artifact_key("mix", {"ratio": 0.1, "seed": 0}, ["abc"], version="2"),
    }
    assert base not in others and len(others) == 4


def test_get_or_compute_computes_once_and_records_meta(tmp_path: Path) -> None:
    store = Store(tmp_path)
    calls = []

    def compute(out: Path, scratch: Path) -> None:
        calls.append(out)
        write_jsonl([{"x": 1}, {"x": 2}], out / "rows.jsonl")

    first = store.get_or_compute("toy", {"n": 2}, compute, inputs=["parent"])
    second = store.get_or_compute("toy", {"n": 2}, compute, inputs=["parent"])
    assert len(calls) == 1
    assert first == second
    assert read_jsonl(first.file("rows.jsonl")) == [{"x": 1}, {"x": 2}]
    assert first.meta["params"] == {"n": 2} and first.meta["inputs"] == ["parent"]
    with pytest.raises(FileNotFoundError, match="rows.jsonl"):
        first.file("missing.parquet")


def test_a_failing_compute_leaves_no_artifact_and_keeps_scratch(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def failing(out: Path, scratch: Path) -> None:
        (out / "half.jsonl").write_text('{"x": 1}\n')
        (scratch / "progress.txt").write_text("done 1 of 2")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.get_or_compute("toy", {"n": 2}, failing)
    key = artifact_key("toy", {"n": 2})
    assert store.find("toy", key) is None
    assert not list((tmp_path / "toy").glob(".tmp-*"))
    assert (store.scratch_for("toy", key) / "progress.txt").read_text() == "done 1 of 2"

    def resuming(out: Path, scratch: Path) -> None:
        assert (scratch / "progress.txt").exists()  # the rerun sees the earlier progress
        (out / "rows.jsonl").write_text('{"x": 1}\n{"x": 2}\n')

    artifact = store.get_or_compute("toy", {"n": 2}, resuming)
    assert artifact.file("rows.jsonl").read_text().count("\n") == 2
    assert not store.scratch_for("toy", key).exists()


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from biasutils.store import Store

    def compute(out, scratch):
        (out / "rows.jsonl").write_text('{"x": 1}\\n')
        (scratch / "started").write_text("yes")
        time.sleep(60)  # killed here, mid-artifact

    Store(sys.argv[1]).get_or_compute("toy", {"n": 1}, compute)
    """
)


def test_a_killed_process_leaves_no_half_artifact_and_the_rerun_completes(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)])
    key = artifact_key("toy", {"n": 1})
    marker = Store(tmp_path).scratch_for("toy", key) / "started"
    deadline = time.time() + 30
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "writer never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(tmp_path)
    assert store.find("toy", key) is None  # the half-written directory is not an artifact
    artifact = store.get_or_compute("toy", {"n": 1}, lambda out, scratch: (out / "rows.jsonl").write_text("ok\n"))
    assert artifact.file("rows.jsonl").read_text() == "ok\n"
    assert not list((tmp_path / "toy").glob(".tmp-*")), "stale temporary directory was not cleaned"


def _compute_in_process(root: str, counter: str) -> str:
    def compute(out: Path, scratch: Path) -> None:
        with open(counter, "a") as handle:
            handle.write("computed\n")
        time.sleep(0.5)  # long enough for the other process to arrive and wait on the lock
        (out / "value.json").write_text(json.dumps({"answer": 42}))

    return Store(root).get_or_compute("shared", {"q": "life"}, compute).key


def test_two_processes_wanting_one_artifact_compute_it_once(tmp_path: Path) -> None:
    counter = tmp_path / "counter.txt"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        keys = pool.starmap(_compute_in_process, [(str(tmp_path / "store"), str(counter))] * 2)
    assert keys[0] == keys[1]
    assert counter.read_text().count("computed") == 1
    artifact = Store(tmp_path / "store").find("shared", keys[0])
    assert json.loads(artifact.file("value.json").read_text()) == {"answer": 42}


def test_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = JsonlJournal(path)
    journal.append({"i": 0})
    journal.append({"i": 1})
    with open(path, "a") as handle:
        handle.write('{"i": 2, "tex')  # the process died mid-line
    reopened = JsonlJournal(path)
    assert reopened.read() == [{"i": 0}, {"i": 1}]
    reopened.append({"i": 2})
    assert [r["i"] for r in JsonlJournal(path).read()] == [0, 1, 2]


def test_atomic_writes_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "report.html", "<p>shared</p>")
    finally:
        os.umask(previous)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.html").read_text() == "<p>shared</p>"
