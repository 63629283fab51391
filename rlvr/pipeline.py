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


def rejection_sample_dir(teacher: str, task: Any, *, out: str, k: int, select: str = "all",
                         max_per_prompt: int | None = None, require_format: bool = True,
                         near_duplicate_threshold: float | None = None, split: str = "train",
                         limit: int | None = None, temperature: float = 1.0, max_new_tokens: int = 256,
                         cache: str | None = None, seed: int = 0, chat_template: bool = False) -> dict[str, Any]:  # fmt: skip
    """What `rlvr distill collect` runs: load the teacher (an HF directory, an rlvr checkpoint, or a run
    directory: its last checkpoint), rejection-sample `task`'s `split`, write the SFT rows to `out`."""
    from pathlib import Path

    from rlvr.distill.rejection import RejectionSettings, rejection_sample, write_sft_rows
    from rlvr.evaluation.runner import weights_fingerprint
    from rlvr.models.load import check_model_dir, load_model_and_tokenizer
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.hf import HFEngine
    from rlvr.trainer.checkpoint import latest_checkpoint

    path = Path(teacher)
    if (path / "checkpoints").is_dir():
        path = latest_checkpoint(path) or path  # a run directory: its last checkpoint
    check_model_dir(path, what="--teacher")
    settings = RejectionSettings(k=k, select=select, max_per_prompt=max_per_prompt,  # type: ignore[arg-type]
                                 require_format=require_format, near_duplicate_threshold=near_duplicate_threshold)  # fmt: skip
    examples = list(task.examples(split))[:limit]
    model, tokenizer = load_model_and_tokenizer(path)
    fingerprint = weights_fingerprint(model)
    stop = () if tokenizer.eos_token_id is None else (int(tokenizer.eos_token_id),)
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, stop_token_ids=stop)
    result = rejection_sample(HFEngine(model, tokenizer), tokenizer, task, examples, settings=settings,
                              params=params, cache_path=cache, seed=seed, chat_template=chat_template,
                              teacher=str(path), teacher_fingerprint=fingerprint)  # fmt: skip
    write_sft_rows(result, out)
    return {**result.summary(), "out": out, "teacher": str(path), "teacher_fingerprint": fingerprint}
