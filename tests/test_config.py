"""Params: profiles load, overrides apply, and every bad input names the field and the allowed values."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from biasutils.config import BIAS_TYPES, ParamsError, available_profiles, load_params


def test_the_four_profiles_load_and_validate() -> None:
    assert available_profiles() == ["classroom", "lesson", "paper", "smoke"]
    lesson = load_params("lesson")
    assert lesson.grid.attributes == ["gender"] and "neutral" in lesson.grid.bias_types and len(lesson.grid.seeds) >= 3
    assert "counterfactual_twins" in lesson.grid.tasks, "the lesson runs the declared primary test"
    classroom = load_params("classroom")
    assert classroom.models.student == "smollm2-135m-instruct"
    assert set(classroom.grid.attributes) == {"gender", "culture"} and len(classroom.grid.seeds) >= 3
    assert {"neutral", "contrastive-explicit", "contextual-implicit"} <= set(classroom.grid.bias_types) <= set(BIAS_TYPES)
    assert 0.0 in classroom.grid.ratios and 0.5 in classroom.grid.ratios
    assert classroom.inheritance.primary.measure == "twin_shift" and classroom.inheritance.primary.alpha == 0.05
    paper = load_params("paper")
    assert paper.data.source == "bias_in_bios"
    assert paper.models.student == "meta-llama/Llama-3.1-8B-Instruct"
    assert load_params("smoke").models.student == "tiny-random-llama"


def test_overrides_set_nested_fields_with_yaml_values() -> None:
    params = load_params("smoke", ["grid.ratios=[0, 0.05]", "data.n_train=24", "device=cpu"])
    assert params.grid.ratios == [0.0, 0.05]
    assert params.data.n_train == 24


@pytest.mark.parametrize(
    ("overrides", "field", "allowed"),
    [
        (["grid.bias_types=[contrastive-explicit, sneaky]"], "grid.bias_types.1", "'contextual-implicit'"),
        (["grid.ratios=[0, 1.0]"], "grid.ratios.1", "0 <= ratio < 1"),
        (["grid.ratios=[-0.2]"], "grid.ratios.0", "0 <= ratio < 1"),
        (["data.n_test=0"], "data.n_test", "greater than 0"),
        (["data.n_train=-5"], "data.n_train", "greater than 0"),
        (["grid.colour=blue"], "grid.colour", "attributes, bias_types, ratios, seeds, tasks"),
        (["models.student=gpt2"], "models.student", "tiny-random-llama"),
        (["grid.attributes=[race]"], "grid.attributes.0", "'gender' or 'culture'"),
        (["data.source=wikipedia"], "data.source", "'offline' or 'bias_in_bios'"),
        (["dtype=half"], "dtype", "allowed: 'auto', 'float32', 'bfloat16' or 'float16'"),
        (["finetune.packing=sometimes"], "finetune.packing", "valid boolean"),
        (["finetune.gradient_checkpointing=sometimes"], "finetune.gradient_checkpointing", "allowed: 'auto'"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_values(overrides, field, allowed) -> None:
    with pytest.raises(ParamsError) as caught:
        load_params("smoke", overrides)
    message = str(caught.value)
    assert field in message
    assert allowed in message


def test_unknown_profile_lists_the_profiles() -> None:
    with pytest.raises(ParamsError, match="allowed: classroom, lesson, paper, smoke"):
        load_params("papr")


def test_hub_ids_and_local_directories_are_accepted_as_models(tmp_path) -> None:
    params = load_params("smoke", [f"models.student={tmp_path}", "models.generator=Qwen/Qwen2.5-0.5B-Instruct"])
    assert params.models.student == str(tmp_path)


def test_malformed_override_is_a_clear_error() -> None:
    with pytest.raises(ParamsError, match="expected key=value"):
        load_params("smoke", ["grid.ratios"])


def test_cli_rejects_a_bad_ratio_fast_without_starting_work() -> None:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "biasutils", "run", "--profile", "smoke", "--set", "grid.ratios=[0.5,1.2]"],
        capture_output=True, text=True, timeout=60,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 2
    assert "grid.ratios.1" in result.stderr and "0 <= ratio < 1" in result.stderr
    assert elapsed < 5, f"validation took {elapsed:.1f}s"


def test_a_grid_that_needs_more_augmented_samples_than_generated_fails_before_work() -> None:
    with pytest.raises(ParamsError, match=r"generate.n: 12 .* γ = 0.5 .* needs 48\); allowed: generate.n >= 48"):
        load_params("smoke", ["grid.ratios=[0, 0.5]"])
    assert load_params("smoke", ["grid.ratios=[0, 0.5]", "mix.hold_total_size=true", "generate.n=24"])


def test_profiles_name_the_stages_they_run() -> None:
    every = ["data", "generate", "mix", "finetune", "evaluate", "misalign", "mitigate", "multiround", "report"]
    assert load_params("smoke").stages == every
    assert load_params("classroom").stages == every
    assert load_params("classroom", ["stages=[data, misalign]"]).stages == ["data", "misalign"]
    with pytest.raises(ParamsError, match=r"stages.0: 'train' is not allowed; allowed: 'data'"):
        load_params("smoke", ["stages=[train]"])
