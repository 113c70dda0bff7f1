"""A static site of a profile's record, ``reports/<profile>/site/``, that opens offline in a browser.

``index.html`` holds the study's finding (its tables generated from ``metrics.csv``), every figure, the
reproduction verdict and every rendered notebook grouped by stage and grid point with its parameters;
``metrics.html`` a sortable, filterable view of ``metrics.csv``; ``notebooks/…`` each render as HTML.

Why nbconvert: the renders are already executed, so the site only converts them (no kernel, no
re-execution), with the same exporter JupyterLab uses; it is installed with JupyterLab, runs offline
and adds no tool. Jupyter Book 2 and MyST need Node.js and Quarto a binary of its own. The site's
template drops the two scripts nbconvert loads from a CDN (RequireJS for widgets, MathJax): the renders
hold no widgets, and offline the notebooks' few formulas show as their TeX source.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..config import StudyParams
from .reproduction import METRICS_FILE, REPORT_FILE

SITE_DIR = "site"
SITE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}{{ super() }}<nav style="padding:8px 16px;border-bottom:1px solid #ddd;font-family:sans-serif">
{{ resources.site_nav }}</nav>{%- endblock body_header -%}
"""


@dataclass(frozen=True)
class RenderedNotebook:
    """One render of the record: its stage, its point and where its page goes."""

    path: Path  # relative to reports/<profile>
    stage: str
    point: dict[str, Any]

    @property
    def page(self) -> str:
        return (Path("notebooks") / self.path.with_suffix(".html")).as_posix()

    def title(self) -> str:
        where = ", ".join(f"{k} = {v}" for k, v in self.point.items())
        return f"{self.path.name}" + (f" ({where})" if where else "")


def rendered_notebooks(profile_dir: Path) -> list[RenderedNotebook]:
    """Every render with a record, in pipeline order then by point."""
    from ..runner.grid import STAGES
    from ..runner.records import record_path

    stage_of = {stage.notebook: stage.name for stage in STAGES}
    order = {stage.name: i for i, stage in enumerate(STAGES)}
    found = []
    for notebook in profile_dir.rglob("*.ipynb"):
        record = record_path(notebook)
        if SITE_DIR in notebook.relative_to(profile_dir).parts or not record.exists():
            continue
        saved = yaml.safe_load(record.read_text()) or {}
        found.append(RenderedNotebook(notebook.relative_to(profile_dir), stage_of.get(notebook.name, "other"),
                                      dict(saved.get("point", {}))))
    return sorted(found, key=lambda r: (order.get(r.stage, len(order)), r.path.as_posix()))


def build_site(profile_dir: Path, out: Path | None = None) -> Path:
    """Build the site into ``out`` (default ``reports/<profile>/site``), replacing it whole only once every
    page is written: a killed build leaves the previous site."""
    profile_dir = Path(profile_dir)
    out = Path(out) if out else profile_dir / SITE_DIR
    out.parent.mkdir(parents=True, exist_ok=True)
    renders = rendered_notebooks(profile_dir)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as scratch:
        staging = Path(scratch) / out.name
        staging.mkdir()
        exporter = _page_exporter()
        for render in renders:
            _write_page(exporter, profile_dir, render, staging)
        figures = _copy_figures(profile_dir, staging)
        metrics = _read_metrics(profile_dir)
        (staging / "metrics.html").write_text(metrics_page(metrics))
        (staging / "index.html").write_text(index_page(profile_dir, renders, figures, metrics))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    return out / "index.html"


def _page_exporter() -> Any:
    """nbconvert's JupyterLab exporter with the site's template (one per build: it loads the templates)."""
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(extra_loaders=[jinja2.DictLoader({"site.html.j2": SITE_TEMPLATE})], template_file="site.html.j2")


def _write_page(exporter: Any, profile_dir: Path, render: RenderedNotebook, site: Path) -> None:
    import nbformat

    page = site / render.page
    page.parent.mkdir(parents=True, exist_ok=True)
    home = os.path.relpath(site / "index.html", page.parent)
    nav = (f'<a href="{home}">← the record</a> · stage <b>{html.escape(render.stage)}</b> · '
           f"{html.escape(render.title())}")
    body, _ = exporter.from_notebook_node(nbformat.read(profile_dir / render.path, as_version=4),
                                          resources={"site_nav": nav, "metadata": {"name": render.title()}})
    page.write_text(body)


def _copy_figures(profile_dir: Path, site: Path) -> list[str]:
    figures = sorted((profile_dir / "figures").glob("*.png"))
    if figures:
        (site / "figures").mkdir()
    for figure in figures:
        shutil.copy2(figure, site / "figures" / figure.name)
    return [f"figures/{figure.name}" for figure in figures]


def _read_metrics(profile_dir: Path) -> pd.DataFrame:
    path = profile_dir / METRICS_FILE
    return pd.read_csv(path, dtype={"seed": str}) if path.exists() else pd.DataFrame()


def _record_params(profile_dir: Path) -> StudyParams | None:
    """The parameters the record was made with: those of the report notebook's render."""
    from ..runner.grid import STAGES
    from ..runner.records import record_path

    record = record_path(profile_dir / next(stage.notebook for stage in STAGES if stage.name == "report"))
    return StudyParams.model_validate(yaml.safe_load(record.read_text())["params"]) if record.exists() else None


# ---------------------------------------------------------------------------------------------- the finding


def finding_sections(metrics: pd.DataFrame, params: StudyParams | None) -> list[tuple[str, str]]:
    """(title, HTML) of the study's finding: the README's tables, each generated from ``metrics.csv``."""
    import mistune

    from . import finding, primary_test_table

    if metrics.empty or params is None:
        return [("The finding", "<p>The record has no metrics.csv yet: run the report stage.</p>")]
    sections = []
    inheritance = primary_test_table(metrics)
    if not inheritance.empty:
        sections.append(("Inheritance: the declared primary test per bias type and γ",
                         mistune.html(finding(metrics, params)) + _table(inheritance.reset_index(), digits=3)))
    mitigation = mitigation_table(metrics, params.mitigate.primary.measure)
    if not mitigation.empty:
        sections.append((f"Mitigation: each mitigation against the plain fine-tune ({params.mitigate.primary.measure}, "
                         f"difference [95 % interval], Holm p)", _table(mitigation.reset_index())))
    rounds = multiround_table(metrics)
    if not rounds.empty:
        sections.append((f"Multi-round: the measures per round (mean over chains) and their slope over rounds "
                         f"(declared: {params.multiround.primary.measure})", _table(rounds.reset_index(), digits=3)))
    return sections


def mitigation_table(metrics: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Rows (attribute, bias type, γ), one column per mitigation: ``difference [low, high], p`` (Holm)."""
    rows = metrics[metrics.task == "mitigation_test"]
    diff, p = rows[rows.metric == f"{measure}_diff"], rows[rows.metric == f"{measure}_diff_p_holm"]
    if diff.empty:
        return pd.DataFrame()
    keys = ["attribute", "bias_type", "ratio", "mitigation"]
    joined = diff.merge(p[[*keys, "value"]].rename(columns={"value": "p"}), on=keys, how="left")
    joined["cell"] = [f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}], p {q:.2g}"
                      for d, lo, hi, q in zip(joined.value, joined.ci_low, joined.ci_high, joined.p)]
    return joined.pivot(index=["attribute", "bias_type", "ratio"], columns="mitigation", values="cell")


def multiround_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The multi-round measures of notebook 07 per round (mean over chains), and the slope over chains."""
    from ..multiround import SHOWN, per_round_table

    rounds = metrics[metrics.task.str.startswith("multiround_")]
    if rounds.empty:
        return pd.DataFrame()
    per_round = per_round_table(rounds.dropna(subset=["round"]).assign(part=rounds.task.str.removeprefix("multiround_")))
    table = per_round.pivot(index="measure", columns="round", values="mean").rename(columns=lambda r: f"round {int(r)}")
    slopes = rounds[rounds["round"].isna()].set_index(["task", "metric", "group"])
    cells = {}
    for part, metric, group, label in SHOWN:
        key = (f"multiround_{part}", f"{metric}_slope", group)
        if key in slopes.index:
            slope, p = slopes.loc[key], slopes.loc[(key[0], f"{metric}_slope_p", group), "value"]
            cells[label] = f"{slope.value:+.3f} [{slope.ci_low:+.3f}, {slope.ci_high:+.3f}], p {p:.2g}"
    return table.assign(**{"slope over chains": pd.Series(cells)}).loc[[label for *_, label in SHOWN if label in table.index]]


def _table(frame: pd.DataFrame, digits: int = 2) -> str:
    return frame.rename_axis(columns=None).to_html(index=False, float_format=lambda v: f"{v:.{digits}g}" if abs(v) < 1e-3 and v else f"{v:.{digits}f}",
                         na_rep="", border=0, classes="table")


# ---------------------------------------------------------------------------------------------- the pages

STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:0 16px;line-height:1.45}
table.table{border-collapse:collapse;font-size:13px;margin:8px 0}table.table td,table.table th{border:1px solid #ddd;padding:3px 6px}
figure{margin:16px 0}figure img{max-width:100%}code{background:#f4f4f4}"""


def _page(title: str, body: str, script: str = "") -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}{script}</body></html>\n")


def index_page(profile_dir: Path, renders: list[RenderedNotebook], figures: list[str], metrics: pd.DataFrame) -> str:
    import mistune

    profile = profile_dir.name
    reproduction = profile_dir / REPORT_FILE
    verdict = (mistune.html(reproduction.read_text().replace("# Reproduction", "", 1)) if reproduction.exists()
               else "<p>No reproduction verdict yet: <code>make reproduce</code> writes one.</p>")
    parts = [f"<h1>bias-inheritance: the {html.escape(profile)} record</h1>",
             f'<p>{len(renders)} rendered notebooks, {len(figures)} figures and <a href="metrics.html">metrics.csv</a> '
             f"({len(metrics):,} rows). Everything below is generated from the record in <code>reports/{html.escape(profile)}/</code>.</p>"]
    for title, content in finding_sections(metrics, _record_params(profile_dir)):
        parts += [f"<h2>{html.escape(title)}</h2>", content]
    parts += ["<h2>Figures</h2>", *(f'<figure><img src="{f}" alt="{f}"><figcaption>{f}</figcaption></figure>' for f in figures)]
    parts += ["<h2>Reproduction</h2>", verdict, "<h2>Notebooks, by stage and grid point</h2>", _notebook_tables(renders)]
    return _page(f"{profile} record", "\n".join(parts))


def _notebook_tables(renders: list[RenderedNotebook]) -> str:
    parts = []
    for stage in dict.fromkeys(r.stage for r in renders):
        mine = [r for r in renders if r.stage == stage]
        axes = list(dict.fromkeys(k for r in mine for k in r.point))
        head = "".join(f"<th>{html.escape(a)}</th>" for a in axes)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.point.get(a, '')))}</td>" for a in axes)
                       + f'<td><a href="{r.page}">{html.escape(r.path.name)}</a></td></tr>' for r in mine)
        parts.append(f"<h3>{html.escape(stage)}</h3><table class='table'><tr>{head}<th>notebook</th></tr>{rows}</table>")
    return "\n".join(parts)


METRICS_SCRIPT = """<script>
const data = JSON.parse(document.getElementById('metrics-data').textContent);
const table = document.getElementById('metrics'), shown = document.getElementById('shown');
let sortColumn = -1, ascending = true, limit = 200;
const filters = [...document.querySelectorAll('#filters input')];
function visible() {
  const terms = filters.map(f => f.value.trim().toLowerCase());
  let rows = data.rows.filter(r => terms.every((t, i) => !t || String(r[i] ?? '').toLowerCase().includes(t)));
  if (sortColumn >= 0) {
    const key = v => (v === null || v === '' ? NaN : Number(v));
    rows = [...rows].sort((a, b) => {
      const x = a[sortColumn], y = b[sortColumn], nx = key(x), ny = key(y);
      const order = !isNaN(nx) && !isNaN(ny) ? nx - ny : String(x ?? '').localeCompare(String(y ?? ''));
      return ascending ? order : -order;
    });
  }
  return rows;
}
function draw() {
  const rows = visible();
  table.tBodies[0].innerHTML = rows.slice(0, limit).map(r => '<tr>' + r.map(v => '<td>' + (v ?? '') + '</td>').join('') + '</tr>').join('');
  shown.textContent = `${Math.min(limit, rows.length)} of ${rows.length} matching rows shown (${data.rows.length} in all)`;
}
document.querySelectorAll('#metrics th').forEach((th, i) => th.addEventListener('click', () => {
  ascending = sortColumn === i ? !ascending : true; sortColumn = i; draw();
}));
filters.forEach(f => f.addEventListener('input', () => { limit = 200; draw(); }));
document.getElementById('more').addEventListener('click', () => { limit += 1000; draw(); });
draw();
</script>"""


def metrics_page(metrics: pd.DataFrame) -> str:
    """Every row of ``metrics.csv``: a filter per column (substring), sort by a click on a column's name."""
    columns = list(metrics.columns)
    rows = json.loads(metrics.to_json(orient="values", double_precision=15)) if not metrics.empty else []
    data = json.dumps({"columns": columns, "rows": rows}).replace("</", "<\\/")
    heads = "".join(f'<th title="sort">{html.escape(c)}</th>' for c in columns)
    inputs = "".join(f'<td><input size="8" placeholder="{html.escape(c)}" aria-label="filter {html.escape(c)}"></td>' for c in columns)
    body = (f'<p><a href="index.html">← the record</a></p><h1>metrics.csv</h1>'
            f"<p>Type in a column's box to keep rows containing that text; click a column's name to sort.</p>"
            f'<p id="shown"></p><table class="table" id="metrics"><thead><tr>{heads}</tr><tr id="filters">{inputs}</tr></thead>'
            f'<tbody></tbody></table><button id="more">show more</button>'
            f'<script type="application/json" id="metrics-data">{data}</script>')
    return _page("metrics.csv", body, METRICS_SCRIPT)
