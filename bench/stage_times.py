"""Per-stage wall time of a rendered profile, from papermill's metadata in the notebooks of its plan.

    .venv/bin/python bench/stage_times.py classroom [reports_dir]

A stage's wall time runs from its first notebook's start to its last one's end (notebooks of a stage
run --jobs at a time); "notebook s" adds up each notebook's own duration (kernel start included).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from biasutils.config import load_params
from biasutils.runner import REPORTS_DIR, STAGES, plan


def stage_times(profile: str, reports: Path) -> list[tuple[str, int, float, float]]:
    """(stage, notebooks, wall seconds, summed notebook seconds) in pipeline order, over the profile's plan
    (renders of earlier grids left in the folder do not count)."""
    params = load_params(profile)
    spans: dict[str, list[tuple[datetime, datetime, float]]] = defaultdict(list)
    for run in plan(params, STAGES):
        path = run.rendered_path(reports, profile)
        if not path.exists():
            continue
        meta = json.loads(path.read_text())["metadata"].get("papermill", {})
        if meta.get("start_time") and meta.get("end_time"):
            spans[run.stage.name].append((datetime.fromisoformat(meta["start_time"]),
                                          datetime.fromisoformat(meta["end_time"]), float(meta["duration"])))
    rows = []
    for stage in STAGES:
        runs = spans.get(stage.name)
        if runs:
            wall = (max(end for _, end, _ in runs) - min(start for start, _, _ in runs)).total_seconds()
            rows.append((stage.name, len(runs), wall, sum(duration for *_, duration in runs)))
    return rows


def main(profile: str, reports: str) -> None:
    rows = stage_times(profile, Path(reports))
    print(f"{'stage':10s} {'notebooks':>9s} {'wall s':>8s} {'notebook s':>11s}")
    for name, count, wall, summed in rows:
        print(f"{name:10s} {count:9d} {wall:8.0f} {summed:11.0f}")
    print(f"{'total':10s} {sum(r[1] for r in rows):9d} {sum(r[2] for r in rows):8.0f} {sum(r[3] for r in rows):11.0f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "classroom", sys.argv[2] if len(sys.argv) > 2 else str(REPORTS_DIR))
