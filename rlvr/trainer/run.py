"""What every training loop shares: the result record, callbacks, timers, seeds, signals, run dirs."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rlvr.errors import RunDirError
from rlvr.trainer.checkpoint import latest_checkpoint
from rlvr.trainer.resume import Resume, resume_mode

Status = Literal["completed", "interrupted", "diverged"]


@dataclass(slots=True)
class RunResult:
    """How a run ended: `status` is "completed", "interrupted" (SIGTERM/SIGINT, checkpointed) or
    "diverged" (too many non-finite updates in a row; the last good checkpoint is intact)."""

    run_dir: Path
    step: int
    status: Status = "completed"
    checkpoint: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the last logged row
    signal: str | None = None  # "SIGTERM" / "SIGINT" when interrupted
    exact: bool = True  # False once a resume changed the thread count, world size or forced a change


@dataclass(slots=True)
class CallbackContext:
    """What an evaluation callback sees; it returns metrics (logged as "eval/<name>") or None."""

    step: int
    run_dir: Path
    model: Any
    tokenizer: Any
    engine: Any
    task: Any
    final: bool


Callback = Callable[[CallbackContext], Mapping[str, float] | None]


def run_callbacks(callbacks: tuple[Callback, ...] | list[Callback], ctx: CallbackContext) -> dict[str, float]:
    out: dict[str, float] = {}
    for cb in callbacks:
        for k, v in (cb(ctx) or {}).items():
            out[k if k.startswith("eval/") else f"eval/{k}"] = v
    return out


class Timer:
    """Accumulates wall time per phase: `with timer("generate"): ...`; `timer.metrics()` -> time/<phase>."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.totals[phase] += time.perf_counter() - t

    def add(self, phase: str, seconds: float) -> None:
        self.totals[phase] += seconds

    def metrics(self) -> dict[str, float]:
        return {
            **{f"time/{k}": v for k, v in self.totals.items()},
            "time/step": time.perf_counter() - self.t0,
        }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, attempt: int = 0) -> int:
    """The sampling seed of one generation call: a pure function of (run seed, step, attempt)."""
    return (seed * 1_000_003 + step * 1_009 + attempt) % 2**31


# what rlvr writes in a stage's run directory; anything else there is the user's and is never touched
RUN_ENTRIES = frozenset({"config.json", "provenance.json", "metrics.jsonl", "samples.jsonl", "resumes.jsonl",
                         "config_history", "checkpoints", "eval", "tb", "report.html"})  # fmt: skip
# rlvr's own temporary names: a checkpoint being written (checkpoint.save_checkpoint, dist_checkpoint.save)
# and config.json being replaced (config.save_config); a crash mid-write leaves one behind
_CKPT_TEMP = re.compile(r"^\.step_\d{6,}\.tmp-[A-Za-z0-9_]+$")
_CONFIG_TEMP = re.compile(r"^\.config\.[A-Za-z0-9_]+\.json$")


def clean_stale_temps(run_dir: Path) -> list[Path]:
    """Delete the half-written checkpoints and config files a crash left in `run_dir` (only rlvr's own
    temporary names); returns what was removed.  Called before a run starts or resumes, on rank 0."""
    found = [p for p in (run_dir / "checkpoints").glob(".step_*") if _CKPT_TEMP.match(p.name) and p.is_dir()]
    found += [p for p in run_dir.glob(".config.*") if _CONFIG_TEMP.match(p.name) and p.is_file()]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def logged_steps(run_dir: Path) -> int:
    """Rows in run_dir/metrics.jsonl (0 when there is none): the steps a run there has recorded."""
    try:
        with (run_dir / "metrics.jsonl").open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def _holds_a_run(path: Path) -> bool:
    """A folder that is itself a run directory (`rlvr demo` runs its SFT stage in OUT/sft, then GRPO in OUT)."""
    return path.is_dir() and any((path / name).exists() for name in ("config.json", "metrics.jsonl", "checkpoints"))


def _check_fresh_start(run_dir: Path) -> None:
    """A new run may start in a missing or empty directory, or over a run that was stopped before its first
    step (rlvr's own files only, no step logged; folders that are runs themselves may sit beside them).
    Anything else is refused: nothing is overwritten."""
    entries = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    foreign = [p.name for p in entries if p.name not in RUN_ENTRIES and not _holds_a_run(p)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunDirError(f"run.out_dir = {str(run_dir)!r} is not empty and is not an rlvr run directory (it holds "
                          f"{shown}): rlvr does not write among other files; set run.out_dir to a new or empty "
                          "directory (to continue an rlvr run, point run.out_dir at its directory and pass --resume)")  # fmt: skip
    steps = logged_steps(run_dir)
    if steps:
        raise RunDirError(f"run.out_dir = {str(run_dir)!r} holds a run that logged {steps} step(s) in metrics.jsonl "
                          "but saved no checkpoint, so it cannot be resumed and a new run would overwrite it: "
                          "set run.out_dir to a new directory (or delete this one to start over)")  # fmt: skip


def discard_unstarted(run_dir: Path) -> bool:
    """Remove `run_dir` when a run created it and was stopped before its first step: it holds only rlvr's own
    files, no checkpoint and no logged step.  True when removed (anything else there keeps it)."""
    if not run_dir.is_dir() or latest_checkpoint(run_dir) is not None or logged_steps(run_dir):
        return False
    if any(p.name not in RUN_ENTRIES for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()


def prepare_run_dir(out_dir: str, resume: bool | Resume | None) -> tuple[Path, Path | None]:
    """(run_dir, checkpoint to resume from).  Refuses to overwrite a run's checkpoints without --resume,
    refuses --resume where there is nothing to resume (unless `Resume(or_start=True)`), and starts a new
    run only where nothing would be overwritten (`_check_fresh_start`).  Stale temporaries are cleaned."""
    run_dir, mode = Path(out_dir), resume_mode(resume)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run.out_dir = {str(run_dir)!r} is a file, not a directory; set run.out_dir to a directory")
    if run_dir.is_dir() and os.environ.get("RANK", "0") == "0":
        clean_stale_temps(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and mode is None:
        raise RunDirError(
            f"{run_dir} already holds checkpoints (latest {ckpt.name}): pass --resume to continue that run, "
            "or set run.out_dir to a new directory"
        )
    if ckpt is None and mode is not None and not mode.or_start:
        raise RunDirError(
            f"--resume: {run_dir} holds no checkpoint to resume (no checkpoints/step_N/ with a trainer state); "
            "drop --resume to start a new run there, check run.out_dir, or pass --resume-or-start "
            "to resume when there is a checkpoint and start fresh when there is none"
        )
    if ckpt is None:
        _check_fresh_start(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent that is a file, a read-only or virtual file system, no permission
        raise RunDirError(f"run.out_dir = {str(run_dir)!r} cannot be created ({err.strerror}: {err.filename}); "
                          "set run.out_dir to a directory you can write") from None  # fmt: skip
    return run_dir, ckpt


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes the current step, checkpoints, and returns."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def handler(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signal.Signals(signum).name


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be installed from the main thread
        return
    previous = {s: signal.signal(s, flag.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
