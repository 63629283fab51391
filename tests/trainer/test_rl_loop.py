"""The RL loop on the 1m model with a deterministic fake engine: reproducibility, exact resume,
non-finite skips, signals, and the run directory contract."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.tasks import make_task
from rlvr.trainer import CallbackContext, train_rl
from rlvr.trainer.checkpoint import list_checkpoints
from rlvr.types import Score
from tests.trainer.fakes import FakeEngine, ParityRewardTask, fake_collect, rl_config


def _run(cfg, *, resume=False, callbacks=(), task=None):
    if task is None:  # a reward that varies within groups: every step really moves the weights
        task = ParityRewardTask(make_task(cfg.task.name, **cfg.task.kwargs))
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    result = train_rl(cfg, resume=resume, callbacks=callbacks, model=model, tokenizer=tok,
                      engine=FakeEngine(tok), collect=fake_collect, task=task)  # fmt: skip
    return result, model


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


ALGO = {"kl": {"beta": 0.04}, "mu": 2, "correction": {"type": "tis", "cap": 2.0},
        "objective": {"type": "ppo_clip", "clip_high": 0.28}}


def test_seed_reproducibility_and_run_dir(tmp_path):
    r1, m1 = _run(rl_config(tmp_path / "a", algorithm=ALGO))
    _, m2 = _run(rl_config(tmp_path / "b", algorithm=ALGO))
    assert r1.status == "completed" and r1.step == 3
    assert _same(m1, m2)
    assert not _same(m1, build_model("1m", build_tokenizer(), 0))  # training changed the weights
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["groups/zero_var_frac"] < 1 and r["grad_norm"] > 0 for r in rows)  # a real update each step
    for key in ("reward/total", "reward/accuracy", "kl", "entropy", "loss", "grad_norm", "lr", "time/generate",
                "time/train", "time/reference", "length/mean", "groups/zero_var_frac", "mismatch/abs_logp_diff"):  # fmt: skip
        assert key in rows[-1], key
    sample = json.loads((tmp_path / "a" / "samples.jsonl").read_text().splitlines()[0])
    assert set(sample) == {"step", "example_id", "prompt", "prefix", "completion", "reward", "parts", "finish_reason"}
    assert json.loads((tmp_path / "a" / "config.json").read_text())["algorithm"]["kl"]["beta"] == 0.04
    ckpt = r1.checkpoint
    assert ckpt.name == "step_000003" and (ckpt / "model.safetensors").is_file()


def test_resume_equals_uninterrupted_bitwise(tmp_path):
    cfg_full = rl_config(tmp_path / "full", algorithm=ALGO, run={"steps": 4})
    _, full = _run(cfg_full)

    def stop_at_2(ctx: CallbackContext):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # finish the step, checkpoint, exit cleanly

    cfg = rl_config(tmp_path / "cut", algorithm=ALGO, run={"steps": 4, "eval_every": 1})
    first, _ = _run(cfg, callbacks=(stop_at_2,))
    assert first.status == "interrupted" and first.step == 2
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [2]
    with pytest.raises(FileExistsError, match="--resume"):
        _run(cfg)
    second, resumed = _run(cfg, resume=True)
    assert second.status == "completed" and second.step == 4
    assert _same(full, resumed)
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


class NaNTask:
    """The sort task, but every reward from step `after` on is NaN (a broken verifier)."""

    def __init__(self, after_calls: int) -> None:
        self.inner = make_task("sort", length=3, max_value=9, n_train=40, n_test=8)
        self.calls, self.after = 0, after_calls

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, example, completion):
        self.calls += 1
        return Score(total=math.nan) if self.calls > self.after else self.inner.score(example, completion)


def test_non_finite_updates_are_skipped_then_stop(tmp_path):
    cfg = rl_config(tmp_path, run={"steps": 6, "save_every": 1, "max_consecutive_skips": 2})
    result, model = _run(cfg, task=NaNTask(after_calls=8))  # 8 samples per step: step 1 is clean
    assert result.status == "diverged" and result.step == 3
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [0, 1, 1]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]  # the last good checkpoint is intact
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_muon_and_dynamic_sampling_run(tmp_path):
    cfg = rl_config(tmp_path, optim={"type": "muon", "lr": 1e-3},
                    algorithm={"dynamic_sampling": True, "max_sampling_tries": 2, "mask_truncated": True},
                    run={"steps": 2})  # fmt: skip
    result, _ = _run(cfg)
    assert result.status == "completed"
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(row["loss"]) and row["skipped"] == 0
