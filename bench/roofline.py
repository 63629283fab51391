"""Matmul peak of this machine and the FLOPs of one GRPO step: the step-time lower bound.

    python bench/roofline.py --model-dir DIR [--device cpu|cuda] [--json OUT]

FLOP accounting (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1: a forward
pass costs 2·N FLOPs per token for N non-embedding parameters, forward + backward 6·N; attention
adds 2·n_layer·n_ctx·d_attn per token forward).  Here N counts every matmul weight the tokens go
through: the decoder layers plus the lm_head (the embedding lookup is free, the lm_head is not, even
when tied).  Attention is causal, so a sequence of S tokens costs 2·S²·d per layer forward (QKᵀ
and AV, each S²/2 multiply-adds) and a decode step at position t costs 4·t·d per layer.

Decoding has a second ceiling (the roofline model proper, Williams, Waterman & Patterson 2009: a
kernel is bound by max(FLOPs / peak, bytes / bandwidth)).  Each decode step of B rows must read every
matmul weight once and every cached key and value its rows attend to, whatever B is; at B = 32 rows
in fp32 that is ~16 FLOPs per weight byte, so on a CPU whose DRAM streams ~15-35 GB/s against a
~0.19 TFLOP/s matmul peak the weights alone cost as long as the FLOPs.  `generate_bound_s` takes
the larger of the two per step, with the measured read bandwidth (`_bench_bandwidth`).

The bound assumes the least work any implementation must do: the prompt prefilled once per group
(not once per sample), no separate old-logprob pass (μ = 1), the reference forward over prompt +
completion, and the policy forward + backward over the same tokens, all at the measured peak.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Shape:
    """What the FLOP count needs from a decoder-only model config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> Shape:
        return cls(
            hidden=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
        )

    @property
    def matmul_params(self) -> int:
        """Weights in matmuls per token: q, k, v, o, gate, up, down per layer, plus the lm_head."""
        d, kv = self.hidden, self.hidden * self.kv_heads // self.heads
        per_layer = 2 * d * d + 2 * d * kv + 3 * d * self.intermediate
        return self.layers * per_layer + d * self.vocab


def forward_flops(shape: Shape, seq_len: int, batch: int) -> float:
    """Forward FLOPs of `batch` causal sequences of `seq_len` tokens: 2·N·tokens + 2·L·S²·d each."""
    dense = 2.0 * shape.matmul_params * seq_len * batch
    attention = 2.0 * shape.layers * seq_len**2 * shape.hidden * batch
    return dense + attention


def decode_flops(shape: Shape, prompt_len: int, new_tokens: int, batch: int) -> float:
    """FLOPs to decode `new_tokens` after a prefilled prompt: 2·N per token + 4·t·d·L attention."""
    positions = sum(range(prompt_len, prompt_len + new_tokens))  # context length of each decode step
    return batch * (2.0 * shape.matmul_params * new_tokens + 4.0 * shape.layers * shape.hidden * positions)


def grpo_step_flops(
    shape: Shape, prompt_len: int, prompts: int, group: int, new_tokens: int
) -> dict[str, float]:
    """FLOPs per phase of one GRPO step (μ = 1, β > 0): generate, reference, train (fwd + bwd = 3x fwd)."""
    samples, seq = prompts * group, prompt_len + new_tokens
    generate = forward_flops(shape, prompt_len, prompts) + decode_flops(
        shape, prompt_len, new_tokens, samples
    )
    reference = forward_flops(shape, seq, samples)
    train = 3.0 * forward_flops(shape, seq, samples)
    return {
        "generate": generate,
        "reference": reference,
        "train": train,
        "step": generate + reference + train,
    }


def decode_step_bytes(shape: Shape, prompt_len: int, prompts: int, group: int, step: int, dtype_bytes: int = 4) -> float:
    """Bytes decode step `step` (0-based) must read: every matmul weight once, plus the keys and
    values attended to, the prompt's stored once per group (the least any implementation reads)."""
    kv_width = 2 * shape.hidden * shape.kv_heads // shape.heads  # k and v per token per layer
    cached = prompts * prompt_len + prompts * group * (step + 1)
    return dtype_bytes * (shape.matmul_params + shape.layers * kv_width * cached)


def generate_bound_s(
    shape: Shape, prompt_len: int, prompts: int, group: int, new_tokens: int, peak: float, bandwidth: float
) -> float:
    """Lower bound on generation time: the prefill at the matmul peak, then per decode step the larger
    of its FLOPs at the peak and its bytes at the read bandwidth."""
    samples = prompts * group
    total = forward_flops(shape, prompt_len, prompts) / peak
    for t in range(new_tokens):
        flops = samples * (2.0 * shape.matmul_params + 4.0 * shape.layers * shape.hidden * (prompt_len + t))
        total += max(flops / peak, decode_step_bytes(shape, prompt_len, prompts, group, t) / bandwidth)
    return total


def _bench_bandwidth(device: str, seconds: float, mib: int = 512) -> float | None:
    """Best read bandwidth (bytes/s) of a reduction over `mib` MiB of fp32, far larger than the caches."""
    import torch

    if device.startswith("cuda"):
        return None  # a GPU's decode bound is not what this CPU benchmark measures
    x = torch.ones(mib * 2**20 // 4)
    x.sum()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t0))
    return best


def _bench_matmul(m: int, k: int, n: int, dtype: Any, device: str, seconds: float) -> float:
    """Best FLOP/s of [m, k] @ [k, n] over repeats filling about `seconds`."""
    import torch

    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    reps = 1
    while time.perf_counter() < deadline:
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        dt = time.perf_counter() - t0
        best = max(best, 2.0 * m * k * n * reps / dt)
        reps = reps * 2 if dt < 0.05 else reps
    return best


def matmul_shapes(shape: Shape, tokens: int, rows: int) -> dict[str, tuple[int, int, int]]:
    """The square reference shape and the model's own training / decoding matmuls."""
    d = shape.hidden
    return {
        "square_2048": (2048, 2048, 2048),
        "train_mlp_up": (tokens, d, shape.intermediate),
        "train_attn_proj": (tokens, d, d),
        "decode_mlp_up": (rows, d, shape.intermediate),
    }


def measure_peaks(shape: Shape, tokens: int, rows: int, device: str, seconds: float = 0.5) -> dict[str, Any]:
    """FLOP/s per dtype and shape; `peak` per dtype is the best over shapes."""
    import torch

    from rlvr.models.precision import EMULATED, bf16_is_fast

    out: dict[str, Any] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype == torch.bfloat16 and not bf16_is_fast(torch.device(device).type):
            # emulated bf16 runs ~100x below fp32 (a 2048^3 matmul takes ~30 s): not a roofline
            out[name] = {"peak": None, "skipped": EMULATED}
            continue
        per_shape = {
            k: _bench_matmul(*mkn, dtype, device, seconds)
            for k, mkn in matmul_shapes(shape, tokens, rows).items()
        }
        out[name] = {"peak": max(per_shape.values()), "shapes": per_shape}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=32 * 168, help="rows of the training matmul shapes")
    parser.add_argument("--rows", type=int, default=32, help="rows of the decode matmul shape")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per shape and dtype")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    from transformers import AutoConfig

    shape = Shape.from_config(AutoConfig.from_pretrained(args.model_dir))
    peaks = measure_peaks(shape, args.tokens, args.rows, args.device, args.seconds)
    peaks["read_bandwidth"] = _bench_bandwidth(args.device, max(args.seconds, 0.3))
    result = {"shape": asdict(shape), "peaks": peaks}
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
