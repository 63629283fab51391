"""`train_sft`: supervised fine-tuning on prompt/completion pairs, loss on completion tokens only.

Pairs come from a JSONL file (`data.path`) or from the task's worked solutions
(`rlvr.tasks.sft_target`: the task's worked solution after the rendered prompt, for an R1-format
cold start).  The loss is the token mean of
-log p(completion token) over the whole optimizer step: one global denominator (the step's
completion-token count) shared by every micro-batch, so gradient accumulation changes nothing.
It runs on the shared objective-blind step (the NLL term) and the one loop driver.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from rlvr.algorithms.aggregate import aggregate, global_denominator
from rlvr.algorithms.compose import Objective, nll_term
from rlvr.config import ConfigError, SFTConfig
from rlvr.rollout.collect import render_prompt
from rlvr.tasks import sft_target
from rlvr.trainer import build
from rlvr.trainer.batching import MicroBatch, Sample, micro_batches, padding_fraction
from rlvr.trainer.data import DataCursor, read_text_rows, tokenize_prompt
from rlvr.trainer.driver import run_stage
from rlvr.trainer.optim import Optimizers, build_optimizer, lr_factor
from rlvr.trainer.packing import PackedBatch, empty_packed, packed_batches
from rlvr.trainer.run import Callback, RunResult, Timer
from rlvr.trainer.step import optimizer_update


def read_pairs(path: str | Path, prompt_field: str, completion_field: str) -> list[tuple[str, str]]:
    """(prompt, completion) strings from a JSONL file; a bad row raises naming the file, line and field."""
    fields = {"prompt_field": prompt_field, "completion_field": completion_field}
    return read_text_rows(path, fields, what="prompt/completion")  # type: ignore[return-value]


def task_pairs(config: SFTConfig, task: Any, tokenizer: Any) -> list[tuple[list[int], str]]:
    """(prompt ids, SFT target) for the task's train examples; `data.noise` adds deliberate slips.

    The target is the R1 layout minus what the rendered prompt left open (`rlvr.tasks.sft_target`), so
    a chat template that opens `<think>` itself, or none, trains on exactly what grading expects."""
    size = config.data.num_examples or (config.task.train_size if config.task else None)
    examples = build.split_examples(task, "train", size)
    rng = random.Random(config.run.seed)
    pairs = []
    for ex in examples:
        r = render_prompt(tokenizer, task, ex, chat_template=config.model.chat_template)
        pairs.append((list(r.ids), sft_target(task, ex, r.prefix, rng, config.data.noise)))
    return pairs


def make_samples(config: SFTConfig, task: Any, tokenizer: Any) -> tuple[list[Sample], int]:
    """Tokenised samples (completion ends with EOS), cut to data.max_len; (samples, pairs dropped)."""
    if config.data.path:
        pairs = [(tokenize_prompt(tokenizer, p), c) for p, c in read_pairs(config.data.path, config.data.prompt_field,
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


SFT_OBJECTIVE = Objective(
    terms=(("nll", nll_term, 1.0),),
    aggregate=lambda per_token, mask, d: aggregate(per_token, mask, "token_mean", denominator=d),
    denominator=lambda masks: global_denominator(masks, "token_mean"),
)


def sft_batches(batch: Sequence[Sample], config: SFTConfig, pad_id: int) -> Sequence[MicroBatch | PackedBatch]:
    """The step's micro-batches: packed rows with data.packing, else length-bucketed micro-batches."""
    if config.data.packing:
        return packed_batches(batch, config.data.max_len, config.optim.micro_batch_size, pad_id)
    return micro_batches(batch, config.optim.micro_batch_size, pad_id, bucket=config.optim.bucket_by_length)


@dataclass(slots=True)
class SFTStage:
    """The SFT stage (kind = "sft"): the NLL objective through the shared objective-blind step."""

    config: SFTConfig
    model: nn.Module
    tokenizer: Any
    task: Any
    optim: Optimizers
    cursor: DataCursor[Sample]
    autocast: bool = False
    engine: Any = None  # evaluation builds its own engine over the trained weights
    objective: Objective = SFT_OBJECTIVE  # data parallelism swaps in the all-reduced denominator
    warnings: list[str] = field(default_factory=list)
    kind: str = "sft"
    agree_count: Callable[[int], int] = int  # data parallel: the most packed micro-batches any rank has this step

    def step(self, step: int, timer: Timer) -> dict[str, Any]:
        c = self.config
        with timer("train"):
            pad = self.tokenizer.pad_token_id
            batches = list(sft_batches(self.cursor.take(c.data.batch_size), c, pad))
            if c.data.packing:  # the packed count depends on each rank's lengths: every rank runs the most any has
                batches += [empty_packed(pad) for _ in range(self.agree_count(len(batches)) - len(batches))]
            self.model.train()
            metrics = optimizer_update(self.model, self.optim, batches, self.objective, temperature=1.0,
                                       autocast=self.autocast, grad_clip=c.optim.grad_clip,
                                       lr_factor=lr_factor(step - 1, c.optim, c.optimizer_steps))  # fmt: skip
        return {**metrics, "padding_frac": padding_fraction(batches), "epoch": self.cursor.epoch}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optim.state_dict(), "cursor": self.cursor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state["optimizer"])
        self.cursor.load_state_dict(state["cursor"])

    def ready(self) -> None:
        pass


def build_sft_stage(config: SFTConfig, *, model: nn.Module | None = None, tokenizer: Any = None,
                    task: Any = None) -> SFTStage:  # fmt: skip
    if model is None:
        model, tokenizer = build.build_model(config.model)
    if task is None and config.task is not None:
        task = build.build_task(config.task)
    build.set_attention(model, config.model.attn_implementation, fused_kernels=config.model.fused_kernels)
    engine = None
    if config.model.lora is not None:  # adapters only; evaluation samples through the adapted forward
        from rlvr.trainer.lora import attach_lora, eval_engine

        attach_lora(config.model.lora, model, tokenizer, reference=False, bf16=False)
        engine = None if config.parallel.mode == "fsdp2" else eval_engine(model, tokenizer)  # fsdp2: no eval
    samples, dropped = make_samples(config, task, tokenizer)
    stage = SFTStage(config=config, model=model, tokenizer=tokenizer, task=task, engine=engine,
                     optim=build_optimizer(model, config.optim), cursor=DataCursor(samples, config.run.seed),
                     autocast=build.autocast_for(config.model, model))  # fmt: skip
    if dropped:
        stage.warnings.append(
            f"{dropped} pairs longer than data.max_len = {config.data.max_len} in the prompt were dropped"
        )
    return stage


def train_sft(config: SFTConfig, *, resume: bool = False, callbacks: Sequence[Callback] = (),
              **components: Any) -> RunResult:  # fmt: skip
    """Run (or continue) supervised fine-tuning as `config` says, on the shared loop driver."""
    build.validate(config)
    return run_stage(config, lambda: build_sft_stage(config, **components), resume=resume, callbacks=callbacks)
