"""Render the numbered notebooks with papermill: one rendered copy per stage and grid point.

The rendered copy goes to a path derived from the parameters, ``reports/<profile>/<axis=value>/.../<notebook>``,
with its record beside it (:mod:`.records`). While a notebook runs, the store logs every artifact it
hands out (``BIAS_STORE_READS``), and the record names them. Renders of one stage run up to ``jobs`` at
a time, each kernel with an equal share of the cores.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import StudyParams
from ..store import READS_LOG_ENV, write_text_atomic
from .grid import RunPoint
from .records import record_path, record_yaml


class RunError(RuntimeError):
    """A notebook or a task failed; the message names the notebook or grid point, and the error."""


@dataclass(frozen=True)
class Render:
    """One notebook to execute and record: everything a worker process needs."""

    run: RunPoint
    params: StudyParams
    overrides: tuple[str, ...]
    notebook: Path
    rendered: Path
    notebooks_dir: Path
    run_hash: str

    def label(self) -> str:
        return f"render {self.run.label()}"

    def __call__(self) -> str:
        """Execute and record (the kernel inherits its worker's share of the cores)."""
        with reads_logged() as log:
            _render(self.run, self.params, self.overrides, self.notebook, self.rendered, self.notebooks_dir)
            artifacts = log.read_text().split() if log.exists() else []
        write_text_atomic(record_path(self.rendered),
                          record_yaml(self.run, self.params, self.overrides, self.run_hash, artifacts))
        return self.label()


@contextlib.contextmanager
def reads_logged() -> Iterator[Path]:
    """A fresh reads log for the kernel about to start (kernels inherit this process's environment)."""
    previous = os.environ.get(READS_LOG_ENV)
    with tempfile.TemporaryDirectory(prefix="bias-reads-") as folder:
        log = Path(folder) / "reads.txt"
        os.environ[READS_LOG_ENV] = str(log)
        try:
            yield log
        finally:
            if previous is None:
                os.environ.pop(READS_LOG_ENV, None)
            else:
                os.environ[READS_LOG_ENV] = previous


def _render(
    run: RunPoint,
    params: StudyParams,
    overrides: Sequence[str],
    notebook: Path,
    rendered: Path,
    notebooks_dir: Path,
) -> None:
    """Execute into a temporary file and rename: a killed run never leaves a half-rendered notebook."""
    import papermill

    rendered.parent.mkdir(parents=True, exist_ok=True)
    partial = rendered.with_name(f".{rendered.stem}.partial.ipynb")
    failed = rendered.with_name(f"{rendered.stem}.failed.ipynb")
    offered = {
        "profile": params.profile, "overrides": list(overrides), **run.point,
        "reports_dir": str(rendered.parents[len(run.stage.axes)]),  # reports/<profile>
    }
    declared = papermill.inspect_notebook(str(notebook))
    parameters = {name: value for name, value in offered.items() if name in declared}
    try:
        papermill.execute_notebook(
            str(notebook),
            str(partial),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(notebooks_dir),
            progress_bar=False,
            log_output=False,
        )
    except papermill.PapermillExecutionError as error:
        shutil.move(partial, failed)
        raise RunError(
            f"{notebook} failed ({run.label()}), cell {error.exec_count}: {error.ename}: {error.evalue}\n"
            f"the executed notebook with the traceback is at {failed}"
        ) from None
    failed.unlink(missing_ok=True)
    os.replace(partial, rendered)
