"""The PPO stage (kind = "ppo"): PPO with a value model, done by "The N Implementation Details of RLHF
with PPO" (Huang et al. 2024) and Ziegler et al. 2019 / Ouyang et al. 2022.

    collect groups (generate + verify); a completion without EOS gets ppo.eos_penalty as its reward
    -> [whiten rewards] -> reference logprobs (frozen engine's score) -> micro-batches
    -> no-grad old logprobs (policy, at the sampling temperature: logits / T) and old values (critic)
    -> per-token rewards: -beta * k1_t at every token, the outcome reward at the last one
    -> GAE (gamma, lambda) -> advantages whitened over the step's tokens, returns as critic targets
    -> ppo.mu epochs: the objective-blind policy step (PPO-clip on per-token advantages; skipped during
       the critic warm-up) and a critic step (clipped value loss, token mean with the global denominator)
    -> versioned, checked weight sync -> adaptive KL on the per-sequence KL

Deviations: dropout is whatever the model config says (the tiny presets and Llama/Qwen have none); the
critic is a separate model (no shared trunk) and is saved in trainer_state.pt, not as its own HF dir.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rlvr.algorithms import registry
from rlvr.algorithms.advantages import gae, token_rewards_with_kl
from rlvr.algorithms.aggregate import aggregate, global_denominator
from rlvr.algorithms.compose import Objective, entropy_term, policy_term
from rlvr.algorithms.kl import AdaptiveKLController, FixedKLController
from rlvr.algorithms.objectives import ppo_clip
from rlvr.algorithms.value import explained_variance, value_loss, whiten
from rlvr.config import PPOConfig
from rlvr.models.reward import build_reward_model
from rlvr.trainer import build
from rlvr.trainer.batching import MicroBatch, micro_batches
from rlvr.trainer.data import DataCursor
from rlvr.trainer.driver import run_stage
from rlvr.trainer.forward import completion_hidden, completion_logprobs_no_grad, maybe_autocast
from rlvr.trainer.optim import Optimizers, build_optimizer, lr_factor
from rlvr.trainer.rl_steps import collect_groups, reference_logprobs, reward_metrics, to_samples
from rlvr.trainer.run import Callback, RunResult, Timer
from rlvr.trainer.step import apply_gradients, optimizer_update
from rlvr.trainer.sync import check_after_update, update_engine


def token_values(critic: nn.Module, mb: MicroBatch, *, autocast: bool) -> Tensor:  # [B, C] fp32
    """The critic's value of the state before each completion token (aligned with the logprobs)."""
    body = getattr(critic, getattr(critic, "base_model_prefix", "model"))
    with maybe_autocast(autocast, next(critic.parameters()).device.type):
        hidden = completion_hidden(body, mb)
    return critic.score(hidden).squeeze(-1).float()


def _stats(prefix: str, x: Tensor, mask: Tensor) -> dict[str, float]:
    v = x[mask.bool()].detach().float()
    if not v.numel():
        return {}
    return {f"{prefix}/mean": float(v.mean()), f"{prefix}/std": float(v.std()) if v.numel() > 1 else 0.0,
            f"{prefix}/min": float(v.min()), f"{prefix}/max": float(v.max())}  # fmt: skip


@dataclass(slots=True)
class PPOStage:
    config: PPOConfig
    model: nn.Module
    tokenizer: Any
    task: Any
    engine: Any
    ref_engine: Any
    critic: nn.Module
    optim: Optimizers
    critic_optim: Optimizers
    cursor: DataCursor[Any]
    collect: Any
    objective: Objective
    kl_ctl: FixedKLController | AdaptiveKLController
    kl: Any = None  # the per-token estimator in the reward (kl.type; k1 by default, as Ziegler et al.)
    autocast: bool = False
    opt_step: int = 0
    warnings: list[str] = field(default_factory=list)
    kind: str = "ppo"

    def step(self, step: int, timer: Timer) -> dict[str, Any]:
        c, r, p = self.config, self.config.rollout, self.config.ppo
        groups, zero_var = collect_groups(self, step, timer)
        ref = None
        if self.ref_engine is not None:
            with timer("reference"):
                ref = reference_logprobs(self.ref_engine, groups, temperature=r.temperature)
        comps = [comp for g in groups for comp in g.completions]
        rewards = torch.tensor([s.total for g in groups for s in g.scores], dtype=torch.float32)
        if p.eos_penalty is not None:  # the N-details: a completion that never ends is penalised
            rewards = torch.where(torch.tensor([cc.truncated for cc in comps]), torch.tensor(p.eos_penalty), rewards)
        if p.whiten_rewards and rewards.numel() > 1:
            rewards = (rewards - rewards.mean()) / (rewards.std() + 1e-8) + rewards.mean()
        samples = to_samples(groups, torch.zeros(len(comps)), ref, mask_truncated=False)
        batches = micro_batches(samples, c.optim.micro_batch_size, self.tokenizer.pad_token_id,
                                bucket=c.optim.bucket_by_length)  # fmt: skip
        with timer("old_logprobs"):
            metrics = self._targets(batches, rewards)
        with timer("train"):
            for _ in range(p.mu):
                if step > p.critic_warmup_steps:
                    self.model.train()
                    update = optimizer_update(self.model, self.optim, batches, self.objective,
                                              temperature=r.temperature, autocast=self.autocast,
                                              grad_clip=c.optim.grad_clip,
                                              lr_factor=lr_factor(self.opt_step, c.optim, c.optimizer_steps))  # fmt: skip
                    self.opt_step += 1
                    metrics.update(update)
                metrics.update(self._critic_update(batches))
        if step > p.critic_warmup_steps:
            with timer("sync"):
                update_engine(self.engine, self.model, self.opt_step)
                if r.engine.check_sync:
                    metrics.update(check_after_update(self.engine, self.model, samples, temperature=r.temperature,
                                                      autocast=self.autocast, pad_id=self.tokenizer.pad_token_id))  # fmt: skip
        metrics.update(reward_metrics(groups))
        metrics.update({"groups/zero_var_frac_sampled": zero_var, "kl/beta": self.kl_ctl.value, "critic/warmup": int(step <= p.critic_warmup_steps),
                        "tokens": sum(len(s.completion_ids) for s in samples)})  # fmt: skip
        if ref is not None and "kl/per_sequence" in metrics:
            self.kl_ctl.update(metrics["kl/per_sequence"], n_steps=len(samples))
        return metrics

    @torch.no_grad()
    def _targets(self, batches: Sequence[MicroBatch], rewards: Tensor) -> dict[str, float]:
        """Old logprobs and values, per-token KL rewards, GAE advantages (whitened) and returns, per batch."""
        c, r = self.config, self.config.rollout
        self.critic.eval()
        seq_kl, advs, masks = [], [], []
        for mb in batches:
            mb.old_logprobs = completion_logprobs_no_grad(self.model, mb, temperature=r.temperature, autocast=self.autocast)
            mb.old_values = token_values(self.critic, mb, autocast=self.autocast)
            kl = self.kl(mb.old_logprobs, mb.ref_logprobs) if mb.ref_logprobs is not None else torch.zeros_like(mb.old_logprobs)
            mask = mb.loss_mask
            token_r = token_rewards_with_kl(rewards[mb.index], kl, mask, beta=self.kl_ctl.value)
            mb.advantages, mb.returns = gae(token_r, mb.old_values, mask, gamma=c.ppo.gamma, lam=c.ppo.lam)
            seq_kl.append((kl * mask).sum(-1))
            advs.append(mb.advantages)
            masks.append(mask)
        out = {"kl/per_sequence": float(torch.cat(seq_kl).mean())}
        for name, xs in (("adv_raw", advs), ("values", [mb.old_values for mb in batches]), ("returns", [mb.returns for mb in batches])):
            out.update(_stats(name, torch.cat([x.flatten() for x in xs]), torch.cat([m.flatten() for m in masks])))
        if c.ppo.whiten_advantages:  # over the step's valid tokens, not per micro-batch
            flat_a = torch.cat([a.flatten() for a in advs])
            flat_m = torch.cat([m.flatten() for m in masks])
            w = whiten(flat_a, flat_m)
            offset = 0
            for mb in batches:
                n = mb.advantages.numel()
                mb.advantages = w[offset : offset + n].view_as(mb.advantages)
                offset += n
        return out

    def _critic_update(self, batches: Sequence[MicroBatch]) -> dict[str, float]:
        c = self.config
        self.critic.train()
        denominator = global_denominator([mb.loss_mask for mb in batches], "token_mean")
        loss_sum, clip_w, ev_v, ev_r, ev_m = 0.0, 0.0, [], [], []
        for mb in batches:
            values = token_values(self.critic, mb, autocast=self.autocast)
            per_token, m = value_loss(values, mb.old_values, mb.returns, mb.loss_mask, clip=c.ppo.value_clip)
            loss = aggregate(per_token, mb.loss_mask, "token_mean", denominator=denominator)
            loss.backward()
            loss_sum += float(loss.detach())
            clip_w += float(m["value/clip_frac"]) * float(mb.loss_mask.sum())
            ev_v.append(values.detach().flatten())
            ev_r.append(mb.returns.flatten())
            ev_m.append(mb.loss_mask.flatten())
        grads = apply_gradients(self.critic, self.critic_optim, c.critic.grad_clip, 1.0, finite_loss=math.isfinite(loss_sum))
        return {"value/loss": loss_sum, "value/clip_frac": clip_w / max(float(denominator), 1.0),
                "value/explained_variance": explained_variance(torch.cat(ev_v), torch.cat(ev_r), torch.cat(ev_m)),
                "value/grad_norm": grads["grad_norm"]}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"opt_step": self.opt_step, "optimizer": self.optim.state_dict(), "cursor": self.cursor.state_dict(),
                "kl_coef": self.kl_ctl.value, "critic": self.critic.state_dict(),
                "critic_optimizer": self.critic_optim.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_step = state["opt_step"]
        self.optim.load_state_dict(state["optimizer"])
        self.cursor.load_state_dict(state["cursor"])
        self.kl_ctl.value = state["kl_coef"]
        self.critic.load_state_dict(state["critic"])
        self.critic_optim.load_state_dict(state["critic_optimizer"])

    def ready(self) -> None:
        update_engine(self.engine, self.model, self.opt_step)


def build_ppo_stage(config: PPOConfig, *, model: nn.Module | None = None, tokenizer: Any = None, task: Any = None,
                    engine: Any = None, collect: Any = None, critic: nn.Module | None = None) -> PPOStage:  # fmt: skip
    if model is None:
        model, tokenizer = build.build_model(config.model)
    model.train()
    task = build.build_task(config.task) if task is None else task
    examples = build.split_examples(task, "train", config.task.train_size)
    examples, _ = build.fit_prompts(examples, task, tokenizer, config.rollout.max_prompt_len,
                                    chat_template=config.model.chat_template)  # fmt: skip
    autocast = build.autocast_for(config.model, model)
    ref = build.reference_engine(model, tokenizer, bf16=autocast) if config.kl.enabled else None
    if engine is None:
        engine = build.build_engine(config.rollout.engine, model, tokenizer, seed=config.run.seed, bf16=autocast)
    if collect is None:
        from rlvr.rollout import collect
    if critic is None:
        critic, _ = build_reward_model(config.critic.path or config.model.path, config.model.preset,
                                       config.model.seed, tokenizer)  # fmt: skip
    for m in (model, critic):
        build.set_attention(m, config.model.attn_implementation,
                            fused_kernels=config.model.fused_kernels if m is model else "auto")
    cfg = config.critic
    critic_optim = Optimizers([torch.optim.AdamW(critic.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)])
    terms = [("policy", policy_term(ppo_clip, config.objective.settings()), 1.0)]
    if config.entropy.coef:
        terms.append(("entropy", entropy_term, config.entropy.coef))
    objective = Objective(tuple(terms), lambda pt, mk, d: aggregate(pt, mk, "token_mean", denominator=d),
                          lambda masks: global_denominator(masks, "token_mean"),
                          metric_terms=() if config.entropy.coef else (("entropy", entropy_term),))  # fmt: skip
    k = config.kl
    ctl = AdaptiveKLController(k.beta, k.target, k.horizon) if k.adaptive else FixedKLController(k.beta)
    return PPOStage(config=config, model=model, tokenizer=tokenizer, task=task, engine=engine, ref_engine=ref,
                    critic=critic.train(), optim=build_optimizer(model, config.optim), critic_optim=critic_optim,
                    cursor=DataCursor(examples, config.run.seed), collect=collect, objective=objective, kl_ctl=ctl,
                    kl=functools.partial(registry.resolve("kl", k.type), **k.settings()), autocast=autocast)  # fmt: skip


def train_ppo(config: PPOConfig, *, resume: bool = False, callbacks: Sequence[Callback] = (),
              **components: Any) -> RunResult:  # fmt: skip
    """Run (or continue) PPO with a value model as `config` says, on the shared loop driver."""
    build.validate(config)
    return run_stage(config, lambda: build_ppo_stage(config, **components), resume=resume, callbacks=callbacks)
