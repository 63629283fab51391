"""`[parallel]`: data parallelism under torchrun (`rlvr.trainer.distributed` does the work).

    torchrun --nproc_per_node 2 -m rlvr.cli train CONFIG      # with parallel.mode = "ddp" or "fsdp2"

The process count comes from torchrun (WORLD_SIZE), never from the config, so the same config runs on
one process or many; the global batch (rollout.prompts_per_step, data.batch_size) is split evenly
across the processes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator


class ParallelConfig(BaseModel):
    """How the trainer's model is replicated or sharded across torchrun's processes."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # "none": one process (an error under torchrun with more than one); "ddp": DistributedDataParallel
    # (full replicas, gradients all-reduced); "fsdp2": torch.distributed.fsdp.fully_shard (parameters,
    # gradients and optimizer state sharded per decoder layer)
    mode: Literal["none", "ddp", "fsdp2"] = "none"
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl when CUDA is available, else gloo
    mixed_precision: Literal["none", "bf16"] = "none"  # fsdp2: bf16 parameters in compute, fp32 reductions
    activation_checkpointing: bool = False  # recompute each decoder layer in backward (less memory)
    cpu_offload: bool = False  # fsdp2: parameters, gradients and optimizer state live on the CPU

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        for key in ("mixed_precision", "cpu_offload"):
            if getattr(self, key) not in ("none", False) and self.mode != "fsdp2":
                raise ValueError(f"parallel.{key} needs parallel.mode = 'fsdp2' (it is {self.mode!r})")
        return self
