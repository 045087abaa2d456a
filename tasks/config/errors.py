"""params.yaml's mistakes in one line each: where (file, line or dotted key) and what, with the nearest known key for a
misspelt one. A pydantic ValidationError or a YAML error printed raw is 20-60 lines with the point at the bottom."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tasks.common.errors import UserError

SHOWN = 3


class ConfigError(UserError, ValueError):
    pass


def yaml_error(path: Path, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    return ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}")


def validation_error(path: Path, err: ValidationError, root: type[BaseModel]) -> ConfigError:
    problems = [_problem(e, root) for e in err.errors()]
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return ConfigError(f"{path}: " + "; ".join(problems[:SHOWN]) + more)


def _problem(error: dict, root: type[BaseModel]) -> str:
    loc = [str(part) for part in error["loc"] if not str(part).startswith(("function-after", "function-before"))]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(loc, root)}"
    if error["type"] == "missing":
        return f"{key}: missing (params.yaml holds every setting; the code has no defaults)"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message} (got {error['input']!r})" if "input" in error and not isinstance(
        error["input"], dict) else f"{key}: {message}"


def _did_you_mean(loc: list[str], root: type[BaseModel]) -> str:
    model = root
    for part in loc[:-1]:
        if part.isdigit():            # an entry of a list of sections (ingest.sources.0)
            continue
        field = model.model_fields.get(part)
        model = _section(field.annotation) if field else None
        if model is None:
            return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean {'.'.join([*loc[:-1], close[0]])}?)" if close else ""


def _section(annotation) -> type[BaseModel] | None:
    """The section a field holds: its own, or its list's entries'."""
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
