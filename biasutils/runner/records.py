"""The one-YAML-per-render record, and when a render is current.

Beside each rendered notebook goes ``<notebook>.run.yaml``: the resolved parameters, the point, a hash
of everything that produced the render (notebook source, parameters, ``biasutils`` source) and the
artifacts the render read from the store. A render is current only when its hash matches *and* the
store holds every artifact it read: on a fresh clone, whose store is empty, the committed renders are
not current, so ``make reproduce`` recomputes the study instead of trusting the commit.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..config import StudyParams
from ..store import Store, canonical_json
from .grid import RunPoint

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def source_hash() -> str:
    """Hash of the biasutils sources: a render is stale when the code that produced it changed."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def notebook_source_hash(path: Path) -> str:
    """Hash of a notebook's cell sources only, so opening and saving it in Jupyter changes nothing."""
    cells = json.loads(path.read_text())["cells"]
    return hashlib.sha256(canonical_json([[c["cell_type"], "".join(c["source"])] for c in cells]).encode()).hexdigest()[:16]


def run_hash(run: RunPoint, params: StudyParams, notebook: Path, code_hash: str) -> str:
    payload = {
        "notebook": notebook_source_hash(notebook),
        "point": run.point,
        # where it ran changes no number, and the tolerance judges the record after the renders
        "params": params.model_dump(mode="json", exclude={"executor", "reproduction"}),
        "code": code_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:20]


def record_path(rendered: Path) -> Path:
    return rendered.with_suffix(".run.yaml")


def is_current(rendered: Path, expected_hash: str, store: Store) -> bool:
    """The render exists, its record carries ``expected_hash`` and the store holds all it read."""
    record = record_path(rendered)
    if not (rendered.exists() and record.exists()):
        return False
    saved = yaml.safe_load(record.read_text()) or {}
    if saved.get("run_hash") != expected_hash or "artifacts" not in saved:
        return False
    return all(store.find(*ref.split("/", 1)) is not None for ref in saved["artifacts"])


def record_yaml(run: RunPoint, params: StudyParams, overrides: Sequence[str], digest: str, artifacts: Sequence[str]) -> str:
    """The record: enough to rerun this exact render, and the artifacts (``stage/key``) it was made from."""
    record = {
        "run_hash": digest,
        "notebook": f"notebooks/{run.stage.notebook}",
        "point": run.point,
        "overrides": list(overrides),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artifacts": sorted(set(artifacts)),
        "params": params.model_dump(mode="json"),
    }
    return yaml.safe_dump(record, sort_keys=False)
