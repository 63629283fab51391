"""`train_sft`: supervised fine-tuning on prompt/completion pairs, loss on completion tokens only.

Pairs come from a JSONL file (`data.path`) or from the task's worked solutions
(`task.solution(example, rng, noise)`, for an R1-format cold start).  The loss is the token mean of
-log p(completion token) over the whole optimizer step: one global denominator (the step's
completion-token count) shared by every micro-batch, so gradient accumulation changes nothing.
Optimizer, schedule, checkpoints and logging are the RL loop's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.algorithms.aggregate import aggregate, global_denominator
from rlvr.config import ConfigError, SFTConfig, save_config
from rlvr.trainer import build
from rlvr.trainer.batching import MicroBatch, Sample, micro_batches, padding_fraction
from rlvr.trainer.checkpoint import load_checkpoint, save_checkpoint
from rlvr.trainer.data import DataCursor
from rlvr.trainer.forward import completion_logprobs
from rlvr.trainer.logging import RunLogger
from rlvr.trainer.optim import build_optimizer, lr_factor
from rlvr.trainer.packing import PackedBatch, packed_batches, packed_logprobs
from rlvr.trainer.rl_steps import apply_gradients
from rlvr.trainer.run import RunResult, Timer, prepare_run_dir, seed_everything, stop_on_signals


def read_pairs(path: str | Path, prompt_field: str, completion_field: str) -> list[tuple[str, str]]:
    """(prompt, completion) strings from a JSONL file; a bad row raises naming the file, line and field."""
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            for field in (prompt_field, completion_field):
                if not isinstance(row, dict) or not isinstance(row.get(field), str):
                    raise ValueError(
                        f"{path}:{n}: field {field!r} missing or not a string (set data.{field})"
                    )
            pairs.append((row[prompt_field], row[completion_field]))
    if not pairs:
        raise ValueError(f"{path}: no prompt/completion rows")
    return pairs


def task_pairs(config: SFTConfig, task: Any, tokenizer: Any) -> list[tuple[list[int], str]]:
    """(prompt ids, worked solution) for the task's train examples; `data.noise` adds deliberate slips."""
    size = config.data.num_examples or (config.task.train_size if config.task else None)
    examples = build.split_examples(task, "train", size)
    rng = random.Random(config.run.seed)
    chat = config.model.chat_template
    return [
        (
            build.render_prompt(task, tokenizer, ex, chat_template=chat),
            task.solution(ex, rng, config.data.noise),
        )
        for ex in examples
    ]


def make_samples(config: SFTConfig, task: Any, tokenizer: Any) -> tuple[list[Sample], int]:
    """Tokenised samples (completion ends with EOS), cut to data.max_len; (samples, pairs dropped)."""
    if config.data.path:
        pairs = [(tokenizer(p)["input_ids"], c) for p, c in read_pairs(config.data.path, config.data.prompt_field,
                                                                       config.data.completion_field)]  # fmt: skip
    else:
        pairs = task_pairs(config, task, tokenizer)
    samples, dropped = [], 0
    for prompt_ids, completion in pairs:
        completion_ids = [
            *tokenizer(completion, add_special_tokens=False)["input_ids"],
            tokenizer.eos_token_id,
        ]
        room = config.data.max_len - len(prompt_ids)
        if room < 1:
            dropped += 1
            continue
        samples.append(Sample(tuple(prompt_ids), tuple(completion_ids[:room]), index=len(samples)))
    if not samples:
        raise ConfigError(f"data.max_len = {config.data.max_len}: no prompt fits; raise data.max_len")
    return samples, dropped


def sft_step(
    model: nn.Module, batch: Sequence[Sample], config: SFTConfig, pad_id: int, *, autocast: bool = False
) -> dict[str, float]:
    """Forward/backward over the step's micro-batches (packed rows with data.packing) with the global
    token-mean denominator."""
    batches: Sequence[MicroBatch | PackedBatch]
    if config.data.packing:
        batches = packed_batches(batch, config.data.max_len, config.optim.micro_batch_size, pad_id)
    else:
        batches = micro_batches(
            batch, config.optim.micro_batch_size, pad_id, bucket=config.optim.bucket_by_length
        )
    denominator = global_denominator([b.loss_mask for b in batches], "token_mean")
    loss_sum = 0.0
    for b in batches:
        if isinstance(b, PackedBatch):
            logprobs = packed_logprobs(model, b, autocast=autocast)
        else:
            logprobs = completion_logprobs(model, b, autocast=autocast)[0]
        loss = aggregate(-logprobs, b.loss_mask, "token_mean", denominator=denominator)
        loss.backward()
        loss_sum += float(loss.detach())
    return {"loss": loss_sum, "tokens": int(denominator), "padding_frac": padding_fraction(batches)}


def train_sft(
    config: SFTConfig,
    *,
    resume: bool = False,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    task: Any = None,
) -> RunResult:
    """Run (or continue) supervised fine-tuning as `config` says; checkpoints and logs like `train_rl`."""
    build.validate(config)
    run_dir, ckpt = prepare_run_dir(config.run.out_dir, resume)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    seed_everything(config.run.seed)
    if model is None:
        model, tokenizer = build.build_model(config.model)
    if task is None and config.data.path is None:
        task = build.build_task(config.task)
    build.set_attention(model, config.model.attn_implementation)
    autocast = build.autocast_for(config.model, model)
    samples, dropped = make_samples(config, task, tokenizer)
    optim, cursor = build_optimizer(model, config.optim), DataCursor(samples, config.run.seed)
    start, skips = 0, 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, model)
        start, skips = state["step"], state["skips"]
        optim.load_state_dict(state["optimizer"])
        cursor.load_state_dict(state["cursor"])
    save_config(config, run_dir)
    run = config.run
    logger = RunLogger(run_dir, stage="sft", total_steps=run.steps, start_step=start, progress=run.progress,
                       tensorboard=run.tensorboard)  # fmt: skip
    if dropped:
        logger.warn(
            f"{dropped} pairs longer than data.max_len = {config.data.max_len} in the prompt were dropped"
        )
    result = RunResult(run_dir=run_dir, step=start, checkpoint=ckpt)
    model.train()
    with stop_on_signals() as stop:
        for step in range(start + 1, run.steps + 1):
            timer = Timer()
            with timer("train"):
                metrics: dict[str, Any] = sft_step(model, cursor.take(config.data.batch_size), config,
                                                   tokenizer.pad_token_id, autocast=autocast)  # fmt: skip
                factor = lr_factor(step - 1, config.optim, config.optimizer_steps)
                metrics.update(apply_gradients(model, optim, config.optim.grad_clip, factor,
                                               finite_loss=bool(torch.isfinite(torch.tensor(metrics["loss"])))))  # fmt: skip
            skips = skips + 1 if metrics["skipped"] else 0
            if metrics["skipped"]:
                logger.warn(f"step {step}: non-finite loss or gradient, update skipped ({skips} in a row)")
            metrics.update(timer.metrics())
            metrics["tokens_per_s"] = metrics.pop("tokens") / max(metrics["time/step"], 1e-9)
            metrics["epoch"] = cursor.epoch
            logger.log(step, metrics)
            result.metrics, result.step = {"step": step, **metrics}, step
            if skips >= run.max_consecutive_skips:
                logger.warn(f"{skips} non-finite updates in a row: stopping; last good checkpoint kept")
                result.status = "diverged"
                break
            due = step == run.steps or stop or (run.save_every and step % run.save_every == 0)
            if due and skips == 0:  # after a skipped update, keep the last good checkpoint as is
                state = {"skips": skips, "optimizer": optim.state_dict(), "cursor": cursor.state_dict()}
                result.checkpoint = save_checkpoint(run_dir, step, model, tokenizer, state, run.keep_last)
            if stop:
                logger.warn(f"{stop.signal}: stopped after step {step}, checkpoint {result.checkpoint}")
                result.status = "interrupted"
                break
    logger.close()
    return result
