"""Atomic checkpoints and exact resume.

`run_dir/checkpoints/step_000010/` holds the model and tokenizer in Hugging Face format (so
transformers and vLLM load it as is) and `trainer_state.pt`: optimizer state, step, data cursor,
the RNG states of python / numpy / torch (and of the engine when it exposes `rng_state()`), and
loop counters.  A checkpoint is written to a temporary sibling directory and renamed into place,
so a crash mid-write leaves the previous checkpoints untouched; only the last `keep_last` remain.

Generation is seeded per step from (run.seed, step), so the engine's sampling stream needs no
state of its own to resume exactly; on CPU a resumed run ends bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from rlvr.config import ConfigError
from rlvr.errors import MissingPathError, UserError
from rlvr.models import lora
from rlvr.models.load import quiet_transformers

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def step_of(ckpt: Path) -> int:
    """The step a checkpoint directory (`step_000012`) holds."""
    m = _STEP_DIR.match(Path(ckpt).name)
    if m is None:
        raise ValueError(f"{ckpt} is not a checkpoint directory (step_NNNNNN)")
    return int(m.group(1))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under run_dir/checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for p in root.iterdir() if root.is_dir() else ():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def save_checkpoint(
    run_dir: str | Path, step: int, model: nn.Module, tokenizer: Any, state: dict[str, Any], keep_last: int
) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep_last`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target = root / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        with quiet_transformers():
            lora.save_pretrained(model, tmp)  # a LoRA model: merged weights + adapter/
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        torch.save({**state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
        if target.exists():  # re-saving a step (e.g. resumed and stopped again): replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


class CheckpointError(UserError):
    """A checkpoint whose files cannot be read back (truncated by a crash or a full disk, or overwritten)."""


@contextlib.contextmanager
def corrupt_as_user_error(ckpt: Path, file: Path) -> Iterator[None]:
    """A file of `ckpt` that does not load: one message naming it, and the checkpoint to fall back to."""
    try:
        yield
    except Exception as err:  # torch.load: UnpicklingError / RuntimeError / EOFError; safetensors: SafetensorError
        if isinstance(err, UserError):
            raise
        older = [p for s, p in list_checkpoints(ckpt.parent.parent) if s < step_of(ckpt)]
        fallback = (f"delete it (rm -r {ckpt}) and resume again to continue from {older[-1].name}" if older
                    else "delete the run directory and start again; there is no earlier checkpoint")  # fmt: skip
        raise CheckpointError(f"checkpoint {ckpt} is truncated or corrupt: {file.name} does not load "
                              f"({type(err).__name__}: {str(err)[:200]}); {fallback}") from err  # fmt: skip


def load_weights(model: nn.Module, ckpt: Path) -> None:
    """Load the checkpoint's safetensors into `model` in place (tied weights may be absent from disk);
    a LoRA model loads its adapter (its base weights are the config's, frozen)."""
    if lora.is_lora(model):
        lora.load_adapter(model, ckpt)
        return
    files = sorted(ckpt.glob("*.safetensors"))
    if not files:
        raise MissingPathError(
            f"checkpoint {ckpt} has no *.safetensors weights; it is incomplete: delete it and resume from the one before"
        )
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        with corrupt_as_user_error(ckpt, f):
            weights.update(load_file(str(f)))
    own = model.state_dict()
    shapes = [f"{n} {tuple(w.shape)} in the checkpoint, {tuple(own[n].shape)} in the model" for n, w in weights.items()
              if n in own and tuple(w.shape) != tuple(own[n].shape)]  # fmt: skip
    if shapes:  # load_state_dict would raise a RuntimeError listing every tensor
        raise ConfigError(f"checkpoint {ckpt} holds a model of another shape ({len(shapes)} tensors differ, e.g. "
                          f"{shapes[0]}): resume with the model.path / model.preset the run started with "
                          "(see the run's config.json), or start a new run in a new run.out_dir")  # fmt: skip
    missing, unexpected = model.load_state_dict(weights, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[n]) for n in weights if n in params}
    untied = [n for n in missing if n not in params or id(params[n]) not in loaded]
    if untied or unexpected:
        raise ConfigError(
            f"checkpoint {ckpt} does not match the model: missing {untied[:5]}, unexpected {unexpected[:5]}; "
            "resume with the same model.path / model.preset the run started with"
        )


def load_checkpoint(ckpt: Path, model: nn.Module) -> dict[str, Any]:
    """Load weights into `model`, restore the global RNG states, and return the trainer state."""
    load_weights(model, ckpt)
    with corrupt_as_user_error(ckpt, ckpt / STATE_FILE):
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or "rng" not in state:
            raise ValueError("not a trainer state")
    set_rng_state(state["rng"])
    return state
