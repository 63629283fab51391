"""Peak memory and time of the LM head's log-softmax: the full [B, T, V] fp32 tensor vs rlvr's chunks.

    python bench/logprobs_bench.py                       # 8 x 512 tokens, hidden 64, Qwen's 151,936-token vocabulary
    python bench/logprobs_bench.py --tokens 256 --top-k 20 --hidden 896

What distillation's student forward computes (`rlvr.trainer.distill.student_forward`): the logprobs of
each token's target and of the teacher's top-k ids, and the argmax, then a backward through both
hidden states and LM-head weight.  "full" is `log_softmax(hidden @ W.T)` then gather (what the stage
did before); "chunked" is `rlvr.algorithms.logprobs.gathered_logprobs_from_hidden`.  Each variant runs
in a fresh subprocess so its peak RSS (`ru_maxrss`, above the process's footprint before the pass) is
its own.  Tiny hidden sizes exaggerate the chunked path's time (it recomputes each chunk's logits in
backward: one extra LM-head matmul, and the elementwise passes dominate when H is small).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(variant: str, batch: int, tokens: int, hidden: int, vocab: int, top_k: int) -> dict[str, float]:
    import torch

    from rlvr.algorithms.logprobs import gathered_logprobs_from_hidden

    g = torch.Generator().manual_seed(0)
    h = torch.randn(batch, tokens, hidden, generator=g).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) * 0.02).requires_grad_()
    ids = torch.randint(0, vocab, (batch, tokens, 1 + top_k), generator=g)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if variant == "full":
        logp = torch.log_softmax(h @ w.T, dim=-1)
        lp, top = logp.gather(-1, ids), logp.argmax(-1)
    else:
        lp, top = gathered_logprobs_from_hidden(h, w, ids)
    lp.sum().backward()
    seconds = time.perf_counter() - start
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB on Linux
    return {"peak_mb_above_start": round(peak_mb), "seconds": round(seconds, 2), "argmax_sum": int(top.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--variant", choices=["full", "chunked"], help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    shape = (args.batch, args.tokens, args.hidden, args.vocab, args.top_k)
    if args.variant:
        print(json.dumps(run_one(args.variant, *shape)))
        return
    print(f"B={args.batch} T={args.tokens} H={args.hidden} V={args.vocab} top-k={args.top_k}: "
          f"the full fp32 log-softmax is {args.batch * args.tokens * args.vocab * 4 / 2**20:.0f} MB")  # fmt: skip
    for variant in ("full", "chunked"):
        child = [sys.executable, __file__, "--variant", variant, "--batch", str(args.batch), "--tokens", str(args.tokens),
                 "--hidden", str(args.hidden), "--vocab", str(args.vocab), "--top-k", str(args.top_k)]  # fmt: skip
        proc = subprocess.run(child, capture_output=True, text=True)
        if proc.returncode:
            print(f"  {variant:8s} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {variant:8s} peak +{r['peak_mb_above_start']} MB, {r['seconds']} s (forward + backward)")


if __name__ == "__main__":
    main()
