"""Configuration (layer L0): pydantic models, one per concern, loaded from one TOML file.

    config = load_config("examples/tiny_grpo.toml", ["optim.lr=3e-4", "run.steps=20"])

`RLConfig` (`rlvr train`) and `SFTConfig` (`rlvr sft`) are told apart by the top-level `kind` key.
Cross-field checks run at load time and raise `ConfigError` naming the key and the fix.
"""

from __future__ import annotations

from rlvr.config.load import ConfigError, apply_overrides, load_config, parse_config, save_config
from rlvr.config.runs import Config, RLConfig, SFTConfig
from rlvr.config.sections import (
    PRESETS,
    AlgorithmConfig,
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
    "AlgorithmConfig",
    "Config",
    "ConfigError",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "RLConfig",
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
