"""Read a run directory tolerantly: every file is optional and every malformed line becomes a note.

The report must render for a run that crashed mid-write (truncated last JSONL line), a run that
logged NaN or None, and a directory with nothing in it yet, so nothing here raises on file content.
Layout (docs: notes/COMMON.md): config.json, metrics.jsonl, samples.jsonl, eval/*.json, summary.json.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# A series: (steps, values), both finite floats, sorted by step, one value per step.
Series = tuple[list[float], list[float]]


@dataclass
class RunData:
    """Everything the report shows, already parsed; `notes` lists what could not be read and why."""

    run_dir: Path
    metrics: dict[str, Series] = field(default_factory=dict)
    n_metric_rows: int = 0
    skipped_steps: list[float] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    config: Any = None
    summary: dict[str, Any] | None = None
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics_mtime: datetime | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The run's name: `config["name"]` / `config["run_name"]` when set, else the folder name."""
        if isinstance(self.config, dict):
            for key in ("run_name", "name"):
                if isinstance(self.config.get(key), str) and self.config[key].strip():
                    return self.config[key].strip()
        return self.run_dir.resolve().name or str(self.run_dir)


def as_float(value: Any) -> float | None:
    """A finite float from a JSON value (numbers, bools, numeric strings, {"value": x}); else None."""
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def read_jsonl(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Rows of a JSONL file; blank lines are ignored, bad lines (e.g. a truncated last one) noted."""
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        notes.append(f"{path.name}: could not be read ({err}).")
        return []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            where = "last line (truncated write?)" if lineno == len(lines) else f"line {lineno}"
            notes.append(f"{path.name}: {where} is not valid JSON and was skipped.")
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            notes.append(f"{path.name}: line {lineno} is not a JSON object and was skipped.")
    return rows


def read_json(path: Path, notes: list[str]) -> Any:
    """A JSON file's content, or None (with a note) when it exists but cannot be parsed."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as err:
        notes.append(f"{path.name}: could not be parsed ({err}); it is left out of the report.")
        return None


def metric_series(rows: list[dict[str, Any]]) -> dict[str, Series]:
    """Columns of the metrics rows: finite numeric values only; a repeated step keeps its last row.

    A row without a usable "step" takes its position (1-based) in the file.
    """
    by_step: dict[float, dict[str, float]] = {}
    for index, row in enumerate(rows, start=1):
        step = as_float(row.get("step"))
        step = float(index) if step is None else step
        values = by_step.setdefault(step, {})
        values.clear()  # a resumed run re-logs a step: the newest row wins, whole
        for key, raw in row.items():
            value = None if key == "step" or isinstance(raw, dict) else as_float(raw)
            if value is not None:
                values[key] = value
    series: dict[str, Series] = {}
    for step in sorted(by_step):
        for key, value in by_step[step].items():
            steps, values = series.setdefault(key, ([], []))
            steps.append(step)
            values.append(value)
    return series


def _eval_order(name: str) -> tuple[int, list[Any]]:
    """ "before*" first, "after*" last, the rest in natural order (step_2 before step_10)."""
    rank = 0 if name.startswith("before") else 2 if name.startswith("after") else 1
    return rank, [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name)]


def read_evals(eval_dir: Path, notes: list[str]) -> dict[str, dict[str, Any]]:
    """eval/*.json (before, others in natural order, after), keyed by file stem; files without a "metrics" object are noted."""
    if not eval_dir.is_dir():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(eval_dir.glob("*.json"), key=lambda p: _eval_order(p.stem)):
        data = read_json(path, notes)
        if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
            out[path.stem] = data
        elif data is not None:
            notes.append(f'eval/{path.name}: has no "metrics" object; it is left out of the report.')
    return out


def load_run(run_dir: str | Path) -> RunData:
    """Parse every report input under `run_dir`; raises FileNotFoundError only if the folder is missing."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory {str(root)!r} does not exist: pass the folder a run wrote")
    run = RunData(run_dir=root)
    rows = read_jsonl(root / "metrics.jsonl", run.notes)
    run.n_metric_rows = len(rows)
    run.metrics = metric_series(rows)
    skipped = run.metrics.get("skipped", ([], []))
    run.skipped_steps = [s for s, v in zip(*skipped) if v > 0]
    if (root / "metrics.jsonl").is_file():
        stamp = (root / "metrics.jsonl").stat().st_mtime
        run.metrics_mtime = datetime.fromtimestamp(stamp, tz=UTC)
    run.samples = read_jsonl(root / "samples.jsonl", run.notes)
    run.config = read_json(root / "config.json", run.notes)
    summary = read_json(root / "summary.json", run.notes)
    if summary is not None and not isinstance(summary, dict):
        run.notes.append("summary.json: is not a JSON object; it is left out of the report.")
        summary = None
    run.summary = summary
    run.evals = read_evals(root / "eval", run.notes)
    return run
