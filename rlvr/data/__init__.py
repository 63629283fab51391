"""Data tools (layer L4): dedup (exact, MinHash/LSH), n-gram decontamination, difficulty filtering,
and the language-consistency reward; streaming over JSONL / Parquet / HF dataset directories.

See docs/data.md.  `rlvr data …` on the command line (rlvr/data/cli.py).

The names below are imported on first use (PEP 562), from the closed table `_EXPORTS`, so that
`rlvr --help`, which imports rlvr.data.cli, does not pay for numpy and pydantic.  (Dedup lives in
`rlvr.data.duplicates`: a submodule named `dedup` would shadow the function `rlvr.data.dedup`.)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "rlvr.data.decontam": ["DecontamConfig", "EvalIndex", "Match", "decontaminate", "decontaminate_file"],
    "rlvr.data.duplicates": [
        "Decision", "DedupConfig", "DedupReport", "clusters", "dedup", "dedup_chunks", "dedup_file", "dedup_rows",
    ],
    "rlvr.data.difficulty": ["PassRange", "filter_by_difficulty", "write_kept"],
    "rlvr.data.io": ["DataError", "RowSource", "read_rows", "write_rows"],
    "rlvr.data.language": ["LanguageReward", "WithLanguageReward", "language_consistency"],
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'rlvr.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
