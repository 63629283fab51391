"""Generation throughput: `python bench/_gen_side.py SPEC.json OUT.json`.

The same batch as one GRPO step (prompts_per_step prompts x group_size samples, new_tokens fixed
length, temperature 1) through HF `generate` in fp32 and under bf16 autocast, through rlvr's
`HFEngine`, and through vLLM when it is installed.  Tokens/s counts generated tokens only; the
median over `spec.steps` timed runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[1]),
]  # bench/, repo
from _common import Spec, cuda_sync, median, write_result  # noqa: E402


def _timed(fn: Callable[[], int], reps: int, sync: Callable[[], None] | None) -> dict[str, Any]:
    """Run `fn` (returns tokens generated) once to warm up, then `reps` times; median tokens/s."""
    fn()
    rates, counts = [], []
    for _ in range(reps):
        (sync or (lambda: None))()
        t0 = time.perf_counter()
        n = fn()
        (sync or (lambda: None))()
        rates.append(n / (time.perf_counter() - t0))
        counts.append(n)
    return {"tokens_per_s": median(rates), "tokens": counts[-1]}


# Where the engine's generation time goes: torch.profiler self-CPU time by op, grouped (first match).
PROFILE_GROUPS = (
    ("matmul", ("linear", "::mm", "addmm", "bmm", "matmul")),
    ("attention", ("scaled_dot_product", "_softmax_backward", "flash_attention")),
    ("sampling", ("exponential", "log_softmax", "argmax", "softmax", "gather", "isin", "index_fill", "topk", "sort")),
    ("norm/rope/swiglu", ("rms_norm", "pow", "mean", "rsqrt", "silu", "mul", "add", "roll", "neg", "cat")),
    ("copies/alloc", ("copy_", "fill_", "zeros", "empty", "clone", "contiguous", "_to_copy", "where")),
)


def profile_breakdown(fn: Callable[[], int]) -> dict[str, float]:
    """Fraction of one run's self-CPU op time per group of `PROFILE_GROUPS` ("other": the rest)."""
    from torch.profiler import profile

    with profile() as prof:
        fn()
    totals: dict[str, float] = {}
    for ev in prof.key_averages():
        group = next((g for g, keys in PROFILE_GROUPS if any(k in ev.key for k in keys)), "other")
        totals[group] = totals.get(group, 0.0) + ev.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {g: t / whole for g, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def hf_generate(spec: Spec, model: Any, tok: Any, autocast: bool) -> Callable[[], int]:
    import torch

    prompts = [p for p in spec.step_prompts(0) for _ in range(spec.group_size)]  # TRL's layout: repeated rows
    enc = tok(prompts, return_tensors="pt", padding=True).to(spec.device)
    T = spec.new_tokens

    def run() -> int:
        ctx = (
            torch.autocast(model.device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        )
        with torch.inference_mode(), ctx:
            out = model.generate(
                **enc, do_sample=True, max_new_tokens=T, min_new_tokens=T, top_k=0, top_p=1.0
            )
        return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]

    return run


def rlvr_engine(spec: Spec, model: Any, tok: Any) -> Callable[[], int]:
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.hf import HFEngine

    engine = HFEngine(model, tok)
    prompts = [tok(p)["input_ids"] for p in spec.step_prompts(0)]
    params = SamplingParams(n=spec.group_size, max_new_tokens=spec.new_tokens, min_new_tokens=spec.new_tokens)

    def run() -> int:
        groups = engine.generate(prompts, params)
        return sum(len(c.token_ids) for g in groups for c in g)

    return run


def vllm_generate(spec: Spec, tok: Any) -> Callable[[], int] | None:
    """rlvr's `VLLMEngine` (in-process vLLM) on the same batch; fp32 where bf16 is emulated."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return None
    from rlvr.models.precision import bf16_is_fast
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.vllm import VLLMEngine

    dtype = "bfloat16" if bf16_is_fast(spec.device) else "float32"
    engine = VLLMEngine(spec.model_dir, tok, seed=spec.seed, dtype=dtype)
    prompts = [tok(p)["input_ids"] for p in spec.step_prompts(0)]
    params = SamplingParams(n=spec.group_size, max_new_tokens=spec.new_tokens, min_new_tokens=spec.new_tokens)

    def run() -> int:
        return sum(len(c.token_ids) for g in engine.generate(prompts, params) for c in g)

    return run


def run(spec: Spec, which: list[str]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec.model_dir)
    model = AutoModelForCausalLM.from_pretrained(spec.model_dir, dtype="float32").to(spec.device).eval()
    sync, reps = cuda_sync(spec.device), max(1, spec.steps)
    makers: dict[str, Callable[[], Callable[[], int] | None]] = {
        "hf_fp32": lambda: hf_generate(spec, model, tok, autocast=False),
        "hf_bf16": lambda: hf_generate(spec, model, tok, autocast=True),
        "rlvr": lambda: rlvr_engine(spec, model, tok),
        "vllm": lambda: vllm_generate(spec, tok),
    }
    from rlvr.models.precision import EMULATED, bf16_is_fast

    out: dict[str, Any] = {"side": "generate"}
    for name in which:
        if name == "hf_bf16" and not bf16_is_fast(spec.device):
            out[name] = {"skipped": f"{EMULATED}: not HF's best setting"}
            continue
        try:
            fn = makers[name]()
            out[name] = _timed(fn, reps, sync) if fn is not None else {"skipped": f"{name} is not installed"}
            if name == "rlvr" and fn is not None and spec.device == "cpu":
                out[name]["profile"] = profile_breakdown(fn)
        except Exception as e:  # one failing backend must not hide the others' figures
            out[name] = {"skipped": f"{type(e).__name__}: {e}"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec")
    parser.add_argument("out")
    parser.add_argument("--which", default="hf_fp32,hf_bf16,rlvr,vllm")
    args = parser.parse_args()
    write_result(args.out, run(Spec.load(args.spec), args.which.split(",")))


if __name__ == "__main__":
    main()
