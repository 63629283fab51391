"""The trainer (layer L5): one loop driver for every stage, the objective-blind step, logprob forward,
batching/packing, optimizers, checkpoints and checked weight sync.

    from rlvr.config import load_config
    from rlvr.trainer import train
    result = train(load_config("examples/tiny_grpo.toml"))   # any kind: "rl", "sft", "dpo", "reward_model", "ppo", "distill"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlvr.config import load_config
from rlvr.trainer.distill import train_distill
from rlvr.trainer.dpo import train_dpo
from rlvr.trainer.ppo import train_ppo
from rlvr.trainer.reward_model import train_reward_model
from rlvr.trainer.rl import train_rl
from rlvr.trainer.run import Callback, CallbackContext, RunResult
from rlvr.trainer.sft import train_sft

# kind -> the stage's entry point; a new stage adds a row (and a config in rlvr.config.runs)
STAGE_RUNNERS = {"rl": train_rl, "sft": train_sft, "dpo": train_dpo, "reward_model": train_reward_model,
                 "ppo": train_ppo, "distill": train_distill}


def train(config: Any, *, resume: bool = False, callbacks: Sequence[Callback] = (), **components: Any) -> RunResult:
    """Run the stage `config.kind` names (see `STAGE_RUNNERS`)."""
    return STAGE_RUNNERS[config.kind](config, resume=resume, callbacks=callbacks, **components)


__all__ = ["STAGE_RUNNERS", "Callback", "CallbackContext", "RunResult", "load_config", "train", "train_distill", "train_dpo",
           "train_ppo", "train_reward_model", "train_rl", "train_sft"]
