"""The real CLI, end to end (DESIGN.md §5.5: one test goes through the real CLI)."""

import json
import subprocess
import sys


def _rlvr(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlvr.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_lists_every_subcommand():
    out = _rlvr("--help").stdout
    for name in ("demo", "init-model", "sft", "train", "eval", "report", "verify", "data", "distill"):
        assert name in out
    data = _rlvr("data", "--help").stdout  # the README's `rlvr data dedup / decontam / filter-difficulty`
    assert all(sub in data for sub in ("dedup", "decontam", "filter-difficulty"))


def test_train_rejects_a_typo_before_loading_a_model(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('kind = "rl"\n[optim]\nlrr = 0.1\n')
    proc = _rlvr("train", str(config))
    assert proc.returncode != 0
    assert "optim.lrr" in proc.stderr and "optim.lr" in proc.stderr


def test_init_model_then_eval_writes_results(tmp_path):
    model_dir = tmp_path / "tiny"
    assert _rlvr("init-model", str(model_dir), "--preset", "1m").returncode == 0
    out = tmp_path / "eval.json"
    proc = _rlvr(
        "eval", "--model", str(model_dir), "--task", "arithmetic", "--n", "2", "--k", "1,2",
        "--max-new-tokens", "8", "--limit", "3", "--out", str(out), timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads(out.read_text())
    assert "pass@1" in saved["metrics"] and "pass@2" in saved["metrics"]
    # provenance: task and kwargs, sampling parameters, model fingerprint, rlvr version, git commit
    assert saved["config"]["task"] == "arithmetic" and saved["config"]["task_kwargs"] == {}
    assert saved["config"]["params"]["max_new_tokens"] == 8 and saved["config"]["model_fingerprint"]
    assert saved["provenance"]["rlvr_version"] and "git_commit" in saved["provenance"]
    assert "Traceback" not in proc.stderr and "Loading" not in proc.stderr  # no transformers progress bars


def test_distill_collect_writes_sft_rows_and_resumes(tmp_path):
    """`rlvr distill collect` with a (random) tiny teacher: rows that re-verify, a cache a rerun reuses."""
    teacher = tmp_path / "teacher"
    assert _rlvr("init-model", str(teacher), "--preset", "1m").returncode == 0
    args = ("distill", "collect", "--teacher", str(teacher), "--task", "arithmetic", "--task-kwargs",
            '{"digits": 1, "n_train": 4, "n_test": 2}', "--k", "2", "--max-new-tokens", "8",
            "--out", str(tmp_path / "sft.jsonl"), "--cache", str(tmp_path / "cache.jsonl"))  # fmt: skip
    proc = _rlvr(*args, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["samples"] == 8 and summary["generated_prompts"] == 4
    assert (tmp_path / "sft.jsonl").is_file() and summary["n_rows"] == len((tmp_path / "sft.jsonl").read_text().splitlines())
    again = json.loads((proc := _rlvr(*args, timeout=180)).stdout[proc.stdout.index("{"):])
    assert again["generated_prompts"] == 0 and again["n_rows"] == summary["n_rows"]
    missing = _rlvr("distill", "collect", "--teacher", str(tmp_path / "nope"), "--task", "arithmetic",
                    "--out", str(tmp_path / "x.jsonl"))  # fmt: skip
    assert missing.returncode == 2 and "--teacher" in missing.stderr and "Traceback" not in missing.stderr
