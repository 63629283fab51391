"""Load a local Hugging Face causal LM directory (the tiny model or any real checkpoint).

torch and transformers are imported inside the functions, so `check_model_dir` (what the CLI runs
before anything heavy) costs nothing.  `quiet_transformers` silences transformers' own progress bars
and advisory warnings around rlvr's saves and loads; the user's settings are restored after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr.errors import MissingPathError

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

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(check_model_dir(path)), local_files_only=True)
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

    path = check_model_dir(path)
    tokenizer = load_tokenizer(path)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32, local_files_only=True)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def check_model_dir(path: str | Path, *, what: str = "model path") -> Path:
    """`path` if it is a Hugging Face model directory; else a MissingPathError saying what to do."""
    path = Path(path)
    if not path.is_dir():
        raise MissingPathError(
            f"{what} {path} does not exist or is not a directory: expected a Hugging Face model "
            "directory (config.json, *.safetensors, tokenizer files); create one with `rlvr init-model`"
        )
    if not (path / "config.json").is_file():
        raise MissingPathError(
            f"{what} {path} has no config.json: expected a Hugging Face model directory "
            "(config.json, *.safetensors, tokenizer files) as written by save_pretrained or `rlvr init-model`"
        )
    return path
