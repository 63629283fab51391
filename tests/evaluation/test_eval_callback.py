"""make_eval_callback without a rollout engine (SFT): an HFEngine sharing the model, eval mode meanwhile."""

from __future__ import annotations

import json
from types import SimpleNamespace

from rlvr.evaluation.runner import make_eval_callback
from rlvr.models.tiny_chat import build_tiny_chat
from rlvr.rollout import hf
from rlvr.tasks.sort import SortTask


def test_callback_builds_a_shared_weights_engine_once_and_restores_train_mode(tmp_path, monkeypatch):
    task = SortTask(length=3, max_value=9, n_train=20, n_test=4)
    model, tok = build_tiny_chat(task, think_in_prompt=True)
    model.train()
    seen, built = [], []
    real_generate, real_init = hf.HFEngine.generate, hf.HFEngine.__init__

    def generate(self, prompts, params):
        seen.append((self.model is model, model.training, params.n, params.max_new_tokens))
        return real_generate(self, prompts, params)

    def init(self, *args, **kw):
        built.append(kw)
        real_init(self, *args, **kw)

    monkeypatch.setattr(hf.HFEngine, "generate", generate)
    monkeypatch.setattr(hf.HFEngine, "__init__", init)
    cb = make_eval_callback(samples=2, temperature=1.0, max_new_tokens=6, num_examples=3, chat_template=True)
    for step in (2, 4):
        ctx = SimpleNamespace(step=step, run_dir=tmp_path, model=model, tokenizer=tok, engine=None, task=task,
                              final=step == 4)  # fmt: skip
        metrics = cb(ctx)
        assert model.training  # back in train mode
    assert built == [{"share_weights": True}]  # built once, reused
    assert seen and all(s == (True, False, 2, 6) for s in seen)  # the trainer's model, in eval mode
    assert {"pass@1", "pass@2", "maj@2", "avg@2", "format_rate", "mean_length"} <= set(metrics)
    saved = json.loads((tmp_path / "eval" / "step_000004.json").read_text())
    assert saved["config"]["final"] is True and saved["config"]["chat_template"] is True
    assert saved["config"]["n_examples"] == 3
    assert all(row["prefix"] == "<think>\n" for row in saved["per_example"])
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["step_000002.json", "step_000004.json"]
