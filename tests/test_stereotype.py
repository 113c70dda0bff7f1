"""The generator's stereotype agreement as a stored artifact, for both backends: a local model scored by
log-probability, and an OpenAI-compatible server (the fake in ``fake_openai``) asked for its top
log-probabilities, or skipped with a stated reason when it has none or no key is set."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from biasutils import misalign as m
from biasutils import report
from biasutils.config import load_params
from biasutils.misalign import stereotype
from biasutils.store import Store

from fake_openai import FakeOpenAI

SECRET = "sk-test-DO-NOT-LEAK-4242"
MODEL = "fake-chat"


def _openai_params(base_url: str | None, *extra: str):
    server = [f"generate.openai.base_url={base_url}"] if base_url else []
    return load_params("smoke", ["generate.backend=openai", f"generate.openai.model={MODEL}", *server,
                                 "generate.openai.backoff_s=0.01", "generate.openai.timeout_s=5", *extra])


def _status(artifact) -> dict:
    return json.loads(artifact.file("status.json").read_text())


def _cached(store: Store, artifact) -> bool:
    return store.find(artifact.stage, artifact.key) is not None


def test_an_openai_server_with_logprobs_scores_what_its_answers_imply(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    store = Store(tmp_path / "store")
    with FakeOpenAI(failures=("429", "500")) as server:
        params = _openai_params(server.base_url)
        artifact = m.stereotype_artifact(params, store)
        asked = len(server.bodies)
        assert m.stereotype_artifact(params, store) == artifact and len(server.bodies) == asked, "stored: not asked again"
    items = m.stereotype_items()
    # the fake agrees with statements about women and with any that says "should" (there, "No" is not
    # among the top tokens: a bound); it disagrees with the rest
    statements = pd.DataFrame({"group": [i.meta["target_group"] for i in items],
                               "statement": [i.meta["statement"].lower() for i in items]})
    statements["agree"] = statements.statement.str.startswith("women") | statements.statement.str.contains("should")
    table = pd.read_csv(artifact.file("agreement.csv")).set_index("group")
    for group, rows in [*statements.groupby("group"), ("all", statements)]:
        count, n = int(rows.agree.sum()), len(rows)
        wilson = scipy_stats.binomtest(count, n).proportion_ci(method="wilson")
        assert (table.at[group, "n_agree"], table.at[group, "n"]) == (count, n)
        assert table.at[group, "value"] == pytest.approx(count / n)
        assert (table.at[group, "ci_low"], table.at[group, "ci_high"]) == pytest.approx((wilson.low, wilson.high))
    assert 0 < table.at["male", "n_agree"] < table.at["male", "n"], "the rule must leave both answers for men"
    assert _status(artifact) == {"scored": True, "backend": "openai", "model": MODEL, "reason": "",
                                 "items_bounded": int(statements.statement.str.contains("should").sum())}
    assert {"429", "500", "good"} <= set(server.events), "retried through rate limits and server errors"
    good = [body for body in server.bodies if body["messages"][0]["content"] == items[0].prompt][-1]
    assert {key: good[key] for key in ("model", "max_tokens", "temperature", "logprobs", "top_logprobs", "messages")} == {
        "model": MODEL, "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20,
        "messages": [{"role": "user", "content": items[0].prompt}]}
    assert artifact.meta["params"]["scorer"] == {"backend": "openai", "model": MODEL, "base_url": server.base_url}
    assert all(SECRET not in path.read_text(errors="ignore") for path in store.root.rglob("*") if path.is_file())
    rows = m.stereotype_rows(params, store)
    assert {row["metric"] for row in rows} == {"stereotype_agreement"} and len(rows) == 3
    assert "scored by fake-chat (openai backend)" in m.stereotype_note(artifact)


@pytest.mark.parametrize(("mode", "cause"), [("absent", "returned no logprobs"), ("refused", "BadRequestError")])
def test_a_server_without_logprobs_stores_an_empty_table_and_the_reason(tmp_path, monkeypatch, mode: str, cause: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    store = Store(tmp_path / "store")
    with FakeOpenAI(failures=(), logprobs=mode) as server:
        params = _openai_params(server.base_url)
        artifact = m.stereotype_artifact(params, store)
        assert len(server.bodies) == 1, "one probe finds it out"
        skipped = report.skipped_analyses(params, store)
        assert m.stereotype_rows(params, store) == [] and len(server.bodies) == 1, "the skip is stored"
    table = pd.read_csv(artifact.file("agreement.csv"))
    assert table.empty and tuple(table.columns) == m.AGREEMENT_COLUMNS
    status = _status(artifact)
    assert not status["scored"] and cause in status["reason"] and server.base_url in status["reason"]
    assert "log-probabilities" in status["reason"] and _cached(store, artifact)
    note = m.stereotype_note(artifact)
    assert note.startswith(f"stereotype agreement not scored for {MODEL} (openai backend): ") and status["reason"] in note
    assert skipped == [note]
    record = report.write_record(pd.DataFrame(), tmp_path / "reports", skipped)
    assert (record.parent / report.SKIPPED_FILE).read_text() == f"{note}\n"
    report.write_record(pd.DataFrame(), tmp_path / "reports", [])
    assert not (record.parent / report.SKIPPED_FILE).exists(), "a stale note goes once the record is complete"


def test_no_key_skips_without_storing_and_a_key_set_later_scores(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    store = Store(tmp_path / "store")
    params = _openai_params(None)
    skipped = m.stereotype_artifact(params, store)
    status = _status(skipped)
    assert not status["scored"] and "OPENAI_API_KEY is not set" in status["reason"]
    assert pd.read_csv(skipped.file("agreement.csv")).empty and not _cached(store, skipped)
    assert m.stereotype_rows(params, store) == []
    with FakeOpenAI(failures=()) as server:
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)  # the client's own fallback: same params, same key
        scored = m.stereotype_artifact(params, store)
    assert scored.key == skipped.key and _cached(store, scored) and _status(scored)["scored"]
    assert not skipped.path.exists(), "the skip note went with the scratch once the artifact was done"


def test_a_server_that_keeps_failing_is_skipped_without_storing_and_asked_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    store = Store(tmp_path / "store")
    with FakeOpenAI(failures=("500",) * 3) as server:
        params = _openai_params(server.base_url, "generate.openai.max_retries=1")
        skipped = m.stereotype_artifact(params, store)
        status = _status(skipped)
        assert not status["scored"] and "InternalServerError" in status["reason"] and "2 attempts" in status["reason"]
        assert not _cached(store, skipped) and len(server.bodies) == 2
        server.failures = []
        scored = m.stereotype_artifact(params, store)
    assert scored.key == skipped.key and _status(scored)["scored"] and _cached(store, scored)


def test_the_local_generator_is_scored_as_before_and_says_so(tmp_path, monkeypatch) -> None:
    from biasutils.evaluate import Scorer
    from biasutils.models import load_causal_lm

    items = m.stereotype_items(12, seed=0)
    # a dozen are enough to compare, and quick; patched where stereotype_artifact looks it up
    monkeypatch.setattr(stereotype, "stereotype_items", lambda: items)
    params, store = load_params("smoke", []), Store(tmp_path)
    artifact = m.stereotype_artifact(params, store)
    model, tokenizer = load_causal_lm(params.models.generator, store, "cpu")
    expected = m.stereotype_agreement(items, Scorer(model, tokenizer, params).choice(items))
    assert artifact.file("agreement.csv").read_text() == expected.to_csv(index=False)
    assert _status(artifact) == {"scored": True, "backend": "transformers", "model": params.models.generator,
                                 "reason": "", "items_bounded": 0}
    assert len(m.stereotype_rows(params, store)) == 3 and report.skipped_analyses(params, store) == []


def test_an_option_outside_the_top_logprobs_gets_a_bound_below_every_token_shown() -> None:
    top = [("Maybe", -0.4), (" yes", -1.9), ("YES", -1.0), ("I", -2.6)]
    scores, bounded = stereotype._option_scores(top, ("Yes", "No"))
    assert scores[0] == -1.0 and -2.6 - 1e-9 < scores[1] < -2.6 and bounded
    assert stereotype._option_scores([(" No", -0.2), ("yes", -2.2)], ("Yes", "No")) == ([-2.2, -0.2], False)
