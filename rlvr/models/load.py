"""Load a local Hugging Face causal LM directory (the tiny model or any real checkpoint).

torch and transformers are imported inside the functions, so `check_model_dir` (what the CLI runs
before anything heavy) costs nothing.  `quiet_transformers` silences transformers' own progress bars
and advisory warnings around rlvr's saves and loads; the user's settings are restored after.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr.errors import MissingPathError, UserError

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No "Loading weights" / "Writing model shards" bars and no info-level chatter for the block."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity(max(level, hf_logging.WARNING))
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of an HF directory, set up for generation: a pad token and left padding."""
    from transformers import AutoTokenizer

    path = check_model_dir(path)
    with quiet_transformers(), loading(path, "its tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # the usual fallback; pads are masked anyway
    tokenizer.padding_side = "left"
    return tokenizer


def load_model_and_tokenizer(
    path: str | Path, *, dtype: torch.dtype | None = None, device: Any = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `path` (local only, nothing downloaded) as (model in eval mode on `device`, tokenizer);
    `dtype` defaults to float32."""
    import torch
    from transformers import AutoModelForCausalLM

    path = check_model_dir(path, weights=True)
    tokenizer = load_tokenizer(path)
    with quiet_transformers(), loading(path, "the model"):
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32, local_files_only=True)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


@contextlib.contextmanager
def loading(path: Path, what: str) -> Iterator[None]:
    """Turn transformers' / safetensors' complaints about the files in `path` (bad JSON, a truncated or
    corrupt weights file, a missing tokenizer) into one UserError naming the directory."""
    try:
        yield
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot load {what} ({str(err).strip().splitlines()[0][:300]}): the directory is "
                        "incomplete or corrupt; re-save it (save_pretrained / `rlvr init-model`) or, for a "
                        "checkpoint, use an earlier one") from err  # fmt: skip
    except Exception as err:  # safetensors' SafetensorError derives from Exception only
        if type(err).__name__ != "SafetensorError":
            raise
        raise UserError(f"{path}: a weights file is truncated or corrupt ({err}); re-save the model or, for a "
                        "checkpoint, use an earlier one") from err  # fmt: skip


def check_model_dir(path: str | Path, *, what: str = "model path", weights: bool = False) -> Path:
    """`path` if it is a Hugging Face model directory (config.json a JSON object; with `weights`, a weights
    file present); else a MissingPathError saying what to do.  An rlvr run directory names its last checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise MissingPathError(
            f"{what} {path} does not exist or is not a directory: expected a Hugging Face model "
            "directory (config.json, *.safetensors, tokenizer files); create one with `rlvr init-model`"
        )
    if (path / "checkpoints").is_dir() and not (path / "model.safetensors").exists():
        steps = sorted(p.name for p in (path / "checkpoints").glob("step_*") if p.is_dir())
        hint = f"pass {path / 'checkpoints' / steps[-1]}" if steps else "it has no checkpoint yet"
        raise MissingPathError(f"{what} {path} is an rlvr run directory, not a model: {hint}")
    if not (path / "config.json").is_file():
        raise MissingPathError(
            f"{what} {path} has no config.json: expected a Hugging Face model directory "
            "(config.json, *.safetensors, tokenizer files) as written by save_pretrained or `rlvr init-model`"
        )
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MissingPathError(f"{what} {path}: config.json cannot be read as JSON ({err}); re-save the model") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise MissingPathError(f"{what} {path}: config.json is not a Hugging Face model config (no model_type); "
                               "expected a directory written by save_pretrained or `rlvr init-model`")  # fmt: skip
    if weights and not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise MissingPathError(f"{what} {path} has no weights (*.safetensors or pytorch_model.bin): "
                               "copy the model's weight files there or re-save it")  # fmt: skip
    return path
