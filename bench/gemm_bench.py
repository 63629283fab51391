"""The decode step's projections as GEMMs: which CPU library is fastest at few rows (issue 19).

    python bench/gemm_bench.py                    # 33m model's shapes, 32 rows, torch's default threads
    python bench/gemm_bench.py --rows 128 --threads 1

Each decode step multiplies B rows (the batch being sampled) by every projection weight: for the 33m
preset [B, 512] x [512, 1536] (q/k/v), [512, 512] (o), [512, 4096] (gate/up), [2048, 512] (down).  The
bench times each shape with several distinct weights in turn (as a decode step walks 8 layers, so the
weights come from memory, not cache) through: oneDNN with the weight prepacked once (what
`rlvr.rollout.fused.Linear` uses), MKL's packed sgemm, `F.linear`, `torch.mm` on a pre-transposed
weight, and OpenBLAS through numpy.  GFLOP/s = 2 x B x K x N / seconds; the 2048^3 line is the peak the
roofline uses.  Figures in bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

SHAPES = {"qkv": (512, 1536), "o": (512, 512), "gate_up": (512, 4096), "down": (2048, 512)}


def _seconds(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=32, help="rows per GEMM (the decode batch)")
    ap.add_argument("--weights", type=int, default=8, help="distinct weights per shape (the decoder's layers)")
    ap.add_argument("--threads", type=int, default=0, help="torch and OpenBLAS threads (0: the defaults)")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    if args.threads:
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)  # before numpy loads OpenBLAS
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = args.rows
    print(f"{m} rows, {args.weights} distinct weights per shape, {torch.get_num_threads()} torch threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; GFLOP/s")  # fmt: skip
    big = torch.randn(2048, 2048)
    peak = 2 * 2048**3 / _seconds(lambda: big @ big, 5)
    print(f"  2048^3 matmul: {peak / 1e9:.0f}")
    for name, (k, n) in SHAPES.items():
        x, ws = torch.randn(m, k), [torch.randn(n, k) for _ in range(args.weights)]
        rates = {v: 2 * m * k * n * args.weights / _seconds(fn, args.repeats) / 1e9 for v, fn in _variants(x, ws).items()}
        print(f"  {name:8s} [{m}, {k}] x [{k}, {n}]: " + "  ".join(f"{v} {r:.0f}" for v, r in rates.items()))


def _variants(x, ws) -> dict[str, Callable[[], object]]:  # x [m, k], ws: weights [n, k]
    """One pass of `x @ w.T` over every weight, per library (each weight prepared the way that library wants)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    m, out = x.shape[0], np.empty((x.shape[0], ws[0].shape[0]), dtype=np.float32)
    variants: dict[str, Callable[[], object]] = {}
    if torch.backends.mkldnn.is_available():
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, m) for w in ws]
        variants["onednn_packed"] = lambda: [torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "") for p in packed]
    if torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"):
        mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, m) for w in ws]
        variants["mkl_packed"] = lambda: [torch.ops.mkl._mkl_linear(x, p, w, None, m) for p, w in zip(mkl, ws)]
    variants["F.linear"] = lambda: [F.linear(x, w) for w in ws]
    wt = [w.t().contiguous() for w in ws]
    variants["torch.mm"] = lambda: [torch.mm(x, w) for w in wt]
    xn, wn = x.numpy(), [w.numpy() for w in wt]
    variants["openblas"] = lambda: [np.matmul(xn, w, out=out) for w in wn]
    return variants

if __name__ == "__main__":
    main()
