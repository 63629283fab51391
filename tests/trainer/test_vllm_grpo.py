"""GRPO with `rollout.engine = "vllm"` (the engine built from the config, in-process, fp32): the reward
rises, the sampler agrees with the trainer (mismatch and the checked sync both ~1e-6 nats), TIS is on,
and a resumed run equals the uninterrupted one bitwise.  Needs vLLM; slow (about a minute here)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.trainer import CallbackContext, train_rl
from tests.trainer.fakes import DigitRewardTask, rl_config

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _cfg(out, steps):
    return rl_config(out, rollout={"engine": {"type": "vllm"}, "group_size": 8, "prompts_per_step": 4,
                                   "max_new_tokens": 16},
                     optim={"lr": 3e-3, "micro_batch_size": 32}, run={"steps": steps, "samples_every": 0})  # fmt: skip


def _run(cfg, **kw):
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    return train_rl(cfg, model=model, tokenizer=tok, task=DigitRewardTask(), **kw), model


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_grpo_with_vllm_learns_with_sampler_and_trainer_agreeing(tmp_path):
    result, _ = _run(_cfg(tmp_path, 14))
    assert result.status == "completed"
    rows = _rows(tmp_path)
    rewards = [r["reward/total"] for r in rows]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.1, rewards
    assert max(r["mismatch/abs_logp_diff"] for r in rows) < 1e-4
    assert max(r["sync/max_abs_logp_diff"] for r in rows) < 1e-4
    assert json.loads((tmp_path / "config.json").read_text())["algorithm"]["correction"]["type"] == "tis"


def test_grpo_with_vllm_resumes_bitwise(tmp_path):
    _, full = _run(_cfg(tmp_path / "full", 4))

    def stop_at_2(ctx: CallbackContext):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = _cfg(tmp_path / "cut", 4).model_copy(update={"run": _cfg(tmp_path / "cut", 4).run.model_copy(
        update={"eval_every": 1})})  # fmt: skip
    first, _ = _run(cfg, callbacks=(stop_at_2,))
    assert first.status == "interrupted" and first.step == 2
    second, resumed = _run(cfg, resume=True)
    assert second.status == "completed" and second.step == 4
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert [r["reward/total"] for r in _rows(tmp_path / "cut")] == [r["reward/total"] for r in _rows(tmp_path / "full")]
