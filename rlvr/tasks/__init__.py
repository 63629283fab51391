"""Tasks (layer L2): data, prompt rendering and the verifier that scores them.

`TASKS` is the closed, greppable table of built-in tasks; `make_task(name, **kwargs)` builds one,
checking the keyword arguments against what the task accepts.  A name of the form
`"package.module:Class"` imports user code instead (the one escape hatch; no import-time magic).
`grade` / `extract` (with the rendered prompt's `open_prefix`) are how every path grades a
completion, and `sft_target` is the matching SFT completion (see `rlvr.tasks.base`).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

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
    "continue_layout",
    "extract",
    "grade",
    "make_task",
    "open_prefix",
    "sft_target",
]


def accepted_kwargs(factory: Any) -> set[str] | None:
    """Keyword names `factory` accepts, following `**kwargs` up the class hierarchy; None = anything."""
    names: set[str] = set()
    targets = (
        [c.__init__ for c in inspect.getmro(factory) if "__init__" in vars(c)]
        if inspect.isclass(factory)
        else [factory]
    )
    for fn in targets:
        if fn is object.__init__:
            break
        params = inspect.signature(fn).parameters.values()
        names |= {
            p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return names if inspect.isclass(factory) else None


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
    if ":" in name:
        factory = _import(name)
    elif name in TASKS:
        factory = TASKS[name]
    else:
        raise ValueError(
            f"unknown task {name!r}: valid names are {sorted(TASKS)}, or 'package.module:Class' for your own"
        )
    accepted = accepted_kwargs(factory)
    if accepted is not None:
        bad = sorted(set(kwargs) - accepted)
        if bad:
            raise ValueError(f"task {name!r} does not accept {bad}: valid options are {sorted(accepted)}")
    try:
        task = factory(**kwargs)
    except TypeError as err:  # e.g. a required option left out: make_task("file") without path=
        raise ValueError(f"cannot build task {name!r}: {err}") from err
    if not isinstance(task, Task):
        raise ValueError(
            f"{name!r} built a {type(task).__name__}, which does not implement the Task protocol"
        )
    return task
