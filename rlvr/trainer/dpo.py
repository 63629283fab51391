"""The DPO stage (kind = "dpo"): the DPO family on preference pairs, on the one loop driver.

    pairs for this step: file pairs (data.pairs_per_step) and/or on-policy pairs (sample a group per
    prompt, pair a higher-reward completion with a lower-reward one: the verifier is the labeller)
    -> reference logprobs through the frozen reference engine's `score` (cached per pair)
    -> per micro-batch: the policy's summed logprobs of chosen and rejected, the preference loss,
       summed and divided by the step's pair count (the global denominator) -> optimizer step
    -> on-policy: the new weights to the sampling engine (versioned, checked)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rlvr.algorithms import registry
from rlvr.config import DPOConfig
from rlvr.trainer import build
from rlvr.trainer.batching import Sample, collate
from rlvr.trainer.data import DataCursor, read_text_rows, tokenize_prompt
from rlvr.trainer.driver import run_stage
from rlvr.trainer.forward import completion_logprobs
from rlvr.trainer.optim import Optimizers, build_optimizer, lr_factor
from rlvr.trainer.rl_steps import collect_groups
from rlvr.trainer.run import Callback, RunResult, Timer
from rlvr.trainer.step import Accumulator, apply_gradients
from rlvr.trainer.sync import check_after_update, update_engine

Pair = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # (prompt ids, chosen ids, rejected ids)


def read_pairs(config: DPOConfig, tokenizer: Any) -> list[Pair]:
    """Tokenised (prompt, chosen + eos, rejected + eos) from data.path; a bad row names file:line and field."""
    d = config.data
    fields = {"prompt_field": d.prompt_field, "chosen_field": d.chosen_field, "rejected_field": d.rejected_field}
    pairs: list[Pair] = []
    for p, chosen, rejected in read_text_rows(d.path, fields, what="prompt/chosen/rejected"):  # type: ignore[arg-type]
        prompt = tuple(tokenize_prompt(tokenizer, p))
        pairs.append((prompt, _completion(tokenizer, chosen, len(prompt), d.max_len),
                      _completion(tokenizer, rejected, len(prompt), d.max_len)))  # fmt: skip
    return pairs


def _completion(tokenizer: Any, text: str, prompt_len: int, max_len: int) -> tuple[int, ...]:
    ids = [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return tuple(ids[: max(1, max_len - prompt_len)])


def onpolicy_pairs(groups: Sequence[Any], per_prompt: int) -> list[Pair]:
    """From each group, up to `per_prompt` (higher-reward, lower-reward) completion pairs: the best
    with the worst, then the next best with the next worst, while the chosen one scores strictly more."""
    out: list[Pair] = []
    for g in groups:
        ranked = sorted(zip(g.rewards, range(len(g.completions))), key=lambda t: (-t[0], t[1]))
        for k in range(min(per_prompt, len(ranked) // 2)):
            (hi, i), (lo, j) = ranked[k], ranked[-1 - k]
            if hi <= lo:
                break
            out.append((tuple(g.prompt_ids), tuple(g.completions[i].token_ids), tuple(g.completions[j].token_ids)))
    return out


@dataclass(slots=True)
class DPOStage:
    config: DPOConfig
    model: nn.Module
    tokenizer: Any
    task: Any
    engine: Any  # on-policy sampling engine (None for file pairs only)
    ref_engine: Any
    optim: Optimizers
    loss_fn: Callable[..., Any]
    file_cursor: DataCursor[Pair] | None
    cursor: DataCursor[Any] | None  # prompts, on-policy
    collect: Any = None
    autocast: bool = False
    opt_step: int = 0
    ref_cache: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    kind: str = "dpo"

    def step(self, step: int, timer: Timer) -> dict[str, Any]:
        c = self.config
        pairs: list[Pair] = []
        metrics: dict[str, Any] = {}
        if self.cursor is not None:  # on-policy pairs from this step's groups
            groups, zero_var = collect_groups(self, step, timer)
            pairs += onpolicy_pairs(groups, c.data.pairs_per_prompt)
            metrics.update({"pairs/onpolicy": len(pairs), "groups/zero_var_frac_sampled": zero_var,
                            "reward/total": sum(r for g in groups for r in g.rewards) / max(sum(g.size for g in groups), 1)})  # fmt: skip
        if self.file_cursor is not None:
            pairs += self.file_cursor.take(c.data.pairs_per_step)
        metrics["pairs"] = len(pairs)
        with timer("reference"):
            ref = self._reference(pairs)
        with timer("train"):
            metrics.update(self._update(pairs, ref))
        if self.engine is not None and pairs:
            with timer("sync"):
                update_engine(self.engine, self.model, self.opt_step)
                if c.rollout.engine.check_sync:
                    metrics.update(check_after_update(self.engine, self.model, [Sample(p, ch) for p, ch, _ in pairs],
                                                      temperature=c.rollout.temperature, autocast=self.autocast,
                                                      pad_id=self.tokenizer.pad_token_id))  # fmt: skip
        return metrics

    def _reference(self, pairs: Sequence[Pair]) -> list[tuple[float, float]]:
        """Summed reference logprobs of (chosen, rejected) per pair, through the engine, cached."""
        if self.ref_engine is None:
            return [(0.0, 0.0)] * len(pairs)
        keys = [(p, x) for p, ch, rj in pairs for x in (ch, rj)]
        todo = sorted({k for k in keys if k not in self.ref_cache})
        if todo:
            scored = self.ref_engine.score([k[0] for k in todo], [k[1] for k in todo], temperature=1.0)
            self.ref_cache.update({k: math.fsum(s.logprobs) for k, s in zip(todo, scored)})
        return [(self.ref_cache[(p, ch)], self.ref_cache[(p, rj)]) for p, ch, rj in pairs]

    def _update(self, pairs: Sequence[Pair], ref: Sequence[tuple[float, float]]) -> dict[str, Any]:
        c = self.config
        factor = lr_factor(self.opt_step, c.optim, c.optimizer_steps)
        if not pairs:  # nothing to learn this step (every group had equal rewards): no update
            return {"skipped": 0, "lr": self.optim.set_lr(factor)}
        per_mb = max(1, c.optim.micro_batch_size // 2)
        acc = Accumulator()
        self.model.train()
        for i in range(0, len(pairs), per_mb):
            chunk, chunk_ref = pairs[i : i + per_mb], ref[i : i + per_mb]
            mb = collate([Sample(p, ch) for p, ch, _ in chunk] + [Sample(p, rj) for p, _, rj in chunk],
                         self.tokenizer.pad_token_id)  # fmt: skip
            logprobs, _ = completion_logprobs(self.model, mb, temperature=1.0, autocast=self.autocast)
            seq = (logprobs * mb.loss_mask).sum(-1)  # [2m]
            lens = mb.loss_mask.sum(-1).float()
            m = len(chunk)
            r = torch.tensor(chunk_ref, dtype=torch.float32)  # [m, 2]
            loss, metrics = self.loss_fn(seq[:m], seq[m:], r[:, 0], r[:, 1], chosen_len=lens[:m],
                                         rejected_len=lens[m:])  # fmt: skip
            total = loss.sum() / len(pairs)  # the step's global denominator: its pair count
            total.backward()
            acc.add(metrics, weight=float(m), loss=float(total.detach()))
        out: dict[str, Any] = acc.result()
        out.update(apply_gradients(self.model, self.optim, c.optim.grad_clip, factor,
                                   finite_loss=math.isfinite(out["loss"])))  # fmt: skip
        out["tokens"] = sum(len(ch) + len(rj) for _, ch, rj in pairs)
        self.opt_step += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"opt_step": self.opt_step, "optimizer": self.optim.state_dict(),
                "file_cursor": None if self.file_cursor is None else self.file_cursor.state_dict(),
                "cursor": None if self.cursor is None else self.cursor.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_step = state["opt_step"]
        self.optim.load_state_dict(state["optimizer"])
        for name in ("file_cursor", "cursor"):
            if getattr(self, name) is not None and state.get(name) is not None:
                getattr(self, name).load_state_dict(state[name])

    def ready(self) -> None:
        if self.engine is not None:
            update_engine(self.engine, self.model, self.opt_step)


def build_dpo_stage(config: DPOConfig, *, model: nn.Module | None = None, tokenizer: Any = None,
                    task: Any = None, engine: Any = None, collect: Any = None) -> DPOStage:  # fmt: skip
    if model is None:
        model, tokenizer = build.build_model(config.model)
    model.train()
    if task is None and config.task is not None:
        task = build.build_task(config.task)
    autocast = build.autocast_for(config.model, model)
    ref = build.reference_engine(model, tokenizer, bf16=autocast) if config.needs_reference else None
    cursor = None
    if config.data.onpolicy:
        examples = build.split_examples(task, "train", config.task.train_size if config.task else None)
        examples, _ = build.fit_prompts(examples, task, tokenizer, config.rollout.max_prompt_len,
                                        chat_template=config.model.chat_template)  # fmt: skip
        cursor = DataCursor(examples, config.run.seed)
        if engine is None:
            engine = build.build_engine(config.rollout.engine, model, tokenizer, seed=config.run.seed, bf16=autocast)
        if collect is None:
            from rlvr.rollout import collect
    files = DataCursor(read_pairs(config, tokenizer), config.run.seed) if config.data.path else None
    build.set_attention(model, config.model.attn_implementation, fused_kernels=config.model.fused_kernels)
    loss = config.loss
    fn = registry.resolve("preference", loss.type)
    settings = loss.settings()
    return DPOStage(config=config, model=model, tokenizer=tokenizer, task=task, engine=engine, ref_engine=ref,
                    optim=build_optimizer(model, config.optim),
                    loss_fn=lambda *a, **kw: fn(*a, **kw, **settings), file_cursor=files, cursor=cursor,
                    collect=collect, autocast=autocast)  # fmt: skip


def train_dpo(config: DPOConfig, *, resume: bool = False, callbacks: Sequence[Callback] = (),
              **components: Any) -> RunResult:  # fmt: skip
    """Run (or continue) the DPO stage as `config` says, on the shared loop driver."""
    build.validate(config)
    return run_stage(config, lambda: build_dpo_stage(config, **components), resume=resume, callbacks=callbacks)
