"""The DPO stage: verifier-built pairs, file pairs with errors that name the line, the global pair
denominator (accumulation invariance), bitwise resume, and the loss through the config."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from rlvr.config import ConfigError, parse_config
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.tasks import make_task
from rlvr.tasks.files import DatasetError
from rlvr.trainer.checkpoint import load_weights
from rlvr.trainer.dpo import build_dpo_stage, onpolicy_pairs, train_dpo
from rlvr.types import Completion, Example, Group, Score
from tests.trainer.fakes import FakeEngine, ParityRewardTask, fake_collect

TASK = {"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 40, "n_test": 8}}


def _pairs_file(tmp_path, n=12):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pairs.jsonl"
    rows = [{"q": f"sort {i} {i + 2} {i + 1}", "good": f"<think>s</think><answer>{i} {i + 1} {i + 2}</answer>",
             "bad": f"<answer>{i + 2}</answer>"} for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(tmp_path, **over):
    data = {"kind": "dpo", "model": {"preset": "1m", "bf16_autocast": False},
            "data": {"path": str(_pairs_file(tmp_path)), "prompt_field": "q", "chosen_field": "good",
                     "rejected_field": "bad", "pairs_per_step": 4},
            "optim": {"lr": 1e-3, "micro_batch_size": 8},
            "run": {"out_dir": str(tmp_path / "run"), "steps": 4, "progress": False, "tensorboard": False}}  # fmt: skip
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(data)


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _group(rewards):
    comps = [Completion(f"c{i}", (10 + i,), None, "stop") for i in range(len(rewards))]
    return Group(Example("e", "p", "g"), "p", (1, 2), comps, [Score(total=r) for r in rewards])


def test_onpolicy_pairs_rank_by_reward_and_skip_ties():
    pairs = onpolicy_pairs([_group([0.0, 1.0, 0.2, 1.0]), _group([1.0, 1.0])], per_prompt=2)
    # best (index 1, reward 1) with worst (index 0, reward 0); next best (3) with next worst (2); the tie group gives none
    assert pairs == [((1, 2), (11,), (10,)), ((1, 2), (13,), (12,))]
    assert onpolicy_pairs([_group([1.0, 0.0, 0.0])], per_prompt=5) == [((1, 2), (10,), (12,))]  # best with the last worst


def test_file_errors_name_the_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "x", "good": "y", "bad": "z"}\n{"q": "x", "good": 3, "bad": "z"}\n')
    cfg = _cfg(tmp_path, data={"path": str(bad)})
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: field 'good' missing or not a string \(set data.chosen_field\)"):
        build_dpo_stage(cfg)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="empty"):
        build_dpo_stage(_cfg(tmp_path, data={"path": str(tmp_path / "empty.jsonl")}))
    with pytest.raises(ConfigError, match="DPO needs pairs"):
        parse_config({"kind": "dpo"})


def _grads(tmp_path, micro, loss):
    # at init the policy equals the reference, so rewards/accuracy counts exact ties: both sides must run the
    # same kernels (the reference engine runs HF's own modules, not rlvr.models.kernels')
    stage = build_dpo_stage(_cfg(tmp_path, model={"fused_kernels": False},
                                 optim={"micro_batch_size": micro, "grad_clip": None}, loss=loss))
    stage.optim.step = stage.optim.zero_grad = lambda: None  # keep the gradients
    pairs = stage.file_cursor.take(8)
    metrics = stage._update(pairs, stage._reference(pairs))
    return [p.grad.clone() for p in stage.model.parameters()], metrics


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "length_normalized", "simpo"])
def test_one_pair_per_micro_batch_equals_all_at_once(tmp_path, loss):
    (whole, m1), (split, m8) = _grads(tmp_path, 16, loss), _grads(tmp_path, 2, loss)
    scale = max(float(a.abs().max()) for a in whole)
    assert max(float((a - b).abs().max()) for a, b in zip(whole, split)) < 1e-6 * max(scale, 1.0)
    assert m1["loss"] == pytest.approx(m8["loss"], rel=1e-5)
    assert m1["rewards/accuracy"] == pytest.approx(m8["rewards/accuracy"])


def test_the_reference_starts_equal_to_the_policy(tmp_path):
    _, metrics = _grads(tmp_path, 16, "sigmoid")
    # before any update policy == reference: implicit rewards 0, loss log 2 per pair
    assert metrics["rewards/margin"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["loss"] == pytest.approx(0.6931, abs=1e-3)


def test_dpo_learns_the_file_preferences_and_resumes_bitwise(tmp_path):
    full = train_dpo(_cfg(tmp_path / "a", run={"steps": 6}))
    rows = _rows(tmp_path / "a" / "run")
    assert full.status == "completed" and rows[-1]["rewards/margin"] > rows[0]["rewards/margin"]

    def stop_at_3(ctx):
        if ctx.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    cut = _cfg(tmp_path / "b", task=TASK, run={"steps": 6, "eval_every": 1})
    assert train_dpo(cut, callbacks=(stop_at_3,)).status == "interrupted"
    resumed = train_dpo(cut, resume=True)
    tok = build_tokenizer()
    a, b = build_model("1m", tok, 0), build_model("1m", tok, 0)
    load_weights(a, full.checkpoint)
    load_weights(b, resumed.checkpoint)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert [r["loss"] for r in rows] == [r["loss"] for r in _rows(tmp_path / "b" / "run")]


def test_onpolicy_pairs_mixed_with_file_pairs(tmp_path):
    cfg = _cfg(tmp_path, task=TASK, data={"onpolicy": True, "pairs_per_prompt": 2},
               rollout={"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 10, "engine": "fake"})  # fmt: skip
    tok = build_tokenizer()
    result = train_dpo(cfg, model=build_model("1m", tok, 0), tokenizer=tok, engine=FakeEngine(tok),
                       collect=fake_collect, task=ParityRewardTask(make_task(TASK["name"], **TASK["kwargs"])))  # fmt: skip
    rows = _rows(tmp_path / "run")
    assert result.status == "completed"
    assert all(r["pairs"] == r["pairs/onpolicy"] + 4 and r["pairs/onpolicy"] > 0 for r in rows)
