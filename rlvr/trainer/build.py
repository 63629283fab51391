"""The small factory that turns config sections into objects: model, tokenizer, task, engine, objective.

The stages take these as arguments (tests pass fakes) and call this factory only for what the caller
did not pass.  `validate` runs every check that needs no model, so a bad name, a user function whose
keywords do not fit, or a missing path fails before anything heavy loads.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.algorithms import registry
from rlvr.algorithms.aggregate import aggregate, global_denominator
from rlvr.algorithms.compose import Correction, Objective, entropy_term, kl_term, policy_term
from rlvr.config import (
    ConfigError,
    DPOConfig,
    ModelConfig,
    RewardModelConfig,
    RLConfig,
    SFTConfig,
    TaskConfig,
)
from rlvr.models.precision import resolve_bf16
from rlvr.rollout.base import Engine
from rlvr.types import Example

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _parts(config: RLConfig) -> list[tuple[str, str, Any]]:
    """(registry kind, config key, part section) of every pluggable algorithm part."""
    a = config.algorithm
    return [("advantage", "advantage", a.advantage), ("objective", "objective", a.objective),
            ("kl", "kl", a.kl), ("aggregation", "aggregation", a.aggregation)]  # fmt: skip


def validate(config: RLConfig | SFTConfig | DPOConfig) -> None:
    """Registry names, user functions' keywords and file paths, checked before any model loads."""
    problems = []
    if isinstance(config, RLConfig):
        for kind, key, part in _parts(config):
            try:
                fn = registry.resolve(kind, part.type)
                registry.check_settings(kind, part.type, fn, part.settings())
                if kind == "aggregation" and hasattr(part, "denominator"):
                    registry.resolve(kind, part.denominator)
            except ValueError as exc:
                problems.append(f"algorithm.{key}: {exc}")
        rm = config.reward_model.path
        if rm is not None and not Path(rm).is_dir():
            problems.append(f"reward_model.path: {rm!r} is not a directory (train one with kind = 'reward_model')")
    if isinstance(config, DPOConfig):
        try:
            fn = registry.resolve("preference", config.loss.type)
            registry.check_settings("preference", config.loss.type, fn, config.loss.settings())
        except ValueError as exc:
            problems.append(f"loss: {exc}")
    if isinstance(config, RLConfig) and config.rollout.engine.type == "vllm" and importlib.util.find_spec("vllm") is None:
        from rlvr.rollout.vllm import INSTALL_HINT

        problems.append(f"rollout.engine.type = 'vllm': vLLM is not installed in this environment; {INSTALL_HINT}")
    if config.model.path is not None and not Path(config.model.path).is_dir():
        problems.append(
            f"model.path: {config.model.path!r} is not a directory (create one with `rlvr init-model`)"
        )
    if isinstance(config, SFTConfig | DPOConfig | RewardModelConfig) and config.data.path and not Path(config.data.path).is_file():
        what = "is a directory: pass a .jsonl (or .parquet) file" if Path(config.data.path).is_dir() else "does not exist"
        problems.append(f"data.path: {config.data.path!r} {what}")
    from rlvr.trainer.lora import problems as lora_problems

    problems += lora_problems(config)
    if problems:
        raise ConfigError("\n  ".join(problems))


# ---------------------------------------------------------------- the objective
def advantage_fn(config: RLConfig) -> Callable[..., torch.Tensor]:
    """`fn(rewards [N], group_ids [N]) -> [N]` with the advantage section's settings bound."""
    part = config.algorithm.advantage
    return functools.partial(registry.resolve("advantage", part.type), **part.settings())


def kl_estimator(config: RLConfig) -> Callable[..., torch.Tensor]:
    part = config.algorithm.kl
    return functools.partial(registry.resolve("kl", part.type), **part.settings())


def build_objective(config: RLConfig) -> Objective:
    """policy (+ beta * KL in the loss) (- c * entropy), corrected and aggregated as the config says."""
    a = config.algorithm
    policy = policy_term(registry.resolve("objective", a.objective.type), a.objective.settings())
    kl = kl_term(registry.resolve("kl", a.kl.type), a.kl.settings()) if a.kl.enabled else None
    terms: list[tuple[str, Any, float]] = [("policy", policy, 1.0)]
    metric_terms: list[tuple[str, Any]] = []
    if kl is not None and a.kl.placement == "loss":
        terms.append(("kl", kl, a.kl.beta))
    elif kl is not None:  # KL in the reward: logged (and read by adaptive KL), not differentiated
        metric_terms.append(("kl", kl))
    if a.entropy.coef:
        terms.append(("entropy", entropy_term, a.entropy.coef))
    else:
        metric_terms.append(("entropy", entropy_term))
    c = a.correction
    correction = Correction(c.type, getattr(c, "cap", 2.0), getattr(c, "level", "token"), getattr(c, "low", None))
    agg, denom = aggregation(config)
    return Objective(tuple(terms), agg, denom, correction, tuple(metric_terms))


def aggregation(config: RLConfig) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """(aggregate(per_token, loss_mask, denominator), denominator(loss_masks)) of the aggregation section."""
    part = config.algorithm.aggregation
    if hasattr(part, "denominator"):  # a user aggregation brings both halves
        fn, den = registry.resolve("aggregation", part.type), registry.resolve("aggregation", part.denominator)
        kw = part.settings()
        return (lambda pt, m, d: fn(pt, m, denominator=d, **kw)), den
    mode = part.type
    max_len = getattr(part, "max_len", None) or config.rollout.max_new_tokens
    return ((lambda pt, m, d: aggregate(pt, m, mode, denominator=d, max_len=max_len)),
            (lambda masks: global_denominator(masks, mode, max_len=max_len)))  # fmt: skip


# ---------------------------------------------------------------- model, task, engine
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


def set_attention(model: nn.Module, choice: str, *, fused_kernels: bool | str = "auto") -> None:
    """Apply model.attn_implementation to a trainer-side model ("auto": eager on CPU, unchanged elsewhere),
    then model.fused_kernels (`fuse_kernels`)."""
    if choice == "auto":
        choice = "eager" if next(model.parameters()).device.type == "cpu" else ""
    if choice and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(choice)
    fuse_kernels(model, fused_kernels)


def fuse_kernels(model: nn.Module, choice: bool | str) -> int:
    """Apply model.fused_kernels to a trainer-side model: patch its RMSNorm / MLP / attention instances
    with `rlvr.models.kernels` ("auto": on CPU for the classes it supports); the number patched."""
    from rlvr.models import kernels

    if choice is False:
        return 0
    if choice is True and not kernels.supports(model):
        raise ConfigError(
            f"model.fused_kernels = true: {type(model).__name__} is not one of {', '.join(kernels.SUPPORTED)} "
            "with a SiLU MLP; set model.fused_kernels = 'auto' or false"
        )
    if choice == "auto" and next(model.parameters()).device.type != "cpu":
        return 0
    return kernels.fuse(model)


def build_task(cfg: TaskConfig | Sequence[TaskConfig], key: str = "task") -> Any:
    """One task, or a `TaskMixture` of several (weights from each [[tasks]] row); a bad option is named
    by its config key (`task.kwargs.length`, `tasks.1.kwargs.length`)."""
    from rlvr.errors import TaskKwargError
    from rlvr.tasks import make_task_with

    if not isinstance(cfg, TaskConfig):
        if len(cfg) == 1:
            return build_task(cfg[0])
        from rlvr.tasks.mixture import TaskMixture

        return TaskMixture([build_task(c, f"tasks.{i}") for i, c in enumerate(cfg)], [c.weight for c in cfg])
    try:
        return make_task_with(cfg.name, cfg.kwargs, where=f"{key}.kwargs.{{}}")
    except TaskKwargError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"task: cannot build task {cfg.name!r} with kwargs {cfg.kwargs}: {exc}") from exc


def split_examples(task: Any, split: str, size: int | None) -> list[Example]:
    examples = list(task.examples(split))
    return examples if size is None else examples[:size]


def autocast_for(cfg: ModelConfig, model: nn.Module) -> bool:
    """model.bf16_autocast resolved for the device the model sits on ("auto": only where bf16 is native)."""
    return resolve_bf16(cfg.bf16_autocast, next(model.parameters()).device)


def _hf_engine(cfg: Any, model: nn.Module, tokenizer: Any, *, seed: int, bf16: bool) -> Engine:
    from rlvr.rollout.hf import HFEngine

    return HFEngine(model, tokenizer, dtype=torch.bfloat16 if bf16 else None, max_batch_size=cfg.max_batch_size,
                    backend=cfg.backend, check_every=cfg.check_every)  # fmt: skip


def _fake_engine(cfg: Any, model: nn.Module, tokenizer: Any, *, seed: int, bf16: bool) -> Engine:
    from rlvr.rollout.fake import FakeEngine

    return FakeEngine(tokenizer=tokenizer, seed=cfg.seed + seed)


def _vllm_engine(cfg: Any, model: nn.Module, tokenizer: Any, *, seed: int, bf16: bool) -> Engine:
    kw = dict(seed=cfg.seed + seed, dtype=cfg.dtype, max_model_len=cfg.max_model_len,
              gpu_memory_utilization=cfg.gpu_memory_utilization, kv_cache_bytes=cfg.kv_cache_bytes,
              tensor_parallel_size=cfg.tensor_parallel_size, enforce_eager=cfg.enforce_eager)  # fmt: skip
    if cfg.mode == "server":
        from rlvr.rollout.vllm_server import VLLMServerEngine

        return VLLMServerEngine.from_model(model, tokenizer, **kw)
    from rlvr.rollout.vllm import VLLMEngine

    return VLLMEngine.from_model(model, tokenizer, sleep_mode=cfg.sleep_mode, **kw)


# rollout.engine.type -> factory(engine section, model, tokenizer, seed=, bf16=); a new engine adds a row
# here and a section in rlvr.config.sections
ENGINES: Mapping[str, Callable[..., Engine]] = {"hf": _hf_engine, "fake": _fake_engine, "vllm": _vllm_engine}


def build_engine(cfg: Any, model: nn.Module, tokenizer: Any, *, seed: int = 0, bf16: bool = False) -> Engine:
    """The rollout engine named by rollout.engine.type, built from its own settings section."""
    if cfg.type not in ENGINES:
        raise ConfigError(f"rollout.engine.type: unknown engine {cfg.type!r}; choose one of {sorted(ENGINES)}")
    return ENGINES[cfg.type](cfg, model, tokenizer, seed=seed, bf16=bf16)


def reference_engine(model: nn.Module, tokenizer: Any, *, bf16: bool) -> Engine:
    """The frozen reference policy (the initial weights) behind the Engine boundary: an HF engine that
    holds its own copy and never takes an update; the trainer reads it through `score` only."""
    from rlvr.rollout.hf import HFEngine

    return HFEngine(model, tokenizer, dtype=torch.bfloat16 if bf16 else None)


def render_prompt(task: Any, tokenizer: Any, example: Example, *, chat_template: bool) -> list[int]:
    """Prompt token ids exactly as `rlvr.rollout.collect` makes them (its BOS convention)."""
    from rlvr.rollout import render_prompt as rollout_render

    return rollout_render(tokenizer, task, example, chat_template=chat_template)[1]


def fit_prompts(
    examples: Sequence[Example], task: Any, tokenizer: Any, max_prompt_len: int, *, chat_template: bool
) -> tuple[list[Example], int]:
    """The examples whose rendered prompt fits in `max_prompt_len` tokens, and how many were dropped."""
    if not examples:
        raise ConfigError("task: the train split is empty (check the task's data file or its n_train)")
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
