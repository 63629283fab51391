"""Configuration (layer L0): pydantic models, one per concern, loaded from one TOML file.

    config = load_config("examples/tiny_grpo.toml", ["optim.lr=3e-4", "run.steps=20"])

A stage config per top-level `kind` ("rl": `RLConfig`, "sft": `SFTConfig`); `rlvr train` runs any kind.
Pluggable parts (advantage, objective, KL, aggregation, correction, engine, optimizer) are sections
with a `type` key that owns their defaults (`rlvr.config.parts`).
Cross-field checks run at load time and raise `ConfigError` naming the key and the fix.
"""

from __future__ import annotations

from rlvr.config.distill import DistillConfig
from rlvr.config.load import ConfigError, apply_overrides, load_config, parse_config, save_config
from rlvr.config.runs import STAGES, Config, DPOConfig, PPOConfig, RewardModelConfig, RLConfig, SFTConfig
from rlvr.config.sections import (
    PRESETS,
    AdamWConfig,
    AlgorithmConfig,
    EngineConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    RunConfig,
    SFTDataConfig,
    TaskConfig,
)

__all__ = [
    "PRESETS",
    "STAGES",
    "AdamWConfig",
    "AlgorithmConfig",
    "Config",
    "ConfigError",
    "DPOConfig",
    "DistillConfig",
    "EngineConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "PPOConfig",
    "RLConfig",
    "RewardModelConfig",
    "RolloutConfig",
    "RunConfig",
    "SFTConfig",
    "SFTDataConfig",
    "TaskConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
    "save_config",
]
