"""Rejection sampling from a teacher (DeepSeek-R1's data collection for distillation, §2.3.3 / §2.4).

    for each prompt: the teacher samples k completions -> the task's verifiers grade each
    -> keep the correct ones (accuracy part >= 0.5, and the format part == 1 unless require_format
       is off) -> drop exact duplicates (and near duplicates: MinHash, rlvr.data) -> select
       ("all", or "shortest" first) up to max_per_prompt -> one SFT row each, with provenance

A row is what `kind = "sft"` reads with `data.path` (`prompt` = the rendered prompt text,
`completion` = the teacher's text after it) and what `rlvr verify` re-grades (`example_id`,
`prefix`, `completion`), plus `provenance`: the teacher's weights fingerprint and path, the sampling
parameters, the verifier's parts and total.

Resumable like `rlvr eval`: each batch of prompts' graded samples is appended to a JSONL cache and
fsync'd; a run killed mid-write loses at most its last (truncated) line, dropped on reopening.  The
key holds the teacher's fingerprint, the task, the example id, k and the sampling settings, so a
changed teacher or setting regenerates instead of reusing stale samples.  Selection runs after
generation, so changing the rule re-selects from the cache without sampling again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rlvr.data.difficulty import settings_hash
from rlvr.data.io import read_append_log, write_rows
from rlvr.rollout.base import Engine, SamplingParams
from rlvr.rollout.collect import collect
from rlvr.types import Example, Group, Score

Select = Literal["all", "shortest"]


@dataclass(frozen=True, slots=True)
class RejectionSettings:
    """What counts as a keeper and how many to keep per prompt."""

    k: int = 8  # samples per prompt
    select: Select = "all"  # "all" correct ones (sample order), or the "shortest" first
    max_per_prompt: int | None = None  # m: at most this many rows per prompt (None: no limit)
    require_format: bool = True  # a correct answer in a broken layout is not kept
    near_duplicate_threshold: float | None = None  # MinHash Jaccard >= this within a prompt: dropped

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.select not in ("all", "shortest"):
            raise ValueError(f"select {self.select!r}: choose 'all' or 'shortest'")
        if self.max_per_prompt is not None and self.max_per_prompt < 1:
            raise ValueError(f"max_per_prompt must be >= 1 (or None for no limit), got {self.max_per_prompt}")
        t = self.near_duplicate_threshold
        if t is not None and not 0.0 < t <= 1.0:
            raise ValueError(f"near_duplicate_threshold must be in (0, 1], got {t}")


@dataclass
class RejectionResult:
    rows: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {**c, "n_rows": len(self.rows), "acceptance": c.get("correct", 0) / max(c.get("samples", 0), 1)}


def accepted(score: Score, *, require_format: bool) -> bool:
    """Correct (accuracy part, or the total without one, >= 0.5) and, when asked, well formatted."""
    if score.parts.get("accuracy", score.total) < 0.5:
        return False
    return not require_format or score.parts.get("format", 1.0) >= 1.0


class SampleCache:
    """JSONL map from a key (str) to one prompt's graded samples (list of dicts); append-only."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self.records: dict[str, list[dict[str, Any]]] = {}
        if self.path is not None and self.path.exists():
            self._load()

    def put_many(self, items: Sequence[tuple[str, list[dict[str, Any]]]]) -> None:
        self.records.update(items)
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps({"key": k, "samples": v}, sort_keys=True) + "\n" for k, v in items))
            f.flush()
            os.fsync(f.fileno())

    def _load(self) -> None:
        assert self.path is not None
        rows = read_append_log(self.path, lambda row: (row["key"], list(row["samples"])),
                               "a rejection-sampling cache entry", "delete the file to start over")  # fmt: skip
        self.records.update(rows)


def _batch_seed(seed: int, example_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def _graded(g: Group) -> list[dict[str, Any]]:
    return [{"index": i, "prompt": g.prompt, "prefix": g.prefix, "completion": c.text, "tokens": len(c.token_ids),
             "finish_reason": c.finish_reason, "reward": s.total, "parts": dict(s.parts)}
            for i, (c, s) in enumerate(zip(g.completions, g.scores))]  # fmt: skip


def select_samples(samples: Sequence[dict[str, Any]], settings: RejectionSettings) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The keepers of one prompt's graded samples, and counts of what was dropped why."""
    correct = [s for s in samples if accepted(Score(s["reward"], s["parts"]), require_format=settings.require_format)]
    seen: set[str] = set()
    unique = []
    for s in correct:  # exact duplicates: the first occurrence stays
        if s["completion"] not in seen:
            seen.add(s["completion"])
            unique.append(s)
    counts = {"samples": len(samples), "correct": len(correct), "exact_duplicates": len(correct) - len(unique)}
    if settings.near_duplicate_threshold is not None and len(unique) > 1:
        from rlvr.data.duplicates import DedupConfig, dedup

        config = DedupConfig(method="minhash", threshold=settings.near_duplicate_threshold, workers=1)
        decisions = list(dedup([s["completion"] for s in unique], config))
        counts["near_duplicates"] = sum(not d.keep for d in decisions)
        unique = [s for s, d in zip(unique, decisions) if d.keep]
    if settings.select == "shortest":
        unique = sorted(unique, key=lambda s: (s["tokens"], s["index"]))
    kept = unique[: settings.max_per_prompt]
    counts["selected"] = len(kept)
    return kept, counts


def rejection_sample(
    engine: Engine,
    tokenizer: Any,
    task: Any,
    examples: Sequence[Example],
    *,
    settings: RejectionSettings | None = None,
    params: SamplingParams | None = None,
    cache_path: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    chat_template: bool = False,
    teacher: str | None = None,
    teacher_fingerprint: str | None = None,
) -> RejectionResult:
    """Sample, grade (cached), then select: the SFT rows of the kept teacher completions (module docstring).

    `params.n` and `params.seed` are set here: each batch's seed derives from `seed` and its first example
    id, so a resumed run makes the same calls.  `teacher` names the teacher (its path) in the provenance;
    `teacher_fingerprint` identifies its weights (default: the engine's fingerprint)."""
    settings = settings or RejectionSettings()
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("example ids must be unique: the rejection-sampling cache is keyed by them")
    params = replace(params or SamplingParams(), n=settings.k)
    cache = SampleCache(cache_path)
    fp = teacher_fingerprint or engine.fingerprint()
    digest = settings_hash(params, chat_template=chat_template, seed=seed)
    keys = [json.dumps([fp, task.name, ex.id, settings.k, digest]) for ex in examples]
    todo = [(ex, key) for ex, key in zip(examples, keys) if key not in cache.records]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        call = replace(params, seed=_batch_seed(seed, batch[0][0].id))
        groups = collect(engine, tokenizer, task, [ex for ex, _ in batch], call, chat_template=chat_template)
        cache.put_many([(key, _graded(g)) for (_, key), g in zip(batch, groups)])
    provenance = {"teacher": teacher, "teacher_fingerprint": fp, "sampling": {**params.as_dict(), "seed": seed},
                  "chat_template": chat_template, "task": task.name}  # fmt: skip
    rows: list[dict[str, Any]] = []
    totals: dict[str, int] = {"prompts": len(examples), "generated_prompts": len(todo)}
    for ex, key in zip(examples, keys):
        kept, counts = select_samples(cache.records[key], settings)
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
        totals["prompts_with_rows"] = totals.get("prompts_with_rows", 0) + bool(kept)
        for s in kept:
            rows.append({"example_id": ex.id, "prompt": s["prompt"], "prefix": s["prefix"], "completion": s["completion"],
                         "gold": ex.gold, "reward": s["reward"], "parts": s["parts"],
                         "provenance": {**provenance, "sample_index": s["index"], "tokens": s["tokens"]}})  # fmt: skip
    return RejectionResult(rows, totals)


def write_sft_rows(result: RejectionResult, out: str | os.PathLike[str]) -> int:
    """The rows as JSONL (or Parquet / an HF directory, by the name), atomically; returns the count."""
    return write_rows(result.rows, out)
