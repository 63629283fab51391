"""`rlvr demo`: plans, summary/table helpers, the orchestration (stubbed stages), and the real CLI (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import rlvr.demo.run as demo_run
from rlvr.config import RLConfig, SFTConfig
from rlvr.demo import PLANS, run_demo
from rlvr.demo.plan import rl_config, sft_config, task_kwargs
from rlvr.evaluation.metrics import MetricValue
from rlvr.evaluation.result import EvalResult
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.tasks import make_task
from rlvr.trainer import CallbackContext

PROMISED = {"pass@1", "pass@k", "maj@k", "format_rate", "mean_length"}
REPO = Path(__file__).resolve().parents[1]


def _mv(value: float) -> MetricValue:
    return MetricValue(value, 0.01, value - 0.02, value + 0.02)


# ------------------------------------------------------------------ plans


@pytest.mark.parametrize("name", sorted(PLANS))
def test_plans_expand_to_valid_configs(name: str, tmp_path: Path) -> None:
    plan = PLANS[name]
    sft = sft_config(plan, tmp_path / "sft", seed=5, progress=False)
    rl = rl_config(plan, tmp_path, seed=5, progress=False)
    assert isinstance(sft, SFTConfig) and isinstance(rl, RLConfig)
    assert sft.run.out_dir == str(tmp_path / "sft") and rl.run.out_dir == str(tmp_path)
    assert sft.data.noise == plan.sft_noise > 0  # the cold start is deliberately imperfect
    assert rl.algorithm.advantage.type == "grpo" and rl.algorithm.kl.beta == 0.0
    assert rl.rollout.samples_per_step == plan.group_size * plan.prompts_per_step
    assert sft.task.kwargs["seed"] == rl.task.kwargs["seed"] == 5  # same problems in both stages
    assert sft.run.threads == rl.run.threads == plan.threads


def test_quick_plan_is_cheaper_than_full() -> None:
    quick, full = PLANS["quick"].nominal_seconds(), PLANS["full"].nominal_seconds()
    assert sum(quick.values()) < sum(full.values()) / 2
    # full: 0.075 * 1500 = 112.5 s of SFT, 0.5 * 150 + 6 evals * 2.5 * 100 * 4 / 1000 = 81 s of GRPO
    assert full["sft"] == pytest.approx(112.5) and full["grpo"] == pytest.approx(81.0)


def test_train_and_test_splits_are_disjoint() -> None:
    task = make_task(PLANS["full"].task, **task_kwargs(PLANS["full"], seed=0))
    train = {ex.prompt for ex in task.examples("train")}
    test = {ex.prompt for ex in task.examples("test")}
    assert len(test) == PLANS["full"].n_test and not train & test


# ------------------------------------------------------------------ summary helpers


def test_flat_metrics_names_k_generically() -> None:
    names = {
        "pass@1": 0.4,
        "pass@8": 0.9,
        "maj@8": 0.6,
        "avg@8": 0.4,
        "format_rate": 0.95,
        "mean_length": 30.0,
    }
    result = EvalResult(metrics={k: _mv(v) for k, v in names.items()}, per_example=[], config={})
    flat = demo_run.flat_metrics(result, 8)
    assert set(flat) >= PROMISED
    assert flat["pass@k"] == 0.9 and flat["maj@k"] == 0.6 and flat["avg@8"] == 0.4


def test_before_after_table_shows_points() -> None:
    before = {"pass@1": 0.410, "pass@k": 0.98, "maj@k": 0.645, "format_rate": 0.979, "mean_length": 19.4}
    after = {"pass@1": 0.693, "pass@k": 1.0, "maj@k": 0.955, "format_rate": 0.974, "mean_length": 19.3}
    table = demo_run.before_after_table(before, after, k=8)
    row = next(line for line in table.splitlines() if line.startswith("pass@1 "))
    assert row.split() == ["pass@1", "41.0%", "69.3%", "+28.3", "pts"]  # 69.3 - 41.0 = 28.3
    assert "maj@8" in table and "pass@8" in table and "-0.5 pts" in table  # 97.4 - 97.9
    assert "nan" in table.splitlines()[-1]  # greedy_pass@1 missing: shown, not crashed


def test_refuses_a_non_empty_out_dir(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--out"):
        run_demo(tmp_path, progress=False)


# ------------------------------------------------------------------ real components, tiny sizes


def test_held_out_eval_writes_json_and_promised_keys(tmp_path: Path) -> None:
    plan = replace(PLANS["quick"], n_test=4, eval_samples=2, max_new_tokens=8)
    task = make_task(plan.task, **task_kwargs(plan, seed=0))
    tokenizer = build_tokenizer()
    model = build_model("1m", tokenizer, seed=0)
    flat = demo_run.held_out_eval(model, tokenizer, task, plan, 0, tmp_path / "eval" / "before.json")
    assert set(flat) >= PROMISED | {"greedy_pass@1"}
    assert all(0.0 <= flat[k] <= 1.0 for k in PROMISED - {"mean_length"})
    assert 1 <= flat["mean_length"] <= 8  # capped by max_new_tokens
    saved = json.loads((tmp_path / "eval" / "before.json").read_text())
    assert {"pass@1", "pass@2", "greedy_pass@1"} <= set(saved["metrics"])


def test_rl_eval_callback_skips_the_final_step() -> None:
    plan = replace(PLANS["quick"], n_test=3, eval_samples=2, rl_eval_examples=2, max_new_tokens=4)
    task = make_task(plan.task, **task_kwargs(plan, seed=0))
    tokenizer = build_tokenizer()
    model = build_model("1m", tokenizer, seed=0)
    callback = demo_run.rl_eval_callback(task, plan, seed=0)
    engine = demo_run.HFEngine(model, tokenizer)
    ctx = CallbackContext(step=5, run_dir=Path("."), model=model, tokenizer=tokenizer, engine=engine, task=task,
                          final=False)  # fmt: skip
    got = callback(ctx)
    assert set(got) == {"pass@1", "format_rate"} and 0.0 <= got["pass@1"] <= 1.0
    assert callback(replace(ctx, final=True)) == {}


# ------------------------------------------------------------------ orchestration with stubbed stages


def test_orchestration_order_files_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    calls: list[tuple[str, object]] = []
    scores = iter([{"pass@1": 0.40, "pass@k": 0.9, "maj@k": 0.5, "format_rate": 0.9, "mean_length": 30.0},
                   {"pass@1": 0.70, "pass@k": 0.95, "maj@k": 0.8, "format_rate": 1.0, "mean_length": 29.0}])  # fmt: skip

    def fake_sft(config, *, model, tokenizer, task):
        calls.append(("sft", config.run.out_dir))
        assert task.examples("train")

    def fake_rl(config, *, callbacks, model, tokenizer, task):
        calls.append(("rl", config.run.out_dir))
        assert model.training and len(callbacks) == (1 if PLANS["quick"].rl_eval_every else 0)
        (Path(config.run.out_dir) / "metrics.jsonl").write_text('{"step": 1, "reward/total": 0.5}\n')

    def fake_eval(model, tokenizer, task, plan, seed, path):
        calls.append(("eval", path.relative_to(tmp_path).as_posix()))
        path.parent.mkdir(parents=True, exist_ok=True)
        return {**next(scores), "greedy_pass@1": 0.5}

    monkeypatch.setattr(demo_run, "train_sft", fake_sft)
    monkeypatch.setattr(demo_run, "train_rl", fake_rl)
    monkeypatch.setattr(demo_run, "held_out_eval", fake_eval)
    threads = torch.get_num_threads()
    out = tmp_path / "demo"
    summary = run_demo(out, seed=3, quick=True, progress=False, threads=1)

    assert calls == [("sft", str(out / "sft")), ("eval", "demo/eval/before.json"), ("rl", str(out)),
                     ("eval", "demo/eval/after.json")]  # fmt: skip
    assert torch.get_num_threads() == threads  # the demo's --threads does not leak to the caller
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert set(on_disk["before"]) >= PROMISED and set(on_disk["after"]) >= PROMISED
    assert on_disk["seed"] == 3 and on_disk["plan"] == "quick" and on_disk["wall_seconds"] >= 0
    prov = on_disk["provenance"]
    assert prov["task"] == "arithmetic" and prov["task_kwargs"]["seed"] == 3 and prov["model"]["fingerprint_after"]
    assert prov["sampling"]["n"] == PLANS["quick"].eval_samples and prov["rlvr_version"] and "git_commit" in prov
    assert on_disk["gain_points"]["pass@1"] == pytest.approx(30.0)  # 100 * (0.70 - 0.40)
    assert math.isclose(on_disk["gain_points"]["maj@k"], 30.0)  # 100 * (0.8 - 0.5)
    html = (out / "report.html").read_text()
    assert "pass@1" in html and "40.0%" in html and "70.0%" in html
    assert "+30.0 pts" in capsys.readouterr().out


def test_a_stage_stopped_by_a_signal_stops_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlvr.errors import Stopped
    from rlvr.trainer import RunResult

    calls: list[str] = []

    def stopped_sft(config, *, model, tokenizer, task):
        calls.append("sft")
        return RunResult(run_dir=Path(config.run.out_dir), step=7, status="interrupted", signal="SIGTERM")

    monkeypatch.setattr(demo_run, "train_sft", stopped_sft)
    monkeypatch.setattr(demo_run, "held_out_eval", lambda *a: calls.append("eval"))
    with pytest.raises(Stopped) as stop:
        run_demo(tmp_path / "demo", quick=True, progress=False, threads=1)
    assert calls == ["sft"] and stop.value.exit_code == 143
    assert "sft stage (after step 7)" in stop.value.message and "new --out" in stop.value.message
    assert not (tmp_path / "demo" / "summary.json").exists()


# ------------------------------------------------------------------ the real CLI, end to end


@pytest.mark.slow
def test_cli_demo_quick_end_to_end(tmp_path: Path) -> None:
    """`rlvr demo --quick` really trains (~1.5-2.5 min on an idle 2-core AVX2 CPU, fp32).

    Margin: over seeds 0/1/2 the quick plan gained +24.5/+31.1/+23.3 points of held-out pass@1
    (100 problems x 8 samples; the standard error of a paired difference is <= 4 points), so
    requiring +10 fails only when RL is broken, not by sampling noise.
    """
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli", "demo", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["before"]) >= PROMISED and set(summary["after"]) >= PROMISED
    assert {"wall_seconds", "seed"} <= set(summary) and summary["seed"] == 0
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "eval" / "before.json").is_file() and (out / "eval" / "after.json").is_file()
    before, after = summary["before"], summary["after"]
    assert after["pass@1"] >= before["pass@1"] + 0.10, (before, after)
    assert after["format_rate"] >= before["format_rate"] - 0.05  # format was learned in SFT; RL keeps it
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[:10], rows[-10:]
    mean = lambda rs: sum(r["reward/total"] for r in rs) / len(rs)  # noqa: E731
    assert mean(last) > mean(first)  # the training reward rose too
    assert "pass@1" in proc.stdout and "pts" in proc.stdout  # the before/after table was printed
