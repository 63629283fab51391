"""Test stand-ins: a deterministic engine, a minimal `collect`, and small configs on the 1m model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rlvr.config import AdamWConfig, RLConfig, RolloutConfig, RunConfig, TaskConfig
from rlvr.rollout.base import SamplingParams, TokenScores
from rlvr.tasks import make_task
from rlvr.types import Completion, Group, Score

ALPHABET = "0123456789 <>/a"


class FakeEngine:
    """Samples uniformly from a few characters (and EOS) with a generator seeded by params.seed."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids = [tokenizer.convert_tokens_to_ids(c) for c in ALPHABET] + [tokenizer.eos_token_id]
        self.loads = 0
        self.version = 0

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        g = torch.Generator().manual_seed(params.seed or 0)
        out = []
        for _ in prompts:
            row = []
            for _ in range(params.n):
                n = int(torch.randint(1, params.max_new_tokens + 1, (1,), generator=g))
                pick = torch.randint(0, len(self.ids), (n,), generator=g).tolist()
                ids = [self.ids[i] for i in pick]
                if self.tokenizer.eos_token_id in ids:
                    ids = ids[: ids.index(self.tokenizer.eos_token_id) + 1]
                finish = "stop" if ids[-1] == self.tokenizer.eos_token_id else "length"
                lp = tuple(-2.7 for _ in ids)
                row.append(
                    Completion(self.tokenizer.decode(ids, skip_special_tokens=True), tuple(ids), lp, finish)
                )
            out.append(row)
        return out

    def score(self, prompts, completions, *, temperature=1.0, top_k=0):  # the sampler's constant logprob
        return [TokenScores(tuple(-2.7 for _ in c)) for c in completions]

    def update_weights(self, state_dict: Mapping[str, Any], *, version: int) -> int:
        self.loads += 1
        self.version = version
        return version

    def fingerprint(self) -> str:
        return str(self.loads)


def fake_collect(engine, tokenizer, task, examples, params, *, chat_template=False) -> list[Group]:
    prompts = [tokenizer(task.render(ex))["input_ids"] for ex in examples]
    outs = engine.generate(prompts, params)
    groups = []
    for ex, p, comps in zip(examples, prompts, outs):
        g = Group(ex, task.render(ex), tuple(p), comps)
        g.scores = [task.score(ex, c.text) for c in comps]
        groups.append(g)
    return groups


def rl_config(out_dir: Path, **sections: dict[str, Any]) -> RLConfig:
    base = {
        "task": TaskConfig(name="sort", kwargs={"length": 3, "max_value": 9, "n_train": 40, "n_test": 8}),
        "rollout": RolloutConfig(engine="fake", group_size=4, prompts_per_step=2, max_new_tokens=10),
        "optim": AdamWConfig(lr=1e-3, micro_batch_size=4),
        "run": RunConfig(out_dir=str(out_dir), steps=3, progress=False, tensorboard=False, samples_every=1),
    }
    data = {k: v.model_dump() for k, v in base.items()}
    for name, updates in sections.items():
        data.setdefault(name, {}).update(updates)
    return RLConfig.model_validate(data)


class ParityRewardTask:
    """A task whose reward varies inside every group (1 for an even-length completion text), so each RL
    step has a real gradient: the fake engine's random characters almost never solve the real task,
    and an all-zero reward would leave the weights untouched and make equality tests vacuous."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def score(self, example: Any, completion: str) -> Score:
        r = float(len(completion) % 2 == 0)
        return Score(total=r, parts={"accuracy": r, "format": 0.0})


class DigitRewardTask:
    """The sort task's prompts, rewarded by the share of digits in the completion: a random model scores
    ~0.1 and can learn it in a few steps (the real verifier would give it all zeros)."""

    def __init__(self) -> None:
        self.base = make_task("sort", length=3, max_value=9, n_train=40, n_test=8)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def score(self, example, completion: str) -> Score:
        r = sum(ch.isdigit() for ch in completion) / max(len(completion), 1)
        return Score(total=r, parts={"accuracy": r})
