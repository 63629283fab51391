"""Evaluate a model on a task: resumable generation, scoring, pass@k / maj@k / avg@k with error bars.

`evaluate` takes the pieces (engine, tokenizer, task, examples); `run_eval` is what `rlvr eval`
calls (loads the model from a directory); `make_eval_callback` is the trainer's periodic hook.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from rlvr.evaluation.cache import CacheKey, GenerationCache, params_hash
from rlvr.evaluation.metrics import MetricValue, insufficient_samples, metric_value, pass_at_k
from rlvr.evaluation.result import EvalResult
from rlvr.evaluation.voting import maj_at_k
from rlvr.rollout.base import Engine, SamplingParams
from rlvr.tasks.base import Task
from rlvr.types import Completion, Example, Group, Score


def evaluate(
    engine: Engine,
    tokenizer: Any,
    task: Task,
    examples: Sequence[Example],
    *,
    n: int,
    ks: Sequence[int],
    params: SamplingParams,
    cache_path: str | os.PathLike[str] | None = None,
    chat_template: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    n_boot: int = 1000,
    model_id: str | None = None,
) -> EvalResult:
    """Sample `n` completions per example (only those missing from the cache), score, and report.

    Metrics: pass@k for each k <= n, maj@k for each 2 <= k <= n (votes clustered by
    `task.equivalent`), avg@n (mean accuracy), format_rate (mean "format" part), mean_length
    (tokens); each a mean over problems with standard error and bootstrap CI.  `params.n` and
    `params.seed` are overridden: each generate call gets a seed derived from `seed`, the first
    example id and first sample index of its batch, so a resumed run issues the same calls.
    """
    _check_args(examples, n, ks, batch_size)
    task = _grading_view(task) if chat_template else task
    cache = GenerationCache(cache_path)
    keys = _keys(
        engine.fingerprint(), task, examples, n, params_hash(params, chat_template=chat_template, seed=seed)
    )
    _generate_missing(engine, tokenizer, task, examples, keys, cache, params, chat_template, seed, batch_size)
    groups = [_scored_group(task, ex, [cache.get(k) for k in ex_keys]) for ex, ex_keys in zip(examples, keys)]
    metrics, per_example, notes = _metrics(task, groups, n, ks, seed, n_boot)
    config = {
        "task": task.name,
        "model_fingerprint": model_id,
        "n_examples": len(examples),
        "n": n,
        "ks": list(ks),
        "params": {**params.as_dict(), "n": n, "seed": None},
        "seed": seed,
        "chat_template": chat_template,
    }
    return EvalResult(metrics=metrics, per_example=per_example, config=config, notes=notes, groups=groups)


def _check_args(examples: Sequence[Example], n: int, ks: Sequence[int], batch_size: int) -> None:
    if n < 1:
        raise ValueError(f"evaluate: n (samples per example) must be >= 1, got {n}")
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"evaluate: ks must be a non-empty list of k >= 1, got {list(ks)}")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    if not examples:
        raise ValueError("evaluate: no examples to evaluate (check the split / limit)")
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"evaluate: example id {dup!r} appears twice; cache keys need unique example ids")


def _grading_view(task: Task) -> Task:
    """The task as it must grade chat-template completions: no template prefix prepended.

    A plain-text template may end the prompt inside the R1 layout (e.g. after "<think>"), and the
    task then prepends that prefix when grading; a chat prompt ends outside any tag, so tasks whose
    `score` / `extract` take a `prefix` keyword get prefix="" (see rlvr.tasks.base).
    """
    if "prefix" not in inspect.signature(task.score).parameters:
        return task
    return _NoPrefix(task)


class _NoPrefix:
    def __init__(self, task: Any) -> None:
        self._task, self.name = task, task.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._task, attr)

    def score(self, example: Example, completion: str) -> Score:
        return self._task.score(example, completion, prefix="")

    def extract(self, completion: str) -> str | None:
        return self._task.extract(completion, prefix="")


def _keys(fp: str, task: Task, examples: Sequence[Example], n: int, phash: str) -> list[list[CacheKey]]:
    return [[CacheKey(fp, task.name, ex.id, i, phash) for i in range(n)] for ex in examples]


def _prompt_ids(tokenizer: Any, task: Task, example: Example, chat_template: bool) -> list[int]:
    if chat_template:
        text = tokenizer.apply_chat_template(
            task.messages(example), add_generation_prompt=True, tokenize=False
        )
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(task.render(example)))


def _generate_missing(
    engine: Engine,
    tokenizer: Any,
    task: Task,
    examples: Sequence[Example],
    keys: list[list[CacheKey]],
    cache: GenerationCache,
    params: SamplingParams,
    chat_template: bool,
    seed: int,
    batch_size: int,
) -> None:
    """Generate the (example, sample index) pairs not in the cache; cache each batch as it lands.

    Examples with the same missing indices are batched together (in example order), one
    `engine.generate` call per batch with n = number of missing indices.
    """
    todo = [(ex, cache.missing(ex_keys)) for ex, ex_keys in zip(examples, keys)]
    todo = [(ex, miss) for ex, miss in todo if miss]
    batches: list[list[tuple[Example, list[CacheKey]]]] = []
    for ex, miss in todo:
        idx = [k.sample_index for k in miss]
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and [k.sample_index for k in last[0][1]] == idx:
            last.append((ex, miss))
        else:
            batches.append([(ex, miss)])
    for batch in batches:
        first_ex, first_miss = batch[0]
        call_params = replace(
            params, n=len(first_miss), seed=_derive_seed(seed, first_ex.id, first_miss[0].sample_index)
        )
        prompts = [_prompt_ids(tokenizer, task, ex, chat_template) for ex, _ in batch]
        outputs = engine.generate(prompts, call_params)
        if len(outputs) != len(batch) or any(len(o) != call_params.n for o in outputs):
            raise RuntimeError(
                f"engine.generate returned {[len(o) for o in outputs]} completions for {len(batch)} prompts; "
                f"expected {call_params.n} each"
            )
        cache.put_many(
            (key, _completion_record(c))
            for (_, miss), comps in zip(batch, outputs)
            for key, c in zip(miss, comps)
        )


def _derive_seed(seed: int, example_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{example_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _completion_record(c: Completion) -> dict[str, Any]:
    return {
        "text": c.text,
        "token_ids": list(c.token_ids),
        "sampler_logprobs": None if c.sampler_logprobs is None else list(c.sampler_logprobs),
        "finish_reason": c.finish_reason,
    }


def _scored_group(task: Task, example: Example, records: list[dict[str, Any] | None]) -> Group:
    comps = []
    for i, rec in enumerate(records):
        if rec is None:
            raise RuntimeError(f"evaluate: sample {i} of example {example.id!r} missing after generation")
        lps = rec.get("sampler_logprobs")
        comps.append(
            Completion(
                text=rec["text"],
                token_ids=tuple(rec["token_ids"]),
                sampler_logprobs=None if lps is None else tuple(lps),
                finish_reason=rec.get("finish_reason", "stop"),
            )
        )
    scores = [task.score(example, c.text) for c in comps]
    return Group(example=example, prompt="", prompt_ids=(), completions=comps, scores=scores)


def _metrics(
    task: Task, groups: list[Group], n: int, ks: Sequence[int], seed: int, n_boot: int
) -> tuple[dict[str, MetricValue], list[dict[str, Any]], list[str]]:
    notes: list[str] = []
    pass_ks = sorted({k for k in ks if k <= n})
    maj_ks = sorted({k for k in ks if 2 <= k <= n})
    for k in sorted(set(ks) - set(pass_ks)):
        notes.append(insufficient_samples([n] * len(groups), k) or "")
    rows = [_example_row(task, g, pass_ks, maj_ks, seed) for g in groups]
    columns: dict[str, list[float]] = {f"pass@{k}": [r["pass@k"][str(k)] for r in rows] for k in pass_ks}
    columns.update({f"maj@{k}": [r["maj@k"][str(k)] for r in rows] for k in maj_ks})
    columns[f"avg@{n}"] = [r["correct"] / n for r in rows]
    formats = [r["format_rate"] for r in rows if r["format_rate"] is not None]
    if len(formats) == len(rows):
        columns["format_rate"] = formats
    else:
        notes.append("format_rate not reported: the task's Score has no 'format' part")
    columns["mean_length"] = [r["mean_length"] for r in rows]
    metrics = {name: metric_value(vals, n_boot=n_boot, seed=seed) for name, vals in columns.items()}
    return metrics, rows, notes


def _example_row(task: Task, g: Group, pass_ks: list[int], maj_ks: list[int], seed: int) -> dict[str, Any]:
    ex, n = g.example, g.size
    correct = [s.parts.get("accuracy", s.total) >= 0.5 for s in g.scores]
    answers = [task.extract(c.text) for c in g.completions]
    formats = [s.parts["format"] for s in g.scores if "format" in s.parts]
    c = sum(correct)
    return {
        "example_id": ex.id,
        "n": n,
        "correct": c,
        "pass@k": {str(k): pass_at_k(n, c, k) for k in pass_ks},
        "maj@k": {
            str(k): maj_at_k(
                answers, correct, k, equivalent=lambda a, b, ex=ex: task.equivalent(a, b, ex), seed=seed
            )
            for k in maj_ks
        },
        "format_rate": float(np.mean(formats)) if len(formats) == n else None,
        "mean_length": float(np.mean([len(c.token_ids) for c in g.completions])),
        "truncated": sum(c.truncated for c in g.completions),
        "answers": answers,
        "correct_flags": correct,
    }


def make_eval_callback(
    task: Task,
    examples: Sequence[Example],
    *,
    every: int,
    n: int,
    ks: Sequence[int],
    params: SamplingParams,
    tokenizer: Any,
    chat_template: bool = False,
    seed: int = 0,
) -> Callable[[int, Engine], dict[str, float]]:
    """A trainer hook: at steps that are multiples of `every`, evaluate and return flat metrics.

    Returns {"eval/pass@1": ..., "eval/avg@4": ..., ...} on eval steps and {} otherwise.  No
    cache: the weights change between calls (the engine's fingerprint would change too).
    """
    if every < 1:
        raise ValueError(f"make_eval_callback: every must be >= 1 step, got {every}")

    def callback(step: int, engine: Engine) -> dict[str, float]:
        if step % every != 0:
            return {}
        result = evaluate(
            engine, tokenizer, task, examples, n=n, ks=ks, params=params, chat_template=chat_template,
            seed=seed, n_boot=200,
        )  # fmt: skip
        return result.flat("eval/")

    return callback


def run_eval(
    model_dir: str | os.PathLike[str],
    task_name: str,
    *,
    n: int,
    ks: Sequence[int],
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    out_path: str | os.PathLike[str] | None,
    cache_path: str | os.PathLike[str] | None,
    split: str = "test",
    limit: int | None = None,
    greedy: bool = False,
    task_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    chat_template: bool = False,
    batch_size: int = 32,
    device: str | None = None,
) -> EvalResult:
    """What `rlvr eval` calls: load the model in `model_dir`, evaluate `task_name`'s `split`, write JSON.

    `greedy=True` means n=1, ks=[1], temperature 0 (the other sampling flags are ignored).
    The result is written atomically to `out_path` (when given); `cache_path` makes it resumable.
    `device` defaults to "cuda" when available, else "cpu".
    """
    import torch

    from rlvr.models.load import load_model_and_tokenizer  # lazy: keeps torch out of metric-only imports
    from rlvr.rollout.hf import HFEngine
    from rlvr.tasks import make_task

    if greedy:
        n, ks, temperature, top_p = 1, [1], 0.0, 1.0
    task = make_task(task_name, **(task_kwargs or {}))
    examples = list(task.examples(split))
    if limit is not None:
        examples = examples[:limit]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(model_dir, device=device)
    model_id = weights_fingerprint(model)  # before the engine casts its copy
    engine = HFEngine(model, tokenizer)
    stop = () if tokenizer.eos_token_id is None else (int(tokenizer.eos_token_id),)
    params = SamplingParams(
        n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, stop_token_ids=stop
    )
    result = evaluate(
        engine, tokenizer, task, examples, n=n, ks=ks, params=params, cache_path=cache_path,
        chat_template=chat_template, seed=seed, batch_size=batch_size, model_id=model_id,
    )  # fmt: skip
    result.config.update({"model_dir": str(model_dir), "split": split, "limit": limit, "greedy": greedy})
    if out_path is not None:
        result.save(out_path)
    return result


def weights_fingerprint(model: Any) -> str:
    """Hash of a torch model's config and per-parameter checksums (float64 sums): one pass over the weights.

    Distinguishes checkpoints of one architecture (an engine's own fingerprint may only count weight
    reloads); a changed device or dtype may change it, which only costs a cache miss.
    """
    import torch

    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(name.encode())
            h.update(np.float64(p.detach().double().sum().item()).tobytes())
            h.update(np.float64(p.detach().double().abs().sum().item()).tobytes())
    return h.hexdigest()[:16]
