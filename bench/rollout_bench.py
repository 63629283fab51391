"""Rollout throughput: rlvr's HFEngine vs `model.generate` on the same model and batch (issue 7).

Default setting: the "33m" tiny Llama, 4 prompts x 8 samples x 128 new tokens at fixed length
(min_new_tokens = max_new_tokens), temperature 1.  Every variant runs `--repeats` times,
interleaved, and the best time is reported (the machine is shared; best-of filters noise).

    python bench/rollout_bench.py [--preset 33m] [--repeats 3] [--compile]

Where vLLM is importable (its CPU build lives in its own environment: run this script with that
environment's python, e.g. `/work/venv-vllm/bin/python bench/rollout_bench.py`), rlvr's `VLLMEngine`
(in-process vLLM, fp32 here) is timed on the same batch as `rlvr_vllm_engine_fp32`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.hf import HFEngine

PROMPTS = ["What is 12 + 30? ", "Compute 7 × 8. <think>", "Reverse the word 'banana'. ", "1, 2, 3, 5, 8, "]


def hf_generate(model, enc, n: int, new: int, bf16: bool) -> Callable[[], int]:
    def run() -> int:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.generate(
                **enc,
                do_sample=True,
                num_return_sequences=n,
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=0,
            )
        return (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]

    return run


def engine_generate(engine: Any, prompts, params: SamplingParams) -> Callable[[], int]:
    def run() -> int:
        return sum(len(c.token_ids) for g in engine.generate(prompts, params) for c in g)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="33m")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-fp32", action="store_true", help="skip the slow fp32 variants")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = build_tokenizer()
    model = build_model(args.preset, tok, seed=0)
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    params = SamplingParams(n=args.n, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, seed=0)
    variants: dict[str, Callable[[], int]] = {
        "hf_generate_bf16_autocast": hf_generate(model, enc, args.n, args.new_tokens, True),
        "rlvr_engine_bf16_copy": engine_generate(HFEngine(model, tok, dtype=torch.bfloat16), prompts, params),
        "rlvr_engine_hf_backend_bf16": engine_generate(
            HFEngine(model, tok, dtype=torch.bfloat16, backend="hf"), prompts, params
        ),
    }
    if not args.skip_fp32:
        variants["hf_generate_fp32"] = hf_generate(model, enc, args.n, args.new_tokens, False)
        variants["rlvr_engine_fp32_shared"] = engine_generate(
            HFEngine(model, tok, share_weights=True, dtype=None), prompts, params
        )
        variants["rlvr_engine_shared_bf16_autocast"] = engine_generate(
            HFEngine(model, tok, share_weights=True, dtype=torch.bfloat16), prompts, params
        )
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        from rlvr.rollout.vllm import VLLMEngine

        variants["rlvr_vllm_engine_fp32"] = engine_generate(VLLMEngine.from_model(model, tok, dtype="float32"),
                                                            prompts, params)  # fmt: skip
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    for rep in range(args.repeats):
        for name, run in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            n_tok = run()
            rate, cpu_rate = n_tok / (time.perf_counter() - t0), n_tok / (time.process_time() - c0)
            best[name] = max(best.get(name, 0.0), rate)
            best_cpu[name] = max(best_cpu.get(name, 0.0), cpu_rate)
            print(f"rep {rep} {name:34s} {rate:8.0f} tok/s  {cpu_rate:8.0f} tok/cpu-s", flush=True)
    base = best["hf_generate_bf16_autocast"]
    print(
        f"\nthreads={torch.get_num_threads()} preset={args.preset} batch={len(prompts)}x{args.n}x{args.new_tokens}"
    )
    # tok/cpu-s (tokens per CPU-second of this process) is robust to other load on a shared
    # machine; with one thread it is the throughput an idle core would give.
    for name, rate in best.items():
        cpu = best_cpu[name]
        print(
            f"{name:34s} {rate:8.0f} tok/s ({rate / base:.2f}x)  "
            f"{cpu:8.0f} tok/cpu-s ({cpu / best_cpu['hf_generate_bf16_autocast']:.2f}x)"
        )
    print(f"speedup_vs_hf_generate_bf16={best['rlvr_engine_bf16_copy'] / base:.2f}")


if __name__ == "__main__":
    main()
