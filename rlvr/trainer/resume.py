"""What resuming a run may change, and the record it leaves in the run directory.

    train(config, resume=True)                     # a checkpoint must exist; config changes are checked
    train(config, resume=Resume(or_start=True))    # no checkpoint yet: start a new run (the CLI's --resume-or-start)
    train(config, resume=Resume(force=True))       # accept changes that break exactness (the CLI's --force)

A resumed config is compared, key by key, with the run's `config.json`.  Changing how long the run goes
or how it logs, evaluates and checkpoints (`RESUMABLE`) keeps the run exact (bitwise equal to an
uninterrupted one); any other change is refused unless forced, because the result would no longer be
the run the config describes.  A changed thread count or world size (number of processes) is allowed
but makes floating-point sums differ, so the run is marked not exact.  Every resume appends a row to
`resumes.jsonl` (step, changes, forced, exact, world sizes); when the config changed, the previous
`config.json` is kept as `config_history/config.<n>.json` before the new one is written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.config import ConfigError, parse_config
from rlvr.provenance import provenance

# dotted keys (or prefixes ending in ".") a resume may change and stay exact (run.out_dir: a moved run)
RESUMABLE = ("run.out_dir", "run.steps", "run.eval_every", "run.save_every", "run.keep_last", "run.progress",
             "run.tensorboard", "run.samples_every", "run.max_consecutive_skips", "eval.")  # fmt: skip
# allowed, recorded, but the run is no longer bitwise exact (thread count changes CPU reduction order;
# a DCP checkpoint loads under any parallel mode and world size)
NOT_EXACT = ("run.threads", "parallel.")


@dataclass(frozen=True, slots=True)
class Resume:
    """`resume=` of the stage runners: `True` means `Resume()`."""

    or_start: bool = False  # no checkpoint in run.out_dir: start a new run instead of failing
    force: bool = False  # accept config changes that break exactness (recorded; run marked not exact)


def resume_mode(resume: bool | Resume | None) -> Resume | None:
    if isinstance(resume, Resume):
        return resume
    return Resume() if resume else None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"optim.lr": 2e-4, "tasks.0.kwargs.length": 4, ...}: the leaves of a resolved config."""
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} for every leaf that differs (a missing leaf reads as None)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _as_now(old: dict[str, Any]) -> dict[str, Any]:
    """The old config as this version resolves it: a key added since (absent from config.json) takes its
    default, so upgrading rlvr between two legs of a run is not a change.  As written if it no longer loads."""
    try:
        return parse_config(old, source="config.json").model_dump(mode="json")
    except ConfigError:
        return old


def _kind(key: str) -> str:
    if any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESUMABLE):
        return "exact"
    return "not_exact" if any(key == p or (p.endswith(".") and key.startswith(p)) for p in NOT_EXACT) else "refused"


def check_config(run_dir: Path, new: Mapping[str, Any], mode: Resume) -> dict[str, tuple[Any, Any]]:
    """The changes against run_dir/config.json; raises ConfigError naming each refused one unless forced."""
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError / UnicodeDecodeError are ValueErrors
        raise ConfigError(f"--resume: {path} cannot be read ({err}); restore it from config_history/ or a copy, "
                          f"or move it away to resume without the comparison (nothing is checked then)") from None  # fmt: skip
    if not isinstance(old, dict):
        raise ConfigError(f"--resume: {path} is not a JSON object; restore it or move it away")
    if old.get("kind", "rl") != new.get("kind", "rl"):
        raise ConfigError(f"--resume: {run_dir} holds a kind = {old.get('kind', 'rl')!r} run and this config is "
                          f"kind = {new.get('kind', 'rl')!r}: resume it with the config it was started with, or set "
                          "run.out_dir to a new directory for this run")  # fmt: skip
    changes = config_changes(_as_now(old), new)
    refused = [k for k in changes if _kind(k) == "refused"]
    if refused and not mode.force:
        lines = [f"  - {k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused]
        raise ConfigError(
            f"--resume: the config differs from the one {run_dir} was trained with ({path}) in "
            f"{len(refused)} setting(s) that change the result, so the resumed run would not be exact:\n"
            + "\n".join(lines)
            + "\nrestore them (only run.out_dir, run.steps, the run.*_every cadences, run.keep_last/progress/tensorboard and "
            "eval.* may change), or pass --force to resume anyway (the change is recorded in "
            "resumes.jsonl and the run is marked not exact)",
            [f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused],
        )
    return changes


def world_size() -> int:
    """Processes in this run (torchrun's WORLD_SIZE; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def record_resume(run_dir: Path, step: int, changes: Mapping[str, tuple[Any, Any]], *, forced: bool,
                  world_sizes: tuple[int, int]) -> dict[str, Any]:  # fmt: skip
    """Append the resume to resumes.jsonl (keeping the old config.json when it changed); return the row."""
    history = [json.loads(line) for line in _lines(run_dir / "resumes.jsonl")]
    n = len(history) + 1
    exact = all(_kind(k) == "exact" for k in changes) and world_sizes[0] == world_sizes[1]
    row = {"resume": n, "step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "forced": forced,
           "exact": exact and all(r.get("exact", True) for r in history),
           "changes": {k: list(v) for k, v in changes.items()}, "world_size": list(world_sizes),
           "provenance": provenance()}  # fmt: skip
    if changes and (run_dir / "config.json").is_file():
        (run_dir / "config_history").mkdir(exist_ok=True)
        shutil.copy2(run_dir / "config.json", run_dir / "config_history" / f"config.{n}.json")
        row["previous_config"] = f"config_history/config.{n}.json"
    with (run_dir / "resumes.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
    return row


def _lines(path: Path) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.is_file() else []


def describe(row: Mapping[str, Any]) -> list[str]:
    """The warnings a resume row deserves (none for a plain, exact resume)."""
    out = [f"resumed with {k} changed: {old!r} -> {new!r}" for k, (old, new) in row["changes"].items()]
    old_ws, new_ws = row["world_size"]
    if old_ws != new_ws:
        out.append(f"world size changed from {old_ws} to {new_ws} processes: allowed, but the run is no longer exact")
    if not row["exact"]:
        out.append("this run is no longer exact (bitwise equal to an uninterrupted run); see resumes.jsonl")
    return out
