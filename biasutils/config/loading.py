"""From a profile file and ``--set`` overrides to :class:`StudyParams`, errors worded for people (the field
and its allowed values), and the settings resolved on the machine: the device and the dtype's key part."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from .problems import size_problems
from .sections import ParamsError, StudyParams

PARAMS_DIR = Path(__file__).resolve().parent.parent.parent / "params"


def available_profiles(params_dir: Path = PARAMS_DIR) -> list[str]:
    return sorted(p.stem for p in (params_dir / "profiles").glob("*.yaml"))


def load_params(
    profile: str, overrides: Sequence[str] = (), params_dir: Path | str = PARAMS_DIR
) -> StudyParams:
    """Load, override (``key.path=value``, value in YAML syntax) and validate a profile."""
    params_dir = Path(params_dir)
    profiles = available_profiles(params_dir)
    if profile not in profiles:
        raise ParamsError(f"profile: unknown profile {profile!r}; allowed: {', '.join(profiles)}")
    raw = yaml.safe_load((params_dir / "profiles" / f"{profile}.yaml").read_text()) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"profile {profile!r}: the YAML file must hold a mapping, got {type(raw).__name__}")
    raw["profile"] = profile
    for override in overrides:
        apply_override(raw, override)
    return validate_params(raw)


def validate_params(raw: dict[str, Any]) -> StudyParams:
    try:
        params = StudyParams.model_validate(raw)
    except ValidationError as error:
        where = f"profile {raw.get('profile', '?')!r}"
        lines = [describe_error(e) for e in error.errors()]
        raise ParamsError(f"invalid parameters in {where}:\n  " + "\n  ".join(lines)) from None
    problems = size_problems(params)
    if problems:
        raise ParamsError(f"invalid parameters in profile {params.profile!r}:\n  " + "\n  ".join(problems))
    return params


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the nested mapping; the value is parsed as YAML (``[0, 0.1]``, ``true``...)."""
    if "=" not in override:
        raise ParamsError(f"--set {override!r}: expected key=value, e.g. grid.ratios=[0,0.1]")
    dotted, text = override.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ParamsError(f"--set {dotted}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = parse_override_value(override, text)


def parse_override_value(override: str, text: str) -> Any:
    """The value of one ``--set`` item as YAML data; tags such as ``!!python/object`` are refused, never run."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ParamsError(
            f"--set {override!r}: the value is not plain YAML data ({problem}); allowed: a number, a string, "
            "true/false, null, a [list] or a {mapping}, e.g. grid.ratios=[0,0.1]"
        ) from None


def describe_error(error: dict[str, Any]) -> str:
    """One line per validation error: the dotted field, the bad value, what is allowed."""
    loc = ".".join(str(part) for part in error["loc"])
    value = error.get("input")
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(error["loc"][:-1]))
        return f"{loc}: unknown key; allowed keys here: {allowed}"
    if kind == "missing":
        literal = _annotation_at(error["loc"])
        allowed = f"; allowed: {' or '.join(map(repr, get_args(literal)))}" if get_origin(literal) is Literal else ""
        return f"{loc}: required, but missing{allowed}"
    if kind == "literal_error":
        return f"{loc}: {value!r} is not allowed; allowed: {error['ctx']['expected']}"
    if "ratios" in error["loc"] and kind in {"greater_than_equal", "less_than"}:
        return f"{loc}: {value!r} is not a valid bias ratio; allowed: 0 <= ratio < 1"
    message = error["msg"].removeprefix("Value error, ")
    return f"{loc}: {value!r}: {message}"


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The field names of the section at ``loc`` (for 'unknown key' messages)."""
    return list(_section_at(loc).model_fields)


def _section_at(loc: Sequence[Any]) -> type[BaseModel]:
    """The model of the section at ``loc``; a list of sections (``evaluate.culture_datasets.0``) counts as its item."""
    model: type[BaseModel] = StudyParams
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        if get_origin(annotation) is list:
            (annotation,) = get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return model


def _annotation_at(loc: Sequence[Any]) -> Any:
    """The type of the field at ``loc`` (None where ``loc`` names no field of a section)."""
    field = _section_at(loc[:-1]).model_fields.get(str(loc[-1]))
    return field.annotation if field is not None else None


def precision_key(dtype: str) -> dict[str, str]:
    """The part of a model artifact's key that params ``dtype`` gives: ``{"dtype": ...}`` when one is stated,
    else nothing (every stage that loads a model, the generation backends' settings included, keys it so).

    Why not the resolved dtype: ``auto`` follows the device, which is not in any key either (an ``auto``
    store is the machine's); resolving it would import torch in every render. A stated dtype is a
    different computation on every machine (bf16 rounds every product), so it is keyed, and a bf16
    student never reads a float32 one's cache.
    """
    return {} if dtype == "auto" else {"dtype": dtype}


def resolve_device(params: StudyParams) -> str:
    """``auto`` means CUDA when a GPU is visible (imports torch, so only call it when work starts)."""
    return concrete_device(params.device)


def concrete_device(device: str) -> str:
    """``cpu``/``cuda`` as they are; ``auto``: CUDA when a GPU is visible (imports torch)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
