"""What `rlvr train CONFIG` runs: the stage the config's `kind` names, with in-training evaluation.

The trainer schedules callbacks but may not import evaluation (they are one layer); this module sits
above both and wires them: when `run.eval_every > 0`, the `[eval]` section becomes an evaluation
callback that writes `eval/step_N.json` in the run directory and logs `eval/*` metrics.
"""

from __future__ import annotations

from typing import Any

from rlvr.trainer import RunResult
from rlvr.trainer import train as run_stage_of_kind


def eval_callbacks(config: Any) -> list[Any]:
    """The `[eval]` section as trainer callbacks (none when run.eval_every = 0)."""
    if not config.run.eval_every:
        return []
    from rlvr.evaluation.runner import make_eval_callback

    e = config.eval
    max_new = e.max_new_tokens or (config.rollout.max_new_tokens if hasattr(config, "rollout") else 256)
    return [make_eval_callback(samples=e.samples, temperature=e.temperature, max_new_tokens=max_new,
                               num_examples=e.num_examples, chat_template=config.model.chat_template,
                               seed=config.run.seed)]  # fmt: skip


def train(config: Any, *, resume: bool = False, **components: Any) -> RunResult:
    """Run any stage config (kind "rl", "sft", ...) with the evaluation its `[eval]` section asks for."""
    return run_stage_of_kind(config, resume=resume, callbacks=eval_callbacks(config), **components)
