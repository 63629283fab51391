"""File-backed tasks: JSONL, Parquet and local Hugging Face dataset directories, with a field mapping.

Math golds may be GSM8K-style (`… #### 1,234` → `1234`), MATH-style (`\\boxed{…}` in a solution) or
plain; code rows carry Python test source (asserts) scored by the sandbox (`run_tests`).  A
malformed row (bad JSON, missing field, wrong type, no extractable gold) raises a `DatasetError`
naming the file, line and field, or, with `on_error="skip"`, is skipped and counted in
`n_skipped`.  Math golds that math-verify cannot parse are dropped when the file loads (they could
never be scored), counted in `n_dropped_golds` and reported as a warning.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from rlvr.errors import TaskKwargError, UserError, unreadable
from rlvr.tasks.base import VerifiedTask
from rlvr.types import Example
from rlvr.verifiers.math import math_equivalent, validate_golds, verify_math
from rlvr.verifiers.region import extract_answer, last_boxed

log = logging.getLogger(__name__)
FORMATS = ("jsonl", "parquet", "hf")
GOLD_STYLES = ("auto", "gsm8k", "boxed", "plain")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
GZIP_MAGIC, UTF8_BOM = b"\x1f\x8b", b"\xef\xbb\xbf"
# a .json file holding one array, the usual mistake with JSON Lines
ARRAY_HINT = ("this looks like one JSON array, but JSONL needs one object per line: convert it, e.g. "
              "jq -c '.[]' data.json > data.jsonl")  # fmt: skip
DATA_EXTRA = "install the optional data dependencies: pip install 'rlvr[data]'"


class DatasetError(UserError, ValueError):
    """A dataset file or row that cannot be used; the message names the file, line and field."""


class DatasetKwargError(DatasetError, TaskKwargError):
    """A FileTask option that names no usable dataset (`path`): both a DatasetError and a TaskKwargError."""


def infer_format(path: Path) -> str:
    if path.is_dir():
        return "hf"
    if path.suffix in (".jsonl", ".parquet"):
        return path.suffix[1:]
    raise DatasetError(f"cannot tell the format of {path} from its name: pass format= one of {list(FORMATS)}")


def _open_binary(path: Path) -> Any:
    """`path` opened for reading bytes, or a DatasetError that names it and says what to do."""
    try:
        fh = path.open("rb")
    except OSError as err:
        raise DatasetError(f"{path} {unreadable(err, 'the JSONL file itself')}") from None
    if fh.peek(2)[:2] == GZIP_MAGIC:
        fh.close()
        raise DatasetError(f"{path} is gzip-compressed, not JSONL text: decompress it first "
                           f"(gunzip -c {path} > plain.jsonl) and pass the plain file")  # fmt: skip
    return fh


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(`file:line`, parsed row or DatasetError) for each non-blank line.  UTF-8 (a leading BOM and CRLF
    line ends are accepted); a line that is not UTF-8 or not JSON is a DatasetError naming `file:line`."""
    path = Path(path)
    with _open_binary(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            loc = f"{path}:{lineno}"
            try:
                line = (raw[3:] if lineno == 1 and raw.startswith(UTF8_BOM) else raw).decode("utf-8")
            except UnicodeDecodeError as err:
                yield loc, DatasetError(f"{loc}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1} "
                                        "of the line); re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8")  # fmt: skip
                continue
            if not line.strip():
                continue
            try:
                yield loc, json.loads(line.rstrip("\r\n"))  # the column of an error counts on this line
            except json.JSONDecodeError as err:
                hint = ARRAY_HINT if lineno == 1 and line.lstrip().startswith("[") else "fix or remove the line"
                yield loc, DatasetError(f"{loc}: invalid JSON ({err.msg} at column {err.colno}); {hint}")


def read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DatasetError(f"reading Parquet ({path}) needs pyarrow: {DATA_EXTRA}") from err
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError; a directory an OSError
        raise DatasetError(f"{path}: not a readable Parquet file ({err}); check the file or convert it") from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield f"{path}:row {i}", row


def read_hf(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    """Rows of a `save_to_disk` directory; for a DatasetDict, those of `split`."""
    try:
        import datasets
    except ImportError as err:
        raise DatasetError(
            f"reading a Hugging Face dataset directory ({path}) needs datasets: {DATA_EXTRA}"
        ) from err
    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, IndexError) as err:  # not a save_to_disk directory, or an empty / broken one
        raise DatasetError(f"{path} is a directory but not a Hugging Face dataset saved with save_to_disk ({err}); "
                           "pass a .jsonl or .parquet file, or the dataset's directory") from None  # fmt: skip
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DatasetError(f"{path} has splits {sorted(ds)}, not {split!r}: pass split= one of them")
        ds = ds[split]
    for i, row in enumerate(ds, 1):
        yield f"{path}:row {i}", row


def is_dataset_dict(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_dict.json").exists()


def gold_from(raw: str, style: str, loc: str, field: str) -> str:
    """The gold answer in `raw` under `style`; raises DatasetError when it has none."""
    if style == "auto":
        style = "gsm8k" if "####" in raw else "boxed" if "\\boxed" in raw or "\\fbox" in raw else "plain"
    if style == "gsm8k":
        if "####" not in raw:
            raise DatasetError(f"{loc}: field {field!r} has no '#### <answer>' part (gold_style='gsm8k')")
        gold = _THOUSANDS.sub("", raw.rsplit("####", 1)[1].strip())
    elif style == "boxed":
        gold = (last_boxed(raw) or "").strip()
        if not gold:
            raise DatasetError(f"{loc}: field {field!r} has no non-empty \\boxed{{...}} (gold_style='boxed')")
    else:
        gold = raw.strip()
    if not gold:
        raise DatasetError(f"{loc}: field {field!r} gives an empty answer")
    return gold


class FileTask(VerifiedTask):
    """Problems from a file; `kind="math"` (verify_math) or `kind="code"` (tests in `tests_field`).

    `split=None` serves the file for every split asked for; `split="test"` serves only that split.
    A Hugging Face DatasetDict directory serves each of its splits by name.
    """

    name = "file"

    def __init__(
        self,
        path: str | Path,
        *,
        format: str | None = None,
        prompt_field: str = "question",
        answer_field: str = "answer",
        gold_style: Literal["auto", "gsm8k", "boxed", "plain"] = "auto",
        tests_field: str | None = None,
        kind: Literal["math", "code"] = "math",
        id_field: str | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        split: str | None = None,
        validate: bool = True,
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if not str(path).strip():  # Path("") is the current directory
            raise DatasetKwargError("path", "is empty: set it to a .jsonl or .parquet file or a dataset directory")
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetKwargError("path", f"dataset {self.path} does not exist")
        self.format = format or infer_format(self.path)
        for value, options, what in [
            (self.format, FORMATS, "format"),
            (gold_style, GOLD_STYLES, "gold_style"),
            (kind, ("math", "code"), "kind"),
            (on_error, ("raise", "skip"), "on_error"),
        ]:
            if value not in options:
                raise TaskKwargError(what, f"FileTask {what}={value!r}: choose one of {list(options)}")
        if kind == "code" and not tests_field:
            raise TaskKwargError("tests_field", "FileTask kind='code' needs tests_field= (the field holding the test source)")
        if not timeout_s > 0 or memory_mb < 1:
            bad = "timeout_s" if not timeout_s > 0 else "memory_mb"
            raise TaskKwargError(bad, f"the code sandbox's {bad} must be positive; got {locals()[bad]}")
        self.prompt_field, self.answer_field, self.gold_style = prompt_field, answer_field, gold_style
        self.tests_field, self.kind, self.id_field, self.on_error = tests_field, kind, id_field, on_error
        self.split, self.validate = split, validate
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self.n_skipped, self.n_dropped_golds = 0, 0
        self.skipped: list[str] = []
        self._is_dict = self.format == "hf" and is_dataset_dict(self.path)
        self._cache: dict[str | None, list[Example]] = {}
        if not self._is_dict:
            self._cache[None] = self._load(None)

    def examples(self, split: str) -> Sequence[Example]:
        if self.split is not None and split != self.split:
            raise ValueError(
                f"{self.path} is the {self.split!r} split (split={self.split!r}); asked for {split!r}"
            )
        if not self._is_dict:
            return self._cache[None]
        if split not in self._cache:
            self._cache[split] = self._load(split)
        return self._cache[split]

    def _rows(self, split: str | None) -> Iterator[tuple[str, Any]]:
        if self.format == "jsonl":
            return read_jsonl(self.path)
        if self.format == "parquet":
            return read_parquet(self.path)
        return read_hf(self.path, split)

    def _load(self, split: str | None) -> list[Example]:
        out: list[Example] = []
        seen: dict[str, str] = {}
        for index, (loc, row) in enumerate(self._rows(split)):
            try:
                if isinstance(row, DatasetError):
                    raise row
                ex = self._example(loc, row, index)
                if ex.id in seen:
                    raise DatasetError(
                        f"{loc}: field {self.id_field!r} value {ex.id!r} repeats {seen[ex.id]}"
                    )
            except DatasetError as err:
                if self.on_error == "raise":
                    raise
                self.n_skipped += 1
                self.skipped.append(str(err))
                continue
            seen[ex.id] = loc
            out.append(ex)
        if self.n_skipped:
            log.warning(
                "%s: skipped %d malformed rows (first: %s)", self.path, self.n_skipped, self.skipped[0]
            )
        if self.kind == "math" and self.validate and out:
            out = self._drop_bad_golds(out)
        if not out:
            raise DatasetError(self._why_empty(split))
        return out

    def _why_empty(self, split: str | None) -> str:
        where = f"{self.path}" + (f" (split {split!r})" if split else "")
        if self.n_skipped:
            return (f"{where}: all {self.n_skipped} rows are malformed, so the data is empty "
                    f"(first: {self.skipped[0]}); fix the rows or the field mapping (prompt_field=, answer_field=)")
        if self.n_dropped_golds:
            return (f"{where}: no row has a gold answer math-verify can parse ({self.n_dropped_golds} dropped), "
                    "so the data is empty; check answer_field= and gold_style=")
        return f"{where}: the file holds no rows, so the data is empty; add JSONL rows like " \
               '{"question": "...", "answer": "..."}'

    def _drop_bad_golds(self, examples: list[Example]) -> list[Example]:
        kept, dropped = validate_golds([ex.gold for ex in examples])
        if dropped:
            self.n_dropped_golds += dropped
            bad = [ex for i, ex in enumerate(examples) if i not in set(kept)][:3]
            log.warning(
                "%s: dropped %d rows whose gold answer math-verify cannot parse (e.g. %s)",
                self.path,
                dropped,
                ", ".join(f"{ex.meta['source']}: {ex.gold!r}" for ex in bad),
            )
        return [examples[i] for i in kept]

    def _field(self, loc: str, row: dict[str, Any], field: str, option: str) -> str:
        if field not in row or row[field] is None:
            keys = ", ".join(sorted(map(str, row))[:12])
            raise DatasetError(
                f"{loc}: field {field!r} is missing (row fields: {keys}); set {option}= to the right field"
            )
        value = row[field]
        if isinstance(value, int | float) and not isinstance(value, bool) and field == self.answer_field:
            value = str(value)  # numeric golds such as {"answer": 42}
        if not isinstance(value, str):
            raise DatasetError(f"{loc}: field {field!r} must be a string, got {type(value).__name__}")
        return value

    def _example(self, loc: str, row: Any, index: int) -> Example:
        if not isinstance(row, dict):
            raise DatasetError(f"{loc}: expected an object with fields, got {type(row).__name__}")
        prompt = self._field(loc, row, self.prompt_field, "prompt_field")
        if not prompt.strip():
            raise DatasetError(f"{loc}: field {self.prompt_field!r} is empty")
        meta: dict[str, Any] = {"source": loc}
        if self.kind == "code":
            meta["tests"] = self._field(loc, row, self.tests_field, "tests_field")
            gold = (
                self._field(loc, row, self.answer_field, "answer_field") if self.answer_field in row else ""
            )
        else:
            raw = self._field(loc, row, self.answer_field, "answer_field")
            gold = gold_from(raw, self.gold_style, loc, self.answer_field)
        ex_id = f"{self.path.stem}-{index}"
        if self.id_field is not None:
            ex_id = (
                str(row[self.id_field])
                if row.get(self.id_field) is not None
                else self._field(loc, row, self.id_field, "id_field")
            )
        return Example(id=ex_id, prompt=prompt, gold=gold, meta=meta)

    def accuracy(self, example: Example, text: str) -> float:
        if self.kind == "code":
            from rlvr.verifiers.code import extract_code, run_tests

            program = extract_code(text)
            if program is None:
                return 0.0
            result = run_tests(
                program, example.meta["tests"], timeout_s=self.timeout_s, memory_mb=self.memory_mb
            )
            return 1.0 if result.passed else 0.0
        return verify_math(text, example.gold) or 0.0

    def extract(self, completion: str, *, prefix: str | None = None) -> str | None:
        if self.kind == "code":
            from rlvr.verifiers.code import extract_code

            return extract_code(self.full_text(completion, prefix))
        return extract_answer(self.full_text(completion, prefix))

    def equivalent(self, a: str, b: str, example: Example) -> bool:
        if self.kind == "code":
            return super().equivalent(a, b, example)
        return math_equivalent(a, b)
