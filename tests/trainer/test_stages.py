"""The redesigned trainer: config parts reach the step, user parts with kwargs train, the weight sync is
checked, adaptive KL follows Ziegler et al.'s formula, every stage resumes bitwise, mixtures sample by
weight, and `rlvr train` runs in-training evaluation."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sys
import textwrap

import pytest
import torch

from rlvr.algorithms.compose import TokenInputs
from rlvr.algorithms.kl import AdaptiveKLController
from rlvr.config import SFTConfig, parse_config
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.rollout.base import WeightSyncError
from rlvr.rollout.hf import HFEngine
from rlvr.tasks import make_task
from rlvr.trainer import build, train_rl, train_sft
from tests.trainer.fakes import FakeEngine, ParityRewardTask, fake_collect, rl_config


def _rl(cfg, *, engine=None, task=None, resume=False, callbacks=()):
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    task = task or ParityRewardTask(make_task(cfg.task.name, **cfg.task.kwargs))
    result = train_rl(cfg, resume=resume, callbacks=callbacks, model=model, tokenizer=tok, task=task,
                      engine=engine or FakeEngine(tok), collect=fake_collect)  # fmt: skip
    return result, model


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_gspo_through_the_config_clips_at_the_papers_range(tmp_path):
    cfg = rl_config(tmp_path, algorithm={"objective": "gspo", "aggregation": "seq_mean_token_mean"})
    objective = build.build_objective(cfg)
    mask = torch.ones(2, 3, dtype=torch.bool)
    old = torch.zeros(2, 3)
    logp = (old + 1e-3).requires_grad_()  # sequence ratio e^0.001: inside PPO's 0.2, outside GSPO's 4e-4
    x = TokenInputs(logprobs=logp, old_logprobs=old, loss_mask=mask, advantages=torch.tensor([1.0, 1.0]))
    loss, metrics = objective(x, objective.denominator([mask]))
    assert float(metrics["clip/high_frac"]) == 1.0
    loss.backward()
    assert float(logp.grad.abs().max()) == 0.0  # clipped: no gradient, as the paper's 4e-4 says
    ppo = build.build_objective(rl_config(tmp_path))
    assert float(ppo(x, ppo.denominator([mask]))[1]["clip/high_frac"]) == 0.0


USER_OBJECTIVE = '''
from rlvr.algorithms.objectives import ppo_clip

CALLS = []

def scaled_ppo(*, logprobs, old_logprobs, advantages, loss_mask, scale, clip):
    CALLS.append((scale, clip))
    loss, metrics = ppo_clip(logprobs, old_logprobs, advantages, clip_low=clip, clip_high=clip, loss_mask=loss_mask)
    metrics["user/scale"] = loss.new_tensor(scale)
    return scale * loss, metrics
'''


def test_user_objective_with_its_own_kwargs_trains(tmp_path, monkeypatch):
    (tmp_path / "my_objectives.py").write_text(textwrap.dedent(USER_OBJECTIVE))
    monkeypatch.syspath_prepend(str(tmp_path))
    algo = {"objective": {"type": "my_objectives:scaled_ppo", "kwargs": {"scale": 0.5, "clip": 0.1}}}
    result, model = _rl(rl_config(tmp_path / "run", algorithm=algo, run={"steps": 2}))
    import my_objectives

    assert result.status == "completed" and set(my_objectives.CALLS) == {(0.5, 0.1)}
    rows = _rows(tmp_path / "run")
    assert all(r["user/scale"] == 0.5 and r["grad_norm"] > 0 for r in rows)
    assert not _same(model, build_model("1m", build_tokenizer(), 0))
    sys.modules.pop("my_objectives", None)


class NoOpSyncEngine(HFEngine):
    """An engine whose weight update reports success but does nothing (the classic silent bug)."""

    def update_weights(self, state_dict, *, version):
        self.version = version
        return version


class WrongVersionEngine(HFEngine):
    def update_weights(self, state_dict, *, version):
        super().update_weights(state_dict, version=version)
        return version - 1


def _hf_run(tmp_path, engine_cls):
    cfg = rl_config(tmp_path, rollout={"engine": "hf"}, run={"steps": 2}, model={"bf16_autocast": False})
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    engine = engine_cls(model, tok, dtype=None)
    task = ParityRewardTask(make_task(cfg.task.name, **cfg.task.kwargs))
    return train_rl(cfg, model=model, tokenizer=tok, task=task, engine=engine)


def test_checked_weight_sync_passes_for_a_real_update(tmp_path):
    result = _hf_run(tmp_path, HFEngine)
    rows = _rows(tmp_path)
    assert result.status == "completed"
    assert all(r["sync/max_abs_logp_diff"] <= 1e-3 for r in rows)
    assert all(r["mismatch/abs_logp_diff"] < 1e-3 for r in rows)  # the engine sampled the trained policy


def test_an_update_that_does_nothing_is_caught(tmp_path):
    with pytest.raises(WeightSyncError, match=r"differ from the trainer's by max .* nats per token"):
        _hf_run(tmp_path / "noop", NoOpSyncEngine)
    with pytest.raises(WeightSyncError, match="sent policy version 0, the engine reports -1"):
        _hf_run(tmp_path / "version", WrongVersionEngine)


def test_adaptive_kl_moves_beta_as_the_formula_says(tmp_path):
    # Ziegler et al. 2019: e = clip(KL / target - 1, -0.2, 0.2); beta <- beta * (1 + e * n / horizon)
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert ctl.update(12.0, n_steps=32) == pytest.approx(0.1 * (1 + 0.2 * 32 / 10_000))  # error clipped at +0.2
    assert ctl.update(4.5, n_steps=100) == pytest.approx(0.1 * 1.00064 * (1 - 0.2 * 100 / 10_000))  # -0.25 clipped
    algo = {"kl": {"beta": 0.2, "target": 1e-4, "horizon": 16}, "mu": 1}
    _rl(rl_config(tmp_path, algorithm=algo, run={"steps": 3}))
    rows = _rows(tmp_path)
    assert rows[0]["kl/beta"] == 0.2
    for prev, row in itertools.pairwise(rows):
        e = min(max(prev["kl/per_sequence"] / 1e-4 - 1, -0.2), 0.2)
        assert row["kl/beta"] == pytest.approx(prev["kl/beta"] * (1 + e * 8 / 16), rel=1e-9)  # 8 samples/step
    assert rows[-1]["kl/beta"] != 0.2


def test_kl_in_the_reward_penalises_rewards(tmp_path):
    algo = {"kl": {"type": "k1", "beta": 0.5, "placement": "reward"}}
    result, _ = _rl(rl_config(tmp_path, algorithm=algo, run={"steps": 2}))
    rows = _rows(tmp_path)
    assert result.status == "completed" and all("kl/reward_penalty" in r and "kl" in r for r in rows)


def _sft_cfg(out, **run):
    return SFTConfig.model_validate({
        "task": {"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 40, "n_test": 8}},
        "data": {"batch_size": 8, "max_len": 64}, "optim": {"lr": 3e-3, "micro_batch_size": 4},
        "model": {"preset": "1m"}, "run": {"out_dir": str(out), "steps": 4, "progress": False, "tensorboard": False, **run},
    })  # fmt: skip


def test_sft_stage_resumes_bitwise(tmp_path):
    full = train_sft(_sft_cfg(tmp_path / "full"))

    def stop_at_2(ctx):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train_sft(_sft_cfg(tmp_path / "cut", eval_every=1), callbacks=(stop_at_2,))
    assert first.status == "interrupted" and first.step == 2
    second = train_sft(_sft_cfg(tmp_path / "cut", eval_every=1), resume=True)
    assert second.status == "completed" and second.step == 4
    tok = build_tokenizer()
    a, b = build_model("1m", tok, 0), build_model("1m", tok, 0)
    from rlvr.trainer.checkpoint import load_weights

    load_weights(a, full.checkpoint)
    load_weights(b, second.checkpoint)
    assert _same(a, b)
    assert [r["loss"] for r in _rows(tmp_path / "full")] == [r["loss"] for r in _rows(tmp_path / "cut")]


def test_task_mixture_samples_each_task_and_resumes(tmp_path):
    tasks = [{"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 30, "n_test": 4}, "weight": 3.0},
             {"name": "arithmetic", "kwargs": {"digits": 1, "ops": "+", "n_train": 30, "n_test": 4}}]  # fmt: skip
    cfg = rl_config(tmp_path, run={"steps": 4, "samples_every": 1})
    cfg = type(cfg).model_validate({**cfg.model_dump(exclude={"tasks"}), "tasks": tasks})
    tok = build_tokenizer()
    task = build.build_task(cfg.tasks)
    result = train_rl(cfg, model=build_model("1m", tok, 0), tokenizer=tok, task=task, engine=FakeEngine(tok),
                      collect=fake_collect)  # fmt: skip
    assert result.status == "completed"
    ids = [json.loads(x)["example_id"] for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {i.split("/")[0] for i in ids} == {"sort", "arithmetic"}


def test_soap_optimizer_from_heavyball_steps(tmp_path):
    pytest.importorskip("heavyball")
    result, model = _rl(rl_config(tmp_path, optim={"type": "soap", "lr": 1e-3}, run={"steps": 2}))
    assert result.status == "completed" and math.isfinite(_rows(tmp_path)[-1]["loss"])
    assert not _same(model, build_model("1m", build_tokenizer(), 0))


def test_rlvr_train_with_eval_every_writes_eval_results(tmp_path):
    from rlvr.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text(textwrap.dedent(f'''
        kind = "rl"
        [model]
        preset = "1m"
        [task]
        name = "sort"
        kwargs = {{ length = 3, max_value = 9, n_train = 20, n_test = 6 }}
        [rollout]
        group_size = 2
        prompts_per_step = 2
        max_new_tokens = 12
        [optim]
        micro_batch_size = 4
        [run]
        out_dir = "{tmp_path / "out"}"
        steps = 4
        eval_every = 2
        progress = false
        tensorboard = false
        [eval]
        num_examples = 3
        samples = 2
    '''))
    assert main(["train", str(cfg)]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "eval").glob("step_*.json")) == ["step_000002.json", "step_000004.json"]
    rows = _rows(out)
    assert [("eval/pass@1" in r) for r in rows] == [False, True, False, True]
    saved = json.loads((out / "eval" / "step_000004.json").read_text())
    assert saved["metrics"]["pass@1"]["value"] == rows[-1]["eval/pass@1"]


def test_shortcut_command_given_another_kind_says_which_runs_it(tmp_path, capsys):
    from rlvr.cli import main

    path = tmp_path / "rl.toml"
    path.write_text('kind = "rl"\n[task]\nname = "sort"\n')
    assert main(["sft", str(path)]) == 2
    assert "rlvr train" in capsys.readouterr().err


def test_every_kind_config_parses_through_one_loader():
    assert parse_config({"kind": "sft", "task": {"name": "sort"}}).kind == "sft"
    assert parse_config({"task": {"name": "sort"}}).kind == "rl"
