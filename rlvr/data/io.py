"""Streaming rows in and out of JSONL, Parquet and Hugging Face dataset directories.

Every row comes with its location (`file:line` for JSONL, `file:row i` otherwise, as
`rlvr.tasks.files` names them) so an error can say where it is.  Reading streams: JSONL line by
line, Parquet in record batches, HF directories through their memory-mapped Arrow files.  Writing
is atomic: rows go to a temporary sibling that replaces the target only when every row is written
(os.replace), so an interrupted run leaves no half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rlvr.tasks.files import DATA_EXTRA, DatasetError, read_hf, read_jsonl

FORMATS = ("jsonl", "parquet", "hf")
T = TypeVar("T")
PARQUET_BATCH = 4096


class DataError(DatasetError):
    """An input or output the data tools cannot use; the message names the file, line or field and
    what to do.  A `DatasetError` (hence a `ValueError`), so callers of the task loaders catch it too."""


def data_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The format of `path`: `format` when given, else from the name (a directory is an HF dataset)."""
    path = Path(path)
    if format is not None:
        if format not in FORMATS:
            raise DataError(f"unknown format {format!r} for {path}: choose one of {list(FORMATS)}")
        return format
    if path.is_dir() or path.suffix not in (".jsonl", ".parquet"):
        if path.exists() and not path.is_dir():
            raise DataError(
                f"cannot tell the format of {path} from its name: pass a format ({list(FORMATS)})"
            )
        return "hf"
    return path.suffix[1:]


def read_rows(
    path: str | os.PathLike[str], *, format: str | None = None, split: str | None = None
) -> Iterator[tuple[str, Any]]:
    """(location, row) for each row of `path`, streamed; a bad JSON line raises `DataError` when reached."""
    for loc, row in _raw_rows(Path(path), format, split):
        if isinstance(row, DataError):
            raise row
        yield loc, row


def _raw_rows(path: Path, format: str | None, split: str | None) -> Iterator[tuple[str, Any]]:
    """(location, row or the DataError of a bad JSON line): reading goes on past a bad line."""
    if not path.exists():
        raise DataError(f"{path} does not exist: check the path (JSONL file, Parquet file or HF dataset dir)")
    fmt = data_format(path, format)
    if fmt == "jsonl":
        for loc, row in read_jsonl(path):
            yield loc, DataError(str(row)) if isinstance(row, DatasetError) else row
    elif fmt == "parquet":
        yield from _read_parquet(path)
    else:
        try:
            yield from read_hf(path, split)
        except DatasetError as err:
            raise DataError(str(err)) from err
        except FileNotFoundError as err:
            raise DataError(f"{path} is not a Hugging Face dataset directory (save_to_disk): {err}") from err


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DataError(f"reading Parquet ({path}) needs pyarrow: {DATA_EXTRA}") from err
    try:
        reader = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid for a corrupt or non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    i = 0
    for batch in reader.iter_batches(batch_size=PARQUET_BATCH):
        for row in batch.to_pylist():
            i += 1
            yield f"{path}:row {i}", row


def field_text(row: Any, field: str, loc: str) -> str:
    """The text of `field` in `row` (a dotted path such as "messages.0.content" reaches into nested
    rows).  Numbers become their text; a list of strings, or of chat messages with "content", is
    joined by newlines.  Anything else raises a `DataError` naming `loc` and the field."""
    if not isinstance(row, dict):
        raise DataError(f"{loc}: expected an object with fields, got {type(row).__name__}")
    value = _lookup(row, field, loc)
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if isinstance(value, list) and all(
        isinstance(v, dict) and isinstance(v.get("content"), str) for v in value
    ):
        return "\n".join(v["content"] for v in value)
    raise DataError(
        f"{loc}: field {field!r} holds {type(value).__name__}, not text; "
        "point --field at a string (a dotted path such as 'messages.0.content' reaches inside)"
    )


def _lookup(row: dict[str, Any], field: str, loc: str) -> Any:
    if field in row:  # an exact key wins, even one with a dot in it
        value = row[field]
    else:
        value: Any = row
        for part in field.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif (
                isinstance(value, list)
                and part.lstrip("-").isdigit()
                and -len(value) <= int(part) < len(value)
            ):
                value = value[int(part)]
            else:
                value = None
                break
    if value is None:
        keys = ", ".join(sorted(map(str, row))[:12])
        raise DataError(
            f"{loc}: field {field!r} is missing (row fields: {keys}); pass --field with one of them"
        )
    return value


def _jsonable(value: Any) -> Any:
    """What json.dumps cannot write natively (bytes, dates, numpy scalars from Parquet) as text."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of `path` to write into; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():  # os.replace cannot replace a non-empty directory
            old = tmp.parent / ".old"
            path.rename(old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8"
        )
    return Path(path)


def write_rows(
    rows: Iterable[dict[str, Any]], path: str | os.PathLike[str], *, format: str | None = None
) -> int:
    """Write `rows` (streamed) to `path` atomically as JSONL, Parquet or an HF dataset directory
    (the format from `format` or the name: .jsonl, .parquet, anything else a directory); returns the count."""
    path = Path(path)
    fmt = format or (path.suffix[1:] if path.suffix in (".jsonl", ".parquet") else "hf")
    with atomic_path(path) as tmp:
        if fmt == "jsonl":
            return _write_jsonl(rows, tmp)
        if fmt == "parquet":
            return _write_parquet(rows, tmp)
        if fmt == "hf":
            return _write_hf(rows, tmp)
    raise DataError(f"unknown output format {fmt!r} for {path}: choose one of {list(FORMATS)}")


def _write_jsonl(rows: Iterable[dict[str, Any]], tmp: Path) -> int:
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    return n


def _write_parquet(rows: Iterable[dict[str, Any]], tmp: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DataError(f"writing Parquet ({tmp.name}) needs pyarrow: {DATA_EXTRA}") from err
    writer, n, batch = None, 0, []
    try:
        for row in rows:
            batch.append(row)
            if len(batch) == PARQUET_BATCH:
                writer = _parquet_batch(pa, pq, writer, batch, tmp)
                n, batch = n + len(batch), []
        if batch or writer is None:
            writer = _parquet_batch(pa, pq, writer, batch, tmp)
            n += len(batch)
    finally:
        if writer is not None:
            writer.close()
    return n


def _parquet_batch(pa: Any, pq: Any, writer: Any, batch: list[dict[str, Any]], tmp: Path) -> Any:
    try:
        table = pa.Table.from_pylist(batch, schema=None if writer is None else writer.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as err:
        raise DataError(
            f"rows do not fit one Parquet schema ({err}); write JSONL instead (an --out ending in .jsonl)"
        ) from err
    writer = writer or pq.ParquetWriter(tmp, table.schema)
    writer.write_table(table)
    return writer


def _write_hf(rows: Iterable[dict[str, Any]], tmp: Path) -> int:
    try:
        import datasets
    except ImportError as err:
        raise DataError(f"writing a Hugging Face dataset directory needs datasets: {DATA_EXTRA}") from err
    rows = list(rows)  # datasets builds the Arrow table in memory-mapped cache files either way
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp))
    return len(rows)


class RowSource:
    """The rows of one file with the text of `field`: iterate for (location, row, text).

    `on_error="raise"` stops at the first malformed row (bad JSON, missing field, not text) with a
    `DataError`; `"skip"` drops it and counts it in `n_skipped` (the first messages in `skipped`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        field: str,
        *,
        format: str | None = None,
        split: str | None = None,
        on_error: str = "raise",
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: choose 'raise' or 'skip'")
        self.path, self.field, self.split, self.on_error = Path(path), field, split, on_error
        if not self.path.exists():
            raise DataError(
                f"{self.path} does not exist: check the path (JSONL file, Parquet file or HF dataset dir)"
            )
        self.format = data_format(self.path, format)
        self.n_skipped = 0
        self.skipped: list[str] = []

    def __iter__(self) -> Iterator[tuple[str, Any, str]]:
        for loc, row in _raw_rows(self.path, self.format, self.split):
            try:
                if isinstance(row, DataError):
                    raise row
                text = field_text(row, self.field, loc)
            except DataError as err:
                if self.on_error == "raise":
                    raise
                self._skip(err)
                continue
            yield loc, row, text

    def _skip(self, err: DataError) -> None:
        self.n_skipped += 1
        if len(self.skipped) < 20:
            self.skipped.append(str(err))


def read_append_log(path: Path, parse: Callable[[Any], T], what: str, remedy: str) -> list[T]:
    """The records of an append-only JSONL cache, `parse(row)` for each complete line, in order.

    A last line cut short by a crash (unparseable, or parseable but without its newline) is dropped and
    truncated from the file, so the next append starts on a clean line; any other bad line is a
    `DataError` naming `path:line`, saying it is not `what`, and `remedy`.
    """
    data = path.read_bytes()
    records: list[T] = []
    good_end = pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        try:
            record = parse(json.loads(data[pos:end]))
        except (ValueError, KeyError, TypeError) as err:
            if end == len(data):  # the last line: a write cut short by a crash
                break
            line = data.count(b"\n", 0, pos) + 1
            raise DataError(f"{path}:{line}: not {what} ({err}); {remedy}") from err
        if nl < 0:  # parseable but unterminated: rewritten by the next append
            break
        records.append(record)
        good_end = pos = end
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records
