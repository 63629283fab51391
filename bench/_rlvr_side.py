"""rlvr side of the GRPO benchmark: `python bench/_rlvr_side.py SPEC.json OUT.json`.

Runs `rlvr.trainer.rl.train_rl` on the spec's model directory with the spec's prompts (a
`BenchTask` injected in place of a registry task), group size, fixed-length generation
(`rollout.min_new_tokens = max_new_tokens`), beta, lr and one update per batch (mu = 1), with
logging, samples, progress bar and TensorBoard off.  Per-phase timings come from rlvr's own
metrics (`time/generate`, `time/score`, `time/reference`, `time/train`, `time/step` in
`run_dir/metrics.jsonl`).  When rlvr's trainer is not importable the result says so ("skipped")
and the harness carries on without it.  `--engine vllm` samples with rlvr's `VLLMEngine` (run it with
the interpreter of an environment that has vLLM: `grpo_bench.py --vllm-python`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[1]),
]  # bench/, repo
from _common import Spec, median, trivial_reward, write_result  # noqa: E402


class BenchTask:
    """The benchmark prompts as a task; the reward is trivial (see `trivial_reward`)."""

    name = "bench"

    def __init__(self, prompts: list[str]) -> None:
        from rlvr.types import Example

        self._examples = [Example(id=f"bench-{i}", prompt=p, gold="0") for i, p in enumerate(prompts)]

    def examples(self, split: str) -> list[Any]:
        return list(self._examples)

    def render(self, example: Any) -> str:
        return example.prompt

    def messages(self, example: Any) -> list[dict[str, str]]:
        return [{"role": "user", "content": example.prompt}]

    def score(self, example: Any, completion: str) -> Any:
        from rlvr.types import Score

        r = trivial_reward(completion)
        return Score(total=r, parts={"accuracy": r, "format": 0.0})

    def extract(self, completion: str) -> str | None:
        return None

    def equivalent(self, a: str, b: str, example: Any) -> bool:
        return a == b


def _imports() -> tuple[Any, Any] | str:
    """(train_rl, collect), or why they cannot be imported."""
    try:
        from rlvr.rollout import collect
        from rlvr.trainer.rl import train_rl
    except ImportError as e:
        return f"rlvr trainer not available ({e}); the rlvr side needs rlvr.trainer.rl.train_rl and rlvr.rollout.collect"
    return train_rl, collect


def build_config(spec: Spec, out_dir: str, engine: str = "hf") -> Any:
    from rlvr.config import (
        AdamWConfig,
        AlgorithmConfig,
        ModelConfig,
        RLConfig,
        RolloutConfig,
        RunConfig,
        TaskConfig,
    )

    samples = spec.prompts_per_step * spec.group_size
    return RLConfig(
        model=ModelConfig(path=spec.model_dir, dtype="float32", bf16_autocast="auto"),
        task=TaskConfig(name="bench"),  # injected below; the name is only a label
        rollout=RolloutConfig(
            engine=engine,
            group_size=spec.group_size,
            prompts_per_step=spec.prompts_per_step,
            max_new_tokens=spec.new_tokens,
            min_new_tokens=spec.new_tokens,
        ),
        algorithm=AlgorithmConfig(kl={"beta": spec.beta}, mu=1),
        optim=AdamWConfig(lr=spec.lr, micro_batch_size=samples),  # one micro-batch, like TRL's setting
        run=RunConfig(
            out_dir=out_dir,
            steps=spec.total_steps,
            seed=spec.seed,
            samples_every=0,
            progress=False,
            tensorboard=False,
            keep_last=1,
        ),
    )


def run(spec: Spec, engine: str = "hf") -> dict[str, Any]:
    imported = _imports()
    side = "rlvr" if engine == "hf" else f"rlvr-{engine}"
    if isinstance(imported, str):
        return {"side": side, "skipped": imported}
    train_rl, collect = imported
    lengths: list[int] = []

    def counting_collect(*args: Any, **kwargs: Any) -> Any:
        groups = collect(*args, **kwargs)
        lengths.extend(len(c.token_ids) for g in groups for c in g.completions)
        return groups

    prompts = spec.prompts[: spec.total_steps * spec.prompts_per_step]
    with tempfile.TemporaryDirectory(prefix="rlvr-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        train_rl(build_config(spec, str(run_dir), engine), task=BenchTask(prompts), collect=counting_collect)
        rows = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
        ]
    measured = [
        {k[len("time/") :]: v for k, v in r.items() if k.startswith("time/")} for r in rows[spec.warmup :]
    ]
    phases = sorted({k for s in measured for k in s})
    return {
        "side": side,
        "steps": measured,
        "median": {k: median([s.get(k, 0.0) for s in measured]) for k in phases},
        "completion_len": {"min": min(lengths, default=0), "max": max(lengths, default=0)},
        "fixed_length_ok": bool(lengths) and all(n == spec.new_tokens for n in lengths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec")
    parser.add_argument("out")
    parser.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    args = parser.parse_args()
    write_result(args.out, run(Spec.load(args.spec), args.engine))


if __name__ == "__main__":
    main()
