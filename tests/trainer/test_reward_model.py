"""The reward-model stage and the RM as a reward part: verifier-labelled pairs, the Bradley-Terry step's
global denominator, bitwise resume, the normalising offset, and Score.parts["rm"] in RL."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr.config import ConfigError, parse_config
from rlvr.models.reward import OFFSET_KEY, RewardModelPart, build_reward_model, rewards
from rlvr.tasks import make_task
from rlvr.trainer.checkpoint import load_weights
from rlvr.trainer.reward_model import build_reward_model_stage, task_pairs, train_reward_model

TASK = {"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 40, "n_test": 12}}


def _cfg(tmp_path, **run):
    return parse_config({"kind": "reward_model", "model": {"preset": "1m"}, "task": TASK,
                         "data": {"from_task": True, "batch_size": 8, "heldout_pairs": 10, "normalize_samples": 8},
                         "optim": {"lr": 1e-3, "micro_batch_size": 16},
                         "run": {"out_dir": str(tmp_path), "steps": 4, "progress": False, "tensorboard": False, **run}})  # fmt: skip


def test_task_pairs_are_verifier_labelled():
    task = make_task(TASK["name"], **TASK["kwargs"])
    _, tok = build_reward_model(None, "1m", 0)
    examples = list(task.examples("train"))[:10]
    pairs = task_pairs(task, examples, tok, 512, seed=0)
    assert 0 < len(pairs) <= 10 and all(c != r for c, r in pairs)
    prompt = tok(task.render(examples[0]))["input_ids"]
    assert list(pairs[0][0][: len(prompt)]) == list(prompt)  # prompt + completion, reward read at the end


def test_reward_is_read_at_the_last_real_token():
    model, tok = build_reward_model(None, "1m", 0)
    model.eval()
    a, b = [5, 6, 7, 8], [9, 10]
    with torch.no_grad():
        together = rewards(model, [a, b], tok.pad_token_id)
        alone = torch.cat([rewards(model, [a], tok.pad_token_id), rewards(model, [b], tok.pad_token_id)])
    assert torch.allclose(together, alone, atol=1e-5)  # padding never changes a sequence's reward


def _grads(tmp_path, micro):
    cfg = parse_config({**_cfg(tmp_path).model_dump(), "optim": {"lr": 1e-3, "micro_batch_size": micro, "grad_clip": None}})
    stage = build_reward_model_stage(cfg)
    stage.optim.step = stage.optim.zero_grad = lambda: None
    stage.step(1, __import__("rlvr.trainer.run", fromlist=["Timer"]).Timer())
    return [p.grad.clone() for p in stage.model.parameters() if p.grad is not None]


def test_pair_denominator_is_global(tmp_path):
    whole, split = _grads(tmp_path / "a", 16), _grads(tmp_path / "b", 2)
    assert max(float((x - y).abs().max()) for x, y in zip(whole, split)) < 1e-6


def test_reward_model_resumes_bitwise_and_normalises(tmp_path):
    full = train_reward_model(_cfg(tmp_path / "full"))
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert full.status == "completed" and rows[-1]["eval/heldout_pairs"] > 0
    assert 0.0 <= rows[-1]["eval/pair_accuracy"] <= 1.0 and "reward/offset" in rows[-1]
    saved = json.loads((full.checkpoint / "config.json").read_text())
    assert saved[OFFSET_KEY] == pytest.approx(rows[-1]["reward/offset"])

    cut = _cfg(tmp_path / "cut", save_every=2)
    first = train_reward_model(parse_config({**cut.model_dump(), "run": {**cut.run.model_dump(), "steps": 2}}))
    assert first.step == 2
    resumed = train_reward_model(cut, resume=True)
    a, _ = build_reward_model(None, "1m", 0)
    b, _ = build_reward_model(None, "1m", 0)
    load_weights(a, full.checkpoint)
    load_weights(b, resumed.checkpoint)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_trained_rm_is_a_named_reward_part(tmp_path):
    result = train_reward_model(_cfg(tmp_path / "rm"))
    model, tok = build_reward_model(str(result.checkpoint), "1m", 0)
    task = make_task(TASK["name"], **TASK["kwargs"])
    part = RewardModelPart(task, model, tok, weight=0.5)
    ex = task.examples("train")[0]
    text = task.solution(ex)
    score, base = part.score(ex, text), task.score(ex, text)
    assert set(score.parts) == set(base.parts) | {"rm"}
    assert score.total == pytest.approx(base.total + 0.5 * score.parts["rm"])
    assert part.offset == pytest.approx(json.loads((result.checkpoint / "config.json").read_text())[OFFSET_KEY])


def test_rl_config_with_a_reward_model_logs_its_part(tmp_path):
    from rlvr.models.tiny import build_model, build_tokenizer
    from rlvr.trainer import build, train_rl
    from tests.trainer.fakes import FakeEngine, fake_collect, rl_config

    rm = train_reward_model(_cfg(tmp_path / "rm"))
    cfg = rl_config(tmp_path / "rl", reward_model={"path": str(rm.checkpoint), "weight": 0.5}, run={"steps": 2})
    build.validate(cfg)
    tok = build_tokenizer()
    result = train_rl(cfg, model=build_model("1m", tok, 0), tokenizer=tok, engine=FakeEngine(tok), collect=fake_collect)
    rows = [json.loads(x) for x in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert result.status == "completed" and all("reward/rm" in r for r in rows)
    bad = rl_config(tmp_path / "rl2", reward_model={"path": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match=r"reward_model\.path"):
        build.validate(bad)
