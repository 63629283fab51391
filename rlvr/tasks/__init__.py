"""Tasks (layer L2): data, prompt rendering and the verifier that scores them.

`TASKS` is the closed, greppable table of built-in tasks; `make_task(name, **kwargs)` builds one,
checking the keyword arguments against what the task accepts.  A name of the form
`"package.module:Class"` imports user code instead (the one escape hatch; no import-time magic).
`grade` / `extract` (with the rendered prompt's `open_prefix`) are how every path grades a
completion, and `sft_target` is the matching SFT completion (see `rlvr.tasks.base`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from rlvr.errors import TaskKwargError
from rlvr.tasks.arithmetic import ArithmeticTask
from rlvr.tasks.base import (
    R1_SYSTEM_PROMPT,
    TEMPLATES,
    ProceduralTask,
    Task,
    Template,
    VerifiedTask,
    continue_layout,
    extract,
    grade,
    open_prefix,
    sft_target,
)
from rlvr.tasks.countdown import CountdownTask
from rlvr.tasks.files import FileTask
from rlvr.tasks.sort import SortTask

TASKS: dict[str, type] = {
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "sort": SortTask,
    "file": FileTask,
}

__all__ = [
    "R1_SYSTEM_PROMPT",
    "TASKS",
    "TEMPLATES",
    "ArithmeticTask",
    "CountdownTask",
    "FileTask",
    "ProceduralTask",
    "SortTask",
    "Task",
    "Template",
    "VerifiedTask",
    "accepted_kwargs",
    "check_task_kwargs",
    "continue_layout",
    "extract",
    "grade",
    "make_task",
    "make_task_with",
    "open_prefix",
    "sft_target",
]


def _signatures(factory: Any) -> list[Any]:
    """The functions whose keywords `factory` takes: a class's `__init__`s up the MRO while each passes
    `**kwargs` on, or the factory itself."""
    if not inspect.isclass(factory):
        return [factory]
    out = []
    for cls in inspect.getmro(factory):
        fn = vars(cls).get("__init__")
        if fn is None:
            continue
        if fn is object.__init__:
            break
        out.append(fn)
        if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
            break
    return out


def _parameters(factory: Any) -> dict[str, tuple[inspect.Parameter, Any]]:
    """{keyword: (parameter, its type hint or Parameter.empty)} of every keyword `factory` accepts."""
    found: dict[str, tuple[inspect.Parameter, Any]] = {}
    for fn in _signatures(factory):
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # user code whose annotations do not resolve: its names are still checked
            hints = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                found.setdefault(p.name, (p, hints.get(p.name, p.empty)))
    return found


def accepted_kwargs(factory: Any) -> set[str] | None:
    """Keyword names `factory` accepts, following `**kwargs` up the class hierarchy; None = anything."""
    if inspect.isclass(factory):
        return set(_parameters(factory))
    params = inspect.signature(factory).parameters.values()
    return None if any(p.kind is p.VAR_KEYWORD for p in params) else set(_parameters(factory))


@functools.lru_cache(maxsize=256)
def _adapter(hint: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot check (a protocol, a forward reference): not checked
        return None


def _type_name(hint: Any) -> str:
    """`int`, `str | Template`, `Mapping[str, float] | None`: the hint as a user reads it."""
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return text or re.sub(r"\b(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", str(hint))


def _check_value(name: str, value: Any, param: inspect.Parameter, hint: Any) -> Any:
    """`value` as the parameter's type hint accepts it, the way the config's own keys are validated
    (pydantic's lax mode: "3" -> 3, 3.0 -> 3; never 3.5 -> 3), or a TaskKwargError.  A bool is refused
    where a number is meant (`length = true` is a slip, not 1)."""
    if hint is param.empty or hint is Any:
        return value
    adapter = _adapter(hint)
    if adapter is None:
        return value
    default = "" if param.default is param.empty else f"; default {param.default!r}"
    expected = f"expected {_type_name(hint)}{default}"
    kinds = set(typing.get_args(hint) or (hint,))
    if isinstance(value, bool) and kinds & {int, float} and bool not in kinds:
        raise TaskKwargError(name, f"got {value!r}, a boolean, where a number is needed ({expected})")
    try:
        return adapter.validate_python(value)
    except ValidationError as err:
        first = err.errors()[0]
        at = "".join(f"[{p!r}]" for p in first["loc"] if not isinstance(p, str) or p in str(value))
        msg = first["msg"][:1].lower() + first["msg"][1:]
        where = f"{name}{at}: " if at else ""  # the entry of a mapping or list that is wrong
        raise TaskKwargError(name, f"got {value!r} ({type(value).__name__}): {where}{msg} ({expected})") from None


def check_task_kwargs(factory: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`kwargs` checked against `factory`'s signature: every name known, every required one given, every
    value of its annotated type (coerced only as config values are).  Raises TaskKwargError (bare names)."""
    params, accepted = _parameters(factory), accepted_kwargs(factory)
    if accepted is not None:
        bad = sorted(set(kwargs) - accepted)
        if bad:
            raise TaskKwargError(bad[0], f"does not accept {bad}: valid options are {sorted(accepted)}")
    for name, (param, _) in params.items():
        if param.default is param.empty and name not in kwargs:
            raise TaskKwargError(name, "is required and missing: add it to the task's kwargs")
    return {k: _check_value(k, v, *params[k]) if k in params else v for k, v in kwargs.items()}


def _import(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"cannot load task {spec!r}: {err} (expected 'package.module:ClassOrFactory')"
        ) from err


def make_task(name: str, **kwargs: Any) -> Task:
    """Build the task `name` (a key of `TASKS`, or `"package.module:Class"`) with its knobs."""
    return make_task_with(name, kwargs)


def make_task_with(name: str, kwargs: Mapping[str, Any], *, where: str = "kwargs.{}") -> Task:
    """`make_task`, naming a bad option as the user wrote it: `where` is the key template
    (`"task.kwargs.{}"`, `"tasks.1.kwargs.{}"`, `"--task-kwargs {}"`).  A wrong option is a
    TaskKwargError (a UserError and a ValueError); a bug inside a built-in task keeps its traceback."""
    if ":" in name:
        factory = _import(name)
    elif name in TASKS:
        factory = TASKS[name]
    else:
        raise ValueError(
            f"unknown task {name!r}: valid names are {sorted(TASKS)}, or 'package.module:Class' for your own"
        )
    try:
        task = factory(**check_task_kwargs(factory, kwargs))
    except TaskKwargError as err:
        reason = err.reason.replace("does not accept", f"task {name!r} does not accept")
        raise TaskKwargError(err.arg, reason if reason != err.reason else f"{reason} (task {name!r})", where) from None
    except TypeError as err:  # user code: a check of its own, or a signature `inspect` cannot see
        if ":" not in name:
            raise
        raise ValueError(f"cannot build task {name!r}: {err}") from err
    if not isinstance(task, Task):
        raise ValueError(
            f"{name!r} built a {type(task).__name__}, which does not implement the Task protocol"
        )
    return task
