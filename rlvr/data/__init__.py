"""Data tools (layer L4): dedup (exact, MinHash/LSH), n-gram decontamination, difficulty filtering,
and the language-consistency reward; streaming over JSONL / Parquet / HF dataset directories.

See docs/data.md.  `rlvr data …` on the command line (rlvr/data/cli.py).
"""

from rlvr.data.decontam import DecontamConfig, EvalIndex, Match, decontaminate, decontaminate_file
from rlvr.data.dedup import (
    Decision,
    DedupConfig,
    DedupReport,
    clusters,
    dedup,
    dedup_chunks,
    dedup_file,
    dedup_rows,
)
from rlvr.data.difficulty import PassRange, filter_by_difficulty, write_kept
from rlvr.data.io import DataError, RowSource, read_rows, write_rows
from rlvr.data.language import LanguageReward, WithLanguageReward, language_consistency

__all__ = [
    "DataError",
    "Decision",
    "DecontamConfig",
    "DedupConfig",
    "DedupReport",
    "EvalIndex",
    "LanguageReward",
    "Match",
    "PassRange",
    "RowSource",
    "WithLanguageReward",
    "clusters",
    "decontaminate",
    "decontaminate_file",
    "dedup",
    "dedup_chunks",
    "dedup_file",
    "dedup_rows",
    "filter_by_difficulty",
    "language_consistency",
    "read_rows",
    "write_kept",
    "write_rows",
]
