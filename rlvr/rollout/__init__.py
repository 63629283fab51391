"""Rollout (layer L3): the `Engine` protocol and its HF / fake implementations, and `collect`.

Import concrete engines from their modules (`rlvr.rollout.hf.HFEngine`, `rlvr.rollout.fake.FakeEngine`)
so that torch-light users of `collect` do not pay for transformers.
"""

from rlvr.rollout.base import (
           Engine,
           GenerationRequest,
           SamplingParams,
           TokenScores,
           WeightSyncError,
           decode_completion,
)
from rlvr.rollout.collect import collect, render_prompt

__all__ = ["Engine", "GenerationRequest", "SamplingParams", "TokenScores", "WeightSyncError", "collect",
           "decode_completion", "render_prompt"]
