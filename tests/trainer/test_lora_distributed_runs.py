"""LoRA under torchrun through the CLI (CPU, gloo, 2 processes), with KL against the base model:

- FSDP2: a run stopped at step 2 and resumed ends bitwise equal to the uninterrupted one (adapters and
  merged export); every sync of the merged weights, gathered from the shards, passed its logprob check;
  the checkpoint's merged model loads in transformers and equals base + the exported adapter.
DDP with LoRA is covered by tests/trainer/test_lora_distributed.py (split invariance) and shares this
path minus the gathers.  Slow (three torchrun launches, ~2.5 min on the loaded 2-core machine).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.test_distributed_runs import RL_TOML, rows, torchrun, weights

LORA_TOML = (RL_TOML.replace('preset = "1m"\n', 'preset = "1m"\n[model.lora]\nr = 4\nalpha = 8\n')
             .replace("[algorithm.entropy]", "[algorithm.kl]\nbeta = 0.04\n[algorithm.entropy]")
             .replace("[rollout]", '[rollout]\nengine = "hf"'))  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("peft")
    tmp = tmp_path_factory.mktemp("lora_torchrun")
    config = tmp / "rl.toml"
    config.write_text(LORA_TOML.replace("OUT", str(tmp / "whole")))
    torchrun("train", str(config))
    parts = ["train", str(config), "--set", f"run.out_dir={tmp / 'parts'}"]
    torchrun(*parts, "--set", "run.steps=2")
    torchrun(*parts, "--resume")
    return tmp


def adapter(ckpt):
    return load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_fsdp2_lora_resume_is_bitwise_and_every_sync_checked(runs):
    whole, parts = runs / "whole/checkpoints/step_000004", runs / "parts/checkpoints/step_000004"
    a, b = adapter(whole), adapter(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    wa, wb = weights(whole), weights(parts)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    metrics = rows(runs / "whole")
    assert [r["step"] for r in metrics] == [1, 2, 3, 4]
    assert all(r["sync/max_abs_logp_diff"] <= 1e-3 for r in metrics)
    assert metrics[-1]["kl"] > 0 and any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)


@pytest.mark.slow
def test_fsdp2_lora_export_is_base_plus_adapter(runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlvr.models.tiny import build_model, build_tokenizer

    ckpt = runs / "whole/checkpoints/step_000004"
    tok = build_tokenizer()
    x = torch.randint(4, tok.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(ckpt).eval()(x).logits
        peft = PeftModel.from_pretrained(build_model("1m", tok, 0), ckpt / "adapter").eval()(x).logits
    assert (merged - peft).abs().max() <= 1e-5
