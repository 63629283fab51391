"""Run logging: metrics.jsonl (flushed every step), samples.jsonl, a tqdm bar, TensorBoard if installed.

On resume the JSONL files are cut back to the checkpoint's step, so a step that ran after the last
checkpoint (and will run again) is not logged twice.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("rlvr.trainer")


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
        self.bar = tqdm(
            total=total_steps, initial=start_step, desc=stage, disable=not progress, dynamic_ncols=True
        )
        self.tb = _tensorboard(run_dir / "tb") if tensorboard else None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k != "step":
                    self.tb.add_scalar(k, v, step)
        self.bar.update(step - self.bar.n)
        shown = {
            k: metrics[k] for k in ("reward/total", "accuracy", "loss", "kl") if metrics.get(k) is not None
        }
        self.bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in shown.items()}, refresh=False)

    def samples(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self._samples.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._samples.flush()

    def warn(self, message: str) -> None:
        log.warning(message)
        self.bar.write(f"warning: {message}")

    def close(self) -> None:
        self.bar.close()
        self._metrics.close()
        self._samples.close()
        if self.tb is not None:
            self.tb.close()


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(path))
