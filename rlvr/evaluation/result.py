"""`EvalResult`: corpus metrics with error bars, per-example rows, settings; JSON and a printable table."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlvr.errors import check_output_file
from rlvr.evaluation.metrics import MetricValue
from rlvr.provenance import provenance
from rlvr.types import Group


@dataclass
class EvalResult:
    """Corpus metrics (`metrics["pass@1"]` ...), one row per example, the settings, and notes.

    `groups` holds the scored samples (for best-of-N reranking); it is not written to JSON.
    """

    metrics: dict[str, MetricValue]
    per_example: list[dict[str, Any]]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list, repr=False)

    def flat(self, prefix: str = "eval/") -> dict[str, float]:
        """{"eval/pass@1": value, ...}: the point estimates, for metrics.jsonl."""
        return {f"{prefix}{name}": mv.value for name, mv in self.metrics.items()}

    def to_json(self) -> str:
        """The config (task, sampling parameters, model fingerprint, ...), metrics, notes, per-example rows,
        and `provenance` (rlvr version, git commit, library versions)."""
        payload = {
            "config": self.config,
            "provenance": provenance(),
            "metrics": {name: mv.to_dict() for name, mv in self.metrics.items()},
            "notes": self.notes,
            "per_example": self.per_example,
        }
        return json.dumps(payload, indent=2, sort_keys=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_json()` atomically (temp file in the same folder, then os.replace)."""
        out = check_output_file(path, "result file")
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return out

    def table(self) -> str:
        """A printable table: metric, value, ± standard error, 95% bootstrap interval."""
        head = f"{self.config.get('task', '?')}: {self.config.get('n_examples', '?')} problems, n={self.config.get('n')}"
        rows = [("metric", "value", "± s.e.", "95% CI")]
        for name, mv in self.metrics.items():
            ci = "-" if np.isnan(mv.ci_low) else f"[{mv.ci_low:.4f}, {mv.ci_high:.4f}]"
            se = "-" if np.isnan(mv.stderr) else f"{mv.stderr:.4f}"
            rows.append((name, f"{mv.value:.4f}", se, ci))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(2, "  ".join("-" * w for w in widths))
        return "\n".join(lines + [f"note: {note}" for note in self.notes])
