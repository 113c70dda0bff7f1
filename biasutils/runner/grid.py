"""The grid of a profile: which stage runs at which points.

Each stage is a notebook plus the grid axes it depends on; a stage's points are the product of its
axes' values in the profile's grid, with γ = 0 once per attribute and seed (its bias type is the
shared baseline ``none``). Both phases of a run walk the same points: computing the stage's
artifacts, then rendering its notebook.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import StudyParams
from ..mix import canonical_bias_type


@dataclass(frozen=True)
class Stage:
    """A notebook and the grid axes its parameters come from (in path order)."""

    name: str
    notebook: str
    axes: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("data", "00_data.ipynb"),
    Stage("generate", "01_generate.ipynb", ("attribute", "bias_type")),
    Stage("mix", "02_mix.ipynb", ("attribute", "bias_type", "ratio", "seed")),
    Stage("finetune", "03_finetune.ipynb", ("attribute", "bias_type", "ratio", "seed")),
    Stage("evaluate", "04_evaluate.ipynb", ("attribute", "bias_type", "ratio", "seed")),
    Stage("misalign", "05_misalignment.ipynb", ("attribute", "bias_type")),
    Stage("mitigate", "06_mitigate.ipynb"),
    Stage("multiround", "07_multiround.ipynb"),
    Stage("report", "08_report.ipynb"),
)
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)

# grid field holding each axis's values
_AXIS_SOURCE = {"attribute": "attributes", "bias_type": "bias_types", "ratio": "ratios", "seed": "seeds"}


@dataclass(frozen=True)
class RunPoint:
    """One stage at one point of the grid: one set of artifacts to compute, one notebook to render."""

    stage: Stage
    point: dict[str, Any]

    def rendered_path(self, reports_dir: Path, profile: str) -> Path:
        parts = [f"{axis}={self.point[axis]}" for axis in self.stage.axes]
        return reports_dir.joinpath(profile, *parts, self.stage.notebook)

    def label(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.point.items())
        return f"{self.stage.notebook}" + (f" [{where}]" if where else "")


def select_stages(names: Sequence[str] | None) -> list[Stage]:
    """The stages to run, in pipeline order; unknown names are a clear error."""
    if not names:
        return list(STAGES)
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"--stages: unknown stage(s) {', '.join(unknown)}; allowed: {', '.join(STAGE_NAMES)}")
    return [stage for stage in STAGES if stage.name in names]


def expand(stage: Stage, params: StudyParams) -> list[RunPoint]:
    """Every grid point the stage depends on (the product of its axes), γ = 0 once per attribute and seed.

    A γ = 0 point holds no augmented data, so its bias type is the shared baseline ``none``.
    """
    grid = params.grid.model_dump()
    values = [grid[_AXIS_SOURCE[axis]] for axis in stage.axes]
    points: list[dict[str, Any]] = []
    for combo in itertools.product(*values):
        point = dict(zip(stage.axes, combo))
        if "ratio" in point:
            point["bias_type"] = canonical_bias_type(point["bias_type"], point["ratio"])
        if point not in points:
            points.append(point)
    return [RunPoint(stage, point) for point in points]


def plan(params: StudyParams, stages: Sequence[Stage]) -> list[RunPoint]:
    return [point for stage in stages for point in expand(stage, params)]
