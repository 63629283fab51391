"""LoRA under DDP (gloo, two processes): 2 ranks x half the batch equal 1 process x the whole batch for
the adapters' loss, gradients and weights, with and without gradient accumulation; the frozen base
weights get no gradient and stay bitwise as they were.  Tolerances as tests/trainer/test_distributed.py."""

from __future__ import annotations

import pytest
import torch

from rlvr.config.lora import LoRAConfig
from rlvr.trainer import distributed
from tests.trainer import dist_workers
from tests.trainer.test_distributed import TOL, WEIGHT_TOL, max_diff, spawn

pytest.importorskip("peft")

LORA = LoRAConfig(r=4, alpha=8.0)
CASES = [(agg, mbs) for agg in ("token_mean", "seq_mean_token_sum_norm") for mbs in (2, 4)]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_dist") / "results.pt"
    spawn(dist_workers.lora_invariance_worker, CASES, LORA, str(out))
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("case", CASES, ids=[f"{a}-mbs{m}" for a, m in CASES])
def test_two_rank_ddp_with_lora_equals_one_process(ddp, case):
    aggregation, _ = case
    got = ddp[case]
    want = dist_workers.step_once(distributed.Parallel(), aggregation, 2, torch.float32, LORA)
    assert got["tokens"] == want["tokens"]
    assert set(got["grads"]) == set(want["grads"]) and all(".lora_" in k for k in want["grads"])  # adapters only
    assert abs(got["loss"] - want["loss"]) <= TOL
    assert want["grad_norm"] > 1e-3
    assert abs(got["grad_norm"] - want["grad_norm"]) <= 1e-6 * want["grad_norm"]
    assert max_diff(got["grads"], want["grads"]) <= TOL
    assert max_diff(got["weights"], want["weights"]) <= WEIGHT_TOL
    frozen = [k for k in want["weights"] if ".lora_" not in k]
    assert all(torch.equal(got["weights"][k], want["weights"][k]) for k in frozen)  # untouched on both sides
