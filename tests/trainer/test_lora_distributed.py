"""LoRA under DDP and FSDP2 (gloo, two processes): 2 ranks x half the batch equal 1 process x the whole
batch for the adapters' loss, gradients and weights, with and without gradient accumulation; the frozen
base weights get no gradient and stay bitwise as they were.  Tolerances as tests/trainer/test_distributed.py.
Measured: |d loss| <= 8.4e-9, max |d gradient| <= 2.5e-8, max |d weight| <= 5.2e-6 (lr 1e-3)."""

from __future__ import annotations

import pytest
import torch

from rlvr.config.lora import LoRAConfig
from rlvr.trainer import distributed
from tests.trainer import dist_workers
from tests.trainer.test_distributed import TOL, WEIGHT_TOL, max_diff, spawn

pytest.importorskip("peft")

LORA = LoRAConfig(r=4, alpha=8.0)
CASES = [(mode, agg, mbs) for mode in ("ddp", "fsdp2") for agg in ("token_mean", "seq_mean_token_sum_norm")
         for mbs in (2, 4)]  # fmt: skip


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_dist") / "results.pt"
    spawn(dist_workers.lora_invariance_worker, CASES, LORA, str(out))
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def reference():
    return {agg: dist_workers.step_once(distributed.Parallel(), agg, 2, torch.float32, LORA)
            for agg in ("token_mean", "seq_mean_token_sum_norm")}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[f"{d}-{a}-mbs{m}" for d, a, m in CASES])
def test_two_ranks_with_lora_equal_one_process(ddp, reference, case):
    _, aggregation, _ = case
    got = ddp[case]
    want = reference[aggregation]
    assert got["tokens"] == want["tokens"]
    assert set(got["grads"]) == set(want["grads"]) and all(".lora_" in k for k in want["grads"])  # adapters only
    assert abs(got["loss"] - want["loss"]) <= TOL
    assert want["grad_norm"] > 1e-3
    assert abs(got["grad_norm"] - want["grad_norm"]) <= 1e-6 * want["grad_norm"]
    assert max_diff(got["grads"], want["grads"]) <= TOL
    assert max_diff(got["weights"], want["weights"]) <= WEIGHT_TOL
    frozen = [k for k in want["weights"] if ".lora_" not in k]
    assert all(torch.equal(got["weights"][k], want["weights"][k]) for k in frozen)  # untouched on both sides
