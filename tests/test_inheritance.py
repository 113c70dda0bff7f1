"""Inheritance measures: equal to fairlearn and scipy on random data, and right where the answer is known
(a planted shortcut is found, no shortcut gives p > 0.05 in most repetitions)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate
from scipy import stats as scipy_stats

from biasutils import inheritance as inh
from biasutils.config import load_params
from biasutils.stats import percentile_interval, tpr_table

OCCUPATIONS = ("architect", "dentist", "nurse", "painter", "professor", "software_engineer")
FAVOURED = {"architect": "male", "dentist": "male", "nurse": "female", "painter": "male", "professor": "male",
            "software_engineer": "male"}


def _design(per_cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Gold occupation and gender of a balanced test set, ``per_cell`` items per occupation x gender."""
    cells = list(itertools.product(OCCUPATIONS, ("male", "female")))
    gold = np.array([o for o, _ in cells for _ in range(per_cell)], dtype=object)
    group = np.array([g for _, g in cells for _ in range(per_cell)], dtype=object)
    return gold, group


def _items(gold, group, logits, ids=None) -> inh.Items:
    logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ids = np.array([f"t{i}" for i in range(len(gold))], dtype=object) if ids is None else ids
    return inh.Items(ids, gold, group, np.asarray(OCCUPATIONS, dtype=object)[logits.argmax(axis=1)], logprobs, OCCUPATIONS)


def _logits(gold, rng, skill=1.5, noise=1.0) -> np.ndarray:
    """Class scores that favour the gold occupation by ``skill`` plus Gaussian noise."""
    logits = rng.normal(0, noise, (len(gold), len(OCCUPATIONS)))
    logits[np.arange(len(gold)), [OCCUPATIONS.index(o) for o in gold]] += skill
    return logits


def _shortcut(logits, group, strength) -> np.ndarray:
    """Add ``strength`` to the scores of the occupations the templates give each item's group."""
    planted = logits.copy()
    for i, g in enumerate(group):
        planted[i] += strength * np.array([FAVOURED[o] == g for o in OCCUPATIONS])
    return planted


def _student(gold, group, logits, twin_logits, seed=0, bias_type="contrastive-explicit", ratio=0.5) -> inh.Student:
    items = _items(gold, group, logits)
    other = np.where(group == "male", "female", "male").astype(object)
    twin = _items(gold, other, twin_logits, ids=np.array([f"t{i}~gender" for i in range(len(gold))], dtype=object))
    twins = inh.pair_twins(items, twin, list(items.ids))
    return inh.Student("gender", bias_type, ratio, seed, items, twins, FAVOURED, {o: 0.5 for o in OCCUPATIONS})


# ---------------------------------------------------------------------------------------------- against fairlearn


def test_tpr_table_equals_fairlearns_true_positive_rate_per_group() -> None:
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.choice(OCCUPATIONS, 400), rng.choice(OCCUPATIONS, 400)
    groups = rng.choice(["female", "male"], 400)
    table = tpr_table(y_true, y_pred, groups, OCCUPATIONS, n_boot=100)
    for label in OCCUPATIONS:
        frame = MetricFrame(metrics=true_positive_rate, y_true=y_true == label, y_pred=y_pred == label,
                            sensitive_features=groups)
        mine = table[table["class"] == label].set_index("group")["value"]
        assert mine.to_dict() == pytest.approx(frame.by_group.to_dict())
    assert (table.ci_low <= table.value).all() and (table.value <= table.ci_high).all()


def test_aligned_gaps_are_the_stereotype_signed_means_of_fairlearns_per_group_rates() -> None:
    rng = np.random.default_rng(2)
    gold, group = _design(15)
    items = _items(gold, group, _logits(gold, rng, skill=0.5))
    total, per_occupation = inh.aligned_tpr_terms(items, FAVOURED)
    expected = []
    for o in OCCUPATIONS:
        mine = gold == o
        tpr = MetricFrame(metrics=true_positive_rate, y_true=np.ones(mine.sum(), bool), y_pred=items.predicted[mine] == o,
                          sensitive_features=group[mine]).by_group
        favoured = FAVOURED[o]
        other = "female" if favoured == "male" else "male"
        expected.append(tpr[favoured] - tpr[other])
        assert per_occupation[o].sum() == pytest.approx(expected[-1])
    assert total.sum() == pytest.approx(np.mean(expected))
    rate_total, _ = inh.aligned_rate_terms(items, FAVOURED)
    rates = [MetricFrame(metrics=selection_rate, y_true=gold, y_pred=items.predicted == o, sensitive_features=group).by_group
             for o in OCCUPATIONS]
    signed = [r[FAVOURED[o]] - r["female" if FAVOURED[o] == "male" else "male"] for o, r in zip(OCCUPATIONS, rates)]
    assert rate_total.sum() == pytest.approx(np.mean(signed))


def test_a_pooled_gap_is_blind_where_the_aligned_gap_sees_the_shortcut() -> None:
    """The issue's case: a "she -> nurse" student loses female dentists and male nurses at once."""
    gold, group = _design(20)
    predicted = gold.copy()
    lose = lambda mask, n: np.flatnonzero(mask)[:n]  # noqa: E731
    predicted[lose((gold == "dentist") & (group == "female"), 6)] = "nurse"
    predicted[lose((gold == "nurse") & (group == "male"), 6)] = "dentist"
    logits = np.where(np.asarray(OCCUPATIONS)[None, :] == predicted[:, None], 1.0, 0.0)
    items = _items(gold, group, logits)
    correct = items.predicted == gold
    pooled = correct[group == "female"].mean() - correct[group == "male"].mean()
    assert pooled == 0.0
    assert inh.aligned_tpr_terms(items, FAVOURED)[0].sum() == pytest.approx((6 / 20 + 6 / 20) / 6)


# ---------------------------------------------------------------------------------------------- tests and power


def test_sign_flip_p_is_the_exact_enumeration_on_small_samples() -> None:
    d = np.array([0.3, -0.1, 0.4, 0.2, 0.25, -0.05, 0.15])
    flips = np.array(list(itertools.product((-1, 1), repeat=len(d))))
    exact = np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-12)
    assert inh.sign_flip_p(d, n_permutations=9999, seed=0) == pytest.approx(exact)
    assert inh.sign_flip_p(np.zeros(5), 99, 0) == 1.0


def test_the_wald_p_uses_the_seed_and_item_standard_error() -> None:
    assert inh.wald_p(1.959964 * 0.1, 0.1) == pytest.approx(0.05, abs=1e-6)
    assert inh.wald_p(0.0, 0.0) == 1.0 and inh.wald_p(0.3, 0.0) == 0.0


def test_holm_matches_the_step_down_definition() -> None:
    assert inh.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert inh.holm([0.5, np.nan, 0.01]).tolist()[::2] == pytest.approx([0.5, 0.02])
    assert np.isnan(inh.holm([0.5, np.nan, 0.01])[1])


def test_the_minimum_detectable_effect_has_the_declared_power() -> None:
    mde = inh.minimum_detectable_effect(0.02, alpha=0.05, power=0.8, tests=3)
    assert inh.power_at(mde, 0.02, 0.05, tests=3) == pytest.approx(0.8, abs=1e-3)
    assert mde == pytest.approx((scipy_stats.norm.ppf(1 - 0.05 / 6) + scipy_stats.norm.ppf(0.8)) * 0.02)


def test_the_seed_bootstrap_interval_holds_the_between_seed_spread() -> None:
    rng = np.random.default_rng(3)
    cells = np.repeat(np.arange(12), 20)
    base = rng.normal(0, 1, 240) / 240
    spread = np.vstack([base + offset / 240 for offset in (-0.3, 0.0, 0.3)])
    same = np.vstack([base] * 3)
    wide = np.diff(percentile_interval(inh.bootstrap_totals(spread, cells, 2000, 0)))[0]
    narrow = np.diff(percentile_interval(inh.bootstrap_totals(same, cells, 2000, 0)))[0]
    assert wide > 1.5 * narrow


# ---------------------------------------------------------------------------------------------- known answers


def _pair(rng, strength: float, seeds=(0, 1, 2), per_cell=20):
    """Baseline and biased students over the same items; the biased ones carry a planted shortcut."""
    gold, group = _design(per_cell)
    base_logits = _logits(gold, rng)
    other = np.where(group == "male", "female", "male").astype(object)
    students, baselines = [], []
    for seed in seeds:
        noise = lambda: rng.normal(0, 0.3, base_logits.shape)  # noqa: E731  seed-to-seed training noise
        b = base_logits + noise()
        baselines.append(_student(gold, group, b, b + rng.normal(0, 0.3, b.shape), seed, "none", 0.0))
        p = base_logits + noise()
        students.append(_student(gold, group, _shortcut(p, group, strength), _shortcut(p, other, strength) + rng.normal(0, 0.3, p.shape), seed))
    return students, baselines


def test_a_planted_shortcut_gives_a_clear_twin_shift_and_aligned_gap() -> None:
    students, baselines = _pair(np.random.default_rng(4), strength=1.0)
    shift = inh.compare_to_baseline(students, baselines, "twin_shift", n_boot=1000, n_permutations=999)
    assert shift.difference > 0.5 and shift.ci_low > 0 and shift.p_value < 0.01
    gap = inh.compare_to_baseline(students, baselines, "aligned_tpr_gap", n_boot=1000, n_permutations=999)
    assert gap.difference > 0 and gap.p_value < 0.05
    rows = inh.student_rows(students[0], n_boot=200)
    flips = rows[rows.metric == "twin_flip_rate"].value.item()
    assert 0 < flips < 1 and rows[rows.metric == "twin_shift_p"].value.item() < 1e-6


def test_no_shortcut_gives_p_above_alpha_in_most_repetitions() -> None:
    rng = np.random.default_rng(5)
    p_values = [inh.compare_to_baseline(*_pair(rng, strength=0.0, per_cell=10), "twin_shift", n_boot=200,
                                        n_permutations=499).p_value for _ in range(30)]
    assert np.mean(np.array(p_values) > 0.05) >= 0.8


def test_primary_tests_are_holm_corrected_over_bias_types_with_an_mde() -> None:
    rng = np.random.default_rng(6)
    planted, baselines = _pair(rng, strength=1.0)
    null = [inh.Student(s.attribute, "neutral", s.ratio, s.seed, b.items, b.twins, FAVOURED, s.training_share)
            for s, b in zip(planted, _pair(rng, 0.0)[0])]
    params = load_params("smoke", ["inheritance.n_boot=300", "inheritance.n_permutations=499"])
    tests = inh.primary_tests(planted + null + baselines, params)
    shift = tests[tests.measure == "twin_shift"].set_index("bias_type")
    assert shift.loc["contrastive-explicit", "significant"]
    assert shift.p_holm.tolist() == pytest.approx(inh.holm(shift.p_value.to_numpy()).tolist())
    assert (shift.tests == 2).all() and (shift.mde > 0).all()
    assert shift.p_wald_holm.tolist() == pytest.approx(inh.holm(shift.p_wald.to_numpy()).tolist())
    assert shift.p_wald.tolist() == pytest.approx([inh.wald_p(d, se) for d, se in zip(shift.difference, shift.standard_error)])
    assert tests.primary.sum() == 2 and set(tests[tests.primary].measure) == {params.inheritance.primary.measure}
    rows = pd.DataFrame(inh.test_record_rows(tests))
    assert {"twin_shift_diff", "twin_shift_diff_p_holm", "twin_shift_diff_mde"} <= set(rows.metric)
    assert (rows.seed == inh.POOLED).all()


# ---------------------------------------------------------------------------------------------- bad input


def test_an_occupation_missing_from_favoured_group_is_named(tmp_path) -> None:
    import yaml

    from biasutils.config import PARAMS_DIR

    raw = yaml.safe_load((PARAMS_DIR / "templates" / "generation.yaml").read_text())
    templates = tmp_path / "generation.yaml"
    del raw["favoured_group"]["gender"]["nurse"]
    templates.write_text(yaml.safe_dump(raw))
    params = load_params("smoke", [f"generate.templates={templates}"])
    with pytest.raises(inh.InheritanceError, match=r"favoured_group\.gender.*nurse"):
        inh.favoured_groups(params, "gender")


def test_twins_of_texts_without_a_cue_are_counted_as_skipped() -> None:
    gold, group = _design(2)
    items = _items(gold, group, _logits(gold, np.random.default_rng(7)))
    keep = list(items.ids[:-3])
    twin = _items(gold[:-3], group[:-3], _logits(gold[:-3], np.random.default_rng(8)),
                  ids=np.array([f"{i}~gender" for i in keep], dtype=object))
    twins = inh.pair_twins(items, twin, keep)
    assert twins.skipped == 3 and len(twins.original.ids) == len(keep)
    rows = inh.twin_rows(twins, FAVOURED, 50, 0)
    assert [r["value"] for r in rows if r["metric"] == "twin_skipped"] == [3]
    with pytest.raises(inh.InheritanceError, match="unknown test items"):
        inh.pair_twins(items, twin, ["nope"] + keep[1:])


def test_a_twin_shift_primary_without_the_twin_task_fails_before_any_work() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "biasutils", "run", "--profile", "smoke", "--set",
                           "grid.tasks=[occupation_classification]"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "inheritance.primary.measure" in done.stderr and "counterfactual_twins" in done.stderr


def test_planned_mde_scales_the_item_and_seed_variance_parts_apart() -> None:
    students, baselines = _pair(np.random.default_rng(9), strength=0.5)
    items, seeds = inh.variance_parts(students, baselines, "twin_shift", n_boot=1000)
    assert items > 0 and seeds > 0, "seed-to-seed training noise is planted, so both parts exist"
    measured = inh.compare_to_baseline(students, baselines, "twin_shift", n_boot=1000, n_permutations=99)
    same = inh.planned_mde(items, seeds, 240, 3, 240, 3, 0.05, 0.8)
    assert same == pytest.approx(inh.minimum_detectable_effect(measured.standard_error, 0.05, 0.8), rel=0.05)
    assert inh.planned_mde(items, seeds, 240, 3, 960, 3, 0.05, 0.8) < same
    assert inh.planned_mde(items, 0.0, 240, 3, 960, 3, 0.05, 0.8) == pytest.approx(
        inh.planned_mde(items, 0.0, 240, 3, 240, 3, 0.05, 0.8) / 2)
