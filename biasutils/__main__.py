"""Command line: ``python -m biasutils run --profile P [--stages a,b] [--set k=v ...] [--jobs N] [--check]``,
``python -m biasutils site --profile P`` and ``python -m biasutils audit --original A --augmented B [...]``.

Parameters are loaded and validated before anything heavy is imported, so a typo in a profile name,
bias type or ratio fails in well under a second with a message naming the allowed values. ``audit``
imports its analysis module only once the command line parses, and checks every input file before
any model loads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import runner
from .config import ParamsError, load_params


def positive_int(text: str) -> int:
    """argparse type for counts: a whole number >= 1, refused with the value named."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1; got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m biasutils", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="render the numbered notebooks over a profile's grid")
    run.add_argument("--profile", default="classroom", help="a profile in params/profiles/ (default: classroom)")
    run.add_argument("--stages", default=None, help="comma-separated stages to run (default: all)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a parameter, e.g. --set grid.ratios=[0,0.1] (repeatable)",
    )
    run.add_argument("--reports", type=Path, default=None, help="where rendered notebooks go (default: reports/)")
    run.add_argument("--force", action="store_true", help="re-render even notebooks that are current")
    run.add_argument(
        "--jobs", type=positive_int, default=1,
        help="local worker processes: tasks and notebooks run this many at a time, each with an equal share of "
        "the cores (default: 1; each needs the student's memory, ~1.8 GB on the classroom profile)",
    )
    run.add_argument(
        "--executor", choices=runner.EXECUTORS, default="local",
        help="where the grid's artifacts are computed: local warm worker processes (default), or Ray tasks "
        "(the store must be visible to every Ray worker at the same path)",
    )
    run.add_argument("--ray-address", default=None,
                     help="with --executor ray: an existing cluster (default: start a local Ray instance)")
    run.add_argument("--check", action="store_true",
                     help="exit 1 unless metrics.csv agrees with the committed record (identical or within "
                     "params reproduction's tolerance)")
    site = commands.add_parser("site", help="build reports/<profile>/site/, the record as a static site")
    site.add_argument("--profile", default="classroom", help="whose record (default: classroom)")
    site.add_argument("--reports", type=Path, default=None, help="where the rendered notebooks are (default: reports/)")
    add_audit_parser(commands)
    return parser


def add_audit_parser(commands: argparse._SubParsersAction) -> None:
    audit = commands.add_parser(
        "audit", help="compare augmented data with the original before training (group data, distribution, values)",
        description="Write report.html, summary.json and rows.csv on the group-data, distribution and value "
        "misalignment of an augmented data file against the original one.",
    )
    audit.add_argument("--original", type=Path, required=True, help="original data: .jsonl, .json, .csv or .parquet")
    audit.add_argument("--augmented", type=Path, required=True, help="augmented data, same formats")
    audit.add_argument("--text-field", default="text", help="column holding the texts (default: text)")
    audit.add_argument("--group-field", default=None,
                       help="column holding each row's group (default: gender inferred from the text)")
    audit.add_argument("--label-field", default=None,
                       help="column holding a label such as the occupation: group shares per label (default: none)")
    audit.add_argument("--out", type=Path, default=Path("audit-report"),
                       help="output directory (default: audit-report/)")
    audit.add_argument("--generator", default=None,
                       help="score this model's agreement with gender stereotypes (e.g. smollm2-135m-instruct)")
    audit.add_argument("--embedder", default="minilm-l6",
                       help="sentence-transformers model for the distribution tests (default: minilm-l6)")
    audit.add_argument("--seed", type=int, default=0, help="seed of subsampling, permutations and bootstraps")
    audit.add_argument("--max-per-side", type=int, default=500,
                       help="texts per file embedded for the distribution tests, a seeded sample (default: 500)")
    audit.add_argument("--force", action="store_true", help="overwrite an existing report.html in --out")


def run_command(args: argparse.Namespace) -> str:
    params = load_params(args.profile, args.overrides)
    stages = args.stages.split(",") if args.stages else None
    selected = runner.select_stages(stages or params.stages)  # validate before importing papermill and starting kernels
    from .generate import check_backend
    from .inheritance import check_design
    from .models import check_hub_ids
    from .tasks.culture import check_local_datasets

    from .report import reproduction
    from .report.site import build_site

    check_design(params)
    check_backend(params)
    check_local_datasets(params)
    note = check_hub_ids(params)
    if note:
        print(f"note: {note}", file=sys.stderr)
    reports = args.reports or runner.REPORTS_DIR
    profile_dir = reports / params.profile
    committed = reproduction.set_aside(profile_dir)  # before any render rewrites metrics.csv
    rendered = runner.execute(params, args.overrides, stages, reports_dir=reports, force=args.force, jobs=args.jobs,
                              executor=args.executor, ray_address=args.ray_address)
    lines = [f"{len(rendered)} notebook(s) current under {profile_dir}", *render_notes(rendered)]
    if "report" not in [stage.name for stage in selected]:
        return "\n".join([*lines, "reproduction: not checked (the report stage, which writes metrics.csv, did not run)"])
    comparison = reproduction.verify(committed, profile_dir, params.reproduction)
    lines += [comparison.summary(), f"  written: {profile_dir / reproduction.REPORT_FILE}",
              f"site: {build_site(profile_dir)}"]
    if args.check and not comparison.agrees:
        raise CheckFailed("\n".join(lines))
    return "\n".join(lines)


class CheckFailed(RuntimeError):
    """``run --check``: the reproduction does not agree with the committed record."""


def render_notes(rendered: Sequence[Path]) -> list[str]:
    """One line per render that holds a warning, a machine path or a secret (:func:`runner.render_problems`)."""
    return [f"note: {path}: {problem}" for path in rendered if path.exists() for problem in runner.render_problems(path)]


def site_command(args: argparse.Namespace) -> str:
    from .report import reproduction
    from .report.site import build_site

    reports = args.reports or runner.REPORTS_DIR
    profile_dir = reports / args.profile
    if not (profile_dir / reproduction.METRICS_FILE).exists() and not list(profile_dir.glob("*.run.yaml")):
        present = sorted(p.parent.name for p in reports.glob("*/metrics.csv"))
        raise ValueError(f"--profile: {args.profile!r} has no record under {reports}; records there: "
                         f"{', '.join(present) or 'none'} (`make reproduce PROFILE={args.profile}` makes one)")
    return f"site: {build_site(profile_dir)}"


def audit_command(args: argparse.Namespace) -> str:
    from .audit import AuditOptions, run_audit

    options = AuditOptions(
        original=args.original, augmented=args.augmented, text_field=args.text_field, group_field=args.group_field,
        label_field=args.label_field, out=args.out, generator=args.generator, embedder=args.embedder,
        seed=args.seed, max_per_side=args.max_per_side, force=args.force,
    )
    result = run_audit(options)
    return "\n".join([*(verdict.line() for verdict in result.verdicts), f"report: {result.report}"])


COMMANDS = {"run": run_command, "site": site_command, "audit": audit_command}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        message = COMMANDS[args.command](args)
    except (ParamsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (runner.RunError, CheckFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
