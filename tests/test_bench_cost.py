"""bench/bench_cost.py: the work counted from a profile's params against hand-computed values, the LPT schedule
on known examples, and command-line errors that name the bad value (offline, no model is loaded)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from biasutils.config import DEFAULT_TASKS, load_params

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load_bench_cost():
    spec = importlib.util.spec_from_file_location("bench_cost", BENCH / "bench_cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_cost"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


cost = _load_bench_cost()
ITEMS = {task: 10 for task in DEFAULT_TASKS}  # items per task: any fixed count will do for counting


def passes(jobs):
    return sorted(job.train for job in jobs)


def test_smoke_work_by_hand() -> None:
    """smoke: gender, 2 bias types, γ ∈ {0, 0.2}, seed 0, n_train 48, 3 epochs, no mitigation, no rounds."""
    params = load_params("smoke")
    generation = cost.generation_jobs(params, 1.5)
    assert [job.answers for job in generation] == [18.0, 18.0]  # generate.n 12 x 1.5 per (gender, bias type)
    assert len(cost.student_points(params)) == 3  # one γ = 0 student + 2 bias types at γ = 0.2
    # γ = 0: 48 rows; γ = 0.2: 48 + 0.2/0.8 x 48 = 60 rows; x 3 epochs
    assert passes(cost.finetune_jobs(params)) == [144, 180, 180]
    evaluations = cost.evaluate_jobs(params, ITEMS)
    assert len(evaluations) == 3 and all(dict(job.items) == ITEMS for job in evaluations)
    assert cost.mitigation_jobs(params, ITEMS, 129) == [] and cost.multiround_jobs(params, ITEMS, 1.0) == []


def test_paper_work_by_hand() -> None:
    """paper: 2 attributes x 7 bias types x γ ∈ {0, .05, .1, .2, .5} x 3 seeds, n_train 3,600, 3 epochs; the two
    attributes' lr differ (1e-5, 1e-6), so each has its own γ = 0 student."""
    params = load_params("paper")
    assert len(cost.generation_jobs(params, 1.0)) == 14
    finetunes = cost.finetune_jobs(params)
    assert len(finetunes) == 6 + 2 * 7 * 4 * 3 == 174
    # rows per γ: 3,600 + round(γ/(1−γ) x 3,600): 3,600, 3,789, 4,000, 4,500, 7,200; x 3 epochs
    per_ratio = {0.0: 10_800, 0.05: 11_367, 0.1: 12_000, 0.2: 13_500, 0.5: 21_600}
    assert sorted(set(passes(finetunes))) == sorted(per_ratio.values())
    assert sum(passes(finetunes)) == 6 * 10_800 + 6 * 7 * (11_367 + 12_000 + 13_500 + 21_600)

    mitigated = cost.mitigation_jobs(params, ITEMS, 129)
    assert len(mitigated) == 2 * 7 * 4 * 3 * 4  # every biased point x {none, token, mask, loss}
    trained = [job for job in mitigated if job.train]
    assert len(trained) == 504 and sum(job.train for job in trained) == 3 * 6 * 7 * (11_367 + 12_000 + 13_500 + 21_600)
    plain = next(job for job in mitigated if not job.train and "ratio=0.5" in job.label)
    assert plain.items == (("occupation_classification", 7_200 + 129),)  # the probe alone: the mix's rows + GEST

    chains = cost.multiround_jobs(params, ITEMS, 1.0)
    assert len(chains) == 3  # one per grid seed
    # 5 rounds of 3,600 samples, a 7,200-row mix trained 3 epochs on a classification and a writing example per row
    assert {(job.answers, job.train, job.write) for job in chains} == {(18_000, 108_000, 108_000)}
    assert dict(chains[0].items) == {task: 50 for task in ("occupation_classification", "counterfactual_twins",
                                                           "salary_recommendation", "hiring_recommendation")}


def test_attributes_trained_alike_share_their_baseline() -> None:
    params = load_params("paper", ["finetune.lr={gender: 1e-5, culture: 1e-5}"])
    assert len(cost.student_points(params)) == 3 + 168


def test_llama_8b_weights_add_up_to_its_parameter_count() -> None:
    """N_body + the LM head + the (untied) embedding + the RMSNorm weights (two per layer, one final; not matmul
    weights, so not in the FLOPs): Llama-3.1-8B's 8,030,261,248 parameters."""
    sys.path.insert(0, str(BENCH))
    from bench_finetune import llama_8b_config

    shape = cost.model_shape("llama", llama_8b_config(), load_params("paper").finetune.lora)
    assert shape.body + 2 * shape.head + (2 * 32 + 1) * 4096 == 8_030_261_248


def test_lpt_makespan_on_known_examples() -> None:
    # LPT puts 3, 3 on the two workers, then 2, 2 and the last 2 on one: 7 (the optimum is 6: {3, 3}, {2, 2, 2})
    assert cost.lpt_makespan([2, 3, 2, 3, 2], 2) == 7
    assert cost.lpt_makespan([7, 6, 5, 4, 3], 2) == 14
    assert cost.lpt_makespan([7, 6, 5, 4, 3], 1) == 25
    assert cost.lpt_makespan([7, 6, 5], 8) == 7


def test_schedule_runs_phases_one_after_another() -> None:
    params = load_params("smoke")
    jobs = [cost.Job("generate", "a", answers=4), cost.Job("generate", "b", answers=2), cost.Job("finetune", "c", train=3)]
    seconds = lambda job: (job.answers + job.train) * 3600  # noqa: E731
    assert cost.schedule(jobs, seconds, params, 1) == (9.0, 9.0)
    assert cost.schedule(jobs, seconds, params, 2) == (9.0, 4.0 + 3.0)


@pytest.mark.parametrize(("value", "named"), [("foo=1", "'foo'"), ("vllm=fast", "'fast'"), ("vllm=-3", "'-3'"), ("vllm", "''")])
def test_rate_errors_name_the_bad_value(value: str, named: str) -> None:
    with pytest.raises(cost.UsageError) as error:
        cost.parse_rates([value])
    assert repr(value) in str(error.value) and named in str(error.value)
    assert "transformers, vllm, openai" in str(error.value) or "a number > 0" in str(error.value)


def test_rates_parse() -> None:
    assert cost.parse_rates(["vllm=2500", "openai=80.5"]) == {"vllm": 2500.0, "openai": 80.5}


@pytest.mark.parametrize(("argv", "named"), [
    (["--tokens-per-s", "vllm=x"], "--tokens-per-s 'vllm=x'"),
    (["--gpus", "0,8"], "--gpus '0,8'"),
    (["--card", "h100"], "needs --mfu"),
    (["--card", "tpu", "--mfu", "0.4"], "--card 'tpu': allowed: a100, h100, h200"),
    (["--card", "h100", "--mfu", "1.5"], "--mfu 1.5"),
    (["--target", "nope"], "profile: unknown profile 'nope'"),
    (["--eval-items", "0"], "--eval-items 0"),
])
def test_bad_command_lines_exit_2_naming_the_argument(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cost.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
