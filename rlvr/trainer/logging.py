"""Run logging: metrics.jsonl (flushed every step), samples.jsonl, progress, TensorBoard if installed.

On resume the JSONL files are cut back to the checkpoint's step, so a step that ran after the last
checkpoint (and will run again) is not logged twice.  A metric a stage reported before but has no
value for at this step (no counted token, say) is written as null: "no data", never a made-up 0.
Progress is a live tqdm bar when stderr is a terminal and one plain line every `RLVR_PROGRESS_EVERY`
seconds (default 30) otherwise, so a log file gets a readable history instead of bar redraws.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("rlvr.trainer")
PROGRESS_EVERY_S = 30.0
SHOWN = ("reward/total", "accuracy", "loss", "kl")  # the metrics progress shows


class _DropMessages(logging.Filter):
    """Drops log records whose message contains one of `needles` (third-party notices our calls trigger)."""

    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.needles)


_QUIET = _DropMessages("`past_key_values`/`cache_params` are deprecated")


def quiet_third_party() -> None:
    """Silence one transformers notice, narrowly: the deprecation of the `past_key_values` name
    (transformers 5.2x renamed it `cache`; rlvr passes whichever name the model declares,
    `rlvr.models.compat`, but other callers in the process may still use the old one).
    Idempotent; filters that one message, nothing else."""
    target = logging.getLogger("transformers.utils.generic")
    if _QUIET not in target.filters:
        target.addFilter(_QUIET)
    # the same notice as a FutureWarning from transformers' deprecate_kwarg on LlamaModel.forward (and kin)
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)


def _truncate_jsonl(path: Path, keep_through_step: int) -> None:
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line from a killed run
        if int(row.get("step", 0)) <= keep_through_step:
            kept.append(line)
    path.write_text("".join(f"{x}\n" for x in kept), encoding="utf-8")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; readers treat null as missing
    return value


class RunLogger:
    """Writes one JSON object per step to metrics.jsonl and sample rows to samples.jsonl."""

    def __init__(
        self, run_dir: Path, *, stage: str, total_steps: int, start_step: int = 0,
        progress: bool = True, tensorboard: bool = True,
    ) -> None:  # fmt: skip
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path, self.samples_path = run_dir / "metrics.jsonl", run_dir / "samples.jsonl"
        for path in (self.metrics_path, self.samples_path):
            _truncate_jsonl(path, start_step)
        self._metrics = self.metrics_path.open("a", encoding="utf-8")
        self._samples = self.samples_path.open("a", encoding="utf-8")
        self.stage, self.start_step, self.t0 = stage, start_step, time.perf_counter()
        quiet_third_party()
        if progress and not sys.stderr.isatty():
            self.bar: Any = LineProgress(stage, total_steps, start_step)
        else:
            self.bar = tqdm(total=total_steps, initial=start_step, desc=stage, disable=not progress,
                            dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        self.tb = _tensorboard(run_dir / "tb") if tensorboard else None
        self._seen: dict[str, None] = {}  # keys reported so far (eval/* and time/* excepted)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": step, **{k: None for k in self._seen}, **{k: _clean(v) for k, v in metrics.items()}}
        self._seen.update((k, None) for k in metrics if not k.startswith(("eval/", "time/")))
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k != "step":
                    self.tb.add_scalar(k, v, step)
        shown = {k: metrics[k] for k in SHOWN if isinstance(metrics.get(k), int | float)}
        self.bar.set_postfix({_short(k): f"{v:.3g}" for k, v in shown.items()}, refresh=False)
        self.bar.update(step - self.bar.n)

    def samples(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self._samples.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._samples.flush()

    def warn(self, message: str) -> None:
        """To the user's logging setup when they have one, else above the progress bar (once, not twice)."""
        if log.hasHandlers():
            log.warning(message)
        else:
            self.bar.write(f"warning: {message}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        self._metrics.close()
        self._samples.close()
        if self.tb is not None:
            self.tb.close()


class LineProgress:
    """tqdm's interface as plain lines: the first step, then at most one line every `every` seconds,
    and the last step: `rl step 12/60 (20%) reward 0.41 loss 0.12 | 1m05s elapsed, ~4m20s left`."""

    def __init__(self, desc: str, total: int, initial: int = 0, every: float | None = None) -> None:
        self.desc, self.total, self.n, self.start = desc, total, initial, initial
        self.every = float(os.environ.get("RLVR_PROGRESS_EVERY", PROGRESS_EVERY_S)) if every is None else every
        self.t0, self.last, self.postfix = time.perf_counter(), -math.inf, ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every or self.n >= self.total or self.n == self.start + 1:
            self.last = now
            print(self._line(now - self.t0), file=sys.stderr, flush=True)

    def _line(self, elapsed: float) -> str:
        done = self.n - self.start
        left = elapsed / done * (self.total - self.n) if done > 0 else math.nan
        eta = f", ~{_clock(left)} left" if math.isfinite(left) and self.n < self.total else ""
        pct = 100 * self.n / max(self.total, 1)
        return f"{self.desc} step {self.n}/{self.total} ({pct:.0f}%){self.postfix} | {_clock(elapsed)} elapsed{eta}"

    def set_postfix(self, values: Mapping[str, str], refresh: bool = False) -> None:
        self.postfix = "".join(f" {k} {v}" for k, v in values.items())

    def write(self, text: str, file: Any = None) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _short(key: str) -> str:
    return "reward" if key == "reward/total" else key.split("/")[-1]


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(path))
