"""The mistakes users coming from TRL / verl make, each through the real CLI: exit 2, no traceback, and a
message that names the key, file:line or path at fault (issue: every user mistake gets one clear message).

Config files, data files (JSONL / Parquet / HF directories), model directories, run directories and
checkpoints, `rlvr report` / `rlvr eval` / `rlvr verify` / `rlvr data` inputs and outputs.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from tests.cli.helpers import assert_user_error, rlvr, tiny_rl_config

GOOD = '{"prompt": "1+1", "answer": "2"}\n' * 3


def _file_task_config(tmp_path: Path, data: Path) -> Path:
    """The tiny RL config with a `file` task reading `data`."""
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    text = config.read_text().replace('name = "sort"', 'name = "file"').replace(
        "kwargs = { length = 3, max_value = 9, n_train = 40, n_test = 8 }",
        f'kwargs = {{ path = "{data.as_posix()}", prompt_field = "prompt" }}',
    )
    config.write_text(text)
    return config


def _check_ok(proc) -> None:
    assert proc.returncode == 0 and "config OK" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]


# ------------------------------------------------------------------ config files


def test_a_directory_or_a_non_utf8_file_as_the_config(tmp_path):
    assert_user_error(rlvr("train", str(tmp_path)), str(tmp_path), "is a directory", "TOML file")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'kind = "rl"\n# caf\xe9\n')
    assert_user_error(rlvr("train", str(bad)), f"{bad}:2", "not UTF-8", "save the file as UTF-8")


def test_a_config_saved_with_a_bom_loads(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    config.write_text("\ufeff" + config.read_text())
    _check_ok(rlvr("train", str(config), "--check"))


def test_check_builds_the_task_so_a_kwarg_typo_or_a_missing_file_fails_there(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    assert_user_error(rlvr("train", str(config), "--check", "--set", "task.kwargs.lenght=3"), "lenght", "'length'")
    missing = _file_task_config(tmp_path, tmp_path / "nope.jsonl")
    assert_user_error(rlvr("train", str(missing), "--check"), "nope.jsonl", "does not exist")
    assert not (tmp_path / "run").exists()  # --check writes nothing


# ------------------------------------------------------------------ data files


def _gzip(path: Path) -> None:
    path.write_bytes(gzip.compress(GOOD.encode()))


def _latin1(path: Path) -> None:
    path.write_bytes(GOOD.encode() + b'{"prompt": "caf\xe9", "answer": "2"}\n')


@pytest.mark.parametrize(("name", "write", "needles"), [
    ("data.jsonl", _gzip, ["data.jsonl is gzip-compressed", "gunzip"]),
    ("data.jsonl", _latin1, ["data.jsonl:4", "not UTF-8", "byte 0xe9"]),
    ("data.parquet", lambda p: p.write_text("not parquet"), ["data.parquet", "not a readable Parquet file"]),
    ("data", lambda p: p.mkdir(), ["is a directory but not a Hugging Face dataset", ".jsonl"]),
])  # fmt: skip
def test_a_task_data_file_that_cannot_be_read_is_named(tmp_path, name, write, needles):
    write(tmp_path / name)
    assert_user_error(rlvr("train", str(_file_task_config(tmp_path, tmp_path / name)), "--check"), *needles)


def test_bom_crlf_and_trailing_blank_lines_are_read_as_plain_jsonl(tmp_path):
    data = tmp_path / "windows.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode() + b"\r\n\r\n")
    _check_ok(rlvr("train", str(_file_task_config(tmp_path, data)), "--check"))


def test_verify_and_data_dedup_name_the_bad_line_of_a_non_utf8_or_gzip_file(tmp_path):
    _latin1(tmp_path / "rows.jsonl")
    assert_user_error(rlvr("data", "dedup", str(tmp_path / "rows.jsonl"), "--field", "prompt", "--out",
                           str(tmp_path / "out.jsonl")), "rlvr data dedup: error:", "rows.jsonl:4", "not UTF-8")  # fmt: skip
    assert not (tmp_path / "out.jsonl").exists()
    _gzip(tmp_path / "c.jsonl")
    assert_user_error(rlvr("verify", str(tmp_path / "c.jsonl"), "--task", "sort"), "c.jsonl is gzip-compressed")
    assert_user_error(rlvr("verify", str(tmp_path), "--task", "sort"), str(tmp_path), "is a directory")


# ------------------------------------------------------------------ outputs that are directories


def test_an_output_path_that_is_a_directory_is_named_before_any_work(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    (tmp_path / "outdir").mkdir()
    assert_user_error(rlvr("verify", str(rows), "--task", "sort", "--out", str(tmp_path / "outdir")),
                      "--out", "outdir is a directory")  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert_user_error(rlvr("report", str(run), "--out", str(tmp_path / "outdir")), "outdir is a directory")
    assert list((tmp_path / "outdir").iterdir()) == [] and list(tmp_path.glob(".*.tmp")) == []


# ------------------------------------------------------------------ model directories


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    proc = rlvr("init-model", str(out), "--preset", "1m")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _broken_copy(model_dir: Path, dst: Path, how: str) -> Path:
    shutil.copytree(model_dir, dst)
    weights = dst / "model.safetensors"
    if how == "config":
        (dst / "config.json").write_text("{not json")
    elif how == "no_weights":
        weights.unlink()
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    return dst


@pytest.mark.parametrize(("how", "needles"), [
    ("config", ["config.json cannot be read as JSON"]),
    ("no_weights", ["has no weights"]),
    ("truncated", ["truncated or corrupt"]),
])  # fmt: skip
def test_eval_on_a_broken_model_dir_names_it(model_dir, tmp_path, how, needles):
    broken = _broken_copy(model_dir, tmp_path / "broken", how)
    assert_user_error(rlvr("eval", "--model", str(broken), "--task", "sort", "--n", "1", "--k", "1", "--limit", "1"),
                      str(broken), *needles)  # fmt: skip


def test_a_truncated_model_path_in_a_training_config_is_named(model_dir, tmp_path):
    broken = _broken_copy(model_dir, tmp_path / "broken", "truncated")
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    assert_user_error(rlvr("train", str(config), "--set", f"model.path={broken}"), str(broken), "truncated or corrupt")


# ------------------------------------------------------------------ run directories and checkpoints


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A completed 1-step tiny RL run (fake engine)."""
    tmp = tmp_path_factory.mktemp("done")
    proc = rlvr("train", str(tiny_rl_config(tmp, tmp / "run", steps=1)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


def _copy_run(finished: Path, tmp_path: Path, steps: int = 2) -> tuple[Path, Path, Path]:
    """(config, run dir, newest checkpoint) of a copy of the finished run, moved to tmp_path/run."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return tiny_rl_config(tmp_path, run, steps=steps), run, sorted((run / "checkpoints").iterdir())[-1]


def test_a_moved_run_directory_resumes(finished, tmp_path):
    config, run, _ = _copy_run(finished, tmp_path)
    proc = rlvr("train", str(config), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "resumes.jsonl").read_text().splitlines()[-1])["exact"]


@pytest.mark.parametrize(("file", "needles"), [
    ("model.safetensors", ["model.safetensors does not load", "truncated or corrupt"]),
    ("trainer_state.pt", ["trainer_state.pt does not load", "truncated or corrupt"]),
])  # fmt: skip
def test_resume_from_a_corrupt_checkpoint_names_the_file(finished, tmp_path, file, needles):
    config, _, ckpt = _copy_run(finished, tmp_path)
    (ckpt / file).write_bytes(b"garbage" * 50)
    assert_user_error(rlvr("train", str(config), "--resume"), str(ckpt), *needles)


def test_resume_with_an_unreadable_config_json_or_a_config_of_another_kind(finished, tmp_path):
    config, run, _ = _copy_run(finished, tmp_path)
    saved = (run / "config.json").read_text()
    sft = tmp_path / "sft.toml"
    sft.write_text(f'kind = "sft"\n[task]\nname = "sort"\n[model]\npreset = "1m"\n[run]\nout_dir = "{run.as_posix()}"\n')
    assert_user_error(rlvr("train", str(sft), "--resume"), "kind = 'rl' run", "kind = 'sft'")
    (run / "config.json").write_text("{oops")
    assert_user_error(rlvr("train", str(config), "--resume"), "config.json cannot be read", "config_history")
    (run / "config.json").write_text(saved)


def test_run_out_dir_that_cannot_be_created_names_the_key(tmp_path):
    (tmp_path / "afile").write_text("x")
    config = tiny_rl_config(tmp_path, tmp_path / "afile" / "run")
    assert_user_error(rlvr("train", str(config)), "run.out_dir", "cannot be created")


# ------------------------------------------------------------------ rlvr report / rlvr eval on run directories


def test_report_on_a_folder_that_is_not_a_run_and_on_a_corrupt_metrics_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(rlvr("report", str(tmp_path / "empty")), "is not a run directory", "metrics.jsonl")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo\n{"step": 3, "loss": 0.5}\n')
    proc = rlvr("report", str(run))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "warning: metrics.jsonl" in proc.stderr and "line 2" in proc.stderr and (run / "report.html").is_file()


def test_eval_on_a_run_directory_names_its_last_checkpoint(finished):
    ckpt = sorted((finished / "checkpoints").iterdir())[-1]
    assert_user_error(rlvr("eval", "--model", str(finished), "--task", "sort"), "is an rlvr run directory", str(ckpt))


# ------------------------------------------------------------------ more inputs: caches, flags, SFT data, JSON arrays


def test_eval_with_a_corrupt_cache_names_the_line(model_dir, tmp_path):
    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"not": "an entry"}\n{"also": "not"}\n')
    assert_user_error(rlvr("eval", "--model", str(model_dir), "--task", "sort", "--n", "1", "--k", "1", "--limit", "1",
                           "--max-new-tokens", "2", "--cache", str(cache)), "cache.jsonl: line 1", "delete the file")  # fmt: skip


def test_data_flag_out_of_range_names_the_flag_and_init_model_under_a_file(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(GOOD)
    err = assert_user_error(rlvr("data", "dedup", str(rows), "--field", "prompt", "--out", str(tmp_path / "o.jsonl"),
                                 "--threshold", "2"), "--threshold 2.0", "less than or equal to 1")  # fmt: skip
    assert "pydantic" not in err
    assert_user_error(rlvr("init-model", str(rows / "m"), "--preset", "1m"), "rows.jsonl is a file")


def test_sft_data_path_a_directory_or_a_json_array(tmp_path):
    config = tmp_path / "sft.toml"
    body = 'kind = "sft"\n[task]\nname = "sort"\n[model]\npreset = "1m"\n[data]\npath = "{}"\n[run]\nout_dir = "{}"\n'
    config.write_text(body.format(tmp_path.as_posix(), (tmp_path / "run").as_posix()))
    assert_user_error(rlvr("sft", str(config), "--check"), "data.path", "is a directory", ".jsonl")
    array = tmp_path / "pairs.json"
    array.write_text(json.dumps([{"prompt": "a", "completion": "b"}], indent=1))
    config.write_text(body.format(array.as_posix(), (tmp_path / "run").as_posix()))
    assert_user_error(rlvr("sft", str(config), "--check"), "pairs.json:1", "one JSON array", "jq -c")


def test_an_os_error_names_the_flag_that_gave_the_path():
    import argparse

    from rlvr.cli import _flag_of

    args = argparse.Namespace(cache="/data/c.jsonl", out=None, model="/m")
    argv = ["eval", "--model", "/m", "--cache", "/data/c.jsonl"]
    assert _flag_of(argv, args, "/data/c.jsonl") == "--cache " and _flag_of(argv, args, "/m/config.json") == "--model "
    assert _flag_of(argv, args, "/elsewhere") == ""


def test_ctrl_c_while_a_training_run_starts_is_a_message_and_leaves_no_run(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.cli.helpers import REPO

    config, log = tiny_rl_config(tmp_path, tmp_path / "run", steps=50), tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", "train", str(config)], stdout=err, stderr=err,
                                cwd=REPO)  # fmt: skip
        t0 = time.monotonic()
        while "resolved config" not in log.read_text() and proc.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # while the model and the engine are being built
        rc = proc.wait(timeout=120)
    text = log.read_text()
    assert rc == 130 and "Traceback" not in text and "stopped by SIGINT" in text, text[-3000:]
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    if saved:  # a loaded machine: step 1 finished before the signal; the message says how to go on
        assert saved[-1].name in text and "--resume" in text, text[-3000:]
    else:
        assert "nothing was saved" in text or "before anything was saved" in text, text[-3000:]
