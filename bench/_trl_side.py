"""TRL side of the GRPO benchmark: `python bench/_trl_side.py SPEC.json OUT.json --setting fp32|bf16`.

Runs TRL's `GRPOTrainer` (TRL 1.16 API, read from its `GRPOConfig`) on the spec's model and prompts:
one optimizer step consumes exactly prompts_per_step x group_size completions (one generation batch,
`per_device_train_batch_size = P*G`, no accumulation, `num_iterations=1`), fixed-length generation
(`min_new_tokens = max_completion_length`, so EOS cannot end a sample early; verified from the
completion ids the reward function sees), a trivial reward, beta, lr, logging and saving off.
Each phase is timed by wrapping the trainer's own methods; the step by a `TrainerCallback`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[1]),
]  # bench/, repo
from _common import PhaseTimer, Spec, cuda_sync, median, trivial_reward, write_result  # noqa: E402


def _trainer_class(timer: PhaseTimer) -> type:
    """GRPOTrainer with its generate / reward / reference / old-logprob calls timed."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            with timer("generate"):
                return super()._generate(*args, **kwargs)

        def _calculate_rewards(self, *args: Any, **kwargs: Any) -> Any:
            with timer("score"):
                return super()._calculate_rewards(*args, **kwargs)

        def _get_per_token_logps_and_entropies(self, model: Any, *args: Any, **kwargs: Any) -> Any:
            import torch

            if model is not self.ref_model and torch.is_grad_enabled():  # the policy forward of the loss
                return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
            phase = "reference" if model is self.ref_model else "old_logprobs"
            with timer(phase):
                return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    return TimedGRPOTrainer


def _step_callback(timer: PhaseTimer, steps: list[dict[str, float]], sync: Any) -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            (sync or (lambda: None))()
            timer.take()
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            (sync or (lambda: None))()
            phases = timer.take()
            phases["step"] = time.perf_counter() - self.t0
            other = sum(v for k, v in phases.items() if k != "step")
            phases["train"] = phases["step"] - other  # policy forward + backward + optimizer step
            steps.append(phases)

    return StepTimer()


def run(spec: Spec, setting: str) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    lengths: list[int] = []

    def bench_reward(completions: list[str], completion_ids: list[list[int]], **kw: Any) -> list[float]:
        lengths.extend(len(ids) for ids in completion_ids)
        return [trivial_reward(c) for c in completions]

    sync = cuda_sync(spec.device)
    timer, steps = PhaseTimer(sync), []
    batch = spec.prompts_per_step * spec.group_size
    with tempfile.TemporaryDirectory(prefix="trl-bench-") as out:
        config = GRPOConfig(
            output_dir=out,
            use_cpu=spec.device == "cpu",
            bf16=setting == "bf16",
            gradient_checkpointing=False,  # TRL's default is True; off is TRL's faster setting here
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            num_generations=spec.group_size,
            num_iterations=1,
            max_completion_length=spec.new_tokens,
            generation_kwargs={"min_new_tokens": spec.new_tokens},
            temperature=1.0,
            beta=spec.beta,
            learning_rate=spec.lr,
            lr_scheduler_type="constant",
            max_steps=spec.total_steps,
            shuffle_dataset=False,
            disable_dropout=True,
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=spec.seed,
            dataloader_num_workers=0,
        )
        dataset = Dataset.from_dict({"prompt": spec.prompts[: spec.total_steps * spec.prompts_per_step]})
        tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
        trainer = _trainer_class(timer)(
            model=spec.model_dir,
            reward_funcs=bench_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[_step_callback(timer, steps, sync)],
        )
        trainer.train()
    measured = steps[spec.warmup :]
    return _summarise(measured, lengths, spec, setting)


def _summarise(
    measured: list[dict[str, float]], lengths: list[int], spec: Spec, setting: str
) -> dict[str, Any]:
    phases = sorted({k for s in measured for k in s})
    return {
        "side": f"trl-{setting}",
        "steps": measured,
        "median": {k: median([s.get(k, 0.0) for s in measured]) for k in phases},
        "completion_len": {"min": min(lengths, default=0), "max": max(lengths, default=0)},
        "fixed_length_ok": bool(lengths) and all(n == spec.new_tokens for n in lengths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec")
    parser.add_argument("out")
    parser.add_argument("--setting", choices=["fp32", "bf16"], default="bf16")
    args = parser.parse_args()
    write_result(args.out, run(Spec.load(args.spec), args.setting))


if __name__ == "__main__":
    main()
