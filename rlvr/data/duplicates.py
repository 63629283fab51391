"""Exact and near-duplicate removal: a function over an iterable of texts -> one `Decision` per row.

Rule (the same for both methods): rows are read in order, and a row is dropped when an earlier row
(kept or not) is its duplicate: the same normalised text (`method="exact"`), or, for
`method="minhash"`, an LSH candidate whose estimated Jaccard similarity of `ngram`-token shingle
sets is at least `threshold` (Broder 1997; banding as in Mining of Massive Datasets ch. 3.4; the
near-dedup recipe of Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better").
So the first occurrence is always the row kept.  A dropped row joins the cluster of the row it
matched; each cluster has exactly one kept row, and `Decision.cluster` is its index.

Deviation from a plain `MinHashLSH` query: candidates are verified against their signatures (the
fraction of equal MinHash values estimates Jaccard), so an LSH bucket collision alone never drops a
row.  The `bands` x `rows` split defaults to datasketch's optimum for `threshold` and `num_perm`,
with false negatives weighted 9:1 over false positives (verification removes the latter).

Parallelism: shingling and MinHash run in a process pool over chunks of `chunk_size` texts (a
bounded window of chunks in flight, so the input streams); the index and the decisions stay in
the calling process, in input order.  `dedup` is the unit a distributed runner would call per shard
(docs/data.md: datatrove's MinHash stages or Ray Data for more than one machine).
"""

from __future__ import annotations

import bisect
import collections
import functools
import itertools
import multiprocessing as mp
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlvr.data.index import KeyIndex
from rlvr.data.io import DataError, RowSource, field_text, write_json, write_rows
from rlvr.data.minhash import band_keys, chunk_work, datasketch

P = TypeVar("P")


class DedupConfig(BaseModel):
    """How to deduplicate; every default lives here, on its field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["exact", "minhash"] = "minhash"
    ngram: int = Field(3, ge=1, description="shingle size in tokens (3 suits short prompts; 5 for documents)")
    num_perm: int = Field(128, ge=2, le=1024, description="MinHash permutations")
    threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="estimated Jaccard at or above which rows are duplicates"
    )
    bands: int | None = Field(
        None, ge=1, description="LSH bands (default: datasketch's optimum for threshold)"
    )
    rows: int | None = Field(None, ge=1, description="MinHash values per band (with bands)")
    seed: int = Field(1, ge=0, description="permutation seed (datasketch's default is 1)")
    workers: int | None = Field(None, ge=1, description="processes for MinHash (default: every core)")
    chunk_size: int = Field(4096, ge=1, description="texts per worker task")

    @model_validator(mode="after")
    def _check_bands(self) -> DedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then they follow from threshold)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands x rows = {self.bands} x {self.rows} = {self.bands * self.rows} exceeds "
                f"num_perm = {self.num_perm}: lower one of them or raise num_perm"
            )
        return self

    @property
    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows) of the LSH banding."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return _optimal_bands(self.threshold, self.num_perm)

    @property
    def n_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# LSH candidates are verified against their signatures, so a false positive costs one comparison
# while a false negative loses a duplicate: the banding is chosen with false negatives weighted 9:1.
# (At threshold 0.8 / 128 permutations: 14 x 9 instead of the balanced 9 x 13; a pair at the
# threshold becomes a candidate with probability 0.87 instead of 0.40.)
FALSE_NEGATIVE_WEIGHT = 0.9


@functools.lru_cache(maxsize=64)
def _optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    # The maths is datasketch's: minimise the weighted false-positive and false-negative areas.
    return datasketch().lsh._optimal_param(
        threshold, num_perm, 1 - FALSE_NEGATIVE_WEIGHT, FALSE_NEGATIVE_WEIGHT
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What happened to row `index` (0-based, in input order).

    `keep` is False for a duplicate; `duplicate_of` is the earlier row it matched and `similarity`
    the estimated Jaccard to it (1.0 for exact duplicates); `cluster` is the kept row of its cluster
    (the row itself when kept).
    """

    index: int
    keep: bool
    cluster: int
    duplicate_of: int | None = None
    similarity: float | None = None


class Deduplicator:
    """The in-order state: LSH index, every row's signature (for verification) and cluster."""

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self.bands, self.rows = (1, 0) if config.method == "exact" else config.lsh_params
        self.index = KeyIndex()
        self.n = 0
        self._starts: list[int] = []  # first row of each chunk
        self._sigs: list[np.ndarray] = []  # per chunk [C, num_perm] uint32 (kept, not copied into one array)
        self._clusters: list[np.ndarray] = []  # per chunk [C] int64

    def _locate(self, row: int) -> tuple[int, int]:
        chunk = bisect.bisect_right(self._starts, row) - 1
        return chunk, row - self._starts[chunk]

    def _row_sig(self, row: int) -> np.ndarray:
        chunk, i = self._locate(row)
        return self._sigs[chunk][i]

    def _cluster_of(self, row: int) -> int:
        chunk, i = self._locate(row)
        return int(self._clusters[chunk][i])

    def process(self, exact: np.ndarray, sigs: np.ndarray | None) -> list[Decision]:
        """Decide one chunk (rows `self.n` …): exact keys [C] uint64, signatures [C, num_perm] or None."""
        count, base = len(exact), self.n
        keys = exact[:, None] if sigs is None else band_keys(sigs, self.bands, self.rows)  # [C, B]
        cand = self._candidates(keys, base)  # [C, B] earliest earlier row sharing the key, or -1
        if sigs is not None:
            self._sigs.append(sigs)
        clusters = base + np.arange(count, dtype=np.int64)
        self._starts.append(base)
        self._clusters.append(clusters)
        self.n += count
        out = []
        for i, has in enumerate((cand >= 0).any(axis=1)):
            row = base + i
            match = self._best_match(row, cand[i]) if has else None
            if match is None:
                out.append(Decision(row, True, row))
            else:
                clusters[i] = self._cluster_of(match[0])
                out.append(Decision(row, False, int(clusters[i]), match[0], match[1]))
        return out

    def _candidates(self, keys: np.ndarray, base: int) -> np.ndarray:
        count, width = keys.shape
        uniq, first, inverse = np.unique(keys.ravel(), return_index=True, return_inverse=True)
        found = self.index.find(uniq)  # rows of earlier chunks: always earlier than this chunk's
        first_row = first // width  # the row in this chunk that has the key first
        new = found < 0
        self.index.add(uniq[new], base + first_row[new])
        earlier = np.where(new, base + first_row, found)[inverse.ravel()].reshape(count, width)
        here = base + np.arange(count)[:, None]
        return np.where(earlier < here, earlier, -1)

    def _best_match(self, row: int, cand: np.ndarray) -> tuple[int, float] | None:
        """(earlier row, estimated Jaccard) of the most similar verified candidate (earliest on ties)."""
        rows = sorted({int(c) for c in cand if c >= 0})
        if self.config.method == "exact":
            return rows[0], 1.0
        sig = self._row_sig(row)
        sims = [float(np.mean(self._row_sig(c) == sig)) for c in rows]
        best = int(np.argmax(sims))
        return (rows[best], sims[best]) if sims[best] >= self.config.threshold else None


def dedup(texts: Iterable[str], config: DedupConfig | None = None) -> Iterator[Decision]:
    """One `Decision` per text, in order, streamed (see the module docstring for the rule)."""
    chunks = ((None, chunk) for chunk in _batched(texts, (config or DedupConfig()).chunk_size))
    for _, decisions in dedup_chunks(chunks, config):
        yield from decisions


def dedup_rows(
    rows: Iterable[dict[str, Any]], field: str, config: DedupConfig | None = None
) -> Iterator[tuple[dict[str, Any], Decision]]:
    """(row, decision) for rows given as dicts, deduplicated on the text of `field` (a dotted path)."""
    config = config or DedupConfig()
    located = ((f"row {i + 1}", row) for i, row in enumerate(rows))
    chunks = (
        (batch, [field_text(row, field, loc) for loc, row in batch])
        for batch in _batched(located, config.chunk_size)
    )
    for batch, decisions in dedup_chunks(chunks, config):
        for (_, row), d in zip(batch, decisions):
            yield row, d


def clusters(decisions: Iterable[Decision]) -> dict[int, list[int]]:
    """Kept row -> the rows of its cluster (itself first), for clusters of more than one row."""
    out: dict[int, list[int]] = {}
    for d in decisions:
        if not d.keep:
            out.setdefault(d.cluster, [d.cluster]).append(d.index)
    return out


def dedup_chunks(
    chunks: Iterable[tuple[P, list[str]]], config: DedupConfig | None = None
) -> Iterator[tuple[P, list[Decision]]]:
    """Like `dedup`, over (payload, texts) chunks (a worker task each); each payload (e.g. the
    chunk's rows) comes back with the chunk's decisions."""
    config = config or DedupConfig()
    state = Deduplicator(config)
    for payload, (exact, sigs) in _computed(chunks, config):
        yield payload, state.process(exact, sigs)


def _computed(chunks: Iterable[tuple[P, list[str]]], config: DedupConfig) -> Iterator[tuple[P, Any]]:
    """(payload, chunk_work result) in order; a pool of workers once there is more than one chunk."""
    work = functools.partial(
        chunk_work, method=config.method, ngram=config.ngram, num_perm=config.num_perm, seed=config.seed
    )
    it = iter(chunks)
    head = list(itertools.islice(it, 2))
    if len(head) < 2 or config.n_workers == 1:
        for payload, texts in itertools.chain(head, it):
            yield payload, work(texts)
        return
    # fork on Linux: workers start at once and need no importable __main__ (stdin, notebooks); they only
    # run numpy and hashlib.  Elsewhere the platform's default (spawn on macOS and Windows).
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else None)
    with ctx.Pool(config.n_workers) as pool:
        pending: deque[tuple[P, Any]] = deque()
        for payload, texts in itertools.chain(head, it):
            pending.append((payload, pool.apply_async(work, (texts,))))
            if len(pending) >= 2 * config.n_workers:  # bounded: the input is read as it is consumed
                payload_, result = pending.popleft()
                yield payload_, result.get()
        while pending:
            payload_, result = pending.popleft()
            yield payload_, result.get()


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


@dataclass
class DedupReport:
    """Counts and the clusters of more than one row: for each, the kept row and the dropped ones."""

    n_rows: int = 0
    n_kept: int = 0
    n_skipped: int = 0
    clusters: dict[int, dict[str, Any]] = field(default_factory=dict)  # kept row -> cluster record
    skipped: list[str] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        return self.n_rows - self.n_kept

    def as_dict(self, **context: Any) -> dict[str, Any]:
        return {
            **context,
            "n_rows": self.n_rows, "n_kept": self.n_kept, "n_dropped": self.n_dropped,
            "n_skipped": self.n_skipped, "n_clusters": len(self.clusters),
            "clusters": list(self.clusters.values()), "skipped": self.skipped,
        }  # fmt: skip


def dedup_file(
    source: RowSource,
    *,
    out: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    config: DedupConfig | None = None,
) -> DedupReport:
    """Deduplicate the rows of `source` on its field: the kept rows (first occurrences, in order) go to
    `out`, the clusters and counts to the JSON `report`; both written atomically, either optional."""
    config = config or DedupConfig()
    if out is not None and Path(out).resolve() == source.path.resolve():
        raise DataError(f"--out {out} is the input file: write the deduplicated rows to another path")
    result = DedupReport()
    locs: list[str] = []  # every row's location, to name a cluster's kept row when it gets a duplicate

    def kept_rows() -> Iterator[dict[str, Any]]:
        chunks = ((batch, [text for _, _, text in batch]) for batch in _batched(source, config.chunk_size))
        for batch, decisions in dedup_chunks(chunks, config):
            for (loc, row, _), d in zip(batch, decisions):
                locs.append(loc)
                if d.keep:
                    result.n_kept += 1
                    yield row
                else:
                    _add_to_cluster(result, locs, d)
        result.n_rows = len(locs)

    if out is None:
        collections.deque(kept_rows(), maxlen=0)
    else:
        write_rows(kept_rows(), out)
    result.n_skipped, result.skipped = source.n_skipped, source.skipped
    if report is not None:
        bands, rows = (1, 0) if config.method == "exact" else config.lsh_params
        context = {
            "input": str(source.path),
            "field": source.field,
            "config": config.model_dump(),
            "lsh": {"bands": bands, "rows": rows},
        }
        write_json(report, result.as_dict(**context))
    return result


def _add_to_cluster(result: DedupReport, locs: list[str], d: Decision) -> None:
    cluster = result.clusters.setdefault(
        d.cluster, {"kept": {"row": d.cluster, "loc": locs[d.cluster]}, "dropped": []}
    )
    cluster["dropped"].append(
        {
            "row": d.index,
            "loc": locs[d.index],
            "duplicate_of": d.duplicate_of,
            "similarity": round(d.similarity or 0.0, 4),
        }
    )
