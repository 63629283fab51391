"""The one JSONL reader every command uses (`rlvr.tasks.files.read_jsonl`) and the path checks behind the
CLI's messages: what a user's file can look like, and what each mistake is called."""

from __future__ import annotations

import gzip
import json

import pytest

from rlvr.errors import MissingPathError, UserError, check_output_file
from rlvr.tasks.files import DatasetError, FileTask, read_jsonl

ROW = {"question": "1+1", "answer": "2"}


def test_bom_crlf_and_blank_lines_read_as_plain_rows(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(ROW) + "\r\n\r\n").encode() * 2 + b"  \n")
    assert [(loc, row) for loc, row in read_jsonl(path)] == [(f"{path}:1", ROW), (f"{path}:3", ROW)]


def test_a_non_utf8_line_is_an_error_row_naming_the_line_and_the_byte(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_bytes(json.dumps(ROW).encode() + b'\n{"question": "caf\xe9", "answer": "1"}\n')
    rows = list(read_jsonl(path))
    assert rows[0][1] == ROW and isinstance(rows[1][1], DatasetError)
    assert f"{path}:2: not UTF-8 text (byte 0xe9 at byte 18" in str(rows[1][1])
    task = FileTask(path, on_error="skip")  # the other rows still load; the bad one is counted
    assert task.n_skipped == 1 and len(task.examples("train")) == 1


def test_gzip_directory_and_missing_files_are_named(tmp_path):
    (tmp_path / "z.jsonl").write_bytes(gzip.compress(json.dumps(ROW).encode()))
    for path, needle in ((tmp_path / "z.jsonl", "is gzip-compressed"), (tmp_path, "is a directory"),
                         (tmp_path / "none.jsonl", "does not exist")):  # fmt: skip
        with pytest.raises(DatasetError, match=needle):
            list(read_jsonl(path))


def test_check_output_file(tmp_path):
    assert check_output_file(tmp_path / "new" / "out.json", "--out") == tmp_path / "new" / "out.json"
    with pytest.raises(MissingPathError, match=r"--out .* is a directory"):
        check_output_file(tmp_path, "--out")
    (tmp_path / "f").write_text("x")
    with pytest.raises(MissingPathError, match="is a file, not a directory"):
        check_output_file(tmp_path / "f" / "out.json", "--out")


def test_check_model_dir_names_a_run_directorys_last_checkpoint(tmp_path):
    from rlvr.models.load import check_model_dir

    (tmp_path / "checkpoints" / "step_000002").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_000010").mkdir()
    with pytest.raises(UserError, match=r"is an rlvr run directory, not a model: pass .*step_000010"):
        check_model_dir(tmp_path, what="--model")
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"kind": "rl"}')
    with pytest.raises(UserError, match="not a Hugging Face model config"):
        check_model_dir(model)
