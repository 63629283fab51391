"""The reward-model stage (kind = "reward_model"): Bradley-Terry on preference pairs, on the loop driver.

    pairs: a JSONL file and/or verifier-labelled task pairs (worked solution vs the same solution with a
    deliberate slip, kept where the verifier scores the first higher)
    each step: rewards of chosen and rejected at their last token -> -log sigmoid(r_c - r_r), summed and
    divided by the step's pair count -> optimizer step
    last step: held-out preference accuracy (task test split) and the normalising offset: the mean reward
    of the starting policy's own samples (InstructGPT), saved in the checkpoint's config.json
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rlvr.algorithms.preference import bradley_terry
from rlvr.config import ConfigError, RewardModelConfig
from rlvr.models.reward import OFFSET_KEY, build_reward_model, rewards
from rlvr.tasks import grade, open_prefix, sft_target
from rlvr.trainer import build
from rlvr.trainer.data import DataCursor, read_text_rows, tokenize_prompt
from rlvr.trainer.driver import run_stage
from rlvr.trainer.optim import Optimizers, build_optimizer, lr_factor
from rlvr.trainer.run import Callback, RunResult, Timer
from rlvr.trainer.step import Accumulator, apply_gradients

Pair = tuple[tuple[int, ...], tuple[int, ...]]  # token ids of prompt + chosen, prompt + rejected


def _ids(tokenizer: Any, text: str, max_len: int) -> tuple[int, ...]:
    ids = tokenize_prompt(tokenizer, text)  # prompt + response: BOS as a prompt gets it
    return tuple(ids[-max_len:])  # keep the end: the reward is read at the last token


def file_pairs(config: RewardModelConfig, tokenizer: Any) -> list[Pair]:
    """(prompt + chosen, prompt + rejected) token ids from data.path; a bad row names file:line and field."""
    d = config.data
    fields = {"prompt_field": d.prompt_field, "chosen_field": d.chosen_field, "rejected_field": d.rejected_field}
    rows = read_text_rows(d.path, fields, what="prompt/chosen/rejected")  # type: ignore[arg-type]
    return [(_ids(tokenizer, p + c, d.max_len), _ids(tokenizer, p + r, d.max_len)) for p, c, r in rows]


def task_pairs(task: Any, examples: Sequence[Any], tokenizer: Any, max_len: int, seed: int) -> list[Pair]:
    """Verifier-labelled pairs: the worked solution vs the same with a slip, where the verifier agrees."""
    rng, out = random.Random(seed), []
    for ex in examples:
        prompt = task.render(ex)
        prefix = open_prefix(prompt)
        good, bad = sft_target(task, ex, prefix, rng, 0.0), sft_target(task, ex, prefix, rng, 1.0)
        if grade(task, ex, good, prefix=prefix).total > grade(task, ex, bad, prefix=prefix).total:
            out.append((_ids(tokenizer, prompt + good, max_len), _ids(tokenizer, prompt + bad, max_len)))
    return out


@dataclass(slots=True)
class RewardModelStage:
    config: RewardModelConfig
    model: nn.Module
    tokenizer: Any
    task: Any
    optim: Optimizers
    cursor: DataCursor[Pair]
    heldout: list[Pair]
    opt_step: int = 0
    engine: Any = None
    warnings: list[str] = field(default_factory=list)
    kind: str = "reward_model"

    def step(self, step: int, timer: Timer) -> dict[str, Any]:
        c = self.config
        pairs = self.cursor.take(c.data.batch_size)
        with timer("train"):
            self.model.train()
            acc, per_mb = Accumulator(), max(1, c.optim.micro_batch_size // 2)
            for i in range(0, len(pairs), per_mb):
                chunk = pairs[i : i + per_mb]
                r = rewards(self.model, [p[0] for p in chunk] + [p[1] for p in chunk], self.tokenizer.pad_token_id)
                loss, metrics = bradley_terry(r[: len(chunk)], r[len(chunk) :])
                total = loss.sum() / len(pairs)  # the step's global denominator: its pair count
                total.backward()
                acc.add(metrics, weight=float(len(chunk)), loss=float(total.detach()))
            out: dict[str, Any] = acc.result()
            out.update(apply_gradients(self.model, self.optim, c.optim.grad_clip,
                                       lr_factor(self.opt_step, c.optim, c.optimizer_steps),
                                       finite_loss=math.isfinite(out["loss"])))  # fmt: skip
            self.opt_step += 1
        if step == c.run.steps:
            with timer("eval"):
                out.update(self.finish())
        return out

    @torch.no_grad()
    def heldout_accuracy(self) -> float | None:
        if not self.heldout:
            return None
        self.model.eval()
        wins = 0
        for i in range(0, len(self.heldout), 32):
            chunk = self.heldout[i : i + 32]
            r = rewards(self.model, [p[0] for p in chunk] + [p[1] for p in chunk], self.tokenizer.pad_token_id)
            wins += int((r[: len(chunk)] > r[len(chunk) :]).sum())
        return wins / len(self.heldout)

    @torch.no_grad()
    def finish(self) -> dict[str, Any]:
        """Held-out preference accuracy, and the offset that makes the starting policy's samples score 0."""
        out: dict[str, Any] = {"eval/pair_accuracy": self.heldout_accuracy(), "eval/heldout_pairs": len(self.heldout)}
        n = self.config.data.normalize_samples
        if n and self.task is not None:
            texts = _policy_samples(self.config, self.task, n)
            self.model.eval()
            r = torch.cat([rewards(self.model, [_ids(self.tokenizer, t, self.config.data.max_len) for t in texts[i : i + 32]],
                                   self.tokenizer.pad_token_id) for i in range(0, len(texts), 32)])  # fmt: skip
            setattr(self.model.config, OFFSET_KEY, float(r.mean()))
            out.update({"reward/offset": float(r.mean()), "reward/policy_std": float(r.std()) if len(r) > 1 else 0.0})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"opt_step": self.opt_step, "optimizer": self.optim.state_dict(), "cursor": self.cursor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_step = state["opt_step"]
        self.optim.load_state_dict(state["optimizer"])
        self.cursor.load_state_dict(state["cursor"])

    def ready(self) -> None:
        pass


def _policy_samples(config: RewardModelConfig, task: Any, n: int) -> list[str]:
    """`n` prompt + completion texts sampled from the policy the RM starts from (its model section)."""
    from rlvr.rollout import SamplingParams, collect
    from rlvr.rollout.hf import HFEngine

    policy, tok = build.build_model(config.model)
    examples = build.split_examples(task, "train", None)[: max(1, n // 4)]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=config.eval.max_new_tokens or 128,
                            stop_token_ids=(tok.eos_token_id,), seed=config.run.seed)  # fmt: skip
    groups = collect(HFEngine(policy, tok), tok, task, examples, params)
    return [task.render(g.example) + c.text for g in groups for c in g.completions][:n]


def build_reward_model_stage(config: RewardModelConfig, *, model: nn.Module | None = None, tokenizer: Any = None,
                             task: Any = None) -> RewardModelStage:  # fmt: skip
    if model is None:
        model, tokenizer = build_reward_model(config.model.path, config.model.preset, config.model.seed)
    if task is None and config.task is not None:
        task = build.build_task(config.task)
    build.set_attention(model, config.model.attn_implementation, fused_kernels=config.model.fused_kernels)
    d = config.data
    pairs = file_pairs(config, tokenizer) if d.path else []
    heldout: list[Pair] = []
    if d.from_task:
        train = build.split_examples(task, "train", config.task.train_size if config.task else None)
        pairs += task_pairs(task, train, tokenizer, d.max_len, config.run.seed)
        test = build.split_examples(task, "test", None)[: d.heldout_pairs]
        heldout = task_pairs(task, test, tokenizer, d.max_len, config.run.seed + 1)
    if not pairs:
        raise ConfigError("reward model: no preference pairs (the file is empty, or the verifier agreed with none)")
    stage = RewardModelStage(config=config, model=model.train(), tokenizer=tokenizer, task=task,
                             optim=build_optimizer(model, config.optim), cursor=DataCursor(pairs, config.run.seed),
                             heldout=heldout)  # fmt: skip
    return stage


def train_reward_model(config: RewardModelConfig, *, resume: bool = False, callbacks: Sequence[Callback] = (),
                       **components: Any) -> RunResult:  # fmt: skip
    """Run (or continue) reward-model training as `config` says, on the shared loop driver."""
    build.validate(config)
    return run_stage(config, lambda: build_reward_model_stage(config, **components), resume=resume,
                     callbacks=callbacks)  # fmt: skip
