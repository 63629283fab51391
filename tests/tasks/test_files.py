"""File-backed tasks: JSONL / Parquet / HF directories, gold styles, malformed rows, code tasks."""

import json
import logging
import sys

import pytest

from rlvr.tasks import make_task
from rlvr.tasks.files import DatasetError, FileTask, gold_from


def write_jsonl(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.mark.parametrize(
    "raw, style, gold",
    [
        ("She has 2+2=4 apples.\n#### 4", "auto", "4"),  # GSM8K: text after ####
        ("#### 1,234", "gsm8k", "1234"),  # thousands comma dropped
        ("#### 1,234,567.5", "auto", "1234567.5"),
        ("#### 1,23", "auto", "1,23"),  # not a thousands group: left for the math verifier
        ("so the answer is \\boxed{\\frac{1}{2}}.", "auto", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{1} then \\boxed{ 2 }", "boxed", "2"),  # the last box wins
        ("  42 ", "plain", "42"),
        ("3 #### 4", "plain", "3 #### 4"),  # plain means verbatim
    ],
)
def test_gold_styles(raw, style, gold):
    assert gold_from(raw, style, "f.jsonl:1", "answer") == gold


def test_loads_jsonl_with_field_mapping_and_ids(tmp_path):
    p = write_jsonl(
        tmp_path / "gsm.jsonl",
        [
            {"q": "What is 2+2?", "a": "2+2=4\n#### 4", "uid": "x1"},
            "",  # blank lines are ignored
            {"q": "How many?", "a": "#### 1,234", "uid": "x2"},
            {"q": "Number gold", "a": 42, "uid": 7},  # numeric golds are accepted
        ],
    )
    task = FileTask(p, prompt_field="q", answer_field="a", id_field="uid")
    exs = task.examples("train")
    assert [(e.id, e.prompt, e.gold) for e in exs] == [
        ("x1", "What is 2+2?", "4"),
        ("x2", "How many?", "1234"),
        ("7", "Number gold", "42"),
    ]
    assert exs[1].meta["source"] == f"{p}:3"
    assert task.examples("test") == exs  # split=None serves the file for every split
    assert task.n_skipped == 0 and task.n_dropped_golds == 0
    # graded with math-verify: 1234 == 1,234
    assert task.score(exs[1], "count</think><answer>1,234</answer>").parts == {"accuracy": 1.0, "format": 1.0}
    assert task.equivalent("1/2", "0.5", exs[0])


BAD_ROWS = [
    # (row text, expected message after "<path>:1: ")
    ('{"question": "q"', "invalid JSON (Expecting ',' delimiter at column 17); fix or remove the line"),
    (
        '{"q": "x", "answer": "1"}',
        "field 'question' is missing (row fields: answer, q); set prompt_field= to the right field",
    ),
    (
        '{"question": "x"}',
        "field 'answer' is missing (row fields: question); set answer_field= to the right field",
    ),
    ('{"question": ["x"], "answer": "1"}', "field 'question' must be a string, got list"),
    ('{"question": "x", "answer": true}', "field 'answer' must be a string, got bool"),
    ('{"question": "  ", "answer": "1"}', "field 'question' is empty"),
    ("[1, 2]", "expected an object with fields, got list"),
    ('{"question": "x", "answer": "#### "}', "field 'answer' gives an empty answer"),
]


@pytest.mark.parametrize("row, message", BAD_ROWS)
def test_malformed_row_names_file_line_and_field(tmp_path, row, message):
    p = write_jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(DatasetError) as err:
        FileTask(p)
    assert str(err.value) == f"{p}:1: {message}"


def test_skip_counts_malformed_rows(tmp_path, caplog):
    good = {"question": "q", "answer": "1"}
    p = write_jsonl(
        tmp_path / "d.jsonl",
        [good, BAD_ROWS[0][0], good, BAD_ROWS[2][0], '{"question": "q", "answer": "\\\\boxed{"}'],
    )
    with caplog.at_level(logging.WARNING, logger="rlvr.tasks.files"):
        task = FileTask(p, on_error="skip")
    assert len(task.examples("train")) == 2 and task.n_skipped == 3
    assert task.skipped[0].startswith(f"{p}:2: invalid JSON")
    assert task.skipped[1].startswith(f"{p}:4: field 'answer' is missing")
    assert task.skipped[2] == f"{p}:5: field 'answer' has no non-empty \\boxed{{...}} (gold_style='boxed')"
    assert "skipped 3 malformed rows" in caplog.text


def test_duplicate_ids_are_malformed(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "question": "q", "answer": "1"}] * 2)
    with pytest.raises(DatasetError, match=r"d.jsonl:2: field 'id' value 'a' repeats .*d.jsonl:1$"):
        FileTask(p, id_field="id")


def test_unparsable_golds_are_dropped_and_reported(tmp_path, caplog):
    p = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"question": "a", "answer": "\\frac{1}{2}"},
            {"question": "b", "answer": "\\sqrt{"},  # math-verify cannot parse this gold
            {"question": "c", "answer": "7"},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="rlvr.tasks.files"):
        task = FileTask(p)
    assert [e.prompt for e in task.examples("train")] == ["a", "c"]
    assert task.n_dropped_golds == 1
    assert (
        "dropped 1 rows whose gold answer math-verify cannot parse" in caplog.text
        and "d.jsonl:2" in caplog.text
    )


def test_split_option_and_errors(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "1"}])
    task = FileTask(p, split="test", validate=False)
    assert len(task.examples("test")) == 1
    with pytest.raises(ValueError, match=r"is the 'test' split \(split='test'\); asked for 'train'"):
        task.examples("train")
    with pytest.raises(DatasetError, match=r"dataset .*nope.jsonl does not exist"):
        FileTask(tmp_path / "nope.jsonl")
    (tmp_path / "d.csv").write_text("q,a\n")
    with pytest.raises(
        DatasetError,
        match=r"cannot tell the format of .*d.csv from its name: pass format= one of \['jsonl', 'parquet', 'hf'\]",
    ):
        FileTask(tmp_path / "d.csv")
    with pytest.raises(
        ValueError, match=r"FileTask gold_style='latex': choose one of \['auto', 'gsm8k', 'boxed', 'plain'\]"
    ):
        FileTask(p, gold_style="latex")
    with pytest.raises(ValueError, match=r"kind='code' needs tests_field="):
        FileTask(p, kind="code")
    # the registry passes the same options through
    assert make_task("file", path=str(p), validate=False).examples("train")[0].gold == "1"


def test_missing_datasets_package_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "hfdir").mkdir()
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(
        DatasetError,
        match=r"needs datasets: install the optional data dependencies: pip install 'rlvr\[data\]'",
    ):
        FileTask(tmp_path / "hfdir")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"problem": ["p1", "p2"], "solution": ["so \\boxed{3}", None]}), p)
    with pytest.raises(DatasetError, match=r"d.parquet:row 2: field 'solution' is missing"):
        FileTask(p, prompt_field="problem", answer_field="solution")
    task = FileTask(p, prompt_field="problem", answer_field="solution", on_error="skip")
    assert [(e.prompt, e.gold) for e in task.examples("train")] == [("p1", "3")] and task.n_skipped == 1


def test_hf_dataset_directories(tmp_path):
    datasets = pytest.importorskip("datasets")
    single = datasets.Dataset.from_dict({"question": ["a", "b"], "answer": ["#### 1", "#### 2"]})
    single.save_to_disk(str(tmp_path / "single"))
    assert [e.gold for e in FileTask(tmp_path / "single").examples("test")] == ["1", "2"]
    dd = datasets.DatasetDict(
        {"train": single, "test": datasets.Dataset.from_dict({"question": ["c"], "answer": ["#### 3"]})}
    )
    dd.save_to_disk(str(tmp_path / "dict"))
    task = FileTask(tmp_path / "dict")
    assert [e.gold for e in task.examples("train")] == ["1", "2"]
    assert [e.gold for e in task.examples("test")] == ["3"]
    with pytest.raises(DatasetError, match=r"has splits \['test', 'train'\], not 'dev'"):
        task.examples("dev")


def test_code_task_scores_through_the_sandbox(tmp_path):
    p = write_jsonl(
        tmp_path / "code.jsonl",
        [
            {"prompt": "Write add(a, b).", "tests": "assert add(2, 3) == 5\nassert add(-1, 1) == 0"},
        ],
    )
    task = FileTask(p, kind="code", prompt_field="prompt", tests_field="tests")
    ex = task.examples("train")[0]
    assert ex.gold == "" and ex.meta["tests"].startswith("assert add(2, 3)")
    good = "easy</think><answer>```python\ndef add(a, b):\n    return a + b\n```</answer>"
    bad = "easy</think><answer>```python\ndef add(a, b):\n    return a - b\n```</answer>"
    assert task.score(ex, good).parts == {"accuracy": 1.0, "format": 1.0}
    assert task.score(ex, bad).parts == {"accuracy": 0.0, "format": 1.0}
    assert task.extract(good) == "def add(a, b):\n    return a + b"
