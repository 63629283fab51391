"""The small factory that turns config sections into objects: model, tokenizer, task, engine.

The loops take these as arguments (tests pass fakes); `train_rl` / `train_sft` call this factory
only for what the caller did not pass.  `validate` runs every check that needs no model, so a bad
name or a missing path fails before anything heavy loads.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.algorithms import registry
from rlvr.config import ConfigError, ModelConfig, RLConfig, SFTConfig, TaskConfig
from rlvr.models.precision import resolve_bf16
from rlvr.rollout.base import Engine
from rlvr.types import Example

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def validate(config: RLConfig | SFTConfig) -> None:
    """Registry names and file paths, checked before any model loads (raises ConfigError)."""
    problems = []
    if isinstance(config, RLConfig):
        a = config.algorithm
        for kind, key, name in [("advantage", "advantage", a.advantage), ("objective", "objective", a.objective),
                                ("kl", "kl_estimator", a.kl_estimator), ("aggregation", "aggregation", a.aggregation)]:  # fmt: skip
            try:
                registry.validate_name(kind, name)
            except ValueError as exc:
                problems.append(f"algorithm.{key}: {exc}")
    if config.model.path is not None and not Path(config.model.path).is_dir():
        problems.append(
            f"model.path: {config.model.path!r} is not a directory (create one with `rlvr init-model`)"
        )
    if isinstance(config, SFTConfig) and config.data.path and not Path(config.data.path).is_file():
        problems.append(f"data.path: {config.data.path!r} does not exist")
    if problems:
        raise ConfigError("\n  ".join(problems))


def build_model(cfg: ModelConfig) -> tuple[nn.Module, Any]:
    """(policy model in train mode, tokenizer) from a local HF directory or the tiny preset."""
    dtype = DTYPES[cfg.dtype]
    if cfg.path is not None:
        from rlvr.models.load import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(cfg.path, dtype=dtype)
    else:
        from rlvr.models.tiny import build_model as build_tiny
        from rlvr.models.tiny import build_tokenizer

        tokenizer = build_tokenizer()
        model = build_tiny(cfg.preset, tokenizer, cfg.seed).to(dtype)
    return model.train(), tokenizer


def set_attention(model: nn.Module, choice: str) -> None:
    """Apply model.attn_implementation to a trainer-side model ("auto": eager on CPU, unchanged elsewhere)."""
    if choice == "auto":
        choice = "eager" if next(model.parameters()).device.type == "cpu" else ""
    if choice and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(choice)


def frozen_copy(model: nn.Module, *, bf16: bool) -> nn.Module:
    """A frozen reference policy (the initial weights), in bf16 when the trainer autocasts anyway."""
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    return ref.to(torch.bfloat16) if bf16 else ref


def build_task(cfg: TaskConfig) -> Any:
    from rlvr.tasks import make_task

    try:
        return make_task(cfg.name, **cfg.kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"task: cannot build task {cfg.name!r} with kwargs {cfg.kwargs}: {exc}") from exc


def split_examples(task: Any, split: str, size: int | None) -> list[Example]:
    examples = list(task.examples(split))
    return examples if size is None else examples[:size]


def autocast_for(cfg: ModelConfig, model: nn.Module) -> bool:
    """model.bf16_autocast resolved for the device the model sits on ("auto": only where bf16 is native)."""
    return resolve_bf16(cfg.bf16_autocast, next(model.parameters()).device)


def build_engine(name: str, model: nn.Module, tokenizer: Any, *, seed: int = 0, bf16: bool = False) -> Engine:
    """The rollout engine named by rollout.engine; the HF engine keeps a bf16 weight copy when `bf16`."""
    if name == "hf":
        from rlvr.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, dtype=torch.bfloat16 if bf16 else None)
    if name == "fake":
        from rlvr.rollout.fake import FakeEngine

        return FakeEngine(tokenizer=tokenizer, seed=seed)
    raise ConfigError(f"rollout.engine: unknown engine {name!r}; choose 'hf' or 'fake'")


def render_prompt(task: Any, tokenizer: Any, example: Example, *, chat_template: bool) -> list[int]:
    """Prompt token ids exactly as `rlvr.rollout.collect` makes them (its BOS convention)."""
    from rlvr.rollout import render_prompt as rollout_render

    return rollout_render(tokenizer, task, example, chat_template=chat_template)[1]


def fit_prompts(
    examples: Sequence[Example], task: Any, tokenizer: Any, max_prompt_len: int, *, chat_template: bool
) -> tuple[list[Example], int]:
    """The examples whose rendered prompt fits in `max_prompt_len` tokens, and how many were dropped."""
    kept = [
        ex
        for ex in examples
        if len(render_prompt(task, tokenizer, ex, chat_template=chat_template)) <= max_prompt_len
    ]
    if not kept:
        raise ConfigError(
            f"rollout.max_prompt_len = {max_prompt_len}: no training prompt fits; raise rollout.max_prompt_len"
        )
    return kept, len(examples) - len(kept)
