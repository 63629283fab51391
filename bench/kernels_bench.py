"""A/B of `model.fused_kernels` (rlvr.models.kernels) on the trainer's forward, in one process.

    python bench/kernels_bench.py [--repeats 5] [--threads 1] [--profile] [--skip-sft]

- GRPO: the bench batch of `bench/grpo_bench.py` (33m preset, 4 prompts x 8 completions, 128 completion
  tokens, prompts of the bench's length, one micro-batch, shared prefix, eager attention): the reference /
  old-policy pass (`completion_logprobs_no_grad`) and a train step (forward, a PPO-clip + k3-KL loss,
  backward, AdamW step).
- SFT: the demo's SFT step (`rlvr.demo.plan`: 1m preset, 32 traces) through the real stage's `step`.

The same model is patched and unpatched in turn (`kernels.fuse` / `kernels.unfuse`), A and B interleaved,
process CPU time, medians.  `--profile` prints torch.profiler's top ops of one patched train step.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import torch  # noqa: E402
from _common import interleaved_cpu_times  # noqa: E402

from rlvr.models import kernels  # noqa: E402


def _grpo_batch(tokenizer: Any) -> Any:
    from _common import make_prompts

    from rlvr.trainer.batching import Sample, collate

    rng = random.Random(0)
    samples = []
    for prompt in make_prompts(4, 0):
        ids = tuple(tokenizer(prompt)["input_ids"])
        for _ in range(8):
            comp = tuple(rng.randrange(4, tokenizer.vocab_size) for _ in range(128))
            samples.append(Sample(ids, comp, sampler_logprobs=tuple(-2.0 for _ in comp), index=len(samples)))
    batch = collate(samples, tokenizer.pad_token_id)
    batch.advantages = torch.randn(len(samples))
    return batch


def grpo_fns(preset: str) -> tuple[Any, dict[str, Callable[[], None]]]:
    from rlvr.algorithms.kl import kl_k3
    from rlvr.algorithms.objectives import ppo_clip
    from rlvr.models.tiny import build_model, build_tokenizer
    from rlvr.trainer import build
    from rlvr.trainer.forward import completion_logprobs, completion_logprobs_no_grad

    tokenizer = build_tokenizer()
    model = build_model(preset, tokenizer, 0).float().train()
    build.set_attention(model, "auto", fused_kernels=False)
    batch = _grpo_batch(tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    ref = completion_logprobs_no_grad(model, batch, autocast=False)

    def reference() -> None:
        completion_logprobs_no_grad(model, batch, autocast=False)

    def train() -> None:
        lp, _ = completion_logprobs(model, batch, autocast=False)
        loss_tok, _ = ppo_clip(lp, lp.detach(), batch.advantages)
        per_token = loss_tok + 0.04 * kl_k3(lp, ref)
        m = batch.loss_mask.float()
        ((per_token * m).sum() / m.sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, {"reference": reference, "train": train}


def sft_fns(tmp: str) -> tuple[Any, dict[str, Callable[[], None]]]:
    from rlvr.demo.plan import DemoPlan, sft_config
    from rlvr.trainer.run import Timer
    from rlvr.trainer.sft import build_sft_stage

    stage = build_sft_stage(sft_config(DemoPlan(), Path(tmp), 0, progress=False))
    counter = iter(range(1, 10**6))
    return stage.model, {"sft_step": lambda: stage.step(next(counter), Timer())}


def ab(model: Any, fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, dict[str, float]]:
    """Each of `fns` with the kernels off and on, interleaved (`interleaved_cpu_times`), after one warm-up each."""

    def switch(side: str) -> None:
        kernels.unfuse(model)
        if side == "on":
            assert kernels.fuse(model) > 0

    out = {}
    for n, fn in fns.items():
        t = interleaved_cpu_times({"off": lambda r, fn=fn: fn(), "on": lambda r, fn=fn: fn()}, repeats, warmup=1, setup=switch)
        off, on = statistics.median(t["off"]), statistics.median(t["on"])
        out[n] = {"off_s": off, "on_s": on, "speedup": off / on}
        print(f"{n:10s} off {off:7.3f} s  on {on:7.3f} s  off/on {off / on:5.3f}  "
              f"(off {[round(x, 2) for x in t['off']]}, on {[round(x, 2) for x in t['on']]})", flush=True)  # fmt: skip
    kernels.unfuse(model)
    return out


def profile(model: Any, fn: Callable[[], None], rows: int = 25) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    assert kernels.fuse(model) > 0
    fn()
    with prof(activities=[ProfilerActivity.CPU]) as p:
        fn()
    kernels.unfuse(model)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preset", default="33m")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--skip-sft", action="store_true")
    ap.add_argument("--skip-grpo", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_grpo:
        model, fns = grpo_fns(args.preset)
        ab(model, fns, args.repeats)
        if args.profile:
            profile(model, fns["train"])
    if not args.skip_sft:
        with tempfile.TemporaryDirectory() as tmp:
            model, fns = sft_fns(tmp)
            ab(model, fns, args.repeats * 4)


if __name__ == "__main__":
    main()
