"""End to end on CPU: SFT cold start of the 1m model on sort traces, then GRPO raises the reward.

Slow (about two minutes): run with --runslow.  The rise is measured on a fixed set of prompts with
a fixed sampling seed (temperature 1, 8 samples each) before and after RL, through the real
HFEngine and `collect`, so step-to-step batch noise does not decide the outcome.
"""

from __future__ import annotations

import pytest

from rlvr.config import RLConfig, SFTConfig
from rlvr.rollout import SamplingParams, collect
from rlvr.trainer import CallbackContext, train_rl, train_sft

TASK = {"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 80, "n_test": 20}}


def _accuracy(engine, tokenizer, task) -> float:
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=48, seed=123,
                            stop_token_ids=(tokenizer.eos_token_id,))  # fmt: skip
    groups = collect(engine, tokenizer, task, list(task.examples("train"))[:32], params)
    return sum(s.parts["accuracy"] for g in groups for s in g.scores) / (32 * 8)


@pytest.mark.slow
def test_grpo_raises_reward_after_sft(tmp_path):
    sft = SFTConfig.model_validate({
        "model": {"preset": "1m"}, "task": TASK, "data": {"batch_size": 16},
        "optim": {"lr": 3e-3, "micro_batch_size": 16, "warmup_steps": 3},
        "run": {"out_dir": str(tmp_path / "sft"), "steps": 100, "progress": False, "tensorboard": False},
    })  # fmt: skip
    ckpt = train_sft(sft).checkpoint
    rl = RLConfig.model_validate({
        "model": {"path": str(ckpt)}, "task": TASK,
        "rollout": {"group_size": 8, "prompts_per_step": 8, "max_new_tokens": 48},
        "algorithm": {"clip_high": 0.28},
        "optim": {"lr": 2e-4, "micro_batch_size": 64},
        "run": {"out_dir": str(tmp_path / "rl"), "steps": 50, "eval_every": 1, "progress": False,
                "tensorboard": False},
    })  # fmt: skip
    seen: dict[str, float] = {}

    def measure(ctx: CallbackContext) -> dict[str, float] | None:
        if ctx.step == 1 or ctx.final:  # step 1: after one small update, close to the SFT model
            seen["end" if ctx.final else "start"] = _accuracy(ctx.engine, ctx.tokenizer, ctx.task)
            return {"sampled_accuracy": seen["end" if ctx.final else "start"]}
        return None

    result = train_rl(rl, callbacks=(measure,))
    assert result.status == "completed" and result.metrics["eval/sampled_accuracy"] == seen["end"]
    # measured: 0.19 -> 0.37 (seed 0); demand a clear rise, not the full one
    assert seen["end"] > seen["start"] + 0.08, seen
