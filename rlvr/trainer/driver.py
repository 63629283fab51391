"""The one loop driver every stage runs on: seeding, resume, signals, non-finite skips, metrics,
evaluation callbacks and checkpoint cadence live here once.

A stage (`rlvr.trainer.rl.RLStage`, `rlvr.trainer.sft.SFTStage`, later DPO / distillation / reward
model) supplies its components and one function, `step(step, timer) -> metrics`:

    for step in start+1 .. run.steps:
        metrics = stage.step(step, timer)            # the stage's work (one optimizer step, or mu);
                                                     # metrics["samples"]: rows for samples.jsonl
        count non-finite skips                       # metrics["skipped"]
        evaluation callbacks (every run.eval_every steps, and at the end)
        log metrics
        checkpoint (cadence, final, on a signal; never right after a skipped update)

Resuming restores the weights, the global RNG states and the stage's `state_dict()`, so a resumed run
ends bitwise equal to an uninterrupted one on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from rlvr.config import save_config
from rlvr.trainer.checkpoint import load_checkpoint, save_checkpoint
from rlvr.trainer.logging import RunLogger
from rlvr.trainer.run import (
    Callback,
    CallbackContext,
    RunResult,
    Timer,
    prepare_run_dir,
    run_callbacks,
    seed_everything,
    stop_on_signals,
)


class Stage(Protocol):
    """What the driver needs from a stage."""

    kind: str
    model: Any
    tokenizer: Any
    engine: Any  # the rollout engine evaluation may use (None: evaluation builds its own)
    task: Any
    warnings: list[str]  # said once the logger exists (e.g. rows dropped while building the data)

    def step(self, step: int, timer: Timer) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def ready(self) -> None: ...  # after a resume restored the weights (e.g. sync them to the engine)


def run_stage(config: Any, make_stage: Callable[[], Stage], *, resume: bool = False,
              callbacks: Sequence[Callback] = ()) -> RunResult:  # fmt: skip
    """Build the stage, restore its checkpoint when resuming, and run it to `config.run.steps`."""
    run = config.run
    run_dir, ckpt = prepare_run_dir(run.out_dir, resume)
    if run.threads:
        torch.set_num_threads(run.threads)
    seed_everything(run.seed)
    stage = make_stage()
    start, skips = 0, 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, stage.model)  # weights and RNG states
        start, skips = state["step"], state.get("skips", 0)
        stage.load_state_dict(state)
    stage.ready()
    save_config(config, run_dir)
    logger = RunLogger(run_dir, stage=stage.kind, total_steps=run.steps, start_step=start,
                       progress=run.progress, tensorboard=run.tensorboard)  # fmt: skip
    for message in stage.warnings:
        logger.warn(message)
    result = RunResult(run_dir=run_dir, step=start, checkpoint=ckpt)
    with stop_on_signals() as stop:
        for step in range(start + 1, run.steps + 1):
            timer = Timer()
            metrics = stage.step(step, timer)
            if "samples" in metrics:
                logger.samples(metrics.pop("samples"))
            skips = skips + 1 if metrics.get("skipped") else 0
            if metrics.get("skipped"):
                logger.warn(f"step {step}: non-finite loss or gradient, update skipped ({skips} in a row)")
            final = step == run.steps or bool(stop) or skips >= run.max_consecutive_skips
            if callbacks and (final or (run.eval_every and step % run.eval_every == 0)):
                with timer("eval"):
                    ctx = CallbackContext(step, run_dir, stage.model, stage.tokenizer, stage.engine, stage.task, final)
                    metrics.update(run_callbacks(tuple(callbacks), ctx))
            metrics.update(timer.metrics())
            if "tokens" in metrics:
                metrics["tokens_per_s"] = metrics.pop("tokens") / max(metrics["time/step"], 1e-9)
            logger.log(step, metrics)
            result.metrics, result.step = {"step": step, **metrics}, step
            if skips >= run.max_consecutive_skips:
                logger.warn(f"{skips} non-finite updates in a row: stopping; last good checkpoint kept")
                result.status = "diverged"
                break
            due = final or stop or (run.save_every and step % run.save_every == 0)
            if due and skips == 0:  # after a skipped update, keep the last good checkpoint as is
                state = {**stage.state_dict(), "skips": skips}
                result.checkpoint = save_checkpoint(run_dir, step, stage.model, stage.tokenizer, state, run.keep_last)
            if stop:
                logger.warn(f"{stop.signal}: stopped after step {step}, checkpoint {result.checkpoint}")
                result.status = "interrupted"
                break
    logger.close()
    return result
