"""Schedules (hand-derived numbers), optimizer groups, data cursor, SFT loss masking and the SFT loop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlvr.config import AdamWConfig, SFTConfig
from rlvr.config.sections import MuonConfig
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.trainer.data import DataCursor
from rlvr.trainer.optim import build_optimizer, lr_factor
from rlvr.trainer.sft import make_samples, read_pairs, train_sft


def test_warmup_then_cosine():
    cfg = AdamWConfig(warmup_steps=3, schedule="cosine", min_lr_ratio=0.1)
    # warmup: (s+1)/(3+1) -> 0.25, 0.5, 0.75; then cosine over 10 - 3 = 7 steps from 1.0 to 0.1
    assert [lr_factor(s, cfg, 10) for s in range(3)] == [0.25, 0.5, 0.75]
    assert lr_factor(3, cfg, 10) == 1.0
    # halfway (3 + 3.5): 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert math.isclose(lr_factor(6.5, cfg, 10), 0.55)
    assert math.isclose(lr_factor(10, cfg, 10), 0.1)


def test_step_decay_and_constant():
    cfg = AdamWConfig(schedule="step", decay_every=4, decay_gamma=0.5)
    assert [lr_factor(s, cfg, 100) for s in (0, 3, 4, 8, 12)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    assert lr_factor(50, AdamWConfig(), 100) == 1.0


def test_muon_takes_hidden_matrices_only():
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    opt = build_optimizer(model, MuonConfig(lr=1e-3))
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    assert id(model.get_input_embeddings().weight) not in muon_ids  # embeddings (tied head) go to AdamW
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    n_all = sum(1 for _ in model.parameters())
    assert len(muon_ids) + sum(len(g["params"]) for g in adamw.param_groups) == n_all


def _adam_run(opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: int) -> None:
    for i in range(steps):
        for j, p in enumerate(params):
            p.grad = torch.sin(torch.arange(p.numel(), dtype=torch.float32).view_as(p) * (i + 1) + j)
        opt.step()


def test_cpu_adamw_is_fused_and_matches_the_for_loop_update():
    """The fused CPU kernel (issue 19) computes torch's for-loop AdamW to float rounding, and the two
    optimizers' state dicts load into each other (a checkpoint from before the change resumes)."""
    cfg = AdamWConfig(lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1)
    a, b = (build_model("1m", build_tokenizer(), 0) for _ in range(2))
    fused = build_optimizer(a, cfg).optimizers[0]
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1, foreach=False)
    _adam_run(fused, list(a.parameters()), 5)
    _adam_run(loop, list(b.parameters()), 5)
    worst = max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    assert 0 < worst < 1e-6  # rounding differs (so the test can tell them apart), the update does not
    fresh = build_optimizer(b, cfg).optimizers[0]
    fresh.load_state_dict(loop.state_dict())  # for-loop checkpoint -> fused optimizer
    _adam_run(fresh, list(b.parameters()), 1)
    _adam_run(fused, list(a.parameters()), 1)
    assert max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters())) < 1e-6


def test_cursor_resumes_exactly():
    a = DataCursor(list(range(5)), seed=3)
    first = a.take(7)  # wraps into epoch 1
    b = DataCursor(list(range(5)), seed=3)
    b.load_state_dict(a.state_dict())
    assert sorted(first[:5]) == [0, 1, 2, 3, 4] and a.take(6) == b.take(6)


def test_read_pairs_names_line_and_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: field 'completion'"):
        read_pairs(path, "prompt", "completion")


def _sft_config(tmp_path, **data) -> SFTConfig:
    return SFTConfig.model_validate({
        "model": {"preset": "1m"},
        "task": {"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 40, "n_test": 8}},
        "data": {"batch_size": 8, **data},
        "optim": {"lr": 3e-3, "micro_batch_size": 4},
        "run": {"out_dir": str(tmp_path / "sft"), "steps": 6, "progress": False, "tensorboard": False},
    })  # fmt: skip


def test_sft_samples_end_with_eos_and_prompt_is_context_only(tmp_path):
    cfg = _sft_config(tmp_path)
    tok = build_tokenizer()
    from rlvr.tasks import make_task

    task = make_task("sort", length=3, max_value=9, n_train=40, n_test=8)
    samples, dropped = make_samples(cfg, task, tok)
    s = samples[0]
    assert dropped == 0 and s.completion_ids[-1] == tok.eos_token_id and s.prompt_ids[0] == tok.bos_token_id
    ex = task.examples("train")[0]
    assert tok.decode(s.prompt_ids, skip_special_tokens=True) == task.render(ex)
    assert task.score(ex, tok.decode(s.completion_ids, skip_special_tokens=True)).parts["accuracy"] == 1.0


def test_a_file_prompt_that_already_holds_its_bos_gets_no_second_one(tmp_path):
    # rows collected through a chat template (`rlvr distill collect --chat-template`) hold the BOS as text
    tok = build_tokenizer()
    path = tmp_path / "rows.jsonl"
    rows = [{"prompt": f"{tok.bos_token}3 1 2 ->", "completion": " 1 2 3"}, {"prompt": "3 1 2 ->", "completion": " 1 2 3"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples, _ = make_samples(_sft_config(tmp_path, path=str(path)), None, tok)
    assert samples[0].prompt_ids == samples[1].prompt_ids  # rendered or not: one BOS
    assert samples[0].prompt_ids.count(tok.bos_token_id) == 1 and samples[0].prompt_ids[0] == tok.bos_token_id


def test_sft_loss_falls_and_checkpoints(tmp_path):
    result = train_sft(_sft_config(tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert result.status == "completed" and len(rows) == 6
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5  # from ~ln(V) = 4.8 a few steps of lr 3e-3 cut it
    assert (result.checkpoint / "model.safetensors").is_file()
