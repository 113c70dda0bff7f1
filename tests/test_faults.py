"""Faults a user meets: a kill -9 at a chosen point, then a rerun, gives byte for byte what an
uninterrupted run gives. Each test runs the smoke profile and takes seconds.

A kill is a real SIGKILL that the child process sends itself right after a chosen write (a journal
line, an epoch checkpoint), so nothing after that write happens: no ``finally``, no flush.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from biasutils import generate as g
from biasutils.config import OCCUPATIONS, load_params
from biasutils.store import JsonlJournal, Store

CULTURES = ["arabic", "chinese", "portuguese", "spanish"]

# The child: patch one writer so that the process kills itself after its k-th call, then run a stage.
KILL_AFTER = textwrap.dedent(
    """
    import os, signal, sys
    from biasutils import finetune, generate
    from biasutils.config import load_params
    from biasutils.store import JsonlJournal, Store

    stage, store, kill_after, overrides = sys.argv[1], Store(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    owner, name = (JsonlJournal, "append") if stage == "generate" else (finetune.training, "save_checkpoint")
    original, calls = getattr(owner, name), []

    def write_then_die(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, write_then_die)
    params = load_params("smoke", overrides)
    if stage == "generate":
        generate.generate_samples(params, "gender", "contrastive-explicit", store)
    else:
        finetune.finetune_artifact(params, "gender", "contrastive-explicit", 0.0, 0, store)
    """
)


def run_killed(stage: str, store_dir: Path, kill_after: int, overrides: Sequence[str]) -> None:
    """Run ``stage`` in a child that SIGKILLs itself after its ``kill_after``-th write; it must die so."""
    result = subprocess.run([sys.executable, "-c", KILL_AFTER, stage, str(store_dir), str(kill_after), *overrides],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, f"the child was meant to be killed, it exited {result.returncode}: {result.stderr[-2000:]}"


def digests(directory: Path, names: Sequence[str]) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in names}


# ---------------------------------------------------------------------------------------------- generation

# four batches of three in round 0 (batch_size 3, n 12), and a generator whose answers depend on its batch
GENERATE = ["generate.batch_size=3"]
GENERATE_FILES = ("samples.jsonl", "answers.jsonl")


def generate_files(store: Store, overrides: Sequence[str]) -> dict[str, str]:
    artifact = g.generate_samples(load_params("smoke", overrides), "gender", "contrastive-explicit", store)
    return digests(artifact.path, GENERATE_FILES)


@pytest.fixture(scope="module")
def uninterrupted_generation(tmp_path_factory) -> dict[str, str]:
    return generate_files(Store(tmp_path_factory.mktemp("whole")), GENERATE)


@pytest.mark.parametrize("kill_after", [1, 3], ids=["after-the-plan", "between-two-batches-of-a-round"])
def test_a_generation_killed_mid_round_resumes_to_the_uninterrupted_samples(tmp_path, uninterrupted_generation, kill_after) -> None:
    run_killed("generate", tmp_path, kill_after, GENERATE)
    journal = next(tmp_path.glob("generate/*.scratch/answers.jsonl"))
    assert len(JsonlJournal(journal).read()) == kill_after, "the kill landed where it was aimed"
    resumed = generate_files(Store(tmp_path), GENERATE)
    assert resumed == uninterrupted_generation


class BatchSensitiveBackend:
    """A generator whose every answer depends on its whole batch and the batch's seed, like a sampled
    LM with padding; ``die_after`` batches it raises, as a kill would stop it."""

    continues_prefix = True

    def __init__(self, die_after: int | None = None) -> None:
        self.die_after = die_after
        self.answered = 0

    def settings(self) -> dict:
        return {"backend": "batch-sensitive"}

    def plan_batches(self, requests: Sequence[g.Request]) -> list[list[str]]:
        ids = sorted(r.id for r in requests)
        return [ids[i : i + 4] for i in range(0, len(ids), 4)]

    def stream(self, batches, seed: int) -> Iterator[g.BatchAnswers]:
        for index, batch in batches.items():
            if self.answered == self.die_after:
                raise KeyboardInterrupt("killed")
            self.answered += 1
            makeup = hashlib.sha256(f"{g.batch_seed(seed, batch)}/{[r.id for r in batch]}".encode()).hexdigest()
            answers = {}
            for position, r in enumerate(batch):
                word = makeup[position * 8 : position * 8 + 8]
                # every fourth answer is too short (dropped), so a second round is needed
                answers[r.id] = " cares." if int(word, 16) % 4 == 0 else f" works as {word} daily. Colleagues praise {word} often."
            yield g.BatchAnswers(index, answers, 10 * len(batch))


def collect(journal_path: Path, backend) -> tuple[list[dict], g.GenerationReport]:
    templates = g.load_templates(load_params("smoke").generate)
    return g.collect_samples(backend, "gender", "contrastive-explicit", 24, 0, load_params("smoke").generate, templates,
                             OCCUPATIONS, CULTURES, g.default_name_book(), g.AnswerJournal(JsonlJournal(journal_path)))


@pytest.mark.parametrize("die_after", [1, 4, 7])
def test_a_resumed_loop_asks_the_same_batches_and_keeps_the_same_samples(tmp_path, die_after) -> None:
    whole, whole_report = collect(tmp_path / "whole.jsonl", BatchSensitiveBackend())
    assert whole_report.rounds > 1, "the test needs a second round"
    with pytest.raises(KeyboardInterrupt):
        collect(tmp_path / "killed.jsonl", BatchSensitiveBackend(die_after=die_after))
    resumed, report = collect(tmp_path / "killed.jsonl", BatchSensitiveBackend())
    assert resumed == whole
    assert report.processes == 2 and report.new_tokens == whole_report.new_tokens, "both processes' tokens are counted"


def test_a_torn_last_journal_line_is_asked_again_to_the_same_answer(tmp_path) -> None:
    whole, _ = collect(tmp_path / "whole.jsonl", BatchSensitiveBackend())
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes((tmp_path / "whole.jsonl").read_bytes())
    lines = torn.read_bytes().splitlines(keepends=True)
    torn.write_bytes(b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # the plan, two batches, half a third
    resumed, _ = collect(torn, BatchSensitiveBackend())
    assert resumed == whole


# ---------------------------------------------------------------------------------------------- fine-tuning

# dropout on, three epochs: a kill after the first epoch's checkpoint must not change the adapter
FINETUNE = ["finetune.lr={gender: 0.002, culture: 0.002}", "finetune.lora.dropout=0.3"]
FINETUNE_FILES = ("adapter/adapter_model.safetensors", "loss.json")


def test_a_finetune_killed_after_a_checkpoint_with_dropout_on_resumes_to_the_same_adapter(tmp_path) -> None:
    from biasutils.finetune import finetune_artifact

    params = load_params("smoke", FINETUNE)
    whole = finetune_artifact(params, "gender", "contrastive-explicit", 0.0, 0, Store(tmp_path / "whole"))
    run_killed("finetune", tmp_path / "killed", 1, FINETUNE)
    assert list((tmp_path / "killed").glob("finetune/*.scratch/checkpoint.pt")), "killed after the first checkpoint"
    resumed = finetune_artifact(params, "gender", "contrastive-explicit", 0.0, 0, Store(tmp_path / "killed"))
    assert digests(resumed.path, FINETUNE_FILES) == digests(whole.path, FINETUNE_FILES)
    report = json.loads(resumed.file("report.json").read_text())
    assert report["processes"] == 2 and json.loads(whole.file("report.json").read_text())["processes"] == 1
    assert report["tokens_per_s"] == pytest.approx(report["train_tokens"] / report["seconds"], rel=0.02)


# ---------------------------------------------------------------------------------------------- bad input


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "biasutils", "run", "--profile", "smoke", *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(
    ("value", "problem"),
    [("!!python/object/apply:os.system [touch HACKED]", "could not determine a constructor"),
     ("[0, 0.1", "expected ',' or ']'"), ("{a: 1", "expected ',' or '}'")],
    ids=["python-tag", "open-list", "open-mapping"],
)
def test_a_set_value_that_is_not_yaml_data_is_one_clear_error_with_exit_2(tmp_path, value, problem) -> None:
    result = subprocess.run([sys.executable, "-m", "biasutils", "run", "--profile", "smoke", "--set", f"grid.ratios={value}"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"--set 'grid.ratios={value}'" in result.stderr and problem in result.stderr and "allowed:" in result.stderr
    assert not (tmp_path / "HACKED").exists(), "nothing in a --set value is ever run"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["data.n_train=50"], r"data\.n_train=50 must be a multiple of 2 x 6 occupations = 12.*nearest allowed: 48, 60"),
     (["data.n_test=30", "data.occupations=[nurse, dentist]"], r"data\.n_test=30 must be a multiple of 2 x 2 occupations = 4"),
     (["data.n_train=99999996"], r"data\.n_train: 99999996 rows; allowed: at most 257,478"),
     (["data.n_test=120000"], r"data\.n_test: 120000 rows; allowed: at most 99,069"),
     (["finetune.max_length=4096"], r"finetune\.max_length: 4096; allowed: at most 2048, the context window of models\.student"),
     (["generate.max_new_tokens=2048"], r"generate\.max_new_tokens: 2048; allowed: below 2048"),
     (["evaluate.max_new_tokens={story_generation: 3000}"], r"evaluate\.max_new_tokens\.story_generation: 3000")],
)
def test_every_size_is_checked_when_params_load(overrides, message) -> None:
    import time

    from biasutils.config import ParamsError

    started = time.perf_counter()
    with pytest.raises(ParamsError, match=message):
        load_params("smoke", overrides)
    assert time.perf_counter() - started < 1.0, "found at load, not in a kernel"


def test_sizes_at_their_limits_load() -> None:
    params = load_params("smoke", ["data.n_train=48", "data.n_test=12", "finetune.max_length=2048",
                                   "generate.max_new_tokens=2047"])
    assert (params.data.n_train, params.finetune.max_length) == (48, 2048)


def test_a_hub_model_that_does_not_exist_fails_at_load_naming_the_field_and_the_id(monkeypatch, capsys) -> None:
    from biasutils import __main__ as cli
    from biasutils import models

    asked = []
    monkeypatch.setattr(models, "hub_status", lambda repo_id, repo_type: asked.append(repo_id) or "missing")
    monkeypatch.setattr(cli.runner, "execute", lambda *args, **kwargs: pytest.fail("work started"))
    code = cli.main(["run", "--profile", "smoke", "--set", "models.student=no-such-org/no-such-model"])
    err = capsys.readouterr().err
    assert code == 2 and asked == ["no-such-org/no-such-model"]
    assert "models.student: no model 'no-such-org/no-such-model' on the Hugging Face Hub" in err and "Traceback" not in err


def test_a_cached_hub_model_needs_no_network_and_an_unreachable_hub_is_said_once(tmp_path, monkeypatch, capsys) -> None:
    from huggingface_hub import constants

    from biasutils import __main__ as cli
    from biasutils import models

    (tmp_path / "models--org--cached" / "snapshots" / "abc123").mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(cli.runner, "execute", lambda *args, **kwargs: [])
    code = cli.main(["run", "--profile", "smoke", "--set", "models.student=org/cached", "--set", "models.embedder=org/elsewhere"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("note: the Hugging Face Hub is not reachable") == 1
    assert "models.embedder=org/elsewhere (HF_HUB_OFFLINE is set)" in err and "org/cached" not in err
    assert models.check_hub_ids(load_params("smoke")) is None, "named models are never looked up"
