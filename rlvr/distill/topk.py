"""Teacher top-k logprobs precomputed to disk, so offline KD needs no resident teacher.

    store = TopKStore("teacher_topk.jsonl")
    store.fill(teacher_engine, pairs, temperature=1.0, top_k=16, vocab=vocab_digest(tokenizer))  # resumable
    teacher = store.reader(vocab=vocab_digest(student_tokenizer))   # an Engine-like `score` from the file

One JSON line per (prompt ids, completion ids, temperature): the sampled-token logprobs and each
position's top-k ids and logprobs, as `Engine.score` returns them.  The first line is a header with
the vocabulary digest and k, so a student with another vocabulary, or a larger k than was stored, is
refused instead of reading meaningless ids.  Appends are fsync'd per batch; a truncated last line
(a crash mid-write) is dropped and cut when the file is opened again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlvr.data.io import DataError, read_append_log
from rlvr.rollout.base import TokenScores

__all__ = ["TopKReader", "TopKStore", "pair_key", "vocab_digest"]


def vocab_digest(tokenizer: Any) -> str:
    """A hash of the token -> id map (what token-level distillation needs to be shared)."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def pair_key(prompt: Sequence[int], completion: Sequence[int], temperature: float) -> str:
    return hashlib.sha256(json.dumps([list(prompt), list(completion), temperature]).encode()).hexdigest()[:24]


class TopKStore:
    """The JSONL file of precomputed teacher scores (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.header: dict[str, Any] | None = None
        self.rows: dict[str, TokenScores] = {}
        if self.path.exists():
            self._load()

    def fill(self, teacher: Any, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, temperature: float,
             top_k: int, vocab: str, batch_size: int = 32) -> int:  # fmt: skip
        """Score the pairs not yet stored with `teacher` (an Engine) and append them; returns how many."""
        if self.header is None:
            self.header = {"vocab": vocab, "top_k": top_k}
            self._append([json.dumps({"header": self.header})])
        elif self.header["vocab"] != vocab or self.header["top_k"] != top_k:
            raise DataError(f"{self.path}: holds top-{self.header['top_k']} scores over vocabulary "
                            f"{self.header['vocab']}, not top-{top_k} over {vocab}; use a new file")  # fmt: skip
        todo, seen = [], set()
        for p, c in pairs:
            key = pair_key(p, c, temperature)
            if key not in self.rows and key not in seen:
                seen.add(key)
                todo.append((key, p, c))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            scores = teacher.score([p for _, p, _ in batch], [c for _, _, c in batch], temperature=temperature,
                                   top_k=top_k)  # fmt: skip
            lines = []
            for (key, _, _), s in zip(batch, scores):
                self.rows[key] = s
                lines.append(json.dumps({"key": key, "logprobs": s.logprobs, "top_ids": s.top_ids,
                                         "top_logprobs": s.top_logprobs}))  # fmt: skip
            self._append(lines)
        return len(todo)

    def reader(self, *, vocab: str) -> TopKReader:
        if self.header is None:
            raise DataError(f"{self.path}: no precomputed teacher scores yet (fill it with the teacher first)")
        if self.header["vocab"] != vocab:
            raise DataError(f"{self.path}: the teacher scores were computed over another vocabulary "
                            f"({self.header['vocab']}, the student's is {vocab}); token-level KD needs one")  # fmt: skip
        return TopKReader(self)

    def _append(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())

    def _load(self) -> None:
        rows = read_append_log(self.path, _topk_record, "a teacher top-k row", "delete the file to recompute it")
        for key, value in rows:
            if key is None:
                self.header = value
            else:
                self.rows[key] = value


class TopKReader:
    """`score` from the file: the teacher's answer for each pair (its first `top_k` candidates)."""

    version = 0

    def __init__(self, store: TopKStore) -> None:
        self.store = store

    def score(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
              temperature: float = 1.0, top_k: int = 0) -> list[TokenScores]:  # fmt: skip
        stored_k = self.store.header["top_k"] if self.store.header else 0
        if top_k > stored_k:
            raise DataError(f"{self.store.path}: holds the teacher's top-{stored_k}, but top-{top_k} was asked")
        out = []
        for p, c in zip(prompts, completions):
            s = self.store.rows.get(pair_key(p, c, temperature))
            if s is None:
                raise DataError(f"{self.store.path}: no teacher scores for a sequence of this run (prompt of "
                                f"{len(p)} tokens, completion of {len(c)}); fill the file for this data first")  # fmt: skip
            ids = tuple(row[:top_k] for row in s.top_ids or ())
            lps = tuple(row[:top_k] for row in s.top_logprobs or ())
            out.append(TokenScores(s.logprobs, ids, lps))
        return out

    def fingerprint(self) -> str:
        return f"topk-file:{self.store.path}"


def _topk_record(row: Any) -> tuple[Any, Any]:
    """(None, header) or (key, the teacher's TokenScores) for one line of the top-k file."""
    if "header" in row:
        return None, dict(row["header"])
    return row["key"], TokenScores(tuple(row["logprobs"]), tuple(map(tuple, row["top_ids"])),
                                   tuple(map(tuple, row["top_logprobs"])))  # fmt: skip
