"""Data parallelism under torchrun: DDP or FSDP2, with a loss that does not depend on the split.

    torchrun --nproc_per_node N -m rlvr.cli train CONFIG         # [parallel] mode = "ddp" | "fsdp2"

`setup` joins the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA; with
no torchrun and a parallel mode, a one-process group), `Parallel.prepare` adapts a built stage:

- the model is wrapped (DDP, or `fully_shard` per decoder layer and at the root, with an optional
  mixed-precision policy, activation checkpointing and CPU offload) and the optimizer rebuilt over
  the wrapped parameters;
- the data cursor hands each rank its contiguous share of the step's global batch (every rank's
  cursor advances identically, so one rank's cursor state is the run's);
- the engine samples with a per-rank seed (rank 0 keeps the single-process seed: the classic bug is
  every rank sampling the same completions) and takes the full weights gathered from the shards;
- the objective's denominator is all-reduced once per optimizer step and divided by the world size,
  because DDP and FSDP2 average gradients: rank r's loss is W * num_r / D, the averaged gradient is
  sum_r grad(num_r) / D, exactly the one-process gradient of the whole batch (`aggregate`);
- advantages are computed on the all-gathered rewards of every rank's groups (so batch-level
  statistics, as in REINFORCE++, are global), then each rank keeps its own rows; the adaptive KL
  controller sees the mean KL over ranks, so beta stays identical everywhere.

`Parallel.reduce` runs once per step: it gathers the metrics, samples and stop signals of all ranks;
metrics are reduced (sums for counts, max / min for extremes, means otherwise), and only rank 0 logs.
Checkpoints are `rlvr.trainer.dist_checkpoint`.  Not supported under more than one process (a
ConfigError says so): DAPO dynamic sampling (ranks would draw different numbers of prompts),
asynchronous rollout (`rollout.max_staleness > 0`: the sampled-ahead batch is per rank), and the
stages other than rl and sft.  Every rank must run the same number of micro-batches per step (FSDP2
all-gathers in every forward, DDP all-reduces in every backward): equal shares guarantee it, except
with `optim.packing` (RL) and `data.packing` (SFT), where the count depends on the data and `all_max` tops every rank up to the
largest count with empty micro-batches (loss and gradient 0).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rlvr.config import ConfigError

SUPPORTED = ("rl", "sft")
_RANK_SEED = 1_000_003  # rank r samples with seed + r * _RANK_SEED (mod 2**31); rank 0 is unchanged


@dataclass(slots=True)
class Parallel:
    """This process's place in the run: rank, world size, backend and mode ("none": one process)."""

    mode: str = "none"
    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this module initialised the process group (and destroys it)
    settings: Any = None  # the [parallel] section

    @property
    def active(self) -> bool:
        return self.mode != "none"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend, "mode": self.mode}

    # ------------------------------------------------------------ wrapping a stage
    def prepare(self, stage: Any, config: Any, *, evaluates: bool = False) -> None:
        """Wrap the stage's model, optimizer, cursor, engine, objective, advantages and KL control."""
        if not self.active:
            return
        _check_stage(stage, config, self.world_size)
        if evaluates and self.mode == "fsdp2" and getattr(stage, "engine", None) is None:
            raise ConfigError(f"evaluation of a kind = {stage.kind!r} run with parallel.mode = 'fsdp2' is not "
                              "supported in this version (rank 0 alone would need the full model); use "
                              "parallel.mode = 'ddp', or evaluate the checkpoint afterwards with `rlvr eval`")  # fmt: skip
        from rlvr.trainer.optim import build_optimizer

        stage.model = wrap_model(stage.model, self.settings, self.device)
        stage.optim = build_optimizer(stage.model, config.optim)  # over the wrapped parameters
        stage.cursor = ShardedCursor(stage.cursor, self.rank, self.world_size)
        if getattr(stage, "engine", None) is not None:
            stage.engine = RankEngine(stage.engine, self.rank)
        if getattr(stage, "objective", None) is not None:
            stage.objective = dataclasses.replace(stage.objective, denominator=global_denominator(stage.objective.denominator, self.world_size))
        if getattr(stage, "advantage", None) is not None:
            stage.advantage = gathered_advantage(stage.advantage, self.rank)
        if getattr(stage, "kl_ctl", None) is not None:
            stage.kl_ctl = MeanKLController(stage.kl_ctl)
        if hasattr(stage, "agree_count"):  # packed micro-batches: their number depends on each rank's data
            stage.agree_count = all_max
        dist.barrier()  # every rank checked the run directory before rank 0 writes to it

    # ------------------------------------------------------------ once per step
    def reduce(self, metrics: dict[str, Any], stop: Any) -> dict[str, Any]:
        """All ranks' metrics reduced, samples concatenated (rank order), a stop signal seen by any rank set
        on every rank's `stop` (so all ranks stop, and checkpoint, after the same step)."""
        if not self.active or self.world_size == 1:
            return metrics
        samples = metrics.pop("samples", None)
        rows: list[Any] = [None] * self.world_size
        dist.all_gather_object(rows, (metrics, samples, stop.signal))
        if stop.signal is None:
            stop.signal = next((s for _, _, s in rows if s is not None), None)
        out = reduce_metrics([m for m, _, _ in rows])
        if samples is not None:
            out["samples"] = [row for _, ss, _ in rows for row in ss or ()]
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
            self.owns_group = False


def setup(settings: Any) -> Parallel:
    """Join (or, without torchrun, create a one-process) process group when `settings.mode` asks for one."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    mode = getattr(settings, "mode", "none")
    if settings is None and world > 1:
        raise ConfigError(f"torchrun started {world} processes, but this stage runs in one process only in this "
                          f"version (data parallel: kind = {' / '.join(SUPPORTED)}); run it without torchrun")  # fmt: skip
    if mode == "none":
        if world > 1:
            raise ConfigError(f"torchrun started {world} processes but parallel.mode = 'none': set parallel.mode = "
                              "'ddp' or 'fsdp2' (--set parallel.mode=ddp), or run one process")  # fmt: skip
        return Parallel()
    backend = settings.backend if settings.backend != "auto" else ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("parallel.backend = 'nccl' needs CUDA; use 'gloo' (or 'auto') on a CPU machine")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns and "MASTER_ADDR" in os.environ:  # torchrun (or any env:// launcher)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    elif owns:  # a parallel mode on one process without torchrun: a local one-rank group
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return Parallel(mode=mode, rank=dist.get_rank(), world_size=dist.get_world_size(), backend=backend,
                    device=device, owns_group=owns, settings=settings)  # fmt: skip


def _check_stage(stage: Any, config: Any, world: int) -> None:
    if stage.kind not in SUPPORTED:
        raise ConfigError(f"parallel.mode = {config.parallel.mode!r} is supported for kind = "
                          f"{' / '.join(SUPPORTED)} in this version, not {stage.kind!r}; set parallel.mode = 'none'")  # fmt: skip
    if stage.kind == "rl":
        key, n = "rollout.prompts_per_step", config.rollout.prompts_per_step
        if config.algorithm.dynamic_sampling and world > 1:
            raise ConfigError("algorithm.dynamic_sampling is not supported with more than one process (ranks would "
                              "draw different numbers of prompts); set algorithm.dynamic_sampling = false")  # fmt: skip
        if getattr(config.rollout, "max_staleness", 0) and world > 1:  # its sampled-ahead batch is per rank
            raise ConfigError("rollout.max_staleness > 0 (asynchronous rollout) is not supported with more than one "
                              "process in this version (a checkpoint would hold rank 0's batch); set it to 0")  # fmt: skip
    else:
        key, n = "data.batch_size", config.data.batch_size
    if n % world:
        raise ConfigError(f"{key} = {n} is not divisible by the {world} processes torchrun started; "
                          f"set {key} to a multiple of {world}")  # fmt: skip


# ---------------------------------------------------------------- the model
def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP2 shards one by one (Hugging Face's `*DecoderLayer` / `*Block`)."""
    return [m for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))]


class ParallelBody(nn.Module):
    """The policy's decoder body as a module of its own whose forward DDP / FSDP2 wrap: the trainer runs
    the body and reads the LM-head weight (`rlvr.trainer.forward`), never the model's own forward, so
    the wrapper's hooks (DDP's gradient reducer, FSDP2's root all-gather) must sit on this call."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, **kwargs: Any) -> Any:
        return getattr(self.policy, getattr(self.policy, "base_model_prefix", "model"))(**kwargs)


def wrap_model(model: nn.Module, settings: Any, device: torch.device) -> nn.Module:
    """Wrap `model` in place for data parallelism and return it (the same object: its state dict keys,
    `save_pretrained` and `train()` / `eval()` are unchanged).  DDP replicates it; FSDP2 shards every
    decoder layer and, as the root group, the rest (embeddings, final norm, LM head)."""
    model.to(device)
    if settings.activation_checkpointing:  # each decoder layer recomputed in backward (non-reentrant)
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable({"use_reentrant": False})
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            raise ConfigError("parallel.activation_checkpointing needs a Hugging Face model")
    body: nn.Module = ParallelBody(model)
    if settings.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        body = DistributedDataParallel(body, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        kwargs: dict[str, Any] = {}
        if settings.mixed_precision == "bf16":
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if settings.cpu_offload:  # pinned memory needs an accelerator
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
        for layer in decoder_layers(model):
            fully_shard(layer, **kwargs)
        fully_shard(body, **kwargs)
    object.__setattr__(model, "parallel_body", body)  # not a submodule: the state dict keeps its keys
    return model


def full_state_dict(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """Full tensors from a (possibly sharded, possibly DDP-prefixed) state dict: a collective under FSDP2
    (every rank gathers every tensor, in the same order)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for key, value in state.items():
        if isinstance(value, DTensor):
            value = value.full_tensor()
        out[key.removeprefix("module.")] = value
    return out


# ---------------------------------------------------------------- data, engine, objective
class ShardedCursor:
    """Rank r's contiguous share of every `take(n)` of the shared cursor (n must split evenly)."""

    def __init__(self, inner: Any, rank: int, world_size: int) -> None:
        self.inner, self.rank, self.world_size = inner, rank, world_size

    def take(self, n: int, **kwargs: Any) -> list[Any]:
        items = self.inner.take(n, **kwargs)
        share = len(items) // self.world_size
        return list(items[self.rank * share : (self.rank + 1) * share])

    def __getattr__(self, name: str) -> Any:  # epoch, state_dict, load_state_dict
        return getattr(self.inner, name)


class RankEngine:
    """The colocated engine of one rank: its own sampling seed, and full weights at every sync."""

    def __init__(self, inner: Any, rank: int) -> None:
        self.inner, self.rank = inner, rank

    def generate(self, prompts: Sequence[Sequence[int]], params: Any) -> Any:
        if self.rank and getattr(params, "seed", None) is not None:
            params = dataclasses.replace(params, seed=(params.seed + self.rank * _RANK_SEED) % 2**31)
        return self.inner.generate(prompts, params)

    def update_weights(self, state_dict: Mapping[str, Any], *, version: int) -> int:
        return self.inner.update_weights(full_state_dict(state_dict), version=version)

    def __getattr__(self, name: str) -> Any:  # version, score, model, fingerprint, rng_state, ...
        return getattr(self.inner, name)


def all_sum(value: Tensor) -> Tensor:
    out = value.detach().clone().to(torch.float64)
    dist.all_reduce(out)
    return out.to(value.dtype)


def all_max(count: int) -> int:
    """The largest `count` over the ranks (every rank runs that many micro-batches: `rl_packing`)."""
    out = torch.tensor([count], dtype=torch.long, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return int(out)


def global_denominator(local: Callable[[Sequence[Tensor]], Tensor], world_size: int) -> Callable[[Sequence[Tensor]], Tensor]:
    """The step's denominator over every rank's masks, divided by W (DDP / FSDP2 average gradients)."""

    def denominator(masks: Sequence[Tensor]) -> Tensor:
        return all_sum(local(masks)) / world_size

    return denominator


def gathered_advantage(fn: Callable[..., Tensor], rank: int) -> Callable[..., Tensor]:
    """`fn(rewards, group_ids)` on every rank's rows (group ids made global), this rank's rows returned."""

    def advantage(rewards: Tensor, group_ids: Tensor) -> Tensor:  # [N_r], [N_r] -> [N_r]
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (rewards.tolist(), group_ids.tolist()))
        all_r, all_g, start, offset = [], [], 0, 0
        for r, (rw, gid) in enumerate(parts):
            if r == rank:
                start = len(all_r)
            all_r += rw
            all_g += [g + offset for g in gid]
            offset += max(gid, default=-1) + 1
        adv = fn(torch.tensor(all_r, dtype=rewards.dtype), torch.tensor(all_g, dtype=group_ids.dtype))
        return adv[start : start + rewards.numel()]

    return advantage


class MeanKLController:
    """An (adaptive) KL controller that updates on the mean over ranks, so beta is the same everywhere."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "inner", inner)

    def update(self, current: float, n_steps: int) -> None:
        both = torch.tensor([float(current), float(n_steps)], dtype=torch.float64)
        dist.all_reduce(both)
        w = dist.get_world_size()
        self.inner.update(float(both[0]) / w, n_steps=int(both[1]))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)


# ---------------------------------------------------------------- metrics
def _how(key: str) -> str:
    if key in ("tokens",) or key.startswith("count/"):
        return "sum"
    if key in ("skipped",) or key.endswith(("max", "max_ratio")):
        return "max"
    return "min" if key.endswith("min") else "mean"


def reduce_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One metrics row from every rank's: sums for counts, max / min for extremes and skips, means
    otherwise (a rank with None has no say; all None stays None); non-numbers are rank 0's."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        values = [row.get(key) for row in rows]
        nums = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if not nums:
            out[key] = values[0]
            continue
        how = _how(key)
        value = {"sum": sum, "max": max, "min": min}[how](nums) if how != "mean" else sum(nums) / len(nums)
        out[key] = int(value) if all(isinstance(v, int) for v in values if v is not None) and how != "mean" else value
    return out


class NullLogger:
    """What ranks other than 0 log: nothing."""

    def warn(self, message: str) -> None:
        pass

    def samples(self, rows: Any) -> None:
        pass

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
