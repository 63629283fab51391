"""`train_rl`: the GRPO-family RL loop, top to bottom as named steps.

    sample prompts -> generate groups -> verify -> [old logprobs if mu > 1] -> [reference logprobs if
    beta > 0] -> advantages -> micro-batch loop with the global denominator -> optimizer step ->
    weights to the engine -> metrics / samples -> evaluation callback -> checkpoint

The steps themselves live in `rlvr.trainer.rl_steps`; this module wires them and owns setup/resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlvr.config import RLConfig, save_config
from rlvr.trainer import build
from rlvr.trainer.batching import micro_batches, padding_fraction
from rlvr.trainer.checkpoint import load_checkpoint, save_checkpoint
from rlvr.trainer.data import DataCursor
from rlvr.trainer.logging import RunLogger
from rlvr.trainer.optim import build_optimizer
from rlvr.trainer.rl_steps import (
    RLState,
    attach,
    collect_groups,
    compute_advantages,
    optimizer_update,
    resolve_functions,
    reward_metrics,
    sample_rows,
    to_samples,
)
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


def train_rl(
    config: RLConfig,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    model: nn.Module | None = None,
    tokenizer: Any = None,
    task: Any = None,
    engine: Any = None,
    collect: Any = None,
) -> RunResult:
    """Run (or, with `resume`, continue) RL training as `config` says; return how it ended.

    `model`/`tokenizer`/`task`/`engine`/`collect` default to what the config names (built by
    `rlvr.trainer.build`); pass them to inject your own (tests pass fakes).  `callbacks` run every
    `run.eval_every` steps and after the last step; their metrics are logged as "eval/<name>".
    """
    build.validate(config)
    run_dir, ckpt = prepare_run_dir(config.run.out_dir, resume)
    st = _setup(config, model, tokenizer, task, engine, collect, ckpt)
    save_config(config, run_dir)
    r, a, run = config.rollout, config.algorithm, config.run
    logger = RunLogger(run_dir, stage="rl", total_steps=run.steps, start_step=st.step,
                       progress=run.progress, tensorboard=run.tensorboard)  # fmt: skip
    result = RunResult(run_dir=run_dir, step=st.step, checkpoint=ckpt)
    with stop_on_signals() as stop:
        for step in range(st.step + 1, run.steps + 1):
            timer = Timer()
            # 1-2. sample prompts, generate a group per prompt, verify (task.score inside collect)
            groups, zero_var = collect_groups(st, step, timer)
            samples = to_samples(groups, mask_truncated=a.mask_truncated)
            batches = micro_batches(samples, config.optim.micro_batch_size, st.tokenizer.pad_token_id,
                                    bucket=config.optim.bucket_by_length)  # fmt: skip
            autocast = st.autocast
            # 3. old logprobs only when the batch is reused (mu > 1) or KL enters the reward
            if a.needs_old_logprobs_pass:
                with timer("old_logprobs"):
                    attach(st.model, batches, "old_logprobs", temperature=r.temperature, autocast=autocast)
            # 4. reference logprobs only when beta > 0 (the ref model is bf16 already: no autocast)
            if st.ref_model is not None:
                with timer("reference"):
                    attach(st.ref_model, batches, "ref_logprobs", temperature=r.temperature, autocast=False)
            # 5. advantages (after KL-in-reward, if any)
            metrics: dict[str, Any] = compute_advantages(st, groups, samples, batches)
            # 6-7. mu optimizer steps, each a micro-batch loop with the step's global denominator
            with timer("train"):
                st.model.train()
                for _ in range(a.mu):
                    update = optimizer_update(st, batches)
                    st.skips = st.skips + 1 if update["skipped"] else 0
                    if update["skipped"]:
                        logger.warn(
                            f"step {step}: non-finite loss or gradient, update skipped ({st.skips} in a row)"
                        )
            # 8. new weights to the engine
            with timer("sync"):
                st.engine.load_weights(st.model.state_dict())
            st.step = step
            # 9. metrics, samples, evaluation
            metrics.update(update)
            metrics.update(reward_metrics(groups))
            metrics["groups/zero_var_frac_sampled"] = zero_var / max(len(groups), 1)
            metrics["padding_frac"] = padding_fraction(batches)
            if run.samples_every and step % run.samples_every == 0:
                logger.samples(sample_rows(step, groups))
            final = step == run.steps or bool(stop) or st.skips >= run.max_consecutive_skips
            if callbacks and (final or (run.eval_every and step % run.eval_every == 0)):
                with timer("eval"):
                    ctx = CallbackContext(step, run_dir, st.model, st.tokenizer, st.engine, st.task, final)
                    metrics.update(run_callbacks(tuple(callbacks), ctx))
            metrics.update(timer.metrics())
            n_tokens = sum(len(s.completion_ids) for s in samples)
            metrics["tokens_per_s"] = n_tokens / max(metrics["time/step"], 1e-9)
            logger.log(step, metrics)
            result.metrics, result.step = {"step": step, **metrics}, step
            # 10. checkpoint (never after a run of non-finite updates: the last good one stays)
            if st.skips >= run.max_consecutive_skips:
                logger.warn(f"{st.skips} non-finite updates in a row: stopping; last good checkpoint kept")
                result.status = "diverged"
                break
            due = final or stop or (run.save_every and step % run.save_every == 0)
            if due and st.skips == 0:  # after a skipped update, keep the last good checkpoint as is
                result.checkpoint = save_checkpoint(run_dir, step, st.model, st.tokenizer,
                                                    st.trainer_state(), run.keep_last)  # fmt: skip
            if stop:
                logger.warn(f"{stop.signal}: stopped after step {step}, checkpoint {result.checkpoint}")
                result.status = "interrupted"
                break
    logger.close()
    return result


def _setup(config: RLConfig, model, tokenizer, task, engine, collect, ckpt: Path | None) -> RLState:
    """Build (or take) every component, then restore the checkpoint when resuming."""
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    seed_everything(config.run.seed)
    if model is None:
        model, tokenizer = build.build_model(config.model)
    model.train()
    if task is None:
        task = build.build_task(config.task)
    train = build.split_examples(task, "train", config.task.train_size)
    train, _ = build.fit_prompts(train, task, tokenizer, config.rollout.max_prompt_len,
                                 chat_template=config.model.chat_template)  # fmt: skip
    autocast = build.autocast_for(config.model, model)
    ref = build.frozen_copy(model, bf16=autocast) if config.algorithm.needs_reference else None
    if engine is None:
        engine = build.build_engine(config.rollout.engine, model, tokenizer, seed=config.run.seed,
                                    bf16=autocast)  # fmt: skip
    if collect is None:
        from rlvr.rollout import collect
    for m in (model, ref):  # after the engine copied the model: its attention kernel is its own business
        if m is not None:
            build.set_attention(m, config.model.attn_implementation)
    st = RLState(config=config, model=model, tokenizer=tokenizer, task=task, engine=engine, ref_model=ref,
                 optim=build_optimizer(model, config.optim), cursor=DataCursor(train, config.run.seed),
                 collect=collect, fns=resolve_functions(config), autocast=autocast)  # fmt: skip
    if ckpt is not None:
        state = load_checkpoint(ckpt, model)
        st.step, st.opt_step, st.skips = state["step"], state["opt_step"], state["skips"]
        st.optim.load_state_dict(state["optimizer"])
        st.cursor.load_state_dict(state["cursor"])
    engine.load_weights(model.state_dict())
    return st
