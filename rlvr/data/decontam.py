"""N-gram decontamination of training rows against evaluation sets.

A training row is contaminated by an evaluation row when, after `rlvr.data.text.tokens`
normalisation (NFKC, casefold, prose punctuation dropped), any of these holds; the first one found
is reported, with the matching text:

1. "exact": the two whole token sequences are equal (any length).
2. "ngram": they share an `n`-token window.  n = 13 by default, as in GPT-3 (Brown et al. 2020,
   App. C); DeepSeekMath (Shao et al. 2024, §2.1) uses n = 10.
3. "short": one of them is shorter than n tokens, has at least `min_tokens`, and occurs whole, as a
   contiguous token run, inside the other.  This is DeepSeekMath's rule for benchmark texts shorter
   than 10-grams (exact matching for those of at least 3 grams), applied in both directions, because
   procedural training prompts ("12 + 7 =") are often shorter than n themselves.

Rows with fewer than `min_tokens` tokens (3 by default) match only by rule 1: a 2-token window
would match unrelated text.  GPT-3 also dropped rows whose 13-grams were too frequent in the
training data; we do not (evaluation prompts are short and specific), and report every match.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlvr.data.io import DataError, RowSource, write_json, write_rows
from rlvr.data.text import ngrams, tokens


class DecontamConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(13, ge=1, description="n-gram size in tokens (GPT-3: 13, DeepSeekMath: 10)")
    min_tokens: int = Field(3, ge=1, description="rows shorter than n but at least this long match whole")

    @model_validator(mode="after")
    def _check(self) -> DecontamConfig:
        if self.min_tokens > self.n:
            raise ValueError(f"min_tokens ({self.min_tokens}) must be at most n ({self.n})")
        return self


@dataclass(frozen=True, slots=True)
class Match:
    """Why a training row is contaminated: the rule (`kind`), the matching text, the evaluation row
    it came from, and for "ngram" how many of the row's n-grams are in the evaluation sets."""

    kind: Literal["exact", "ngram", "short"]
    text: str
    eval_set: str
    eval_loc: str
    count: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ngram": self.text, "eval_set": self.eval_set, "eval_loc": self.eval_loc,
                "count": self.count}  # fmt: skip


Ref = tuple[str, str]  # (evaluation set name, row location)


class EvalIndex:
    """The n-grams, whole texts and short rows of one or more evaluation sets."""

    def __init__(self, config: DecontamConfig | None = None) -> None:
        self.config = config or DecontamConfig()
        self.grams: dict[str, Ref] = {}  # n-gram -> first evaluation row with it
        self.whole: dict[str, Ref] = {}  # normalised text -> first evaluation row with it
        self.short: dict[tuple[str, ...], list[tuple[tuple[str, ...], Ref]]] = {}  # prefix -> short rows
        self._rows: list[tuple[tuple[str, ...], Ref]] = []  # every row's tokens, for short training rows
        self._windows: dict[int, dict[int, Ref]] = {}  # m -> hash of each m-token window -> row (lazy)
        self.counts: dict[str, dict[str, int]] = {}  # set name -> {"rows", "too_short"}

    def add(self, name: str, loc: str, text: str) -> None:
        """Index one evaluation row."""
        n, floor = self.config.n, self.config.min_tokens
        toks, ref = tuple(tokens(text)), (name, loc)
        counts = self.counts.setdefault(name, {"rows": 0, "too_short": 0})
        counts["rows"] += 1
        if toks:
            self.whole.setdefault(" ".join(toks), ref)
        if len(toks) < floor:
            counts["too_short"] += 1
            return
        self._rows.append((toks, ref))
        self._windows.clear()
        if len(toks) < n:
            self.short.setdefault(toks[:floor], []).append((toks, ref))
        for gram in ngrams(toks, n):
            self.grams.setdefault(gram, ref)

    def add_source(self, source: RowSource, name: str | None = None) -> None:
        """Index every row of an evaluation file (named by its file stem unless `name` is given)."""
        name = name or source.path.stem
        for loc, _, text in source:
            self.add(name, loc, text)

    def match(self, text: str) -> Match | None:
        """The contamination of one training text, or None (rules in the module docstring)."""
        toks = tokens(text)
        if not toks:
            return None
        ref = self.whole.get(" ".join(toks))
        if ref is not None:
            return Match("exact", " ".join(toks), *ref)
        return self._ngram(toks) or self._short_inside(toks) or self._inside_eval(toks)

    def _ngram(self, toks: list[str]) -> Match | None:
        first, count = None, 0
        for gram in ngrams(toks, self.config.n):
            ref = self.grams.get(gram)
            if ref is not None:
                first, count = first or (gram, ref), count + 1
        return None if first is None else Match("ngram", first[0], *first[1], count=count)

    def _short_inside(self, toks: list[str]) -> Match | None:
        """A short evaluation row occurring inside this training row (looked up by its first tokens)."""
        floor = self.config.min_tokens
        if not self.short:
            return None
        for i in range(len(toks) - floor + 1):
            for seq, ref in self.short.get(tuple(toks[i : i + floor]), ()):
                if tuple(toks[i : i + len(seq)]) == seq:
                    return Match("short", " ".join(seq), *ref)
        return None

    def _inside_eval(self, toks: list[str]) -> Match | None:
        """This short training row occurring inside an evaluation row."""
        m = len(toks)
        if not self.config.min_tokens <= m < self.config.n:
            return None
        ref = self._windows_of(m).get(hash(tuple(toks)))
        return None if ref is None else Match("short", " ".join(toks), *ref)

    def _windows_of(self, m: int) -> dict[int, Ref]:
        # Built once per length m that training rows ask for: the evaluation rows' m-token windows,
        # as tuple hashes (a collision, at 2^-64 per pair, could only add a false match).
        if m not in self._windows:
            table: dict[int, Ref] = {}
            for toks, ref in self._rows:
                for i in range(len(toks) - m + 1):
                    table.setdefault(hash(toks[i : i + m]), ref)
            self._windows[m] = table
        return self._windows[m]


@dataclass
class DecontamReport:
    n_rows: int = 0
    matches: list[dict[str, Any]] = field(default_factory=list)  # one per contaminated training row
    n_skipped: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def n_contaminated(self) -> int:
        return len(self.matches)

    def as_dict(self, **context: Any) -> dict[str, Any]:
        by_set: dict[str, int] = {}
        for m in self.matches:
            by_set[m["eval_set"]] = by_set.get(m["eval_set"], 0) + 1
        return {**context, "n_rows": self.n_rows, "n_contaminated": self.n_contaminated, "by_eval_set": by_set,
                "n_skipped": self.n_skipped, "matches": self.matches, "skipped": self.skipped}  # fmt: skip


def decontaminate(texts: Iterable[str], index: EvalIndex) -> Iterator[Match | None]:
    """The match (or None) of each training text, in order, streamed."""
    for text in texts:
        yield index.match(text)


def decontaminate_file(
    source: RowSource,
    evals: Iterable[RowSource],
    *,
    out: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    action: Literal["remove", "flag"] = "remove",
    flag_field: str = "contamination",
    config: DecontamConfig | None = None,
) -> DecontamReport:
    """Check the rows of `source` against the evaluation files `evals`.  `action="remove"` writes the
    clean rows to `out`; `"flag"` writes every row with `flag_field` set to its match (or null).
    The JSON `report` lists every match with the matching text and evaluation row."""
    if action not in ("remove", "flag"):
        raise ValueError(f"action={action!r}: choose 'remove' or 'flag'")
    if out is not None and Path(out).resolve() == source.path.resolve():
        raise DataError(f"--out {out} is the input file: write the decontaminated rows to another path")
    evals = list(evals)
    if not evals:
        raise DataError("no evaluation sets given: pass --eval PATH (once per evaluation file)")
    index = EvalIndex(config)
    names = [e.path.stem for e in evals]
    for e in evals:  # two evaluation files with one stem are told apart by their paths
        index.add_source(e, e.path.stem if names.count(e.path.stem) == 1 else str(e.path))
    result = DecontamReport()

    def rows() -> Iterator[dict[str, Any]]:
        for i, (loc, row, text) in enumerate(source):
            result.n_rows += 1
            match = index.match(text)
            if match is not None:
                result.matches.append({"row": i, "loc": loc, **match.as_dict()})
            if action == "flag":
                yield {**row, flag_field: None if match is None else match.as_dict()}
            elif match is None:
                yield row

    if out is None:
        for _ in rows():
            pass
    else:
        write_rows(rows(), out)
    result.n_skipped, result.skipped = source.n_skipped, source.skipped
    if report is not None:
        context = {
            "input": str(source.path), "field": source.field, "config": index.config.model_dump(),
            "action": action, "eval_sets": index.counts,
        }  # fmt: skip
        write_json(report, result.as_dict(**context))
    return result
