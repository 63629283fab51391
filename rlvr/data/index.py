"""`KeyIndex`: the first row seen with each 64-bit key, in a few sorted numpy runs.

The LSH index must remember, for every (row, band), which row first had that band key.  Python
dicts or datasketch's `MinHashLSH` (a set per bucket) cost hundreds of bytes per entry: several GB
at 1M rows x 9 bands.  Here an entry is 16 bytes (a uint64 key and an int64 row) in sorted arrays,
looked up with `np.searchsorted`.  New keys arrive a chunk at a time as a new run; runs are merged
like a binary counter (a run is folded into the one before it while that one is at most twice its
size), so there are O(log N) runs and each key is copied O(log N) times in all.
"""

from __future__ import annotations

import numpy as np


class KeyIndex:
    """Map uint64 key -> int64 row of its first insertion; keys are added only if absent."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted keys [M] uint64, rows [M] int64)

    def __len__(self) -> int:
        return sum(len(k) for k, _ in self.runs)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.runs)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The stored row of each key, -1 where absent: [M] uint64 -> [M] int64."""
        out = np.full(keys.shape, -1, dtype=np.int64)
        for run_keys, run_rows in self.runs:  # runs hold disjoint keys: at most one hit per key
            pos = np.searchsorted(run_keys, keys)
            pos[pos == len(run_keys)] = 0
            hit = run_keys[pos] == keys
            out[hit] = run_rows[pos[hit]]
        return out

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Insert keys that are not in the index yet and are unique among themselves."""
        if len(keys) == 0:
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], rows[order].astype(np.int64)))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k2, v2), (k1, v1) = self.runs.pop(), self.runs.pop()
            pos = np.searchsorted(k1, k2)  # a linear-time merge of two sorted runs
            self.runs.append((np.insert(k1, pos, k2), np.insert(v1, pos, v2)))
