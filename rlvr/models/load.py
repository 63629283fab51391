"""Load a local Hugging Face causal LM directory (the tiny model or any real checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of an HF directory, set up for generation: a pad token and left padding."""
    tokenizer = AutoTokenizer.from_pretrained(str(_check_dir(path)), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # the usual fallback; pads are masked anyway
    tokenizer.padding_side = "left"
    return tokenizer


def load_model_and_tokenizer(
    path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `path` (local only, nothing downloaded) as (model in eval mode on `device`, tokenizer)."""
    path = _check_dir(path)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def _check_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model path {path} does not exist or is not a directory: expected a Hugging Face model "
            "directory (config.json, *.safetensors, tokenizer files); create one with `rlvr init-model`"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json: expected a Hugging Face model directory "
            "(config.json, *.safetensors, tokenizer files) as written by save_pretrained or `rlvr init-model`"
        )
    return path
