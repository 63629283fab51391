"""Score a JSONL file of completions against a task (the library function behind `rlvr verify`).

Each row has a "completion" and names its problem either by "example_id" (looked up among the
task's train and test examples) or inline by "prompt" + "gold" (plus "meta" when the verifier needs
it, e.g. countdown's numbers and target).  Rows are graded with `rlvr.tasks.grade`, the function
training and evaluation use, after the prefix the prompt left open: the row's own "prefix" field
(the trainer's samples.jsonl rows carry it), else the `prefix` argument, else the prefix of the
task's plain prompt (`open_prefix(task.render(example))`, "<think>" for the "short" template).
Pass `prefix=""` for full texts that open `<think>` themselves.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlvr.tasks.base import SPLITS, Task, extract, grade, open_prefix
from rlvr.tasks.files import DatasetError, read_jsonl
from rlvr.types import Example


def _index(task: Task) -> dict[str, Example]:
    out: dict[str, Example] = {}
    for split in SPLITS:
        try:
            out.update({ex.id: ex for ex in task.examples(split)})
        except ValueError:
            continue  # a file task that holds only the other split
    return out


def _example(loc: str, row: Any, lookup: Callable[[], dict[str, Example]], task: Task) -> Example:
    if not isinstance(row, dict):
        raise DatasetError(f"{loc}: expected an object with fields, got {type(row).__name__}")
    if not isinstance(row.get("completion"), str):
        raise DatasetError(f"{loc}: field 'completion' is missing or not a string")
    if "example_id" in row and "gold" not in row:
        ex = lookup().get(str(row["example_id"]))
        if ex is None:
            raise DatasetError(
                f"{loc}: field 'example_id' value {row['example_id']!r} is not an example of {task.name}"
            )
        return ex
    if not isinstance(row.get("prompt"), str) or not isinstance(row.get("gold"), str):
        raise DatasetError(f"{loc}: needs 'example_id', or 'prompt' and 'gold' as strings")
    meta = row.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise DatasetError(f"{loc}: field 'meta' must be an object, got {type(meta).__name__}")
    ex_id = str(row.get("example_id", loc.rsplit(":", 1)[-1]))
    return Example(id=ex_id, prompt=row["prompt"], gold=row["gold"], meta=dict(meta))


def _prefix(loc: str, row: dict[str, Any], task: Task, ex: Example, default: str | None) -> str:
    if "prefix" in row:
        if not isinstance(row["prefix"], str):
            raise DatasetError(f"{loc}: field 'prefix' must be a string, got {type(row['prefix']).__name__}")
        return row["prefix"]
    return open_prefix(task.render(ex)) if default is None else default


def _grade(loc: str, task: Task, ex: Example, completion: str, prefix: str) -> tuple[Any, str | None]:
    """(score, extracted answer); a verifier that finds the row's `meta` unusable names the field.

    Verifiers never raise on model text, so an error here comes from the problem the row describes
    (an inline row whose meta lacks what the task's verifier reads, e.g. countdown's numbers)."""
    try:
        return grade(task, ex, completion, prefix=prefix), extract(task, completion, prefix=prefix)
    except KeyError as exc:
        key = exc.args[0] if exc.args else "?"
        raise DatasetError(
            f"{loc}: field 'meta.{key}' is missing: task {task.name!r} needs it to score an inline row "
            f"(prompt + gold + meta); add it (see README, 'rlvr verify'), or name the problem by 'example_id'"
        ) from None
    except (TypeError, ValueError, IndexError) as exc:
        raise DatasetError(
            f"{loc}: field 'meta' ({json.dumps(ex.meta, default=str)[:200]}) does not fit task {task.name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def verify_file(
    task: Task, path: str | Path, *, output: str | Path | None = None, prefix: str | None = None
) -> dict[str, Any]:
    """Score every row of `path`; summary {"n", "mean_reward", "accuracy", "format_rate"}.

    `prefix`: what the prompts left open, for rows without a "prefix" field (None: the task's
    plain-template prefix; see the module docstring).  `output`, when given, receives one JSON row
    per input row (line, example_id, prefix, reward, parts, answer).  A malformed row raises
    `DatasetError` naming the file, line and field; nothing is written then.  With no rows the
    summary's means are None (JSON null), not NaN.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a JSONL file" if path.is_dir() else "does not exist"
        raise DatasetError(f"completions file {path} {what}")
    lookup = functools.cache(lambda: _index(task))
    rows: list[dict[str, Any]] = []
    for loc, row in read_jsonl(path):
        if isinstance(row, DatasetError):
            raise row
        ex = _example(loc, row, lookup, task)
        row_prefix = _prefix(loc, row, task, ex, prefix)
        score, answer = _grade(loc, task, ex, row["completion"], row_prefix)
        rows.append(
            {
                "line": int(loc.rsplit(":", 1)[1]),
                "example_id": ex.id,
                "prefix": row_prefix,
                "reward": score.total,
                "parts": dict(score.parts),
                "answer": answer,
            }
        )
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")  # written whole, then renamed: no half-written output
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, out)
    n = len(rows)

    def mean(values: list[float]) -> float | None:
        return math.fsum(values) / n if n else None

    return {
        "n": n,
        "mean_reward": mean([r["reward"] for r in rows]),
        "accuracy": mean([r["parts"].get("accuracy", 0.0) for r in rows]),
        "format_rate": mean([r["parts"].get("format", 0.0) for r in rows]),
    }
