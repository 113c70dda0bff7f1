"""Mitigation pieces on constructed inputs with known answers (issue 12, in progress)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from biasutils import mitigate
from biasutils.store import read_jsonl


def _rows() -> list[dict]:
    return [{"id": f"o{i}", "source": "original", "hard_text": f"original {i}"} for i in range(3)] + [
        {"id": f"a{i}", "source": "augmented", "hard_text": f"augmented {i}"} for i in range(2)]


def test_the_token_text_is_on_augmented_rows_only() -> None:
    rows, changed = mitigate.token_rows(_rows(), "Machine-written, may be biased.")
    assert changed == ["a0", "a1"]
    assert [r["hard_text"] for r in rows] == ["original 0", "original 1", "original 2",
                                              "Machine-written, may be biased. augmented 0",
                                              "Machine-written, may be biased. augmented 1"]
    assert _rows()[3]["hard_text"] == "augmented 0", "the input rows are not changed in place"
    with pytest.raises(mitigate.MitigationError, match="mitigate.token.text"):
        mitigate.token_rows(_rows(), "  ")


def test_the_alignment_loss_is_zero_for_equal_means_positive_otherwise_and_its_gradient_closes_the_gap() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]])
    sources = ["original", "augmented", "original", "augmented"]
    same = torch.ones(4, 3, 2)
    assert float(mitigate.alignment_loss(same, mask, sources, 1.0)) == 0.0
    hidden = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = mitigate.alignment_loss(hidden, mask, sources, 0.5)
    assert float(loss.detach()) > 0
    loss.backward()
    with torch.no_grad():
        stepped = hidden - 0.1 * hidden.grad
    assert float(mitigate.alignment_loss(stepped, mask, sources, 0.5)) < float(loss.detach())
    # padding positions do not count: changing them changes nothing
    padded = hidden.detach().clone()
    padded[0, 2] = 100.0
    assert float(mitigate.alignment_loss(padded, mask, sources, 0.5)) == pytest.approx(float(loss.detach()))
    with pytest.raises(mitigate.MitigationError, match="original and augmented rows in every batch"):
        mitigate.alignment_loss(hidden, mask, ["original"] * 4, 1.0)
    with pytest.raises(mitigate.MitigationError, match="mitigate.loss.weight"):
        mitigate.alignment_loss(hidden, mask, sources, -1.0)


def test_stratified_batches_hold_both_sources_and_every_row_once() -> None:
    sources = ["original"] * 60 + ["augmented"] * 20
    batches = mitigate.stratified_batches(sources, 8, np.random.default_rng(0))
    assert sorted(i for b in batches for i in b) == list(range(80)) and len(batches) == 10
    assert all({sources[i] for i in batch} == {"original", "augmented"} for batch in batches)
    assert max(len(b) for b in batches) - min(len(b) for b in batches) <= 2
    # gamma = 0.1 of 60 originals: 7 augmented rows cannot reach 9 batches of 8, so there are 7 larger ones
    few = ["original"] * 60 + ["augmented"] * 7
    batches = mitigate.stratified_batches(few, 8, np.random.default_rng(0))
    assert len(batches) == 7 and sorted(i for b in batches for i in b) == list(range(67))
    assert all(sum(few[i] == "augmented" for i in batch) == 1 for batch in batches)
    with pytest.raises(mitigate.MitigationError, match="no augmented rows"):
        mitigate.stratified_batches(["original"] * 16, 8, np.random.default_rng(0))


BIOGRAPHY = ("Stephany Alves considers herself an early riser. She manages projects for her clients. Her husband is "
             "Spanish. Colleagues describe Stephany as patient. She met a Chinese woman in Lisbon.")


def test_masking_a_hand_made_biography_removes_every_cue_and_nothing_else() -> None:
    from biasutils import cues

    masked, count = cues.mask_cues(BIOGRAPHY, "token")
    assert masked == ("[MASK] considers [MASK] an early riser. [MASK] manages projects for [MASK] clients. [MASK] [MASK] "
                      "is [MASK]. Colleagues describe [MASK] as patient. [MASK] met a [MASK] [MASK] in Lisbon.")
    assert count == 11
    neutral, _ = cues.mask_cues(BIOGRAPHY, "neutral")
    assert cues.infer_gender(neutral) == cues.UNKNOWN and "Stephany" not in neutral and "Spanish" not in neutral
    assert neutral.startswith("the person considers themselves an early riser. They manages projects for their clients.")
    with pytest.raises(ValueError, match="mode"):
        cues.mask_cues(BIOGRAPHY, "blank")


def test_mask_rows_change_augmented_rows_only_and_keep_the_label_words() -> None:
    rows = [{"id": "o", "source": "original", "occupation": "nurse", "hard_text": "He is a nurse."},
            {"id": "a", "source": "augmented", "occupation": "nurse", "hard_text": "Nurse Stephany helps her patients as a nurse."}]
    out, counts = mitigate.mask_rows(rows, "token")
    assert out[0]["hard_text"] == "He is a nurse."
    assert out[1]["hard_text"] == "Nurse [MASK] helps [MASK] patients as a nurse." and counts == [2]


def test_mitigation_settings_that_make_no_sense_fail_before_any_work() -> None:
    from biasutils.config import ParamsError, load_params

    params = load_params("smoke", ["grid.mitigations=[none, token, mask, loss]"])
    assert params.grid.mitigations == ["none", "token", "mask", "loss"] and params.mitigate.loss.weight >= 0
    for override, field in (("grid.mitigations=[none, dropout]", "grid.mitigations"),
                            ("mitigate.loss.weight=-1", "mitigate.loss.weight"),
                            ("mitigate.token.text=' '", "mitigate.token.text"),
                            ("mitigate.mask.mode=blank", "mitigate.mask.mode"),
                            ("mitigate.ratios=[0.5]", "mitigate.ratios"),
                            ("mitigate.bias_types=[neutral]", "mitigate.bias_types"),
                            ("mitigate.tasks=[hiring_recommendation]", "mitigate.tasks")):
        with pytest.raises(ParamsError, match=field.replace(".", r"\.")):
            load_params("smoke", ["grid.mitigations=[none, loss]", override])


def _stored(store_root, stage: str) -> set[str]:
    return {p.name for p in (store_root / stage).iterdir() if p.is_dir() and not p.name.endswith(".scratch")}


def _distance(params, adapter, mix, store) -> float:
    """The original-augmented distance of the student's mean-pooled last hidden states over the mix."""
    from biasutils.finetune import collate, encode, final_hidden, load_student

    model, tokenizer = load_student(params, adapter, store, "cpu", merge=False)
    examples = encode(read_jsonl(mix.file("train.jsonl")), tokenizer, params.finetune, group_field="gender_name")
    batch = collate(examples, None, "cpu", tokenizer.pad_token_id)
    with torch.inference_mode():
        hidden = final_hidden(model, batch, None)
    return float(mitigate.alignment_loss(hidden, batch.attention_mask, batch.sources, 1.0))


def test_mitigated_points_reuse_the_generation_and_mix_and_the_loss_pulls_the_sources_together(tmp_path) -> None:
    from biasutils.config import load_params
    from biasutils.finetune import finetune_artifact
    from biasutils.mix import mix_artifact
    from biasutils.store import Store

    store = Store(tmp_path)
    params = load_params("smoke", ["finetune.epochs={gender: 8, culture: 8}", "mitigate.loss.weight=50"])
    point = ("gender", "contrastive-explicit", max(params.grid.ratios), 0)
    plain = finetune_artifact(params, *point, store)
    generated, mixes = _stored(tmp_path, "generate"), _stored(tmp_path, "mix")
    token = mitigate.mitigated_adapter(params, *point, "token", store)
    masked = mitigate.mitigated_adapter(params, *point, "mask", store)
    loss = mitigate.mitigated_adapter(params, *point, "loss", store)
    assert (_stored(tmp_path, "generate"), _stored(tmp_path, "mix")) == (generated, mixes), "nothing upstream recomputed"
    assert len({plain.key, token.key, masked.key, loss.key}) == 4
    assert mitigate.mitigated_adapter(params, *point, "none", store).key == plain.key
    changed = json.loads(mitigate.mitigated_mix(params, *point, "token", store).file("changes.json").read_text())
    mix = mix_artifact(params, *point, store)
    augmented = [r["id"] for r in read_jsonl(mix.file("train.jsonl")) if r["source"] == "augmented"]
    assert changed["changed_ids"] == augmented
    assert _distance(params, loss, mix, store) < _distance(params, plain, mix, store), "lambda > 0 pulls the means together"


def test_the_points_compared_are_the_chosen_biased_points_with_the_plain_student_first() -> None:
    from biasutils.config import load_params

    params = load_params("smoke", ["grid.mitigations=[none, loss, token]", "mitigate.bias_types=[contextual-implicit]"])
    points = mitigate.mitigated_points(params)
    assert [(p["bias_type"], p["ratio"], p["mitigation"]) for p in points] == [
        ("contextual-implicit", 0.2, m) for m in ("none", "loss", "token")]
    assert mitigate.mitigated_points(load_params("smoke")) == [], "no mitigation chosen: nothing to compare"


def _mitigated(students, mitigation: str):
    from biasutils import inheritance as inh

    return [inh.Student(s.attribute, s.bias_type, s.ratio, s.seed, s.items, s.twins, s.favoured, s.training_share,
                        mitigation) for s in students]


def test_a_mitigation_that_weakens_a_planted_shortcut_reduces_the_twin_shift_and_one_that_does_not_is_not_detected() -> None:
    from test_inheritance import _pair

    from biasutils.config import load_params

    params = load_params("smoke", ["grid.mitigations=[none, loss, token]", "inheritance.n_boot=300",
                                   "inheritance.n_permutations=999"])
    rng = np.random.default_rng(7)
    plain, _ = _pair(rng, strength=1.0)
    weakened, _ = _pair(np.random.default_rng(7), strength=0.2)  # the same items and noise, a fifth of the shortcut
    unchanged, _ = _pair(np.random.default_rng(7), strength=1.0)
    table = mitigate.comparison_table(plain + _mitigated(weakened, "loss") + _mitigated(unchanged, "token"), params)
    shift = table[(table.measure == "twin_shift") & (table.bias_type != mitigate.OVERALL)].set_index("mitigation")
    assert shift.loc["loss", "difference"] < 0 and shift.loc["loss", "ci_high"] < 0
    assert shift.loc["loss", "verdict"] == "reduces" and shift.loc["loss", "p_holm"] < 0.05
    assert shift.loc["token", "difference"] == 0 and shift.loc["token", "verdict"] == "no detectable change"
    assert shift.loc["loss", "difference"] == pytest.approx(shift.loc["loss", "mitigated"] - shift.loc["loss", "plain"])
    accuracy = table[(table.measure == "accuracy") & (table.bias_type != mitigate.OVERALL)].set_index("mitigation")
    mean_accuracy = lambda students: np.mean([(s.items.predicted == s.items.gold).mean() for s in students])  # noqa: E731
    assert accuracy.loc["loss", "difference"] == pytest.approx(mean_accuracy(weakened) - mean_accuracy(plain))
    overall = table[table.bias_type == mitigate.OVERALL].set_index(["measure", "mitigation"])
    assert overall.loc[("twin_shift", "loss"), "difference"] == pytest.approx(shift.loc["loss", "difference"])
    assert overall.loc[("twin_shift", "loss"), "n_points"] == 1 and overall.loc[("twin_shift", "loss"), "verdict"] == "reduces"
    summary = mitigate.summary_table(table, "twin_shift")
    assert list(summary.columns) == ["loss", "token"] and "reduces" in summary.loc[("gender", "contrastive-explicit", "0.5"), "loss"]


def test_cues_are_counted_the_same_way_before_and_after_masking() -> None:
    rows = [{"id": "o", "source": "original", "occupation": "nurse", "hard_text": BIOGRAPHY},
            {"id": "a", "source": "augmented", "occupation": "nurse", "hard_text": BIOGRAPHY}]
    assert mitigate.cue_counts(rows) == [11]
    masked, counts = mitigate.mask_rows(rows, "neutral")
    assert counts == [11] and mitigate.cue_counts(masked) == [0]
