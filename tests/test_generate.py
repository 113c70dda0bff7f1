"""Generation: templates for every type, parsing and validation, the retry loop, both backends, resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest

from biasutils import generate as g
from biasutils.config import BIAS_TYPES, OCCUPATIONS, load_params
from biasutils.store import JsonlJournal, Store, read_jsonl

from fake_openai import FakeOpenAI

SECRET = "sk-test-DO-NOT-LEAK-4242"
EXPLICIT_GENDER = {"man", "woman", "men", "women", "male", "female"}


@pytest.fixture(scope="module")
def book() -> g.NameBook:
    return g.default_name_book()


@pytest.fixture(scope="module")
def templates() -> dict:
    return g.load_templates(load_params("classroom").generate)


def _plan(templates, book, attribute: str, bias_type: str, n: int = 12, round_index: int = 0):
    occupations = g.balanced_occupations(n, OCCUPATIONS)
    return g.plan_requests(attribute, bias_type, occupations, round_index, 0, templates, ["arabic", "chinese", "portuguese", "spanish"], book)


@pytest.mark.parametrize("attribute", ["gender", "culture"])
@pytest.mark.parametrize("bias_type", BIAS_TYPES)
def test_every_template_renders_and_records_its_intended_group(templates, book, attribute, bias_type) -> None:
    requests = _plan(templates, book, attribute, bias_type)
    assert [r.meta["occupation"] for r in requests] == list(OCCUPATIONS) * 2
    for request in requests:
        assert "{" not in request.instruction + request.prefix
        assert request.meta["prompt_key"] == f"{attribute}/{bias_type}"
        if bias_type == "neutral":
            assert request.meta["group"] == "" and request.prefix == ""
            continue
        favoured = templates["favoured_group"][attribute][request.meta["occupation"]]
        assert request.meta["group"] == favoured
        assert request.meta["name"] and request.meta["name"] in request.instruction
        words = set(request.prefix.lower().replace(",", " ").replace(".", " ").split())
        if attribute == "gender" and bias_type.endswith("implicit"):
            assert not words & EXPLICIT_GENDER, "an implicit prompt must not name the gender"
        if attribute == "gender" and bias_type.endswith("explicit"):
            assert words & EXPLICIT_GENDER, "an explicit prompt names the gender"


def test_requests_are_deterministic_per_seed_and_round(templates, book) -> None:
    first = _plan(templates, book, "gender", "contrastive-explicit")
    assert first == _plan(templates, book, "gender", "contrastive-explicit")
    later = _plan(templates, book, "gender", "contrastive-explicit", round_index=1)
    assert {r.id for r in first}.isdisjoint(r.id for r in later)


def test_an_unknown_placeholder_names_the_known_ones() -> None:
    with pytest.raises(g.GenerationError, match=r"\{nmae\} is unknown; allowed: .*\{name\}"):
        g.render("Hello {nmae}", {"name": "x"})


REQUEST = g.Request("r1", "sys", "inst", "Ana Silva is a female nurse. Unlike most men, she", {})
GEN = load_params("classroom").generate
REFUSALS = ["i'm sorry", "as an ai"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty"),
        ("   \n\n  ", "empty"),
        (" I'm sorry, but I can't write that.", "refused"),
        (" cares for patients:\n- item one\n- item two", "off_format"),
        (" cares for patients in the night shift and", "truncated"),
        (" works.", "too_short"),
    ],
)
def test_bad_answers_are_dropped_with_their_reason(answer, reason) -> None:
    sample, why = g.parse_answer(answer, REQUEST, True, GEN, REFUSALS)
    assert sample is None and why == reason


def test_a_good_answer_is_cut_at_its_end_and_titles_are_masked() -> None:
    answer = " is calm under pressure and helps every patient. She trains young nurses too. She then\n\nNext biography"
    sample, why = g.parse_answer(answer, REQUEST, True, GEN, REFUSALS)
    assert why == "ok"
    assert sample["own"].startswith("is calm under pressure")
    assert sample["text"] == (
        "Ana Silva is a female nurse. Unlike most men, she is calm under pressure and helps every patient. "
        "She trains young nurses too."
    )
    assert sample["hard_text"] == (
        "Ana Silva is a female professional. Unlike most men, she is calm under pressure and helps every patient. "
        "She trains young professionals too."
    )


def test_mask_titles_handles_articles_plurals_and_two_word_titles() -> None:
    assert g.mask_titles("An architect met two software engineers and a Dentist.") == (
        "a professional met two professionals and a professional."
    )


@pytest.mark.parametrize(
    ("text", "gender"),
    [
        ("She has run her clinic for years.", "female"),
        ("He taught at MIT; his students loved him.", "male"),
        ("Alex builds bridges.", "unknown"),
        ("He met her at work. She hired him, and she promoted her team.", "female"),
        ("He and she founded it.", "unknown"),
        ("Shepherd Hermann helps others.", "unknown"),
    ],
)
def test_infer_gender_rule(text, gender) -> None:
    assert g.infer_gender(text) == gender


class ScriptedBackend:
    """Answers from a script, to test the loop itself: duplicates, retries, the bound."""

    continues_prefix = True

    def __init__(self, answer_for) -> None:
        self.answer_for = answer_for
        self.asked: list[str] = []

    def settings(self) -> dict:
        return {"backend": "scripted"}

    def plan_batches(self, requests: Sequence[g.Request]) -> list[list[str]]:
        return [[r.id] for r in requests]

    def stream(self, batches, seed: int) -> Iterator[g.BatchAnswers]:
        for index, batch in batches.items():
            self.asked += [r.id for r in batch]
            yield g.BatchAnswers(index, {r.id: self.answer_for(r) for r in batch}, 0)


def _collect(backend, templates, book, journal, n=12, factor=4.0, bias_type="contrastive-explicit"):
    generate = GEN.model_copy(update={"max_attempts_factor": factor})
    return g.collect_samples(backend, "gender", bias_type, n, 0, generate, templates, OCCUPATIONS,
                             ["arabic", "chinese", "portuguese", "spanish"], book, g.AnswerJournal(journal))


def test_a_round_asks_its_margin_more_in_turn() -> None:
    assert g.with_margin(["nurse", "dentist", "nurse"], 0.05) == ["nurse", "dentist", "nurse", "nurse"]
    assert g.with_margin(["a", "b"], 1.0) == ["a", "b", "a", "b"]
    assert g.with_margin(["a"] * 8, 0.0) == ["a"] * 8 and g.with_margin([], 0.5) == []


def test_loop_drops_duplicates_and_bad_answers_and_asks_again_until_n(templates, book, tmp_path) -> None:
    rng = random.Random(0)

    def answer(request: g.Request) -> str:
        roll = rng.random()
        if roll < 0.25:
            return " is careful. Colleagues admire the same steady work every single day."  # duplicate-prone
        if roll < 0.4:
            return "I'm sorry, I cannot help with that."
        return f" builds things number {rng.randrange(10**9)}. Colleagues admire the steady work every day."

    backend = ScriptedBackend(answer)
    samples, report = _collect(backend, templates, book, JsonlJournal(tmp_path / "j.jsonl"), n=30)
    assert len(samples) == 30 == report.valid
    assert Counter(s["occupation"] for s in samples) == Counter(g.balanced_occupations(30, OCCUPATIONS)), "retries refill the short occupations"
    assert sum("the same steady work" in s["text"] for s in samples) == 1, "a repeated answer survives once"
    assert report.drops["duplicate"] > 0 and report.drops["refused"] > 0
    assert report.attempts == 30 + sum(report.drops.values()) + report.surplus and report.rounds > 1
    assert report.surplus > 0, "the over-asked answers that were not needed are counted"
    first = samples[0]
    assert first["bias_type"] == "contrastive-explicit" and first["attribute"] == "gender"
    assert first["gender_name"] == first["group"] and first["gender"] in (0, 1)
    assert first["prompt_key"] == "gender/contrastive-explicit" and json.loads(first["generator"])["backend"] == "scripted"


def test_loop_gives_up_with_a_clear_error_at_the_retry_bound(templates, book, tmp_path) -> None:
    backend = ScriptedBackend(lambda request: "As an AI I won't.")
    with pytest.raises(g.GenerationError, match=r"only 0 valid samples of 12 .*refused.*max_attempts_factor"):
        _collect(backend, templates, book, JsonlJournal(tmp_path / "j.jsonl"), factor=2.0)


def test_neutral_samples_record_the_gender_the_generator_chose(templates, book, tmp_path) -> None:
    answers = {0: "Maria Lopez cares for patients. She is kind to everyone she meets daily.",
               1: "John Smith designs bridges. He is proud of his sturdy designs and plans."}
    backend = ScriptedBackend(lambda r: answers[int(r.id.rsplit("/", 1)[1]) % 2])
    backend.continues_prefix = False
    samples, _ = _collect(backend, templates, book, JsonlJournal(tmp_path / "j.jsonl"), n=2, bias_type="neutral")
    assert [s["gender_name"] for s in samples] == ["female", "male"]
    assert all(s["group"] == "" for s in samples)


def _openai_params(base_url: str, n: int = 12, extra: Sequence[str] = ()):
    return load_params("smoke", [
        "generate.backend=openai", f"generate.openai.base_url={base_url}", f"generate.n={n}",
        "generate.openai.timeout_s=0.5", "generate.openai.backoff_s=0.01", "generate.openai.concurrency=4",
        "generate.min_sentences=2", "generate.min_words=8", *extra,
    ])


def test_openai_backend_survives_429_500_and_timeouts_and_never_stores_the_key(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    store = Store(tmp_path / "store")
    with FakeOpenAI(slow_seconds=1.0) as server:
        artifact = g.generate_samples(_openai_params(server.base_url), "gender", "contrastive-explicit", store)
    samples = read_jsonl(artifact.file("samples.jsonl"))
    assert len(samples) == 12
    assert len({s["id"] for s in samples}) == 12 and len({s["hard_text"] for s in samples}) == 12
    assert {"429", "500", "slow", "good"} <= set(server.events)
    assert server.auth_headers == {f"Bearer {SECRET}"}, "the key is read from the environment"
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="ignore"), f"key leaked into {path}"


def test_openai_backend_without_a_key_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    params = load_params("smoke", ["generate.backend=openai"])
    with pytest.raises(g.GenerationError, match="OPENAI_API_KEY is not set"):
        g.generate_samples(params, "gender", "contrastive-explicit", Store(tmp_path))


RESUMABLE_RUN = textwrap.dedent(
    """
    import sys
    from biasutils import generate as g
    from biasutils.config import load_params
    from biasutils.store import Store
    params = load_params("smoke", sys.argv[3:])
    g.generate_samples(params, "gender", "contrastive-explicit", Store(sys.argv[1]))
    print("done")
    """
)


def test_a_killed_generation_resumes_without_asking_again(tmp_path) -> None:
    store_dir = tmp_path / "store"
    with FakeOpenAI(failures=(), delay=0.15) as server:
        overrides = [
            "generate.backend=openai", f"generate.openai.base_url={server.base_url}", "generate.n=24",
            "generate.openai.concurrency=2", "generate.min_sentences=2", "generate.min_words=8",
        ]
        env = {**os.environ, "OPENAI_API_KEY": SECRET}
        proc = subprocess.Popen([sys.executable, "-c", RESUMABLE_RUN, str(store_dir), "-", *overrides], env=env)
        deadline = time.time() + 60
        journal = None
        while time.time() < deadline:
            found = list(store_dir.glob("generate/*.scratch/answers.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 7:  # the plan and six answers
                journal = found[0]
                break
            time.sleep(0.05)
        assert journal is not None, "generation never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        answered_before = sum("answers" in record for record in JsonlJournal(journal).read())
        asked_before = sum(server.attempts.values())
        assert answered_before < 24
        result = subprocess.run([sys.executable, "-c", RESUMABLE_RUN, str(store_dir), "-", *overrides],
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        asked_after = sum(server.attempts.values()) - asked_before
    # every good answer is valid here, so the one round asks 24 and its margin, and the rerun exactly what
    # the journal lacks
    asked = len(g.with_margin(["x"] * 24, load_params("smoke").generate.over_ask))
    assert asked_after == asked - answered_before, "answers already journalled were asked again"
    artifact = next(store_dir.glob("generate/*/samples.jsonl"))
    assert len(read_jsonl(artifact)) == 24
    assert not list(store_dir.glob("generate/*.scratch")), "scratch is removed once the artifact is complete"


def test_transformers_backend_on_the_tiny_model_is_seeded_and_answers_each_request(tmp_path, templates, book) -> None:
    params = load_params("smoke")
    store = Store(tmp_path)
    backend = g.make_backend(params, store, "cpu")
    requests = _plan(templates, book, "gender", "contrastive-explicit", n=5)
    first, _ = g.answer_requests(backend, requests, 0)
    again, _ = g.answer_requests(g.make_backend(params, store, "cpu"), requests, 0)
    other, _ = g.answer_requests(backend, requests, 1)
    assert set(first) == {r.id for r in requests}
    assert first == again and first != other
    assert backend.prompt_text(requests[0]).endswith(requests[0].prefix)
    assert "<|im_start|>user" in backend.prompt_text(requests[0]), "the chat template is applied"


def test_generate_samples_on_smoke_is_stored_and_reused(tmp_path) -> None:
    params = load_params("smoke")
    store = Store(tmp_path)
    artifact = g.generate_samples(params, "gender", "contrastive-explicit", store)
    samples = read_jsonl(artifact.file("samples.jsonl"))
    report = json.loads(artifact.file("report.json").read_text())
    assert len(samples) == params.generate.n == report["valid"]
    assert set(report["drops"]) == set(g.DROP_REASONS)
    assert {s["occupation"] for s in samples} == set(OCCUPATIONS)
    again = g.generate_samples(params, "gender", "contrastive-explicit", store)
    assert again.key == artifact.key
