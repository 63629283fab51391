"""The PPO stage: critic targets and metrics, critic warm-up, bitwise resume, and the config's checks."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from rlvr.config import ConfigError, parse_config
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.tasks import make_task
from rlvr.trainer import train_ppo
from rlvr.trainer.checkpoint import load_weights
from tests.trainer.fakes import FakeEngine, ParityRewardTask, fake_collect

TASK = {"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 40, "n_test": 8}}


def _cfg(out, **sections):
    data = {"kind": "ppo", "model": {"preset": "1m", "bf16_autocast": False}, "task": TASK,
            "rollout": {"engine": "fake", "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 10},
            "optim": {"lr": 1e-3, "micro_batch_size": 4}, "critic": {"lr": 1e-3},
            "run": {"out_dir": str(out), "steps": 3, "progress": False, "tensorboard": False}}  # fmt: skip
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return parse_config(data)


def _run(cfg, **kw):
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    task = ParityRewardTask(make_task(TASK["name"], **TASK["kwargs"]))
    return train_ppo(cfg, model=model, tokenizer=tok, task=task, engine=FakeEngine(tok), collect=fake_collect, **kw), model


def _rows(d):
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def test_ppo_logs_the_n_details_metrics(tmp_path):
    result, model = _run(_cfg(tmp_path))
    rows = _rows(tmp_path)
    assert result.status == "completed"
    for key in ("value/loss", "value/clip_frac", "value/explained_variance", "values/mean", "returns/mean",
                "adv_raw/std", "kl/per_sequence", "kl/beta", "clip/frac", "entropy", "grad_norm", "value/grad_norm",
                "reward/total", "length/mean"):  # fmt: skip
        assert key in rows[-1], key
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                   build_model("1m", build_tokenizer(), 0).state_dict().values()))


def test_critic_warmup_leaves_the_policy_alone(tmp_path):
    _, model = _run(_cfg(tmp_path, ppo={"critic_warmup_steps": 3}))
    rows = _rows(tmp_path)
    assert [r["critic/warmup"] for r in rows] == [1, 1, 1] and all("value/loss" in r for r in rows)
    fresh = build_model("1m", build_tokenizer(), 0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_ppo_resumes_bitwise(tmp_path):
    _, full_model = _run(_cfg(tmp_path / "full", run={"steps": 4}))

    def stop_at_2(ctx):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cut = _cfg(tmp_path / "cut", run={"steps": 4, "eval_every": 1})
    first, _ = _run(cut, callbacks=(stop_at_2,))
    assert first.status == "interrupted"
    second, _ = _run(cut, resume=True)
    a = build_model("1m", build_tokenizer(), 0)
    load_weights(a, second.checkpoint)
    assert all(torch.equal(x, y) for x, y in zip(full_model.state_dict().values(), a.state_dict().values()))
    assert [r["value/loss"] for r in _rows(tmp_path / "full")] == [r["value/loss"] for r in _rows(tmp_path / "cut")]


def test_ppo_kl_belongs_in_the_reward():
    with pytest.raises(ConfigError, match=r"kl\.placement"):
        parse_config({"kind": "ppo", "task": TASK, "kl": {"beta": 0.1, "placement": "loss"}})
