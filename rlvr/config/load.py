"""TOML loading, `section.key=value` overrides, and errors that name the key.

Override values are parsed as TOML values (`optim.lr=3e-4`, `rollout.engine="fake"`,
`optim.betas=[0.9, 0.95]`); a bare word that is not valid TOML is taken as a string
(`run.out_dir=runs/x`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from rlvr.config.runs import PLANNED_STAGES, STAGES, Config
from rlvr.errors import UserError, unreadable

KINDS = STAGES


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the key(s) and the fix (one line per problem)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]


def problems_error(source: str, problems: Sequence[str]) -> ConfigError:
    """One ConfigError listing every problem, each on its own indented line under `source`."""
    if len(problems) == 1:
        return ConfigError(f"{source}: {problems[0]}", problems)
    lines = "\n".join(f"  - {p}" for p in problems)
    return ConfigError(f"{source}: {len(problems)} problems:\n{lines}", problems)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `data` with each "section.key=value" override set (nested dicts created)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=3e-4)")
        *parents, leaf = key.split(".")
        node = out
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if isinstance(node, list):
                raise ConfigError(f"override {item!r}: {'.'.join(parents[: i + 1])} is a list of tables ([[{part}]] "
                                  "rows), which --set cannot reach into: edit that row in the config file")  # fmt: skip
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parents[: i + 1])} is a value, not a section"
                )
        node[leaf] = _parse_value(value.strip()) if value.strip() else None  # "key=" clears an optional key
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _walk(model: type[BaseModel], loc: Sequence[Any]) -> tuple[list[str], list[type[BaseModel]]]:
    """(`loc` without the type tags pydantic puts in paths through typed parts, the models that the
    location's parent can be).  The models list is empty when the path leaves the config's models."""
    current: list[type[BaseModel]] = [model]
    kept: list[str] = []
    for part in loc[:-1]:
        if part.isdigit():  # an item of a list of tables (`tasks.1`): the same models
            kept.append(part)
            continue
        fields = [m.model_fields[part] for m in current if part in m.model_fields]
        if fields:
            kept.append(part)
            current = [m for f in fields for m in _models_in(f.annotation)]
            continue
        tagged = [m for m in current if "type" in m.model_fields and m.model_fields["type"].default == part]
        if not tagged and part != "custom":
            return [*kept, *map(str, loc[len(kept):])], []
        current = tagged or [m for m in current if "kwargs" in m.model_fields] or current
    return [*kept, *map(str, loc[-1:])], current


def _describe(model: type[BaseModel], err: Mapping[str, Any]) -> str:
    loc, models = _walk(model, [str(p) for p in err["loc"]])
    key = ".".join(loc) or "(top level)"
    if err["type"] == "union_tag_invalid":
        tags = err.get("ctx", {}).get("expected_tags", "")
        return (f"config key {key}.type = {err['ctx'].get('tag')!r} is unknown; choose one of {tags} "
                "(custom: 'package.module:function')")  # fmt: skip
    if err["type"] == "extra_forbidden":
        known = sorted({name for m in models for name in m.model_fields})
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {'.'.join([*loc[:-1], close[0]])!r}?" if close else ""
        return f"unknown config key {key!r}{hint} (valid keys here: {', '.join(sorted(known))})"
    if err["type"] == "missing" and key == "tasks":
        return "no task: add a [task] section (name = ..., kwargs = {...}) or [[tasks]] rows for a mixture"
    if err["type"] == "missing":
        return f"missing config key {key!r}: add it to the file or pass --set {key}=..."
    if err["type"] == "value_error" and not loc:
        return str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
    return f"config key {key!r}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"


def _problems(model: type[BaseModel], exc: ValidationError) -> list[str]:
    """One line per problem (a cross-field check's message may hold several lines).  A list that is too
    short only because one of its items was refused (`tasks` after a bad `tasks.0`) is not a second problem."""
    errors = exc.errors()
    refused = {tuple(e["loc"][:i]) for e in errors for i in range(1, len(e["loc"]))}
    errors = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in refused)]
    return [line for e in errors for line in _describe(model, e).split("\n") if line.strip()]


def _as_written(problems: list[str], data: Mapping[str, Any]) -> list[str]:
    """A one-task config's problems named as the user wrote them: `task.kwargs`, not `tasks.0.kwargs`."""
    if "task" not in data or "tasks" in data:
        return problems
    return [re.sub(r"'tasks\.0([.'])", r"'task\1", p) for p in problems]


def _pruned(data: Any, loc: Sequence[Any]) -> bool:
    """Delete the value at `loc` (skipping the type tags pydantic adds) from `data`; False if absent."""
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            if i == len(loc) - 1:
                return False  # a list element: leave the list alone
            node = node[part]
        elif isinstance(node, dict) and part in node:
            if i == len(loc) - 1 or not isinstance(node[part], dict | list):
                del node[part]
                return True
            node = node[part]
    return False


def _cross_field_problems(model: type[BaseModel], data: Mapping[str, Any], exc: ValidationError) -> list[str]:
    """The cross-field checks' problems, found by validating once more with every invalid value removed
    (its default in its place).  A problem that names a removed key is dropped: it would describe the
    default, not what the user wrote."""
    copy, removed = json.loads(json.dumps(data, default=str)), []
    for err in exc.errors():
        if err["type"] == "value_error" and not _walk(model, [str(p) for p in err["loc"]])[0]:
            return []  # the cross-field checks already ran
        if not _pruned(copy, err["loc"]):
            return []  # a missing key has no default to stand in
        removed.append(".".join(_walk(model, [str(p) for p in err["loc"]])[0]))
    try:
        model.model_validate(copy)
    except ValidationError as again:
        if any(e["loc"] for e in again.errors()):
            return []
        return [p for p in _problems(model, again) if not any(re.search(rf"\b{re.escape(k)}\b", p) for k in removed)]
    return []


def parse_config(data: Mapping[str, Any], *, kind: str | None = None, source: str = "config") -> Config:
    """Validate a plain dict; `kind` ("rl" / "sft") is the default when the data has no `kind` key."""
    kind = str(data.get("kind", kind or "rl"))
    if kind in PLANNED_STAGES:
        raise ConfigError(f"{source}: kind = {kind!r}: {PLANNED_STAGES[kind]} is not available yet; "
                          f"this version runs {sorted(KINDS)}")  # fmt: skip
    if kind not in KINDS:
        raise ConfigError(f"{source}: kind = {kind!r} is unknown; use one of {sorted(KINDS)}")
    model = KINDS[kind]
    data = {**data, "kind": kind}
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = _as_written(_problems(model, exc) + _cross_field_problems(model, data, exc), data)
        raise problems_error(source, list(dict.fromkeys(problems))) from None


def load_config(
    path: str | os.PathLike[str], overrides: Sequence[str] = (), *, kind: str | None = None
) -> Config:
    """Read a TOML config, apply `--set` overrides, validate.  Raises ConfigError (a ValueError)."""
    path = Path(path)
    data = _read_toml(path)
    return parse_config(apply_overrides(data, overrides), kind=kind, source=str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML table in `path` (UTF-8; a leading BOM is accepted), or a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} {unreadable(exc, 'a TOML file')} (see examples/*.toml)") from None
    try:
        text = raw.decode("utf-8-sig")  # utf-8-sig: a BOM (Windows editors) is dropped, not a TOML error
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def save_config(config: Config, run_dir: str | os.PathLike[str]) -> Path:
    """Write the resolved config (every default filled in) to run_dir/config.json, atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / "config.json"
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".config.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(config.model_dump(mode="json"), fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, target)
    return target
