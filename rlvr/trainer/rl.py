"""The RL stage (kind = "rl"): GRPO-family RL on verifiable rewards, as one step function.

    collect groups (generate + verify) -> [reference logprobs via its engine, when KL is on]
    -> [KL in the reward] -> sequence-level advantages on the groups -> samples -> micro-batches
    -> [old logprobs, when mu > 1] -> mu objective-blind optimizer steps -> versioned, checked
    weight sync -> adaptive KL -> metrics

The loop around it (seeding, resume, signals, skips, eval, checkpoints) is `rlvr.trainer.driver`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rlvr.algorithms.compose import Objective
from rlvr.algorithms.kl import AdaptiveKLController, FixedKLController
from rlvr.config import RLConfig
from rlvr.trainer import build
from rlvr.trainer.async_rollout import RolloutPipeline
from rlvr.trainer.batching import micro_batches, padding_fraction
from rlvr.trainer.data import DataCursor, MixtureCursor
from rlvr.trainer.driver import run_stage
from rlvr.trainer.forward import completion_logprobs_no_grad
from rlvr.trainer.optim import Optimizers, build_optimizer, lr_factor
from rlvr.trainer.rl_packing import empty_batch, packed_micro_batches
from rlvr.trainer.rl_steps import (
    group_advantages,
    reference_logprobs,
    reward_metrics,
    sample_rows,
    sequence_kl,
    to_samples,
)
from rlvr.trainer.run import Callback, RunResult, Timer
from rlvr.trainer.step import optimizer_update
from rlvr.trainer.sync import check_after_update, update_engine


@dataclass(slots=True)
class RLStage:
    """Everything the RL step carries from step to step (see the module docstring)."""

    config: RLConfig
    model: nn.Module
    tokenizer: Any
    task: Any
    engine: Any
    ref_engine: Any
    optim: Optimizers
    cursor: DataCursor[Any] | MixtureCursor[Any]
    collect: Callable[..., Any]
    objective: Objective
    advantage: Callable[..., torch.Tensor]
    kl: Callable[..., torch.Tensor]
    kl_ctl: FixedKLController | AdaptiveKLController
    autocast: bool = False
    opt_step: int = 0  # optimizer steps completed = the policy version the engine holds
    warnings: list[str] = field(default_factory=list)
    pipeline: RolloutPipeline = field(default_factory=RolloutPipeline)  # rollout.max_staleness
    kind: str = "rl"
    agree_count: Callable[[int], int] = int  # data parallel: the most micro-batches any rank has this step

    # ------------------------------------------------------------ the step
    def step(self, step: int, timer: Timer) -> dict[str, Any]:
        c, r, a = self.config, self.config.rollout, self.config.algorithm
        batch, metrics = self.pipeline.batch(self, step, timer)  # 1. generate + verify (or sampled ahead)
        groups, zero_var_sampled = batch.groups, batch.zero_var
        ref = None
        if self.ref_engine is not None:  # 2. the reference policy, through its engine
            with timer("reference"):
                ref = reference_logprobs(self.ref_engine, groups, temperature=r.temperature)
        rewards = torch.tensor([s.total for g in groups for s in g.scores], dtype=torch.float32)  # [N]
        if ref is not None and a.kl.placement == "reward":  # 3. KL in the reward (PPO-RLHF style)
            policy = [self._policy_logprobs(g, comp) for g in groups for comp in g.completions]
            seq_kl = sequence_kl(self.kl, policy, ref)
            rewards = rewards - self.kl_ctl.value * seq_kl
            metrics["kl/reward_penalty"] = float(self.kl_ctl.value * seq_kl.mean())
        adv, adv_metrics = group_advantages(self.advantage, groups, rewards)  # 4. advantages on groups
        samples = to_samples(groups, adv, ref, mask_truncated=a.mask_truncated)
        batches = self._micro_batches(samples)
        if a.needs_old_logprobs_pass:  # 5. the batch is reused: freeze the sampling-time policy
            with timer("old_logprobs"):
                for mb in batches:
                    mb.old_logprobs = completion_logprobs_no_grad(self.model, mb, temperature=r.temperature,
                                                                  autocast=self.autocast)  # fmt: skip
        with timer("train"):  # 6. mu objective-blind optimizer steps
            self.model.train()
            skipped = 0
            for _ in range(a.mu):
                update = optimizer_update(
                    self.model, self.optim, batches, self.objective, temperature=r.temperature,
                    autocast=self.autocast, grad_clip=c.optim.grad_clip, coefs={"kl": self.kl_ctl.value},
                    lr_factor=lr_factor(self.opt_step, c.optim, c.optimizer_steps),
                )  # fmt: skip
                self.opt_step += 1
                skipped += update["skipped"]
        with timer("sync"):  # 7. new weights to the engine, versioned and checked
            metrics.update(self._sync(samples))
        metrics.update({**update, "skipped": int(skipped > 0), **adv_metrics, **reward_metrics(groups)})
        metrics.update(self._kl_control(update, samples))  # 8. adaptive KL
        metrics["groups/zero_var_frac_sampled"] = zero_var_sampled
        metrics["padding_frac"] = padding_fraction(batches)
        metrics["tokens"] = sum(len(s.completion_ids) for s in samples)
        if c.run.samples_every and step % c.run.samples_every == 0:
            metrics["samples"] = sample_rows(step, groups)  # the driver writes them to samples.jsonl
        return metrics

    # ------------------------------------------------------------ helpers
    def _micro_batches(self, samples: Sequence[Any]) -> list[Any]:
        """Length-bucketed micro-batches, or with optim.packing packed rows (`rl_packing`), topped up with
        empty micro-batches to the count every rank runs (their number depends on the data)."""
        o, pad = self.config.optim, self.tokenizer.pad_token_id
        if not o.packing:
            return micro_batches(samples, o.micro_batch_size, pad, bucket=o.bucket_by_length)
        batches = packed_micro_batches(samples, o.micro_batch_size, pad, row_len=o.pack_len)
        return batches + [empty_batch(pad, batches[0]) for _ in range(self.agree_count(len(batches)) - len(batches))]

    def _policy_logprobs(self, group: Any, completion: Any) -> Sequence[float]:
        """The sampling policy's logprobs (the engine's report; its score when it reports none)."""
        if completion.sampler_logprobs is not None:
            return completion.sampler_logprobs
        scored = self.engine.score([group.prompt_ids], [completion.token_ids],
                                   temperature=self.config.rollout.temperature)  # fmt: skip
        return scored[0].logprobs

    def _sync(self, samples: Sequence[Any]) -> dict[str, float]:
        self.pipeline.settle()  # a batch being sampled ahead finishes on the weights it started with
        update_engine(self.engine, self.model, self.opt_step)
        if not self.config.rollout.engine.check_sync:
            return {}
        return check_after_update(self.engine, self.model, samples, temperature=self.config.rollout.temperature,
                                  autocast=self.autocast, pad_id=self.tokenizer.pad_token_id)  # fmt: skip

    def _kl_control(self, update: dict[str, Any], samples: Sequence[Any]) -> dict[str, float]:
        """beta for the next step; the controller sees the KL per sequence (Ziegler et al.'s units)."""
        if self.ref_engine is None:
            return {}
        out = {"kl/beta": self.kl_ctl.value}
        if update.get("kl") is not None:
            counted = [s for s in samples if not s.masked and s.completion_ids]
            seq_kl = update["kl"] * update["tokens"] / max(len(counted), 1)  # token mean x tokens / sequences
            out["kl/per_sequence"] = seq_kl
            self.kl_ctl.update(seq_kl, n_steps=len(samples))
        return out

    # ------------------------------------------------------------ driver interface
    def state_dict(self) -> dict[str, Any]:
        return {"opt_step": self.opt_step, "optimizer": self.optim.state_dict(), "cursor": self.cursor.state_dict(),
                "kl_coef": self.kl_ctl.value, "rollout": self.pipeline.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_step = state["opt_step"]
        self.optim.load_state_dict(state["optimizer"])
        self.cursor.load_state_dict(state["cursor"])
        self.kl_ctl.value = state.get("kl_coef", self.kl_ctl.value)
        self.pipeline.load_state_dict(state.get("rollout"))

    def ready(self) -> None:
        update_engine(self.engine, self.model, self.opt_step)  # a resumed run's weights to the engine


def build_rl_stage(config: RLConfig, *, model: nn.Module | None = None, tokenizer: Any = None, task: Any = None,
                   engine: Any = None, collect: Any = None) -> RLStage:  # fmt: skip
    """Build (or take) every component the RL stage needs; the driver restores a checkpoint after."""
    if model is None:
        model, tokenizer = build.build_model(config.model)
    model.train()
    task = build.build_task(config.tasks) if task is None else task
    if config.reward_model.path is not None:  # a trained RM as one more reward part, next to the verifiers
        from rlvr.models.reward import RewardModelPart, build_reward_model

        rm, rm_tok = build_reward_model(config.reward_model.path, config.model.preset, config.model.seed)
        task = RewardModelPart(task, rm, rm_tok, weight=config.reward_model.weight, name=config.reward_model.name)
    train, dropped = _train_examples(config, task, tokenizer)
    autocast = build.autocast_for(config.model, model)
    a = config.algorithm
    lora_cfg = config.model.lora
    ref = build.reference_engine(model, tokenizer, bf16=autocast) if a.needs_reference and not lora_cfg else None
    if engine is None:
        engine = build.build_engine(config.rollout.engine, model, tokenizer, seed=config.run.seed, bf16=autocast)
    if lora_cfg is not None:  # after the engine copied the base weights; the reference is the base model
        from rlvr.trainer.lora import attach_lora

        ref = attach_lora(lora_cfg, model, tokenizer, reference=a.needs_reference, bf16=autocast)
    if collect is None:
        from rlvr.rollout import collect
    build.set_attention(model, config.model.attn_implementation, fused_kernels=config.model.fused_kernels)  # after the engines copied the model
    members = train if isinstance(train[0], list) else None
    cursor = (MixtureCursor(members, [t.weight for t in config.tasks], config.run.seed) if members
              else DataCursor(train, config.run.seed))  # fmt: skip
    ctl = (AdaptiveKLController(a.kl.beta, a.kl.target, a.kl.horizon) if a.kl.adaptive
           else FixedKLController(a.kl.beta))  # fmt: skip
    stage = RLStage(config=config, model=model, tokenizer=tokenizer, task=task, engine=engine, ref_engine=ref,
                    optim=build_optimizer(model, config.optim), cursor=cursor, collect=collect,
                    objective=build.build_objective(config), advantage=build.advantage_fn(config),
                    kl=build.kl_estimator(config), kl_ctl=ctl, autocast=autocast,
                    pipeline=RolloutPipeline(config.rollout.max_staleness))  # fmt: skip
    if dropped:
        stage.warnings.append(f"{dropped} training prompts longer than rollout.max_prompt_len were dropped")
    return stage


def _train_examples(config: RLConfig, task: Any, tokenizer: Any) -> tuple[list[Any], int]:
    """The train split that fits rollout.max_prompt_len: a list, or one list per mixture member."""
    chat, limit = config.model.chat_template, config.rollout.max_prompt_len
    if hasattr(task, "member_examples") and len(config.tasks) > 1:
        out, dropped = [], 0
        for rows, cfg in zip(task.member_examples("train"), config.tasks):
            rows = rows if cfg.train_size is None else rows[: cfg.train_size]
            kept, d = build.fit_prompts(rows, task, tokenizer, limit, chat_template=chat)
            out.append(kept)
            dropped += d
        return out, dropped
    examples = build.split_examples(task, "train", config.tasks[0].train_size)
    return list(build.fit_prompts(examples, task, tokenizer, limit, chat_template=chat))


def train_rl(config: RLConfig, *, resume: bool = False, callbacks: Sequence[Callback] = (), **components: Any) -> RunResult:
    """Run (or, with `resume`, continue) RL training as `config` says; return how it ended.

    `components` (model, tokenizer, task, engine, collect) default to what the config names; pass
    them to inject your own (tests pass fakes).  `callbacks` run every `run.eval_every` steps and
    after the last step; their metrics are logged as "eval/<name>".
    """
    build.validate(config)
    return run_stage(config, lambda: build_rl_stage(config, **components), resume=resume, callbacks=callbacks)
