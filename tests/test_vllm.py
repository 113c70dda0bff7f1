"""The vLLM generator backend against a fake engine (no GPU here): the prompts and per-request seeds it
sends, answers independent of batching, the whole generation on the smoke profile, and a clear refusal
where vLLM cannot run. The fake answers from the prompt and the request's seed alone, as vLLM's sampling
does given a per-request seed, so a backend that seeded batches instead would get other answers."""

from __future__ import annotations

import importlib.machinery
import json
import random
import subprocess
import sys
import types
from types import SimpleNamespace
from typing import Any

import pytest

from biasutils import generate as g
from biasutils.config import load_params
from biasutils.models import load_tokenizer, model_dir
from biasutils.store import Store, read_jsonl

WORDS = ["calm", "patient", "careful", "bold", "kind", "quick", "steady", "bright", "warm", "keen", "fair", "wise"]
VLLM = ["generate.backend=vllm"]


class FakeLLM:
    """``vllm.LLM``'s offline surface: the engine's tokenizer, and ``generate`` with one SamplingParams per prompt."""

    started: list[FakeLLM] = []

    def __init__(self, model: str, **engine: Any) -> None:
        self.model, self.engine = model, engine
        self.tokenizer = load_tokenizer(model)
        self.calls: list[tuple[list[str], list[Any]]] = []  # (decoded prompts, sampling params) per call
        FakeLLM.started.append(self)

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(self, prompts: list[dict], sampling_params: list[Any], use_tqdm: bool = True) -> list[SimpleNamespace]:
        assert len(prompts) == len(sampling_params), "one SamplingParams per prompt"
        texts = [self.tokenizer.decode(p["prompt_token_ids"]) for p in prompts]
        self.calls.append((texts, list(sampling_params)))
        return [self.answer(text, params.seed) for text, params in zip(texts, sampling_params)]

    def answer(self, prompt: str, seed: int) -> SimpleNamespace:
        """A sentence drawn from (prompt, seed) only: what the request alone decides."""
        words = random.Random(f"{prompt}/{seed}").sample(WORDS, 4)
        text = f" is {words[0]}, {words[1]} and {words[2]} at work, and {words[3]} at home."
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=ids)])


class FakeSamplingParams:
    def __init__(self, **settings: Any) -> None:
        self.__dict__.update(settings)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture
def fake_vllm(monkeypatch) -> type[FakeLLM]:
    """A fake ``vllm`` module on a machine that seems to have a GPU."""
    import torch

    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)  # importable, as find_spec sees it
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(FakeLLM, "started", [])
    return FakeLLM


def _requests(n: int = 12) -> list[g.Request]:
    params = load_params("smoke")
    templates = g.load_templates(params.generate)
    occupations = g.balanced_occupations(n, params.data.occupations)
    return g.plan_requests("gender", "contrastive-explicit", occupations, 0, 0, templates, params.data.cultures,
                           g.default_name_book())


def _backend(store: Store, overrides: list[str]) -> g.VLLMBackend:
    backend = g.make_backend(load_params("smoke", VLLM + overrides), store, "cpu")
    assert isinstance(backend, g.VLLMBackend)
    return backend


def test_the_backend_sends_chat_prompts_with_the_prefix_and_a_seed_per_request(fake_vllm, store) -> None:
    requests = _requests()
    backend = _backend(store, ["generate.batch_size=5"])
    answers, tokens = g.answer_requests(backend, requests, seed=7)

    (engine,) = fake_vllm.started
    assert engine.model == model_dir("tiny-random-llama", store)
    assert engine.engine == {"dtype": "auto", "max_model_len": None, "gpu_memory_utilization": 0.85,
                             "tensor_parallel_size": 1}
    assert [len(texts) for texts, _ in engine.calls] == [5, 5, 2], "one engine call per planned batch"
    by_id = {r.id: r for r in requests}
    sent = [(request_id, text, params) for ids, (texts, sampling) in zip(backend.plan_batches(requests), engine.calls)
            for request_id, text, params in zip(ids, texts, sampling)]
    for request_id, text, params in sent:
        request = by_id[request_id]
        assert text == g.chat_prompt(engine.tokenizer, request)
        assert text.startswith("<|im_start|>system\n" + request.system) and text.endswith(request.prefix)
        assert "<|im_start|>assistant\n" + request.prefix in text
        assert params.seed == g.batch_seed(7, [request]) % 2**31
        assert (params.temperature, params.top_p, params.max_tokens, params.stop) == (0.9, 0.95, 8, ["\n\n"])
    assert len({params.seed for _, _, params in sent}) == len(requests)
    assert set(answers) == set(by_id)
    assert tokens == sum(len(engine.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers.values())


def test_answers_do_not_depend_on_how_requests_are_batched(fake_vllm, store) -> None:
    requests = _requests()
    one_batch, _ = g.answer_requests(_backend(store, ["generate.batch_size=12"]), requests, seed=3)
    in_fours, _ = g.answer_requests(_backend(store, ["generate.batch_size=4"]), requests, seed=3)
    assert in_fours == one_batch, "a request's seed is its own, not its batch's"
    other_seed, _ = g.answer_requests(_backend(store, ["generate.batch_size=4"]), requests, seed=4)
    assert other_seed != one_batch


def test_settings_name_what_changes_answers_and_not_the_gpu_layout(store) -> None:
    base = _backend(store, []).settings()
    assert base == {"backend": "vllm", "model": "tiny-random-llama", "max_new_tokens": 8, "temperature": 0.9,
                    "top_p": 0.95, "dtype": "auto", "max_model_len": None}
    layout = ["generate.vllm.gpu_memory_utilization=0.5", "generate.vllm.tensor_parallel_size=2", "generate.batch_size=3"]
    assert _backend(store, layout).settings() == base
    assert _backend(store, ["generate.vllm.dtype=float16"]).settings()["dtype"] == "float16"


def test_a_smoke_generation_with_the_vllm_backend_stores_samples_and_a_report(fake_vllm, store) -> None:
    params = load_params("smoke", VLLM + ["generate.batch_size=5"])
    artifact = g.generate_samples(params, "gender", "contrastive-explicit", store)
    samples = read_jsonl(artifact.file("samples.jsonl"))
    report = json.loads(artifact.file("report.json").read_text())
    assert len(samples) == params.generate.n == report["valid"]
    assert {json.loads(s["generator"])["backend"] for s in samples} == {"vllm"}
    assert all(s["text"].startswith(s["name"]) and s["text"].endswith("at home.") for s in samples)
    assert report["new_tokens"] > 0 and report["processes"] == 1
    assert len(read_jsonl(artifact.file("answers.jsonl"))) == report["attempts"]
    assert g.generate_samples(params, "gender", "contrastive-explicit", store).path == artifact.path
    assert len(fake_vllm.started) == 1, "a stored generation starts no engine"


def _machine(monkeypatch, *, vllm: bool, gpu: bool) -> None:
    """Make vllm importable or not, and a CUDA GPU visible or not."""
    import torch

    if vllm:
        module = types.ModuleType("vllm")
        module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
        monkeypatch.setitem(sys.modules, "vllm", module)
    else:
        monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm fails, find_spec says None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)


@pytest.mark.parametrize(("vllm", "gpu", "missing"), [
    (False, True, "the vllm package is not installed"),
    (True, False, "no CUDA GPU is visible"),
    (False, False, "the vllm package is not installed (pip install -e '.[gpu]') and no CUDA GPU is visible"),
], ids=["no-vllm", "no-gpu", "neither"])
def test_where_vllm_cannot_run_the_cli_exits_2_with_one_line_naming_the_alternatives(
    monkeypatch, capsys, vllm, gpu, missing
) -> None:
    from biasutils import __main__ as cli

    _machine(monkeypatch, vllm=vllm, gpu=gpu)
    monkeypatch.setattr(cli.runner, "execute", lambda *args, **kwargs: pytest.fail("work started"))
    code = cli.main(["run", "--profile", "smoke", "--set", "generate.backend=vllm"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("error: generate.backend: 'vllm' cannot run here: ") and missing in line
    assert "allowed: 'transformers'" in line and "'openai' with generate.openai.base_url" in line
    assert "vllm serve" in line


def test_the_engine_is_refused_on_first_use_too_for_callers_that_skip_the_cli(monkeypatch, store) -> None:
    _machine(monkeypatch, vllm=True, gpu=False)
    backend = _backend(store, [])
    assert backend.plan_batches(_requests(3)), "planning needs no engine"
    with pytest.raises(g.GenerationError, match=r"^generate\.backend: 'vllm' cannot run here: no CUDA GPU is visible"):
        backend.engine()


def test_other_backends_are_not_checked(monkeypatch) -> None:
    _machine(monkeypatch, vllm=False, gpu=False)
    g.check_backend(load_params("smoke"))
    g.check_backend(load_params("smoke", ["generate.backend=openai"]))


@pytest.mark.skipif(g.vllm_problem() is None, reason="vLLM can run on this machine")
def test_on_this_machine_the_command_fails_at_once_with_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "biasutils", "run", "--profile", "smoke", "--set", "generate.backend=vllm"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: generate.backend: 'vllm' cannot run here")


def test_the_stereotype_agreement_of_a_vllm_generator_is_scored_locally_under_the_transformers_key() -> None:
    from biasutils.misalign.stereotype import stereotype_scorer

    local = stereotype_scorer(load_params("smoke"))
    assert stereotype_scorer(load_params("smoke", VLLM)) == local == {"backend": "transformers", "model": "tiny-random-llama"}
    other = stereotype_scorer(load_params("smoke", VLLM + ["models.generator=smollm2-135m-instruct"]))
    assert other["model"] == "smollm2-135m-instruct", "another generator, another artifact"


def test_a_vllm_generator_named_by_hub_id_is_checked_at_load() -> None:
    from biasutils.models import hub_ids

    params = load_params("smoke", VLLM + ["models.generator=org/generator"])
    assert hub_ids(params)["models.generator"] == ("org/generator", "model")
