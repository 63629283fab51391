"""The trainer (layer L5): logprob forward, batching, the RL and SFT loops, optimizers, checkpoints.

from rlvr.config import load_config
from rlvr.trainer import train_rl
result = train_rl(load_config("examples/tiny_grpo.toml"))
"""

from __future__ import annotations

from rlvr.config import load_config
from rlvr.trainer.rl import train_rl
from rlvr.trainer.run import Callback, CallbackContext, RunResult
from rlvr.trainer.sft import train_sft

__all__ = ["Callback", "CallbackContext", "RunResult", "load_config", "train_rl", "train_sft"]
