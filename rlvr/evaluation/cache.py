"""A resumable JSONL generation cache for evaluation.

One line per generated sample: {"key": {...}, "record": {...}}.  The key is (model fingerprint,
task name, example id, sample index, sampling-params hash); the sample index is part of the key,
so repeated samples of one prompt are never merged.  Writes are appended, flushed and fsync'd
once per batch; a run killed mid-write leaves at most a truncated last line, which is dropped
(and cut from the file) when the cache is opened again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlvr.errors import UserError
from rlvr.rollout.base import SamplingParams


class CacheError(UserError, ValueError):
    """A cache file that is not one (a line in the middle is not an entry): the user deletes or moves it."""


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Identifies one generated sample."""

    model: str
    task: str
    example_id: str
    sample_index: int
    params_hash: str


def params_hash(params: SamplingParams, **extra: Any) -> str:
    """Stable hash of the sampling settings that change what a sample is.

    `n` is left out (the sample index covers it: raising n reuses the samples already drawn);
    `extra` folds in other settings that change generations (e.g. chat_template, the eval seed).
    """
    settings = {k: v for k, v in params.as_dict().items() if k != "n"}
    settings.update(extra)
    blob = json.dumps(settings, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class GenerationCache:
    """JSONL-backed map from `CacheKey` to a JSON-serialisable record (dict).

    `path=None` gives an in-memory cache (nothing written), for evaluations that need no resume.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self._records: dict[CacheKey, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            self._load()

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._records

    def get(self, key: CacheKey) -> dict[str, Any] | None:
        return self._records.get(key)

    def missing(self, keys: Iterable[CacheKey]) -> list[CacheKey]:
        """The keys not yet cached, in the given order."""
        return [k for k in keys if k not in self._records]

    def put(self, key: CacheKey, record: Mapping[str, Any]) -> None:
        self.put_many([(key, record)])

    def put_many(self, items: Iterable[tuple[CacheKey, Mapping[str, Any]]]) -> None:
        """Append records (one batch) and fsync once; a key already present is overwritten."""
        lines = []
        for key, record in items:
            rec = dict(record)
            lines.append(json.dumps({"key": asdict(key), "record": rec}, sort_keys=True) + "\n")
            self._records[key] = rec
        if not lines or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            os.fsync(f.fileno())

    def _load(self) -> None:
        assert self.path is not None
        data = self.path.read_bytes()
        good_end = 0  # byte offset just past the last complete, parseable line
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl + 1
            line = data[pos:end]
            try:
                row = json.loads(line)
                key = CacheKey(**row["key"])
                record = row["record"]
            except (ValueError, KeyError, TypeError) as e:
                if nl < 0 or end == len(data):  # the last line: a write cut short by a crash
                    break
                lineno = data.count(b"\n", 0, pos) + 1
                raise CacheError(
                    f"{self.path}: line {lineno} is not a cache entry ({e}); "
                    "the cache is corrupt — delete the file to regenerate"
                ) from e
            if nl < 0:  # parseable but without its newline: complete it before appending more
                break
            self._records[key] = record
            good_end = end
            pos = end
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
