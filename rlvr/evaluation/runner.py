"""Evaluate a model on a task: resumable generation, scoring, pass@k / maj@k / avg@k with error bars.

`evaluate` takes the pieces (engine, tokenizer, task, examples); `run_eval` is what `rlvr eval`
calls (loads the model from a directory); `make_eval_callback` is the trainer's periodic hook.
Prompts are made by `rlvr.rollout.collect.render_prompt` and completions graded by
`rlvr.tasks.grade` / `extract` after the prefix the prompt left open, exactly as in training, so a
completion scores the same here, in `collect` and in `rlvr verify`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rlvr.evaluation.cache import CacheKey, GenerationCache, params_hash
from rlvr.evaluation.metrics import MetricValue, insufficient_samples, metric_value, pass_at_k
from rlvr.evaluation.result import EvalResult
from rlvr.evaluation.voting import maj_at_k
from rlvr.rollout.base import Engine, SamplingParams
from rlvr.rollout.collect import Rendered, render_prompt
from rlvr.tasks.base import Task, extract, grade
from rlvr.types import Completion, Example, Group


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
    Each cached sample records the prefix its prompt left open; a resumed cache whose prefix differs
    from this run's prompt (another template or chat setting) is refused rather than misgraded.
    """
    _check_args(examples, n, ks, batch_size)
    cache = GenerationCache(cache_path)
    keys = _keys(
        engine.fingerprint(), task, examples, n, params_hash(params, chat_template=chat_template, seed=seed)
    )
    rendered = [render_prompt(tokenizer, task, ex, chat_template=chat_template) for ex in examples]
    _generate_missing(engine, examples, rendered, keys, cache, params, seed, batch_size)
    groups = [
        _scored_group(task, ex, r, [cache.get(k) for k in ex_keys], cache_path)
        for ex, r, ex_keys in zip(examples, rendered, keys)
    ]
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


def _keys(fp: str, task: Task, examples: Sequence[Example], n: int, phash: str) -> list[list[CacheKey]]:
    return [[CacheKey(fp, task.name, ex.id, i, phash) for i in range(n)] for ex in examples]


def _generate_missing(
    engine: Engine,
    examples: Sequence[Example],
    rendered: Sequence[Rendered],
    keys: list[list[CacheKey]],
    cache: GenerationCache,
    params: SamplingParams,
    seed: int,
    batch_size: int,
) -> None:
    """Generate the (example, sample index) pairs not in the cache; cache each batch as it lands.

    Examples with the same missing indices are batched together (in example order), one
    `engine.generate` call per batch with n = number of missing indices.
    """
    todo = [(ex, r, cache.missing(ex_keys)) for ex, r, ex_keys in zip(examples, rendered, keys)]
    batches: list[list[tuple[Example, Rendered, list[CacheKey]]]] = []
    for ex, r, miss in (t for t in todo if t[2]):
        idx = [k.sample_index for k in miss]
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and [k.sample_index for k in last[0][2]] == idx:
            last.append((ex, r, miss))
        else:
            batches.append([(ex, r, miss)])
    for batch in batches:
        first_ex, _, first_miss = batch[0]
        call_params = replace(
            params, n=len(first_miss), seed=_derive_seed(seed, first_ex.id, first_miss[0].sample_index)
        )
        outputs = engine.generate([r.ids for _, r, _ in batch], call_params)
        if len(outputs) != len(batch) or any(len(o) != call_params.n for o in outputs):
            raise RuntimeError(
                f"engine.generate returned {[len(o) for o in outputs]} completions for {len(batch)} prompts; "
                f"expected {call_params.n} each"
            )
        cache.put_many(
            (key, _completion_record(c, r.prefix))
            for (_, r, miss), comps in zip(batch, outputs)
            for key, c in zip(miss, comps)
        )


def _derive_seed(seed: int, example_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{example_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _completion_record(c: Completion, prefix: str) -> dict[str, Any]:
    return {
        "text": c.text,
        "token_ids": list(c.token_ids),
        "sampler_logprobs": None if c.sampler_logprobs is None else list(c.sampler_logprobs),
        "finish_reason": c.finish_reason,
        "prefix": prefix,
    }


def _scored_group(
    task: Task, example: Example, r: Rendered, records: list[dict[str, Any] | None], cache_path: Any
) -> Group:
    """The example's samples graded after `r.prefix`; records from caches older than the prefix field
    carry none and are graded with this prompt's."""
    comps = []
    for i, rec in enumerate(records):
        if rec is None:
            raise RuntimeError(f"evaluate: sample {i} of example {example.id!r} missing after generation")
        if rec.get("prefix", r.prefix) != r.prefix:
            raise ValueError(
                f"{cache_path}: sample {i} of example {example.id!r} was generated after a prompt that left "
                f"{rec['prefix']!r} open, but this run's prompt leaves {r.prefix!r} open (another template "
                "or chat_template setting): delete the cache or pass another cache path"
            )
        lps = rec.get("sampler_logprobs")
        comps.append(
            Completion(
                text=rec["text"],
                token_ids=tuple(rec["token_ids"]),
                sampler_logprobs=None if lps is None else tuple(lps),
                finish_reason=rec.get("finish_reason", "stop"),
            )
        )
    scores = [grade(task, example, c.text, prefix=r.prefix) for c in comps]
    return Group(example, r.text, tuple(r.ids), comps, scores, prefix=r.prefix)


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
    answers = [extract(task, c.text, prefix=g.prefix) for c in g.completions]
    formats = [s.parts["format"] for s in g.scores if "format" in s.parts]
    c = sum(correct)
    return {
        "example_id": ex.id,
        "prefix": g.prefix,
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
    *,
    samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    num_examples: int | None = None,
    task: Task | None = None,
    examples: Sequence[Example] | None = None,
    split: str = "test",
    chat_template: bool = False,
    top_p: float = 1.0,
    stop_strings: Sequence[str] = (),
    seed: int = 0,
    batch_size: int = 32,
    n_boot: int = 200,
) -> Callable[[Any], dict[str, float]]:
    """The trainer's in-training evaluation: `cb(ctx) -> {"pass@1": …, "pass@k": …, …}`.

    `ctx` is duck-typed (the trainer's `CallbackContext`): `step`, `run_dir`, `model`, `tokenizer`,
    `engine`, `task`, `final`.  Every call evaluates (when to call is the trainer's business:
    `run.eval_every`, the final step): the first `num_examples` (None: all) of `examples`, or of
    `task.examples(split)` with `task` defaulting to `ctx.task` (a mixture's members taken in turn);
    `samples` completions each at `temperature` (stopping at the tokenizer's eos and `stop_strings`),
    `max_new_tokens` long.
    It writes `run_dir/eval/step_{step:06d}.json` atomically (`EvalResult.save`) and returns the
    metrics' point estimates under bare names (pass@1, pass@k and maj@k for k = samples, avg@k,
    format_rate, mean_length); the trainer logs them as "eval/<name>".

    Engine: `ctx.engine`, or where it is None (SFT) an `HFEngine` sharing `ctx.model`'s weights,
    built on first use.  `ctx.model` is in eval mode while evaluating, its mode restored after.  Every
    call uses the same `seed` (common random numbers: step-to-step changes are the model's), and no
    generation cache (the weights change between calls).
    """
    ks = sorted({1, samples})
    built: dict[str, Any] = {}

    def engine_for(ctx: Any) -> Engine:
        if ctx.engine is not None:
            return ctx.engine
        if built.get("model") is not ctx.model:
            from rlvr.rollout.hf import HFEngine  # lazy: torch stays out of metric-only imports

            built.update(model=ctx.model, engine=HFEngine(ctx.model, ctx.tokenizer, share_weights=True))
        return built["engine"]

    def callback(ctx: Any) -> dict[str, float]:
        the_task = task if task is not None else ctx.task
        todo = list(examples if examples is not None else _held_out(the_task, split))[:num_examples]
        eos = ctx.tokenizer.eos_token_id
        params = SamplingParams(
            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
            stop_token_ids=() if eos is None else (int(eos),), stop_strings=tuple(stop_strings),
        )  # fmt: skip
        with _eval_mode(ctx.model):
            result = evaluate(
                engine_for(ctx), ctx.tokenizer, the_task, todo, n=samples, ks=ks, params=params,
                chat_template=chat_template, seed=seed, batch_size=batch_size, n_boot=n_boot,
            )  # fmt: skip
        result.config.update({"step": int(ctx.step), "final": bool(ctx.final)})
        result.save(Path(ctx.run_dir) / "eval" / f"step_{int(ctx.step):06d}.json")
        return result.flat("")

    return callback


def _held_out(task: Any, split: str) -> list[Example]:
    """`task.examples(split)`; for a mixture (`member_examples`), its members' examples interleaved
    round-robin, so the first N held-out problems cover every member rather than the first one."""
    members = getattr(task, "member_examples", None)
    if members is None:
        return list(task.examples(split))
    rows = members(split)
    return [r[i] for i in range(max(map(len, rows), default=0)) for r in rows if i < len(r)]


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """`model.eval()` for the block (dropout off), then back to the mode it was in."""
    training = getattr(model, "training", None)
    if training is None:
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def run_eval(
    model_dir: str | os.PathLike[str],
    task_name: str | Task,
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

    `task_name` is a registered task's name (built with `task_kwargs`) or an already built task.

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
    task = make_task(task_name, **(task_kwargs or {})) if isinstance(task_name, str) else task_name
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
