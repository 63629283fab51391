"""Data tools (layer L4): dedup (exact, MinHash/LSH), n-gram decontamination, difficulty filtering,
and the language-consistency reward; streaming over JSONL / Parquet / HF dataset directories.

See docs/data.md.  `rlvr data …` on the command line (rlvr/data/cli.py).
"""

from rlvr.data.dedup import Decision, DedupConfig, DedupReport, dedup, dedup_chunks, dedup_file
from rlvr.data.io import DataError, RowSource, read_rows, write_rows

__all__ = [
    "DataError",
    "Decision",
    "DedupConfig",
    "DedupReport",
    "RowSource",
    "dedup",
    "dedup_chunks",
    "dedup_file",
    "read_rows",
    "write_rows",
]
