"""Content-addressed artifact store: every expensive product lives under a hash of what produced it.

An artifact is a directory ``<root>/<stage>/<key>/`` holding the product's files plus ``meta.json``
(stage, params, input keys, creation time). The key is a SHA-256 of the stage name, its version, its
parameters and the keys of its inputs, so changing any of them yields a new artifact and never
overwrites an old one.

Why directories and renames: a compute function writes into a private temporary directory that is
renamed into place only when it returns, so a killed run never leaves a half-written artifact, and a
rerun simply computes again. Work that is worth keeping across a kill (answers from an API, finished
generation batches) goes into the artifact's *scratch* directory, which survives until the artifact
is complete. A file lock per key makes two processes that want the same artifact compute it once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

META_FILE = "meta.json"
DEFAULT_ROOT_ENV = "BIAS_STORE"
# When set, every artifact handed out is appended to this file as ``stage/key``: the runner sets it for
# each render, so a render's record names what it was made from.
READS_LOG_ENV = "BIAS_STORE_READS"


def canonical_json(value: Any) -> str:
    """Serialise ``value`` deterministically (sorted keys, no whitespace) so equal params hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot hash parameter of type {type(value).__name__}: {value!r}")


def artifact_key(stage: str, params: Mapping[str, Any], inputs: Iterable[str] = (), version: str = "1") -> str:
    """Hash of a stage, its version, its parameters and its input keys (hex, 20 characters)."""
    payload = canonical_json({"stage": stage, "version": version, "params": params, "inputs": list(inputs)})
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Artifact:
    """A finished artifact: where it lives and what produced it."""

    stage: str
    key: str
    path: Path

    @property
    def ref(self) -> str:
        """``stage/key``: how records and messages name the artifact (never the machine's path)."""
        return f"{self.stage}/{self.key}"

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / META_FILE).read_text())

    def file(self, name: str) -> Path:
        """Path of a file inside the artifact; a clear error if the producer did not write it."""
        target = self.path / name
        if not target.exists():
            present = sorted(p.name for p in self.path.iterdir())
            raise FileNotFoundError(f"artifact {self.ref} has no file {name!r}; it has {present}")
        return target


class ArtifactMissing(LookupError):
    """Raised instead of computing while the store is probing: the artifact (or an input) is not stored."""

    def __init__(self, stage: str, key: str) -> None:
        super().__init__(f"{stage}/{key} is not in the store")
        self.stage, self.key = stage, key


class Store:
    """Get-or-compute access to artifacts under one root directory."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root or os.environ.get(DEFAULT_ROOT_ENV) or default_root()).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._probing = False

    @contextlib.contextmanager
    def probing(self) -> Iterator[None]:
        """Within this block a missing artifact raises :class:`ArtifactMissing` instead of being computed.

        Why: planning a run calls the same functions that compute, so "what is missing" is decided by the
        very keys the computation would use (one code path), at the cost of hashing parameters only.
        """
        self._probing = True
        try:
            yield
        finally:
            self._probing = False

    def _note_read(self, artifact: Artifact) -> Artifact:
        """Append ``stage/key`` to the reads log named by ``BIAS_STORE_READS``, if any; return the artifact."""
        log = os.environ.get(READS_LOG_ENV)
        if log and not self._probing:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{artifact.ref}\n")
        return artifact

    def path_for(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def scratch_for(self, stage: str, key: str) -> Path:
        """Directory kept across killed runs, for partial progress; removed once the artifact is done."""
        return self.root / stage / f"{key}.scratch"

    def find(self, stage: str, key: str) -> Artifact | None:
        """The finished artifact with this key, or None. An artifact counts only once its meta is in place."""
        path = self.path_for(stage, key)
        return Artifact(stage, key, path) if (path / META_FILE).exists() else None

    def get_or_compute(
        self,
        stage: str,
        params: Mapping[str, Any],
        compute: Callable[[Path, Path], None],
        inputs: Iterable[str] = (),
        version: str = "1",
    ) -> Artifact:
        """Return the artifact for (stage, params, inputs), computing it first if it is missing.

        ``compute(out_dir, scratch_dir)`` writes the artifact's files into ``out_dir``; ``scratch_dir``
        persists across kills for resumable work. Neither directory is visible as the artifact until
        ``compute`` returns without raising.
        """
        inputs = list(inputs)
        key = artifact_key(stage, params, inputs, version)
        found = self.find(stage, key)
        if found is not None:
            return self._note_read(found)
        if self._probing:
            raise ArtifactMissing(stage, key)
        stage_dir = self.root / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(stage_dir / f"{key}.lock")):
            found = self.find(stage, key)  # another process may have finished it while we waited
            if found is not None:
                return self._note_read(found)
            self._remove_stale_temporaries(stage_dir, key)
            scratch = self.scratch_for(stage, key)
            scratch.mkdir(exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=stage_dir))
            try:
                compute(tmp, scratch)
                meta = {
                    "stage": stage,
                    "key": key,
                    "version": version,
                    "params": json.loads(canonical_json(params)),
                    "inputs": inputs,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                }
                write_text_atomic(tmp / META_FILE, json.dumps(meta, indent=2, ensure_ascii=False))
                final = self.path_for(stage, key)
                if final.exists():  # a directory without meta: the leftovers of an older crash
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(scratch, ignore_errors=True)
            return self._note_read(Artifact(stage, key, final))

    @staticmethod
    def _remove_stale_temporaries(stage_dir: Path, key: str) -> None:
        """Temporary directories of this key left by a killed process (we hold the lock, so none is live)."""
        for stale in stage_dir.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)


def default_root() -> Path:
    """``artifacts/`` at the repository root when running from a checkout, else under the user's cache."""
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / "artifacts"
    return Path.home() / ".cache" / "bias-inheritance" / "artifacts"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make shared reports unreadable to others
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(records: Iterable[Mapping[str, Any]], path: Path) -> int:
    """Write records as JSON Lines (a format ``datasets`` reads) atomically; returns the row count."""
    lines = [json.dumps(dict(r), ensure_ascii=False, default=_json_default) for r in records]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file written by :func:`write_jsonl` (blank lines are ignored)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class JsonlJournal:
    """Append-only record of finished work units inside a scratch directory, for resumable loops.

    Each line is flushed and fsynced as soon as it is written, so a kill loses at most the line
    being written; a truncated last line is ignored on reading.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        """Cut a last line without its newline (a kill mid-write), so new lines start clean."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # the line being written when the process was killed
                    break
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(record), ensure_ascii=False, default=_json_default) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
