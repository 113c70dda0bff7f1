"""Render the numbered notebooks with papermill: one rendered copy per stage and grid point.

The rendered copy goes to a path derived from the parameters, ``reports/<profile>/<axis=value>/.../<notebook>``,
with its record beside it (:mod:`.records`). While a notebook runs, the store logs every artifact it
hands out (``BIAS_STORE_READS``), and the record names them. Renders of one stage run up to ``jobs`` at
a time, each kernel with an equal share of the cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    run_hash: str

    def label(self) -> str:
        return f"render {self.run.label()}"

    def __call__(self) -> str:
        """Execute and record (the kernel inherits its worker's share of the cores)."""
        with reads_logged() as log:
            _render(self.run, self.params, self.overrides, self.notebook, self.rendered)
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
) -> None:
    """Execute into a temporary file and rename: a killed run never leaves a half-rendered notebook."""
    import papermill

    rendered.parent.mkdir(parents=True, exist_ok=True)
    partial = rendered.with_name(f".{rendered.stem}.partial.ipynb")
    failed = rendered.with_name(f"{rendered.stem}.failed.ipynb")
    profile_dir = rendered.parents[len(run.stage.axes)]  # reports/<profile>: the kernel's working directory
    offered = {"profile": params.profile, "overrides": list(overrides), **run.point, "reports_dir": "."}
    declared = papermill.inspect_notebook(str(notebook))
    parameters = {name: value for name, value in offered.items() if name in declared}
    try:
        papermill.execute_notebook(
            str(notebook),
            str(partial),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(profile_dir),
            progress_bar=False,
            log_output=False,
            **_local_kernel(),
        )
    except papermill.PapermillExecutionError as error:
        shutil.move(partial, failed)
        raise RunError(
            f"{notebook} failed ({run.label()}), cell {error.exec_count}: {error.ename}: {error.evalue}\n"
            f"the executed notebook with the traceback is at {failed}"
        ) from None
    failed.unlink(missing_ok=True)
    write_text_atomic(rendered, _without_machine_paths(partial.read_text(), notebook, rendered.relative_to(profile_dir.parent)))
    partial.unlink()


def _local_kernel() -> dict:
    """Kernels on this machine talk over IPC sockets: no TCP port, and none of IPKernelApp's warning that
    TCP is unencrypted (POSIX only; elsewhere papermill's default TCP)."""
    if os.name != "posix":
        return {}
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        transport = "ipc"

        @default("ip")
        def _own_sockets(self) -> str:  # the default, "kernel-ipc" in the working directory, is shared by kernels
            return os.path.join(tempfile.gettempdir(), f"bias-kernel-{uuid.uuid4().hex}-ipc")

    return {"kernel_manager_class": IPCKernelManager}


def _without_machine_paths(text: str, notebook: Path, rendered: Path) -> str:
    """papermill records where it read and wrote; the record keeps those paths relative to the repo."""
    nb = json.loads(text)
    nb["metadata"].get("papermill", {}).update(input_path=f"notebooks/{notebook.name}", output_path=rendered.as_posix())
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


# What a render must not hold: a warning, a path of the machine that rendered it, a secret's value.
MACHINE_PATHS = ("/tmp/", "/home/", "/root/", "/Users/")
SECRET_NAME = re.compile("KEY|TOKEN|SECRET")


def render_problems(path: Path) -> list[str]:
    """Each thing in a rendered notebook's outputs, metadata and code that a record must not hold: the
    word ``Warning``, a machine path (:data:`MACHINE_PATHS`, the repository's absolute path), the value
    of an environment variable whose name holds KEY, TOKEN or SECRET."""
    from . import REPO

    text = Path(path).read_text()
    problems = [f"holds a warning: {_around(text, text.index('Warning'))}"] if "Warning" in text else []
    for marker in (*MACHINE_PATHS, str(REPO)):
        if marker in text:
            problems.append(f"holds the machine path {marker!r}: {_around(text, text.index(marker))}")
    secrets = [name for name, value in os.environ.items() if SECRET_NAME.search(name) and len(value) >= 6 and value in text]
    problems += [f"holds the value of ${name}" for name in secrets]
    return problems


def _around(text: str, at: int, width: int = 60) -> str:
    return repr(text[max(0, at - width):at + width])
