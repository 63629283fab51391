"""The one-step-off pipeline (`rollout.max_staleness`) with the real HF engine on the 1m model: batch t is
sampled by the weights after step max(t - 1 - s, 0) (tagged and logged), s = 0 is the synchronous loop
bit for bit, s = 1 trains on different (older) samples, TIS is on by default, and resume is exact with
the batch sampled ahead saved in the checkpoint."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.trainer import CallbackContext, train_rl
from rlvr.trainer.async_rollout import RolloutPipeline
from tests.trainer.fakes import DigitRewardTask, rl_config


def _cfg(out, steps=4, **rollout):
    return rl_config(out, rollout={"engine": {"type": "hf"}, "group_size": 4, "prompts_per_step": 2, **rollout},
                     run={"steps": steps, "samples_every": 0})  # fmt: skip


def _run(cfg, **kw):
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    return train_rl(cfg, model=model, tokenizer=tok, task=DigitRewardTask(), **kw), model


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_behaviour_step_is_fixed_by_the_staleness_alone():
    assert [RolloutPipeline(0).behaviour_step(t) for t in (1, 2, 3)] == [0, 1, 2]
    assert [RolloutPipeline(1).behaviour_step(t) for t in (1, 2, 3, 4)] == [0, 0, 1, 2]
    assert [RolloutPipeline(2).behaviour_step(t) for t in (1, 2, 3, 4, 5)] == [0, 0, 0, 1, 2]


def test_staleness_zero_is_the_synchronous_loop_and_one_is_one_step_off(tmp_path):
    _, default = _run(_cfg(tmp_path / "default"))
    _, zero = _run(_cfg(tmp_path / "zero", max_staleness=0))
    result, one = _run(_cfg(tmp_path / "one", max_staleness=1))
    assert _same(default, zero)
    assert [r["reward/total"] for r in _rows(tmp_path / "zero")] == [r["reward/total"] for r in _rows(tmp_path / "default")]
    assert result.status == "completed" and not _same(zero, one)
    rows = _rows(tmp_path / "one")
    assert [r["staleness/policy_version"] for r in rows] == [0, 0, 1, 2]  # batch t from the weights after t - 2
    assert [r["staleness/steps"] for r in rows] == [0, 1, 1, 1]
    assert [r["staleness/steps"] for r in _rows(tmp_path / "zero")] == [0, 0, 0, 0]
    assert rows[0]["reward/total"] == _rows(tmp_path / "zero")[0]["reward/total"]  # batch 1 is the same
    assert json.loads((tmp_path / "one" / "config.json").read_text())["algorithm"]["correction"]["type"] == "tis"
    assert all(r["mismatch/abs_logp_diff"] > 1e-4 for r in rows[1:])  # the IS ratio sees the older sampler


def test_one_step_off_resumes_bitwise(tmp_path):
    _, full = _run(_cfg(tmp_path / "full", steps=5, max_staleness=1))

    def stop_at_2(ctx: CallbackContext):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = _cfg(tmp_path / "cut", steps=5, max_staleness=1)
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"eval_every": 1})})
    first, _ = _run(cfg, callbacks=(stop_at_2,))
    assert first.status == "interrupted" and first.step == 2
    second, resumed = _run(cfg, resume=True)
    assert second.status == "completed" and _same(full, resumed)
    keys = ("reward/total", "staleness/policy_version", "loss")
    assert [[r[k] for k in keys] for r in _rows(tmp_path / "cut")] == [[r[k] for k in keys] for r in _rows(tmp_path / "full")]


@pytest.mark.slow
def test_one_step_off_grpo_learns(tmp_path):
    cfg = rl_config(tmp_path, rollout={"engine": {"type": "hf"}, "group_size": 8, "prompts_per_step": 4,
                                       "max_new_tokens": 16, "max_staleness": 1},
                    optim={"lr": 3e-3, "micro_batch_size": 32}, run={"steps": 14, "samples_every": 0})  # fmt: skip
    result, _ = _run(cfg)
    rows = _rows(tmp_path)
    rewards = [r["reward/total"] for r in rows]
    assert result.status == "completed" and sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.1, rewards
    assert [r["staleness/steps"] for r in rows] == [0] + [1] * 13
