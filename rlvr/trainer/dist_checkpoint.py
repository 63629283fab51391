"""Checkpoints of a data-parallel run: sharded through `torch.distributed.checkpoint`, plus an HF export.

    checkpoints/step_000010/
        dcp/                     model + optimizer state, sharded (DCP: loads at any world size)
        config.json, *.safetensors, tokenizer files    the full model in Hugging Face format (rank 0)
        trainer_state.pt         step, data cursor, counters, rank 0's RNG states, world_size / backend / mode
        rng_rank<r>.pt           every rank's RNG states (a resume at the same world size restores them)

The rules of `rlvr.trainer.checkpoint` hold: rank 0 makes a temporary sibling directory, every rank
writes its part into it, and after a barrier rank 0 renames it into place and keeps the last
`keep_last`; a crash mid-write leaves the earlier checkpoints as they were.  A DCP checkpoint loads
in a run of any world size, and in a one-process run without a process group (`parallel.mode =
"none"`), so a 2-rank run resumes on 1.  A one-process checkpoint (no `dcp/`) loads weights into a
DDP run; its optimizer state is per-process and cannot be resharded, so an FSDP2 resume of one refuses.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rlvr.config import ConfigError
from rlvr.models import lora
from rlvr.models.load import quiet_transformers
from rlvr.trainer import checkpoint as single
from rlvr.trainer.checkpoint import STATE_FILE, rng_state, set_rng_state, step_dir_name
from rlvr.trainer.distributed import Parallel, full_state_dict

DCP_DIR = "dcp"


def _state_dicts(model: nn.Module, optim: Any) -> tuple[Any, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optim.optimizers)


def save(par: Parallel, run_dir: Path, step: int, stage: Any, state: dict[str, Any], keep_last: int) -> Path:
    """Write checkpoint `step` (a collective: every rank calls it), then keep the newest `keep_last`."""
    if not par.active:
        return single.save_checkpoint(run_dir, step, stage.model, stage.tokenizer, state, keep_last)
    import torch.distributed.checkpoint as dcp

    root = Path(run_dir) / "checkpoints"
    target = root / step_dir_name(step)
    box: list[Any] = [None]
    if par.main:
        root.mkdir(parents=True, exist_ok=True)
        box[0] = tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root)
    dist.broadcast_object_list(box, src=0)
    tmp, ok = Path(box[0]), torch.zeros(1)
    try:
        model_sd, optim_sd = _state_dicts(stage.model, stage.optim)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / DCP_DIR))
        full = full_state_dict(stage.model.state_dict())  # every rank gathers (FSDP2), rank 0 writes
        torch.save(rng_state(), tmp / f"rng_rank{par.rank}.pt")
        if par.main:
            with quiet_transformers():
                lora.save_pretrained(stage.model, tmp, full)  # a LoRA model: merged weights + adapter/
                if stage.tokenizer is not None:
                    stage.tokenizer.save_pretrained(tmp)
            rest = {k: v for k, v in state.items() if k != "optimizer"}  # the optimizer lives in dcp/
            torch.save({**rest, **par.describe(), "step": step, "rng": rng_state()}, tmp / STATE_FILE)
        ok += 1
    finally:
        dist.all_reduce(ok)  # every rank wrote its part (or one failed: nobody renames)
        if par.main and int(ok) == par.world_size:
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
            for _, old in single.list_checkpoints(run_dir)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        elif par.main:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
    return target


def load(par: Parallel, ckpt: Path, stage: Any) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states into the built (and wrapped) stage; the trainer state."""
    if not (ckpt / DCP_DIR).is_dir():
        if par.active and par.mode == "fsdp2":
            raise ConfigError(f"{ckpt} was written by a one-process run (no {DCP_DIR}/): its optimizer state "
                              "cannot be sharded; resume it with parallel.mode = 'none' or 'ddp'")  # fmt: skip
        return single.load_checkpoint(ckpt, stage.model)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    model_sd, optim_sd = _state_dicts(stage.model, stage.optim)
    both = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
        dcp.load(both, checkpoint_id=str(ckpt / DCP_DIR), no_dist=not par.active)
    set_state_dict(stage.model, stage.optim.optimizers, model_state_dict=both["model"],
                   optim_state_dict=both["optim"])  # fmt: skip
    state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    own = ckpt / f"rng_rank{par.rank}.pt"
    same_world = state.get("world_size", 1) == par.world_size
    set_rng_state(torch.load(own, weights_only=False) if same_world and own.is_file() else state["rng"])
    state["optimizer"] = stage.optim.state_dict()  # already restored: the stage's load is then a no-op
    return state
