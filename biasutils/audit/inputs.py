"""The audit's inputs, checked before any model loads: the command's options, both files (fields, text
values, row counts) and the tidy frames the analyses read (``text``, the label as ``occupation``, ``group``).

Why apart from the analyses: every check here raises :class:`~biasutils.audit.findings.AuditError` with
the flag or file at fault, and none needs torch, so a bad command line fails fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .. import misalign
from ..config import check_model_name
from ..data import read_table
from ..misalign import AUGMENTED, ORIGINAL, UNKNOWN
from .findings import MIN_ROWS, NO_LABEL, REPORT_FILE, AuditError, AuditOptions


def read_inputs(options: AuditOptions) -> dict[str, pd.DataFrame]:
    """Both files, read and checked against each other (fields, text values, row counts)."""
    frames = {ORIGINAL: read_table(options.original, "--original", AuditError, MIN_ROWS),
              AUGMENTED: read_table(options.augmented, "--augmented", AuditError, MIN_ROWS)}
    paths = {ORIGINAL: options.original, AUGMENTED: options.augmented}
    for flag, name in (("--text-field", options.text_field), ("--group-field", options.group_field),
                       ("--label-field", options.label_field)):
        if name is not None:
            check_field(flag, name, frames, paths)
    for side, frame in frames.items():
        check_text_values(frame, options.text_field, paths[side])
        check_row_count(frame, paths[side], f"--{side}")
    return frames


def _columns(frame: pd.DataFrame) -> str:
    return ", ".join(map(str, frame.columns))


def check_field(flag: str, name: str, frames: Mapping[str, pd.DataFrame], paths: Mapping[str, Path]) -> None:
    """A field must be in both files; in one only is a schema mismatch between them, named as such."""
    missing = [side for side, frame in frames.items() if name not in frame.columns]
    if len(missing) == len(frames):
        where = "; ".join(f"{paths[side]} has columns: {_columns(frames[side])}" for side in missing)
        raise AuditError(f"{flag}: field {name!r} is in neither file; {where}")
    if missing:
        (side,) = missing
        present = next(s for s in frames if s != side)
        raise AuditError(f"{flag}: mismatched schemas: field {name!r} is in {paths[present]} but not in "
                         f"{paths[side]}, whose columns are: {_columns(frames[side])}")


def check_text_values(frame: pd.DataFrame, field: str, path: Path) -> None:
    """Texts are embedded and searched for pronouns, so every value must be a string (missing ones are not)."""
    bad = [i for i, value in enumerate(frame[field]) if not isinstance(value, str)]
    if bad:
        value = frame[field].iloc[bad[0]]
        raise AuditError(f"--text-field: mismatched schemas: field {field!r} of {path} must hold strings, but "
                         f"{len(bad)} row(s) do not (first: row {bad[0] + 1} holds {value!r} of type "
                         f"{type(value).__name__})")


def check_row_count(frame: pd.DataFrame, path: Path, flag: str) -> None:
    if len(frame) < MIN_ROWS:
        raise AuditError(f"{flag}: {path} has {len(frame)} rows; the two-sample tests need at least "
                         f"{MIN_ROWS} rows per file")


def check_options(options: AuditOptions) -> None:
    """The command's own options, checked before the files are read: output directory, model names, sample size."""
    report = options.out / REPORT_FILE
    if options.out.exists() and not options.out.is_dir():
        raise AuditError(f"--out: {options.out} is a file; give a directory")
    if report.exists() and not options.force:
        raise AuditError(f"--out: {report} already exists; pass --force to overwrite it")
    for flag, name in (("--embedder", options.embedder), ("--generator", options.generator)):
        if name is not None:
            try:
                check_model_name(name)
            except ValueError as error:
                raise AuditError(f"{flag}: {error}") from None
    if options.max_per_side < MIN_ROWS:
        raise AuditError(f"--max-per-side: {options.max_per_side}; allowed: {MIN_ROWS} or more texts per file")


def as_labels(values: pd.Series) -> np.ndarray:
    """Values as stripped strings; missing or blank ones become ``unknown`` (counted, left out of shares)."""
    text = values.astype(object).where(values.notna(), "").map(lambda value: str(value).strip())
    return text.where(text != "", UNKNOWN).to_numpy(dtype=object)


def tidy_frame(raw: pd.DataFrame, options: AuditOptions) -> pd.DataFrame:
    """The columns the analyses read: ``text``, ``occupation`` (misalign's name for the label; :data:`NO_LABEL`
    without a label field) and ``group`` (the group field, else :func:`misalign.inferred_groups`)."""
    frame = pd.DataFrame({"text": raw[options.text_field].to_numpy(dtype=object)})
    frame["occupation"] = as_labels(raw[options.label_field]) if options.label_field else NO_LABEL
    if options.group_field:
        frame["group"] = as_labels(raw[options.group_field])
    else:
        frame["group"] = misalign.inferred_groups(frame, "gender").to_numpy(dtype=object)
    return frame
