"""argparse types and the --task / --task-kwargs reader shared by `rlvr.cli`'s commands."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rlvr.errors import UserError


def json_object(text: str) -> dict:
    """argparse type for --task-kwargs: a JSON object, or a message that says what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at column {exc.colno}): {text!r}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"length\": 3}}', got {text!r}")
    return value


def _int_list(text: str, *, least: int, example: str, distinct: bool = False) -> list[int]:
    """Comma-separated integers >= `least` (and pairwise different with `distinct`), or an argparse error."""
    try:
        values = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like {example}, got {text!r}") from None
    if not values or min(values) < least or (distinct and len(set(values)) != len(values)):
        what = "distinct integers" if distinct else "integers"
        raise argparse.ArgumentTypeError(f"expected {what} >= {least} like {example}, got {text!r}")
    return values


def ks(text: str) -> list[int]:
    """argparse type for --k: comma-separated positive integers."""
    return _int_list(text, least=1, example="1,4,16")


def ks_any(text: str) -> list[int]:
    """argparse type for --seeds: comma-separated distinct integers (>= 0)."""
    return _int_list(text, least=0, example="0,1,2", distinct=True)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def make_task(args: argparse.Namespace) -> Any:
    """The task --task / --task-kwargs name; a bad name or kwarg is the user's (exit 2), naming the flag."""
    from rlvr.errors import TaskKwargError
    from rlvr.tasks import make_task

    try:
        return make_task(args.task, **(args.task_kwargs or {}))
    except TaskKwargError as err:  # named as the user wrote it
        raise TaskKwargError(err.arg, err.reason, "--task-kwargs {}") from None
    except UserError:
        raise
    except ValueError as exc:  # an unknown name, or a check of a user task's own
        flags = f"--task {args.task}" + (f" --task-kwargs '{json.dumps(args.task_kwargs)}'" if args.task_kwargs else "")
        raise UserError(f"{flags}: {exc}") from exc
