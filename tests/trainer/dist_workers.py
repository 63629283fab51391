"""What each process of the distributed tests runs (spawned by torch.multiprocessing, so importable).

`step_once` is one optimizer step of the objective-blind trainer step on fixed samples, through the
same `Parallel.prepare` a run uses; with `world_size == 1` and mode "none" it is the one-process
reference (no process group at all).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from rlvr.config import RLConfig
from rlvr.config.parallel import ParallelConfig
from rlvr.trainer import build, distributed
from rlvr.trainer.batching import Sample, micro_batches
from rlvr.trainer.data import DataCursor
from rlvr.trainer.optim import build_optimizer
from rlvr.trainer.rl import RLStage
from rlvr.trainer.run import StopFlag
from rlvr.trainer.step import optimizer_update

N_SAMPLES = 8  # the step's global batch: 2 prompts x 4 completions


def samples(vocab: int, *, skewed: bool = False) -> list[Sample]:
    """Fixed samples with prompts and completions of different lengths, one fully masked row, and
    advantages and sampler logprobs that make every aggregation mode's denominator matter.  `skewed`:
    the second half's completions are longer, so packed, the two ranks run different numbers of
    micro-batches (rank 1 more) until they agree."""
    rng = random.Random(7)
    out = []
    for i in range(N_SAMPLES):
        prompt = tuple(rng.randrange(4, vocab) for _ in range(3 + i % 3))
        n = (1 + i % 3 if i < N_SAMPLES // 2 else 9 + i % 3) if skewed else 1 + (5 * i) % 7
        completion = tuple(rng.randrange(4, vocab) for _ in range(n))
        out.append(Sample(prompt, completion, sampler_logprobs=tuple(-rng.uniform(2, 6) for _ in completion),
                          advantage=rng.uniform(-1.5, 1.5), masked=i == 5, index=i))  # fmt: skip
    return out


def rl_config(aggregation: str, mbs: int, mode: str, packing: bool = False) -> RLConfig:
    return RLConfig.model_validate({
        "task": {"name": "sort"}, "algorithm": {"aggregation": aggregation, "correction": "tis"},
        "rollout": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 16 if packing else 8},
        "optim": {"lr": 1e-3, "micro_batch_size": mbs, "bucket_by_length": False, "grad_clip": 1.0,
                  "packing": packing, "pack_len": 12},
        "parallel": {"mode": mode}, "run": {"out_dir": "unused"},
    })  # fmt: skip


class GradSpy:
    """The stage's optimizers, recording the full gradient (gathered from FSDP2 shards) at each step."""

    def __init__(self, inner: Any, model: torch.nn.Module) -> None:
        self.inner, self.model, self.grads = inner, model, {}

    def step(self) -> None:
        grads = {n: p.grad for n, p in self.model.named_parameters() if p.grad is not None}
        self.grads = {k: v.detach().clone() for k, v in distributed.full_state_dict(grads).items()}
        self.inner.step()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def step_once(par: distributed.Parallel, aggregation: str, mbs: int, dtype: torch.dtype,
              lora: Any = None, packing: bool = False) -> dict[str, Any]:  # fmt: skip
    """(loss, grad_norm, full gradients, full weights after the step) of one optimizer step; with a
    `LoRAConfig`, of the adapters alone (B set non-zero so that A has a gradient too); with `packing`,
    on the skewed samples, packed by the RL stage's own micro-batching (and its count agreement)."""
    from rlvr.models.tiny import build_model, build_tokenizer

    tok = build_tokenizer()
    model = build_model("1m", tok, seed=0).to(dtype).train()
    if lora is not None:
        _adapt(model, lora)
    build.set_attention(model, "eager")
    config = rl_config(aggregation, mbs, par.mode, packing)
    stage = SimpleNamespace(kind="rl", model=model, optim=build_optimizer(model, config.optim), engine=None,
                            cursor=DataCursor(samples(tok.vocab_size, skewed=packing), 0, shuffle=False),
                            kl_ctl=None, objective=build.build_objective(config), advantage=None, config=config,
                            tokenizer=tok, agree_count=int)  # fmt: skip
    par.prepare(stage, config)  # wraps the model, rebuilds the optimizer, shards the cursor
    stage.optim = GradSpy(stage.optim, stage.model)
    mine = stage.cursor.take(N_SAMPLES)
    if packing:
        batches = RLStage._micro_batches(stage, mine)  # type: ignore[arg-type]
        local = sum(mb.packed is not None for mb in batches)
    else:
        batches = micro_batches(mine, mbs, tok.pad_token_id, bucket=False)
        local = len(batches)
    update = optimizer_update(stage.model, stage.optim, batches, stage.objective, temperature=1.0, autocast=False,
                              grad_clip=config.optim.grad_clip, lr_factor=1.0)  # fmt: skip
    update = par.reduce(update, StopFlag())
    weights = distributed.full_state_dict(stage.model.state_dict())
    return {"loss": update["loss"], "grad_norm": update["grad_norm"], "tokens": update["tokens"],
            "grads": stage.optim.grads, "weights": {k: v.detach().clone() for k, v in weights.items()},
            "micro_batches": (local, len(batches))}  # fmt: skip


def _adapt(model: torch.nn.Module, lora: Any) -> None:
    from rlvr.models.lora import apply_lora

    torch.manual_seed(0)  # A's initialisation, the same on every rank and in the reference
    apply_lora(model, lora)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)


def lora_invariance_worker(rank: int, world: int, port: int, cases: list[tuple[str, str, int]], lora: Any,
                           out: str) -> None:  # fmt: skip
    """LoRA adapters: every (mode, aggregation, mbs) case on this rank; rank 0 saves the results."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    par, results = None, {}
    for mode, aggregation, mbs in cases:
        par = distributed.setup(ParallelConfig(mode=mode))  # the first call joins; later ones reuse the group
        results[(mode, aggregation, mbs)] = step_once(par, aggregation, mbs, torch.float32, lora)
    if rank == 0:
        torch.save(results, Path(out))
    if par is not None:
        par.owns_group = True
        par.close()


def invariance_worker(rank: int, world: int, port: int, cases: list[tuple[str, str, int]], out: str) -> None:
    """Every case on this rank; rank 0 saves the results to `out`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    results = {}
    par = None
    for mode, aggregation, mbs in cases:  # mbs "packed": optim.packing with micro_batch_size 1
        par = distributed.setup(ParallelConfig(mode=mode))  # the first call joins; later ones reuse the group
        packed = mbs == "packed"
        result = step_once(par, aggregation, 1 if packed else mbs, torch.float32, packing=packed)
        counts: list[Any] = [None] * world
        torch.distributed.all_gather_object(counts, result["micro_batches"])
        results[(mode, aggregation, mbs)] = {**result, "micro_batches": counts}
    if rank == 0:
        torch.save(results, Path(out))
    if par is not None:
        par.owns_group = True
        par.close()
