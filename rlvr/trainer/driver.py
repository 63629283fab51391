"""The one loop driver every stage runs on: seeding, resume, signals, non-finite skips, metrics,
evaluation callbacks and checkpoint cadence live here once.

A stage (`rlvr.trainer.rl.RLStage`, `rlvr.trainer.sft.SFTStage`, later DPO / distillation / reward
model) supplies its components and one function, `step(step, timer) -> metrics`:

    for step in start+1 .. run.steps:
        metrics = stage.step(step, timer)            # the stage's work (one optimizer step, or mu);
                                                     # metrics["samples"]: rows for samples.jsonl
        count non-finite skips                       # metrics["skipped"]
        evaluation callbacks (every run.eval_every steps, and at the end; not after a signal)
        log metrics
        checkpoint (cadence, final, on a signal; never right after a skipped update)

Resuming restores the weights, the global RNG states and the stage's `state_dict()`, so a resumed run
ends bitwise equal to an uninterrupted one on CPU; what a resumed config may change, and the record a
resume leaves in the run directory, is `rlvr.trainer.resume`.  After `NOTHING_TO_LEARN` steps in a row
where every group's rewards were equal (or the gradient was exactly zero) the driver says so once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

import rlvr
from rlvr.config import ConfigError, save_config
from rlvr.errors import UserError
from rlvr.provenance import git_commit, provenance
from rlvr.trainer import dist_checkpoint, distributed
from rlvr.trainer import resume as resuming
from rlvr.trainer.checkpoint import STATE_FILE, CheckpointError, step_of
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

NOTHING_TO_LEARN = 5  # steps in a row with zero-variance groups / zero gradient before a warning


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


def run_stage(config: Any, make_stage: Callable[[], Stage], *, resume: bool | resuming.Resume = False,
              callbacks: Sequence[Callback] = ()) -> RunResult:  # fmt: skip
    """Build the stage, restore its checkpoint when resuming, and run it to `config.run.steps`.

    Under torchrun with `[parallel] mode` set, every rank runs this; `rlvr.trainer.distributed` says
    what each rank does (rank 0 alone writes the run directory)."""
    par = distributed.setup(getattr(config, "parallel", None))
    result = _run_stage(config, make_stage, par, resume=resume, callbacks=callbacks)
    par.close()  # not on an exception: the other ranks may be waiting in a collective; torchrun ends them
    return result


def _written_by(run_dir: Path) -> str:
    try:
        record = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
        return f"rlvr {record['rlvr_version']} (commit {record.get('git_commit') or 'unknown'})"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown rlvr version (no readable provenance.json)"


def _restore(stage: Stage, state: dict[str, Any], ckpt: Path, run_dir: Path) -> None:
    """`stage.load_state_dict(state)`; a state that does not fit this stage (another rlvr version wrote it,
    or the config changed what the optimizer holds) is a user error naming the checkpoint and both versions."""
    try:
        if not isinstance(state.get("step"), int):
            raise KeyError("step")
        stage.load_state_dict(state)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as err:
        if isinstance(err, UserError):
            raise
        what = (f"has no {err.args[0]!r} entry, which this {stage.kind} stage reads" if isinstance(err, KeyError)
                and err.args else f"does not fit this {stage.kind} stage")  # fmt: skip
        raise CheckpointError(
            f"checkpoint {ckpt}: its trainer state ({STATE_FILE}) {what} "
            f"({type(err).__name__}: {str(err)[:200]}); it was written by {_written_by(run_dir)}, this is rlvr "
            f"{rlvr.__version__} (commit {git_commit() or 'unknown'}): resume with the rlvr version and the "
            "optim / model / lora settings the run started with, or start a new run in a new run.out_dir "
            "(if both match, it is a bug in rlvr: please report this message)"
        ) from err


def _run_stage(config: Any, make_stage: Callable[[], Stage], par: distributed.Parallel, *,
               resume: bool | resuming.Resume, callbacks: Sequence[Callback]) -> RunResult:  # fmt: skip
    run = config.run
    mode = resuming.resume_mode(resume)
    run_dir, ckpt = prepare_run_dir(run.out_dir, mode)
    changes = _check_resume(config, run_dir, ckpt, mode)  # before anything heavy loads
    if run.threads:
        torch.set_num_threads(run.threads)
    seed_everything(run.seed)
    stage = make_stage()
    par.prepare(stage, config, evaluates=bool(callbacks))
    start, skips, notes = 0, 0, list(stage.warnings)
    result = RunResult(run_dir=run_dir, step=0, checkpoint=ckpt)
    if ckpt is not None:
        state = dist_checkpoint.load(par, ckpt, stage)  # weights (and, sharded, optimizer) and RNG states
        _restore(stage, state, ckpt, run_dir)
        start, skips = state["step"], state.get("skips", 0)
        if par.main:
            row = resuming.record_resume(run_dir, start, changes, forced=bool(mode and mode.force),
                                         world_sizes=(state.get("world_size", 1), resuming.world_size()))  # fmt: skip
            notes += resuming.describe(row)
            result.exact = row["exact"]
        if start >= run.steps:
            notes.append(f"{run_dir} is already at step {start} of run.steps = {run.steps}: nothing to run "
                         f"(raise run.steps to train further)")  # fmt: skip
    stage.ready()
    if par.main:
        save_config(config, run_dir)
    if ckpt is None and par.main:  # what produced this run directory (resumes add theirs to resumes.jsonl)
        record = {**provenance(kind=stage.kind), "parallel": par.describe()}
        (run_dir / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    logger: Any = (RunLogger(run_dir, stage=stage.kind, total_steps=run.steps, start_step=start, progress=run.progress,
                             tensorboard=run.tensorboard) if par.main else distributed.NullLogger())  # fmt: skip
    for message in notes:
        logger.warn(message)
    result.step = start
    idle = 0  # steps in a row with nothing to learn
    with stop_on_signals() as stop:
        for step in range(start + 1, run.steps + 1):
            timer = Timer()
            metrics = par.reduce(stage.step(step, timer), stop)  # one gather per step (a no-op on one process)
            if "samples" in metrics:
                logger.samples(metrics.pop("samples"))
            skips = skips + 1 if metrics.get("skipped") else 0
            if metrics.get("skipped"):
                logger.warn(f"step {step}: non-finite loss or gradient, update skipped ({skips} in a row)")
            idle = idle + 1 if _nothing_to_learn(metrics) else 0
            if idle == NOTHING_TO_LEARN:
                logger.warn(_idle_message(step))
            final = step == run.steps or skips >= run.max_consecutive_skips
            # a signal stops right after the step: no evaluation first (it may take minutes)
            if callbacks and par.main and not stop and (final or (run.eval_every and step % run.eval_every == 0)):
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
                state = {**stage.state_dict(), "skips": skips, "world_size": resuming.world_size()}
                result.checkpoint = dist_checkpoint.save(par, run_dir, step, stage, state, run.keep_last)
            if stop:
                result.status, result.signal = "interrupted", stop.signal
                break
    logger.close()
    return result


def _check_resume(config: Any, run_dir: Path, ckpt: Path | None, mode: resuming.Resume | None) -> dict[str, Any]:
    """The config changes a resume brings (refused ones raise), checked before the stage is built."""
    if ckpt is None or mode is None:
        return {}
    at = step_of(ckpt)
    if at > config.run.steps:
        raise ConfigError(f"run.steps = {config.run.steps}, but {run_dir} is already at step {at}: "
                          f"raise run.steps above {at} to train further (--set run.steps=...)")  # fmt: skip
    return resuming.check_config(run_dir, config.model_dump(mode="json"), mode)


def _nothing_to_learn(metrics: dict[str, Any]) -> bool:
    """Every group had equal rewards, or the update had exactly zero gradient (a skipped one aside)."""
    if metrics.get("skipped"):
        return False
    return metrics.get("groups/zero_var_frac") == 1.0 or metrics.get("grad_norm") == 0.0


def _idle_message(step: int) -> str:
    return (f"steps {step - NOTHING_TO_LEARN + 1}-{step}: nothing to learn: every group's rewards were equal "
            "(groups/zero_var_frac = 1) or grad_norm was 0, so the updates do not change the model. The task "
            "is too hard (all wrong) or too easy (all right) for this model: look at samples.jsonl and "
            "reward/* in metrics.jsonl; start from an SFT checkpoint, make the task easier (task kwargs), or "
            "raise rollout.group_size or rollout.temperature")  # fmt: skip
