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


def test_each_batch_carries_the_logprobs_of_the_weights_that_sampled_it(tmp_path):
    """With max_staleness = 1 the sampler logprobs of every batch are those of the weights it is tagged with
    (the behaviour policy, weights after step t - 2), not the trainer's current ones: rescored with the
    snapshot of that version they agree to fp32 noise, with the next version they do not."""
    from rlvr.rollout import collect as real_collect
    from rlvr.trainer.batching import Sample, collate
    from rlvr.trainer.forward import completion_logprobs_no_grad

    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    snapshots = {0: {k: v.clone() for k, v in model.state_dict().items()}}  # version = optimizer steps done
    groups = []

    def recording_collect(*args, **kwargs):
        out = real_collect(*args, **kwargs)
        groups.extend(out)
        return out

    def snapshot(ctx: CallbackContext):
        snapshots[ctx.step] = {k: v.clone() for k, v in ctx.model.state_dict().items()}

    cfg = _cfg(tmp_path, steps=4, max_staleness=1)
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"eval_every": 1})})
    train_rl(cfg, model=model, tokenizer=tok, task=DigitRewardTask(), collect=recording_collect, callbacks=(snapshot,))
    assert [g.policy_version for g in groups[::2]] == [0, 0, 1, 2]  # two prompts per batch, batches 1..4

    def logprobs(version, group, completion):
        scorer = build_model("1m", tok, 0)
        scorer.load_state_dict(snapshots[version])
        mb = collate([Sample(group.prompt_ids, completion.token_ids)], tok.pad_token_id)
        return completion_logprobs_no_grad(scorer.eval(), mb, temperature=1.0, autocast=False)[0]

    for g in groups[4:]:  # batches 3 and 4: sampled by versions 1 and 2 while the trainer held 2 and 3
        c = max(g.completions, key=lambda c: len(c.token_ids))
        sampler = torch.tensor(c.sampler_logprobs)
        assert (sampler - logprobs(g.policy_version, g, c)).abs().max() < 1e-4
        assert (sampler - logprobs(g.policy_version + 1, g, c)).abs().max() > 1e-3


ASYNC_CLI = """\
kind = "rl"
[task]
name = "tests.trainer.fakes:DigitRewardTask"
[model]
preset = "1m"
[rollout]
group_size = 8
prompts_per_step = 4
max_new_tokens = 16
max_staleness = 1
[rollout.engine]
type = "hf"
[optim]
lr = 3e-3
micro_batch_size = 32
[run]
out_dir = "{out}"
steps = 14
samples_every = 0
tensorboard = false
threads = 1
"""


@pytest.mark.slow
def test_one_step_off_cli_run_learns_and_logs_its_staleness(tmp_path):
    """`rlvr train` with rollout.max_staleness = 1: the reward rises, every batch after the first is one
    policy version old, and truncated IS is resolved into config.json."""
    from tests.cli.helpers import rlvr

    config = tmp_path / "async.toml"
    config.write_text(ASYNC_CLI.format(out=(tmp_path / "run").as_posix()))
    proc = rlvr("train", str(config), cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = _rows(tmp_path / "run")
    rewards = [r["reward/total"] for r in rows]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.1, rewards
    assert [r["staleness/steps"] for r in rows] == [0] + [1] * 13
    assert [r["staleness/policy_version"] for r in rows] == [0, *range(13)]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["algorithm"]["correction"]["type"] == "tis"
