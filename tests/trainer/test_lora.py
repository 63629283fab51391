"""LoRA through peft ([model.lora]): merging by hand, only adapters train, the base model as reference,
the checked engine sync, exact resume, the HF + adapter export, and the config's errors."""

from __future__ import annotations

import copy
import json
import os
import signal
import sys

import pytest
import torch

from rlvr.config import ConfigError, ModelConfig
from rlvr.config.lora import LoRAConfig
from rlvr.errors import MissingPathError, UserError
from rlvr.models import lora
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.rollout.base import WeightSyncError
from rlvr.rollout.hf import HFEngine
from rlvr.tasks import make_task
from rlvr.trainer import CallbackContext, build, train_rl
from rlvr.trainer.batching import Sample, collate
from rlvr.trainer.checkpoint import list_checkpoints
from rlvr.trainer.forward import completion_logprobs_no_grad
from rlvr.trainer.lora import BaseModelReference, problems
from rlvr.trainer.sync import check_logprobs, update_engine
from tests.trainer.fakes import FakeEngine, ParityRewardTask, fake_collect, rl_config

pytest.importorskip("peft")

TOK = build_tokenizer()
LORA = {"r": 4, "alpha": 8.0}
ALGO = {"kl": {"beta": 0.04}, "mu": 2, "objective": {"type": "ppo_clip", "clip_high": 0.28}}


def adapted(cfg: LoRAConfig | None = None, *, b_std: float = 0.0) -> torch.nn.Module:
    """The 1m model (seed 0) with adapters; `b_std` > 0 makes B non-zero (a trained adapter's shape)."""
    model = lora.apply_lora(build_model("1m", TOK, 0), cfg or LoRAConfig(**LORA))
    if b_std:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * b_std)
    return model.eval()


def ids(n: int = 12, rows: int = 2) -> torch.Tensor:
    return torch.randint(4, TOK.vocab_size, (rows, n), generator=torch.Generator().manual_seed(3))


def test_merge_is_w_plus_scale_b_a_by_hand():
    """r = 1, alpha = 2 (scale 2), A = 0.5 everywhere, B = 0.1 everywhere: B A = 0.05 in every entry, so
    the merged q_proj weight is W + 2 * 0.05 = W + 0.1 exactly where it is adapted, unchanged elsewhere."""
    model = adapted(LoRAConfig(r=1, alpha=2.0, target_modules=("q_proj",)))
    q = model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        q.lora_A["default"].weight.fill_(0.5)
        q.lora_B["default"].weight.fill_(0.1)
    base = build_model("1m", TOK, 0).state_dict()
    merged = lora.merged_state_dict(model)
    assert merged.keys() == base.keys()  # the base model's names, no lora_ / base_layer keys
    key = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(merged[key], base[key] + 0.1, atol=1e-7)
    others = [k for k in base if k != key]
    assert all(torch.equal(merged[k], base[k]) for k in others)  # layer 1's q_proj: B = 0 there, exactly W
    assert torch.equal(q.base_layer.weight, base[key])  # the trained model is not merged in place


def test_merged_weights_forward_equals_the_adapted_forward():
    """A plain model loaded with the merged weights computes the adapted model's function (fp32)."""
    model = adapted(b_std=0.02)
    plain = build_model("1m", TOK, 0).eval()
    plain.load_state_dict(lora.merged_state_dict(model))
    x = ids()
    with torch.no_grad():
        a, b = model(x).logits, plain(x).logits
        base = build_model("1m", TOK, 0).eval()(x).logits
    assert (a - b).abs().max() <= 1e-5  # W x + s B (A x) vs (W + s B A) x: fp32 rounding only
    assert (a - base).abs().max() > 1e-2  # the adapter really changes the function


def test_only_adapters_are_trained_and_optimised(tmp_path):
    cfg = rl_config(tmp_path / "r", algorithm=ALGO, model={"preset": "1m", "lora": LORA}, run={"steps": 2})
    result, model = _run(cfg)
    assert result.status == "completed"
    base = build_model("1m", TOK, 0).state_dict()
    merged = lora.merged_state_dict(model)
    for name, p in model.named_parameters():
        assert p.requires_grad == (".lora_" in name), name
    frozen = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    assert all(torch.equal(frozen[k], base[k]) for k in base)  # every base weight bitwise as it started
    b_moved = [n for n, p in model.named_parameters() if "lora_B" in n and p.abs().max() > 0]
    assert len(b_moved) == 4 * 7  # B starts at 0: every adapted layer (4 layers x 7 projections) learned
    assert any(not torch.equal(merged[k], base[k]) for k in base)
    n_adapter = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    from rlvr.trainer.optim import build_optimizer

    opt = build_optimizer(model, cfg.optim).optimizers[0]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == n_adapter


def test_reference_is_the_base_model_exactly():
    """The reference (adapters disabled, no copy) scores exactly as the trainer's forward of the frozen
    base model, and as an engine over the base to fp32 rounding, while the adapted model scores
    differently; the trainer's model is left in its mode."""
    model = adapted(b_std=0.02).train()
    ref = BaseModelReference(model, TOK, bf16=False, rows=2)
    prompts, comps = [[5, 6, 7], [8, 9], [5, 6, 7]], [[10, 11, 12, 13], [14, 15], [16]]
    got = [s.logprobs for s in ref.score(prompts, comps)]
    assert [len(g) for g in got] == [4, 2, 1] and model.training
    base = build_model("1m", TOK, 0).eval()
    for c in (0, 2):  # the same chunks of 2 rows
        rows = [Sample(tuple(p), tuple(t)) for p, t in zip(prompts[c : c + 2], comps[c : c + 2])]
        lp = completion_logprobs_no_grad(base, collate(rows, TOK.pad_token_id), autocast=False)
        assert got[c : c + 2] == [tuple(lp[r, : len(s.completion_ids)].tolist()) for r, s in enumerate(rows)]  # bitwise
    engine_lp = [s.logprobs for s in HFEngine(base, TOK, dtype=None).score(prompts, comps)]
    assert max(abs(a - b) for g, e in zip(got, engine_lp) for a, b in zip(g, e)) <= 1e-5
    adapted_lp = HFEngine(model, TOK, share_weights=True, backend="hf").score(prompts, comps)[0].logprobs
    assert max(abs(a - b) for a, b in zip(adapted_lp, got[0])) > 1e-3  # the adapters matter when on
    assert sum(p.numel() for p in ref.model.parameters()) == sum(p.numel() for p in model.parameters())  # one copy


def test_engine_sync_sends_merged_weights_and_the_check_catches_base_ones():
    model = adapted(b_std=0.02)
    engine = HFEngine(build_model("1m", TOK, 0), TOK, dtype=None)
    sample = Sample((5, 6, 7), (10, 11, 12, 13, 14))
    stale = dict(temperature=1.0, autocast=False, bf16=False, pad_id=TOK.pad_token_id)
    with pytest.raises(WeightSyncError, match="differ"):  # the engine still holds the base weights
        check_logprobs(engine, model, sample, **stale)
    update_engine(engine, model, 1)
    out = check_logprobs(engine, model, sample, **stale)
    assert out["sync/max_abs_logp_diff"] <= 1e-5
    assert torch.equal(engine.model.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                       lora.merged_state_dict(model)["model.layers.0.self_attn.q_proj.weight"])  # fmt: skip


def test_grpo_with_the_hf_engine_passes_the_checked_sync_every_step(tmp_path):
    cfg = rl_config(tmp_path / "hf", algorithm=ALGO, rollout={"engine": "hf"},
                    model={"preset": "1m", "lora": LORA}, run={"steps": 3})  # fmt: skip
    task = ParityRewardTask(make_task(cfg.task.name, **cfg.task.kwargs))
    result = train_rl(cfg, model=build_model("1m", TOK, 0), tokenizer=TOK, task=task)
    assert result.status == "completed"
    rows = [json.loads(x) for x in (tmp_path / "hf" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["sync/max_abs_logp_diff"] <= 1e-3 for r in rows)
    assert rows[-1]["kl"] > 0  # the policy moved away from the (base-model) reference


def _run(cfg, *, resume=False, callbacks=()):
    task = ParityRewardTask(make_task(cfg.task.name, **cfg.task.kwargs))
    model = build_model("1m", TOK, 0)
    result = train_rl(cfg, resume=resume, callbacks=callbacks, model=model, tokenizer=TOK,
                      engine=FakeEngine(TOK), collect=fake_collect, task=task)  # fmt: skip
    return result, model


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_equals_uninterrupted_bitwise(tmp_path):
    lora_model = {"preset": "1m", "lora": {**LORA, "dropout": 0.1}}  # dropout: the RNG state must resume too
    _, full = _run(rl_config(tmp_path / "full", algorithm=ALGO, model=lora_model, run={"steps": 4}))

    def stop_at_2(ctx: CallbackContext):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = rl_config(tmp_path / "cut", algorithm=ALGO, model=lora_model, run={"steps": 4, "eval_every": 1})
    first, _ = _run(cfg, callbacks=(stop_at_2,))
    assert first.status == "interrupted" and [s for s, _ in list_checkpoints(tmp_path / "cut")] == [2]
    second, resumed = _run(cfg, resume=True)
    assert second.status == "completed" and second.step == 4
    assert _same(full, resumed)  # adapters (and the frozen base) bitwise
    assert not _same(full, adapted())


def test_checkpoint_holds_a_loadable_merged_model_and_a_peft_adapter(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = rl_config(tmp_path / "r", algorithm=ALGO, model={"preset": "1m", "lora": LORA}, run={"steps": 2})
    result, model = _run(cfg)
    ckpt = result.checkpoint
    assert (ckpt / "adapter" / "adapter_config.json").is_file()
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((ckpt / "adapter" / "adapter_config.json").read_text())["r"] == 4
    x = ids()
    model.eval()
    with torch.no_grad():
        want = model(x).logits
        full = AutoModelForCausalLM.from_pretrained(ckpt).eval()
        assert set(full.state_dict()) == set(build_model("1m", TOK, 0).state_dict())
        assert (full(x).logits - want).abs().max() <= 1e-5
        peft_model = PeftModel.from_pretrained(build_model("1m", TOK, 0), ckpt / "adapter").eval()
        assert (peft_model(x).logits - want).abs().max() <= 1e-5  # sdpa here, eager in training: rounding


def test_sft_with_lora_trains_adapters_and_evaluates_the_adapted_model(tmp_path):
    from rlvr.config import SFTConfig
    from rlvr.trainer import train_sft

    cfg = SFTConfig.model_validate({
        "model": {"preset": "1m", "lora": LORA}, "optim": {"lr": 1e-2, "micro_batch_size": 8},
        "task": {"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 40, "n_test": 8}},
        "data": {"batch_size": 8}, "run": {"out_dir": str(tmp_path / "s"), "steps": 4, "progress": False,
                                           "tensorboard": False, "eval_every": 4},
    })  # fmt: skip
    model = build_model("1m", TOK, 0)
    seen = []

    def probe(ctx: CallbackContext):
        seen.append(ctx.engine)
        return {}

    result = train_sft(cfg, model=model, tokenizer=TOK, callbacks=(probe,))
    assert result.status == "completed"
    rows = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    base = build_model("1m", TOK, 0).state_dict()
    frozen = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    assert all(torch.equal(frozen[k], base[k]) for k in base)
    engine = seen[-1]  # evaluation samples through the adapted forward, not the fused base weights
    assert engine.model is model and engine.share_weights and not engine.fast


def test_config_errors_name_what_to_change(tmp_path, monkeypatch):
    model = build_model("1m", TOK, 0)
    with pytest.raises(ConfigError, match=r"\['qkv'\] name no linear layer.*'down_proj'.*'v_proj'"):
        lora.apply_lora(model, LoRAConfig(target_modules=("q_proj", "qkv")))
    with pytest.raises(ConfigError, match="'lm_head' is the output embedding"):
        lora.apply_lora(model, LoRAConfig(target_modules=("q_proj", "lm_head")))
    with pytest.raises(ValueError, match="target_modules is empty"):
        LoRAConfig(target_modules=())
    assert ModelConfig.model_validate({"lora": {}}).lora == LoRAConfig()  # [model.lora] alone turns it on
    assert LoRAConfig(r=16, alpha=32).scale == 2.0 and LoRAConfig(r=16, alpha=32, rslora=True).scale == 8.0
    assert problems(rl_config(tmp_path / "x", model={"lora": LORA}, parallel={"mode": "fsdp2"})) == []
    from rlvr.config import DPOConfig

    dpo = DPOConfig.model_validate({"model": {"lora": LORA}, "task": {"name": "sort"},
                                  "data": {"onpolicy": True}, "run": {"out_dir": "x"}})  # fmt: skip
    assert any("kind = 'rl' and 'sft'" in p for p in problems(dpo))
    monkeypatch.setitem(sys.modules, "peft", None)  # peft not installed
    with pytest.raises(ConfigError, match=r"pip install 'rlvr\[lora\]'"):
        build.validate(rl_config(tmp_path / "y", model={"lora": LORA}))
    assert problems(rl_config(tmp_path / "z")) == []  # no [model.lora]: nothing asked, nothing imported


def test_resume_refuses_a_checkpoint_without_an_adapter(tmp_path):
    cfg = rl_config(tmp_path / "r", algorithm=ALGO, run={"steps": 1})
    _run(cfg)
    cfg2 = rl_config(tmp_path / "r", algorithm=ALGO, model={"preset": "1m", "lora": LORA}, run={"steps": 2})
    with pytest.raises(UserError, match=r"model\.lora"):  # the config change itself is refused first
        _run(cfg2, resume=True)
    ckpt = list_checkpoints(tmp_path / "r")[-1][1]
    with pytest.raises(MissingPathError, match=r"no adapter/adapter_model\.safetensors"):
        lora.load_adapter(copy.deepcopy(adapted()), ckpt)
