"""verify_file: score a JSONL of completions against a task."""

import json

import pytest

from rlvr.tasks.countdown import CountdownTask
from rlvr.tasks.files import DatasetError
from rlvr.tasks.sort import SortTask
from rlvr.tasks.verify import verify_file


def write(path, rows):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_scores_by_example_id_and_inline_rows(tmp_path):
    task = SortTask(n_train=10, n_test=3)
    a, b = task.examples("train")[0], task.examples("test")[0]
    p = write(
        tmp_path / "c.jsonl",
        [
            {"example_id": a.id, "completion": task.solution(a)},  # right: 1 + 0.2
            {"example_id": b.id, "completion": "x</think><answer>1 2</answer>"},  # wrong, well formed: 0.2
            {"prompt": "Sort: 2 1", "gold": "1 2", "meta": {"numbers": [2, 1]}, "completion": "no tags"},  # 0
        ],
    )
    out = tmp_path / "scores" / "rows.jsonl"
    summary = verify_file(task, p, output=out)
    assert summary == pytest.approx({"n": 3, "mean_reward": 1.4 / 3, "accuracy": 1 / 3, "format_rate": 2 / 3})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3]
    assert rows[0]["example_id"] == a.id and rows[0]["parts"] == {"accuracy": 1.0, "format": 1.0}
    assert rows[1]["answer"] == "1 2" and rows[1]["reward"] == pytest.approx(0.2)
    assert rows[2]["example_id"] == "3"


def test_prefix_option_for_full_texts(tmp_path):
    task = CountdownTask(n_train=5, n_test=2)
    ex = task.examples("train")[0]
    full = "<think>" + task.solution(ex)
    p = write(tmp_path / "c.jsonl", [{"example_id": ex.id, "completion": full}])
    assert verify_file(task, p)["format_rate"] == 0.0  # prefix prepended: two <think> tags
    assert verify_file(task, p, prefix="") == {
        "n": 1,
        "mean_reward": pytest.approx(1.2),
        "accuracy": 1.0,
        "format_rate": 1.0,
    }


@pytest.mark.parametrize(
    "row, message",
    [
        ("{oops", "2: invalid JSON"),
        (
            '{"example_id": "sort-nope", "completion": "x"}',
            "2: field 'example_id' value 'sort-nope' is not an example of sort",
        ),
        ('{"example_id": "x"}', "2: field 'completion' is missing or not a string"),
        ('{"prompt": "p", "completion": "x"}', "2: needs 'example_id', or 'prompt' and 'gold' as strings"),
        (
            '{"prompt": "p", "gold": "1", "meta": [1], "completion": "x"}',
            "2: field 'meta' must be an object, got list",
        ),
    ],
)
def test_errors_name_the_line_and_nothing_is_written(tmp_path, row, message):
    task = SortTask(n_train=5, n_test=2)
    ex = task.examples("train")[0]
    p = write(tmp_path / "c.jsonl", [{"example_id": ex.id, "completion": "x"}, row])
    out = tmp_path / "out.jsonl"
    with pytest.raises(DatasetError) as err:
        verify_file(task, p, output=out)
    assert str(err.value).startswith(f"{p}:{message}")
    assert not out.exists()


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"completions file .*none.jsonl does not exist"):
        verify_file(SortTask(n_train=5, n_test=2), tmp_path / "none.jsonl")


def test_row_prefix_field_wins_over_the_argument_and_the_template(tmp_path):
    task = SortTask(n_train=5, n_test=2)
    ex = task.examples("train")[0]
    sol = task.solution(ex)  # written after the "short" prompt's "<think>"
    rows = [
        {"example_id": ex.id, "completion": sol},  # no field: the plain template's "<think>"
        {"example_id": ex.id, "completion": sol, "prefix": "<think>\n"},  # a thinking chat template
        {"example_id": ex.id, "completion": "<think>" + sol, "prefix": ""},  # a chat prompt ending outside
    ]
    p = write(tmp_path / "c.jsonl", rows)
    out = tmp_path / "rows.jsonl"
    assert verify_file(task, p, output=out)["format_rate"] == 1.0
    prefixes = [json.loads(line)["prefix"] for line in out.read_text().splitlines()]
    assert prefixes == ["<think>", "<think>\n", ""]
    # the argument applies to rows without the field only
    assert verify_file(task, p, prefix="")["format_rate"] == pytest.approx(2 / 3)
    bad = write(tmp_path / "bad.jsonl", [{"example_id": ex.id, "completion": sol, "prefix": 1}])
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: field 'prefix' must be a string, got int"):
        verify_file(task, bad)


def test_empty_file_gives_null_means_not_nan(tmp_path):
    summary = verify_file(SortTask(n_train=5, n_test=2), write(tmp_path / "empty.jsonl", []))
    assert summary == {"n": 0, "mean_reward": None, "accuracy": None, "format_rate": None}
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary  # valid JSON
