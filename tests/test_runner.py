"""The runner: grid expansion, computing what the store lacks in warm workers, parameter-derived render
paths, records that name what a render read, skipping current work, clear failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from biasutils import runner
from biasutils.config import CULTURE_TASK, load_params
from biasutils.report import grid_points
from biasutils.stats import RECORD_KEYS

from culture_data import RELATIVE, datasets_override
from toy_work import toy_work


def _notebook(path: Path, body: str) -> Path:
    """A two-cell notebook: the tagged parameters cell and one code cell."""
    params = nbformat.v4.new_code_cell('profile = "x"\noverrides = []\nbias_type = "none"\nratio = 0.0')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def toy_stage(monkeypatch, tmp_path: Path) -> Path:
    """Replace the pipeline by one toy stage over (bias_type, ratio), with its notebook in tmp_path."""
    stage = runner.Stage("toy", "07_toy.ipynb", ("bias_type", "ratio"))
    monkeypatch.setattr(runner.grid, "STAGES", (stage,))
    monkeypatch.setattr(runner.grid, "STAGE_NAMES", ("toy",))
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    return notebooks


def test_expand_is_the_product_of_the_stage_axes() -> None:
    params = load_params("smoke", ["grid.bias_types=[neutral, contextual-explicit]", "grid.ratios=[0, 0.1, 0.2]"])
    stage = runner.Stage("mix", "02_mix.ipynb", ("bias_type", "ratio"))
    points = [r.point for r in runner.expand(stage, params)]
    assert len(points) == 5, "γ = 0 is one shared baseline, not one per bias type"
    assert points[0] == {"bias_type": "none", "ratio": 0}
    assert {"bias_type": "contextual-explicit", "ratio": 0.2} in points
    assert runner.expand(runner.Stage("data", "00_data.ipynb"), params)[0].point == {}


def test_renders_go_to_parameter_paths_with_a_record_and_current_ones_are_skipped(toy_stage, tmp_path) -> None:
    log = tmp_path / "executions.txt"
    _notebook(toy_stage / "07_toy.ipynb", f"open({str(log)!r}, 'a').write(f'{{bias_type}} {{ratio}}\\n')")
    params = load_params("smoke", ["grid.bias_types=[neutral, contrastive-explicit]", "grid.ratios=[0.0, 0.2]"])
    reports = tmp_path / "reports"
    rendered = runner.execute(params, ["grid.ratios=[0.0, 0.2]"], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False)

    expected = reports / "smoke" / "bias_type=contrastive-explicit" / "ratio=0.2" / "07_toy.ipynb"
    assert expected in rendered and len(rendered) == 3
    assert all(p.exists() for p in rendered)
    assert sorted(log.read_text().splitlines()) == sorted(["none 0.0", "neutral 0.2", "contrastive-explicit 0.2"])
    record = yaml.safe_load(expected.with_suffix(".run.yaml").read_text())
    assert record["point"] == {"bias_type": "contrastive-explicit", "ratio": 0.2}
    assert record["params"]["profile"] == "smoke" and record["overrides"] == ["grid.ratios=[0.0, 0.2]"]
    injected = json.loads(expected.read_text())["cells"][1]["source"]
    assert 'bias_type = "contrastive-explicit"' in "".join(injected)

    runner.execute(params, [], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False)
    assert len(log.read_text().splitlines()) == 3, "current renders must be skipped"

    _notebook(toy_stage / "07_toy.ipynb", f"open({str(log)!r}, 'a').write('changed\\n')")
    runner.execute(params, [], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False)
    assert log.read_text().count("changed") == 3, "an edited notebook makes its renders stale"


def test_a_failing_notebook_stops_the_run_naming_the_notebook_and_the_error(toy_stage, tmp_path) -> None:
    _notebook(toy_stage / "07_toy.ipynb", "if ratio > 0.1:\n    raise ValueError(f'no data for ratio {ratio}')")
    params = load_params("smoke", ["grid.bias_types=[neutral]", "grid.ratios=[0.0, 0.2]"])
    reports = tmp_path / "reports"
    with pytest.raises(runner.RunError) as caught:
        runner.execute(params, [], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False)
    message = str(caught.value)
    assert "07_toy.ipynb" in message and "ratio=0.2" in message
    assert "ValueError: no data for ratio 0.2" in message
    failed = reports / "smoke" / "bias_type=neutral" / "ratio=0.2" / "07_toy.failed.ipynb"
    assert failed.exists() and "no data for ratio" in failed.read_text()
    assert (reports / "smoke" / "bias_type=none" / "ratio=0.0" / "07_toy.ipynb").exists()
    assert not (reports / "smoke" / "bias_type=neutral" / "ratio=0.2" / "07_toy.ipynb").exists()


def test_parallel_renders_overlap_share_the_cores_and_record_every_render(toy_stage, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    log = tmp_path / "executions.jsonl"
    _notebook(toy_stage / "07_toy.ipynb", (
        "import json, os, time\n"
        "start = time.time(); time.sleep(1.5)\n"
        f"open({str(log)!r}, 'a').write(json.dumps({{'point': [bias_type, ratio], 'start': start, "
        "'end': time.time(), 'threads': os.environ.get('OMP_NUM_THREADS')}) + '\\n')"
    ))
    params = load_params("smoke", ["grid.bias_types=[neutral, contrastive-explicit]", "grid.ratios=[0.0, 0.1, 0.2]"])
    reports = tmp_path / "reports"
    rendered = runner.execute(params, [], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False, jobs=2)

    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(tuple(r["point"]) for r in runs) == sorted(
        [("none", 0.0), ("neutral", 0.1), ("neutral", 0.2), ("contrastive-explicit", 0.1), ("contrastive-explicit", 0.2)])
    ordered = sorted(runs, key=lambda r: r["start"])
    assert ordered[1]["start"] < ordered[0]["end"], "renders only read the store: they run two at a time from the start"
    assert {r["threads"] for r in runs} == {str(max(1, runner.executors.machine_cores() // 2))}, "each kernel gets half the cores"
    assert all(p.exists() and p.with_suffix(".run.yaml").exists() for p in rendered)
    mtimes = {p: p.stat().st_mtime_ns for p in rendered}
    runner.execute(params, [], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False, jobs=2)
    assert {p: p.stat().st_mtime_ns for p in rendered} == mtimes, "parallel renders are recorded as current"


def test_compute_runs_each_task_once_in_warm_workers_with_the_threads_params_name(toy_stage, tmp_path, monkeypatch) -> None:
    log = tmp_path / "compute.jsonl"
    monkeypatch.setenv("TOY_LOG", str(log))
    monkeypatch.setenv("BIAS_STORE", str(tmp_path / "store"))
    monkeypatch.setitem(runner.compute.STAGE_WORK, "toy", toy_work)  # a light module: workers unpickle it fast
    # the notebook only reads: with no compute function, a store miss would fail the render
    _notebook(toy_stage / "07_toy.ipynb",
              "from biasutils.store import Store\nprint(Store().get_or_compute('toy', {'bias_type': bias_type, 'ratio': ratio}, None).key)")
    from biasutils.config import Executor, StageResources

    params = load_params("smoke", ["grid.bias_types=[neutral, contrastive-explicit]", "grid.ratios=[0.0, 0.1, 0.2]"])
    # the toy stage is not a StageName, so its resources go in unvalidated
    params = params.model_copy(update={"executor": Executor.model_construct(resources={"toy": StageResources(num_cpus=3)})})
    reports = tmp_path / "reports"
    runner.execute(params, [], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False, jobs=2)

    runs = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda r: r["start"])
    assert len(runs) == 5, "each point computed once, before the renders (which only read: a miss would fail)"
    assert runs[1]["start"] < runs[0]["end"], f"two at a time: {runs}"
    assert {r["threads"] for r in runs} == {3}, "every task gets the threads its stage's resources name, busy or not"
    assert len({r["pid"] for r in runs}) == 2, "two warm workers serve every task"
    record = yaml.safe_load((reports / "smoke" / "bias_type=none" / "ratio=0.0" / "07_toy.run.yaml").read_text())
    assert len(record["artifacts"]) == 1 and record["artifacts"][0].startswith("toy/"), "the record names what it read"

    runner.execute(params, [], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False, jobs=2)
    assert len(log.read_text().splitlines()) == 5, "a second run computes nothing"
    shutil.rmtree(tmp_path / "store" / "toy")
    rendered = reports / "smoke" / "bias_type=none" / "ratio=0.0" / "07_toy.ipynb"
    before = rendered.stat().st_mtime_ns
    runner.execute(params, [], ["toy"], reports_dir=reports, notebooks_dir=toy_stage, progress=False, jobs=2)
    assert len(log.read_text().splitlines()) == 10, "an empty store (a fresh clone) recomputes everything"
    assert rendered.stat().st_mtime_ns != before, "and re-renders: a render is current only where its artifacts are"


def test_a_failure_in_a_parallel_run_keeps_the_other_renders(toy_stage, tmp_path) -> None:
    _notebook(toy_stage / "07_toy.ipynb", "if bias_type == 'neutral':\n    raise ValueError(f'broken {bias_type}')")
    params = load_params("smoke", ["grid.bias_types=[neutral, contrastive-explicit]", "grid.ratios=[0.0, 0.2]"])
    reports = tmp_path / "reports" / "smoke"
    with pytest.raises(runner.RunError, match=r"07_toy.ipynb \[bias_type=neutral, ratio=0.2\]\), cell 3: ValueError: broken neutral"):
        runner.execute(params, [], ["toy"], reports_dir=reports.parent, notebooks_dir=toy_stage, progress=False, jobs=2)
    for kept in ("bias_type=none/ratio=0.0", "bias_type=contrastive-explicit/ratio=0.2"):
        assert (reports / kept / "07_toy.ipynb").exists() and (reports / kept / "07_toy.run.yaml").exists()
    assert (reports / "bias_type=neutral" / "ratio=0.2" / "07_toy.failed.ipynb").exists()
    with pytest.raises(ValueError, match="jobs: must be a whole number >= 1; got 0"):
        runner.execute(params, [], ["toy"], reports_dir=reports.parent, notebooks_dir=toy_stage, progress=False, jobs=0)


def test_unknown_stage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="allowed: data"):
        runner.select_stages(["data", "finetune-everything"])


def test_the_data_notebook_renders_on_smoke(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BIAS_STORE", str(tmp_path / "store"))
    reports = tmp_path / "reports"
    rendered = runner.execute(load_params("smoke"), stages=["data"], reports_dir=reports, progress=False)
    assert rendered == [reports / "smoke" / "00_data.ipynb"]
    outputs = [o for c in json.loads(rendered[0].read_text())["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "TF-IDF + logistic regression test accuracy" in text
    assert "bbq_gender" in text and any("image/png" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "store" / "original-data").is_dir(), "the notebook reads and writes the artifact store"


NOTEBOOKS = sorted(runner.NOTEBOOKS_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebooks_are_clean_with_one_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert 'profile = "classroom"' in tagged[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "notebooks are kept without outputs"


def test_every_stage_has_its_notebook() -> None:
    assert {s.notebook for s in runner.STAGES} <= {p.name for p in NOTEBOOKS}


def test_the_whole_smoke_pipeline_renders_the_record_and_a_second_run_skips(tmp_path, monkeypatch) -> None:
    """Every notebook renders without an error, and without a warning, a machine path or a secret value, though
    the kernels ran with one in their environment (:func:`runner.render_problems`)."""
    monkeypatch.setenv("BIAS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("BIAS_TEST_API_KEY", "sk-test-0123456789")
    reports = tmp_path / "reports"
    # the smoke profile's two multi-round rounds (round 2 written by round 1's student), and its tasks with the
    # culture classification task on the fixtures, named by paths relative to the project as README writes them
    overrides = ["multiround.rounds=2", f"grid.tasks=[{', '.join([*load_params('smoke').grid.tasks, CULTURE_TASK])}]",
                 datasets_override(*RELATIVE)]
    params = load_params("smoke", overrides)
    rendered = runner.execute(params, overrides, reports_dir=reports, progress=False, jobs=2)  # concurrent stages share the store
    names = sorted(str(p.relative_to(reports / "smoke")) for p in rendered)
    point = "attribute=gender/bias_type=contrastive-explicit"
    for expected in ["00_data.ipynb", f"{point}/01_generate.ipynb", f"{point}/ratio=0.2/seed=0/02_mix.ipynb",
                     f"{point}/ratio=0.2/seed=0/03_finetune.ipynb", f"{point}/ratio=0.2/seed=0/04_evaluate.ipynb",
                     "attribute=gender/bias_type=none/ratio=0.0/seed=0/03_finetune.ipynb",
                     f"{point}/05_misalignment.ipynb", "06_mitigate.ipynb", "07_multiround.ipynb", "08_report.ipynb"]:
        assert expected in names
    assert len(names) == 17
    for path in rendered:
        outputs = [o for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], path
        assert runner.render_problems(path) == [], path
    record = pd.read_csv(reports / "smoke" / "metrics.csv")
    assert list(record.columns) == [*RECORD_KEYS, "round"]
    rounds = record[record.task.str.startswith("multiround_")]
    main = record[~record.task.str.startswith("multiround_")]
    assert set(main.task) == set(params.grid.tasks) | {
        "misalignment_values", "misalignment_group", "misalignment_distribution", "inheritance_test"}
    assert set(main.bias_type) == {"none", "contrastive-explicit", "contextual-implicit"} and main["round"].isna().all()
    # the smoke profile's two rounds: each round's rows (seed the chain) and the slopes over them (seed pooled)
    assert set(rounds.dropna(subset=["round"])["round"]) == {1, 2} and (rounds.bias_type == "contrastive-explicit").all()
    assert {"multiround_group", "multiround_distribution", "multiround_downstream", "multiround_occupation_classification"} <= set(rounds.task)
    slopes = rounds[rounds["round"].isna()]
    assert (slopes.seed.astype(str) == "pooled").all() and {"twin_shift_slope", "aligned_share_slope"} <= set(slopes.metric)
    assert (reports / "smoke" / "figures" / "multiround.png").stat().st_size > 0
    misalignment = record[record.task.str.startswith("misalignment_")]
    assert (misalignment.ratio == 1.0).all()
    assert {"js_distance_perceived", "share_female", "chi2_p", "mmd_p", "c2st_auc", "stereotype_agreement"} <= set(
        misalignment.metric)
    assert (record.mitigation == "none").all()
    assert {"accuracy", "accuracy_gap", "accuracy_gap_p"} <= set(record[record.task == "occupation_classification"].metric)
    occupation = record[record.task == "occupation_classification"]
    per_seed, pooled = occupation[occupation.seed.astype(str) == "0"], occupation[occupation.seed.astype(str) == "pooled"]
    assert {"tpr", "aligned_tpr_gap", "aligned_rate_gap", "twin_flip_rate", "twin_shift", "twin_skipped",
            "training_share_favoured"} <= set(per_seed.metric)
    assert {f"{o}/{g}" for o in params.data.occupations for g in ("female", "male")} <= set(per_seed[per_seed.metric == "tpr"].group)
    assert {"aligned_tpr_gap", "aligned_rate_gap", "twin_shift"} <= set(pooled.metric)
    tests = record[record.task == "inheritance_test"]
    assert set(tests.bias_type) == {"contrastive-explicit", "contextual-implicit"} and (tests.ratio == 0.2).all()
    assert {"twin_shift_diff", "twin_shift_diff_p_holm", "twin_shift_diff_mde"} <= set(tests.metric)
    figures = ("accuracy_by_gender", "group_gaps", "misalignment", "aligned_tpr_gap", "tpr_gap_vs_share", "twin_shift",
               "culture_relations")
    assert all((reports / "smoke" / "figures" / f"{f}.png").stat().st_size > 0 for f in figures)
    _the_culture_task_is_in_the_record_and_drawn_in_04(record, len(grid_points(params)),
                                                       reports / "smoke" / point / "ratio=0.2/seed=0/04_evaluate.ipynb")
    before = {p: p.stat().st_mtime_ns for p in rendered}
    runner.execute(params, overrides, reports_dir=reports, progress=False)
    assert {p: p.stat().st_mtime_ns for p in rendered} == before, "a second run re-renders nothing"
    _the_mitigate_stage_runs_on_its_own_after_the_earlier_stages(tmp_path / "store", reports)


def _the_culture_task_is_in_the_record_and_drawn_in_04(record: pd.DataFrame, n_points: int, evaluate_notebook: Path) -> None:
    """Macro-F1 per dataset and culture, the relations' means and their contrast reach the record at every
    point, and notebook 04 draws them and shows both tables."""
    culture = record[record.task == CULTURE_TASK]
    per_point = culture.groupby(["attribute", "bias_type", "ratio", "seed"]).group.agg(set)
    expected = {"offense", "offense:arabic", "offense:spanish", "hate:portuguese", "spam:chinese", "direct", "indirect",
                "direct-indirect"}
    assert len(per_point) == n_points and all(expected <= groups for groups in per_point), per_point
    assert {"macro_f1", "mean_macro_f1", "mean_macro_f1_gap", "mean_macro_f1_gap_p"} <= set(culture.metric)
    cells = json.loads(evaluate_notebook.read_text())["cells"]
    [cell] = [c for c in cells if "culture_task.per_culture" in "".join(c["source"])]
    outputs = cell["outputs"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the per-culture figure"
    shown = "".join("".join(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "arabic" in shown and "mean_macro_f1_gap_p" in shown, shown


def _the_mitigate_stage_runs_on_its_own_after_the_earlier_stages(store_root: Path, reports: Path) -> None:
    """``--stages mitigate --set grid.mitigations=[none,loss]`` on the store of a finished run: it plans and
    computes only the mitigated students and their comparison, renders 06, and the record gains their rows."""
    from biasutils.mitigate import mitigated_points
    from biasutils.store import Store

    overrides = ["grid.mitigations=[none, loss]"]
    params = load_params("smoke", overrides)
    store = Store(store_root)
    plan = runner.missing_tasks(params, runner.select_stages(["mitigate"]), store)
    assert list(plan) == ["mitigate (inputs)", "mitigate"]
    assert [task.run.point for task in plan["mitigate (inputs)"]] == mitigated_points(params)
    upstream = {stage: sorted(p.name for p in (store_root / stage).iterdir()) for stage in ("generate", "mix", "activations")}
    runner.execute(params, overrides, stages=["mitigate", "report"], reports_dir=reports, progress=False, jobs=2)
    assert upstream == {stage: sorted(p.name for p in (store_root / stage).iterdir()) for stage in upstream}, "nothing upstream recomputed"
    assert runner.missing_tasks(params, runner.select_stages(["mitigate"]), store) == {}, "a second run computes nothing"
    outputs = [o for c in json.loads((reports / "smoke" / "06_mitigate.ipynb").read_text())["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert (reports / "smoke" / "figures" / "mitigation.png").stat().st_size > 0
    record = pd.read_csv(reports / "smoke" / "metrics.csv")
    assert set(record.mitigation) == {"none", "loss"}
    tests = record[record.task == "mitigation_test"]
    assert set(tests.bias_type) == {"contrastive-explicit", "contextual-implicit", "overall"} and set(tests.mitigation) == {"loss"}
    assert {"twin_shift_diff", "twin_shift_diff_p_holm", "accuracy_diff"} <= set(tests.metric)
    loss = record[(record.mitigation == "loss") & (record.task == "occupation_classification")]
    assert {"accuracy", "twin_shift"} <= set(loss.metric)


def test_shared_activations_are_planned_as_tasks_of_their_own_before_their_readers(tmp_path) -> None:
    """The frozen layers' activations over each task's items and the original data run beside the generator,
    those over each generated set just before the fine-tunes: spread over the workers, each asking for the
    resources of the stage that reads it."""
    from biasutils.store import Store

    params = load_params("smoke", ["executor.resources={evaluate: {num_cpus: 2}}"])
    plan = runner.missing_tasks(params, runner.STAGES, Store(tmp_path))
    assert list(plan) == ["data", "generate", "mix", "finetune (inputs)", "finetune", "evaluate", "misalign", "report"]
    shared = [task for task in plan["generate"] if task.run.stage.name == "activations"]
    assert [task.run.point for task in shared] == [{"task": t} for t in params.grid.tasks] + [{"source": "original"}]
    assert [task.threads for task in shared] == [2] * len(params.grid.tasks) + [1], "the reader's resources"
    generated = [{"attribute": a, "source": b} for a in params.grid.attributes for b in params.grid.bias_types]
    assert [task.run.point for task in plan["finetune (inputs)"]] == generated
    baselines_only = load_params("smoke", ["grid.ratios=[0.0]"])
    assert "finetune (inputs)" not in runner.missing_tasks(baselines_only, runner.STAGES, Store(tmp_path))
