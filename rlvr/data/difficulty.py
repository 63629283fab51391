"""Difficulty filtering: sample k completions per prompt with any `Engine`, keep the prompts whose
pass rate lies in a range, write the pass rates.

Why: GRPO-style advantages are zero for a group whose rewards are all equal, so a prompt the model
always (pass rate 1) or never (0) solves teaches nothing; the usual filter keeps (0, 1), or a
narrower band such as [0.1, 0.9] (as in the curation of Open-Reasoner-Zero and Skywork-OR1, and
DAPO's dynamic sampling does the same online).  A sample is correct when its score's "accuracy"
part (or its total, for a task without one) is at least 0.5, as in evaluation.

Resumable: each batch's results are appended to a JSONL cache and fsync'd; a run killed mid-write
leaves at most a truncated last line, which is dropped when the cache is opened again (the scheme
of rlvr/evaluation/cache.py, duplicated here because rlvr.data sits below rlvr.evaluation).  The
cache key holds the engine's fingerprint, the task, the example id, k and the sampling settings,
so changing any of them regenerates instead of reusing stale results.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rlvr.data.io import read_append_log, read_rows, write_rows
from rlvr.rollout.base import Engine, SamplingParams
from rlvr.rollout.collect import collect
from rlvr.tasks.base import Task
from rlvr.types import Example, Score

_RANGE = re.compile(r"^\s*([\[(])\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*([\])])\s*$")


@dataclass(frozen=True, slots=True)
class PassRange:
    """An interval of pass rates, each end open or closed: "(0, 1)", "[0.1, 0.9]", "(0, 1]"."""

    low: float = 0.0
    high: float = 1.0
    low_closed: bool = False
    high_closed: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"pass-rate range {self}: need 0 <= low <= high <= 1")
        if self.low == self.high and not (self.low_closed and self.high_closed):
            raise ValueError(f"pass-rate range {self} is empty: close both ends to keep exactly {self.low}")

    @classmethod
    def parse(cls, text: str | PassRange) -> PassRange:
        if isinstance(text, PassRange):
            return text
        m = _RANGE.match(text)
        if m is None:
            raise ValueError(
                f"pass-rate range {text!r}: write it as an interval such as '(0,1)', '[0.1,0.9]' or '(0,1]' "
                "('(' / ')' exclude the end, '[' / ']' include it)"
            )
        try:
            low, high = float(m[2]), float(m[3])
        except ValueError as err:
            raise ValueError(f"pass-rate range {text!r}: {err}") from err
        return cls(low, high, m[1] == "[", m[4] == "]")

    def __contains__(self, rate: float) -> bool:
        above = rate >= self.low if self.low_closed else rate > self.low
        below = rate <= self.high if self.high_closed else rate < self.high
        return above and below

    def __str__(self) -> str:
        return (
            f"{'[' if self.low_closed else '('}{self.low:g}, {self.high:g}{']' if self.high_closed else ')'}"
        )


@dataclass(frozen=True, slots=True)
class PassRate:
    """One prompt's result: `correct` of `k` samples were correct; `kept` when the rate is in range."""

    example_id: str
    k: int
    correct: int
    kept: bool
    source: str | None = None

    @property
    def pass_rate(self) -> float:
        return self.correct / self.k

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.example_id, "pass_rate": self.pass_rate, "k": self.k, "correct": self.correct,
                "kept": self.kept, "source": self.source}  # fmt: skip


@dataclass
class DifficultyResult:
    rates: list[PassRate]
    keep: PassRange
    kept: list[Example]
    n_generated: int  # prompts sampled in this run (the others came from the cache)

    def summary(self) -> dict[str, Any]:
        n = len(self.rates)
        return {"n_prompts": n, "n_kept": len(self.kept), "keep": str(self.keep), "n_generated": self.n_generated,
                "n_all_correct": sum(r.correct == r.k for r in self.rates),
                "n_all_wrong": sum(r.correct == 0 for r in self.rates)}  # fmt: skip


class PassCache:
    """JSONL map from a key (dict) to the per-sample correctness of one prompt; append-only."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self.records: dict[str, list[bool]] = {}
        if self.path is not None and self.path.exists():
            self._load()

    def put_many(self, items: Sequence[tuple[str, list[bool]]]) -> None:
        self.records.update(items)
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps({"key": k, "correct": v}) + "\n" for k, v in items))
            f.flush()
            os.fsync(f.fileno())

    def _load(self) -> None:
        assert self.path is not None
        rows = read_append_log(self.path, lambda row: (row["key"], [bool(c) for c in row["correct"]]),
                               "a pass-rate cache entry", "delete the file to start over")  # fmt: skip
        self.records.update(rows)


def settings_hash(params: SamplingParams, **extra: Any) -> str:
    settings = {k: v for k, v in params.as_dict().items() if k not in ("n", "seed")}
    blob = json.dumps({**settings, **extra}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _batch_seed(seed: int, example_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def is_correct(score: Score) -> bool:
    return score.parts.get("accuracy", score.total) >= 0.5


def filter_by_difficulty(
    engine: Engine,
    tokenizer: Any,
    task: Task,
    examples: Sequence[Example],
    *,
    k: int = 8,
    keep: PassRange | str = "(0, 1)",
    params: SamplingParams | None = None,
    cache_path: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    chat_template: bool = False,
) -> DifficultyResult:
    """Sample `k` completions of each example (those not in the cache), score them with the task,
    and keep the examples whose pass rate is in `keep`.  `params.n` and `params.seed` are set here:
    each batch's seed derives from `seed` and its first example id, so a resumed run repeats the calls."""
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"example id {dup!r} appears twice: pass-rate cache keys need unique ids")
    keep = PassRange.parse(keep)
    params = replace(params or SamplingParams(), n=k)
    grader = _grading_view(task) if chat_template else task
    cache = PassCache(cache_path)
    settings = settings_hash(params, chat_template=chat_template, seed=seed)
    fp = engine.fingerprint()
    keys = [json.dumps([fp, task.name, ex.id, k, settings]) for ex in examples]
    todo = [(ex, key) for ex, key in zip(examples, keys) if key not in cache.records]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        call = replace(params, seed=_batch_seed(seed, batch[0][0].id))
        groups = collect(
            engine, tokenizer, grader, [ex for ex, _ in batch], call, chat_template=chat_template
        )
        cache.put_many([(key, [is_correct(s) for s in g.scores]) for (_, key), g in zip(batch, groups)])
    rates = []
    for ex, key in zip(examples, keys):
        correct = cache.records[key]
        rate = PassRate(ex.id, len(correct), sum(correct), False, ex.meta.get("source"))
        rates.append(replace(rate, kept=rate.pass_rate in keep))
    kept = [ex for ex, r in zip(examples, rates) if r.kept]
    return DifficultyResult(rates=rates, keep=keep, kept=kept, n_generated=len(todo))


def _grading_view(task: Task) -> Task:
    """Chat-template completions are graded without the plain template's prefix (rlvr.tasks.base)."""
    if "prefix" not in inspect.signature(task.score).parameters:
        return task
    return _NoPrefix(task)  # type: ignore[return-value]


class _NoPrefix:
    def __init__(self, task: Any) -> None:
        self._task, self.name = task, task.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._task, attr)

    def score(self, example: Example, completion: str) -> Score:
        return self._task.score(example, completion, prefix="")


def write_kept(
    result: DifficultyResult, task: Task, out: str | os.PathLike[str], *, split: str | None = None
) -> int:
    """Write the kept prompts to `out`: a file task's original rows (every field, in file order; `split`
    names the split of an HF DatasetDict), any other task's examples as {"id", "prompt", "gold", "meta"}."""
    path = getattr(task, "path", None)
    sources = {ex.meta.get("source") for ex in result.kept}
    if path is not None and None not in sources:
        fmt, split = getattr(task, "format", None), split or getattr(task, "split", None)
        return write_rows(_rows_at(Path(path), fmt, split, sources), out)
    records = (
        {"id": ex.id, "prompt": ex.prompt, "gold": ex.gold, "meta": dict(ex.meta)} for ex in result.kept
    )
    return write_rows(records, out)


def _rows_at(path: Path, fmt: str | None, split: str | None, locs: set[Any]) -> Iterator[dict[str, Any]]:
    for loc, row in read_rows(path, format=fmt, split=split):
        if loc in locs:
            yield row
