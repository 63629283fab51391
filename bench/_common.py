"""What both sides of the GRPO benchmark share: the spec, the model, the prompts, the timers.

The orchestrator (`grpo_bench.py`) writes one `Spec` as JSON and starts each side in its own
subprocess (`_trl_side.py`, `_rlvr_side.py`, `_gen_side.py`), which reads it, runs, and writes a JSON
result.  Separate processes keep peak RSS per side honest and stop one side's thread pools,
allocator caches or compiled graphs from helping (or hurting) the other.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The CUDA benchmark model of issue 7: a ~0.5B Qwen2-shaped random-init model (Qwen2.5-0.5B shapes).
QWEN2_05B = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151936,
)


@dataclass
class Spec:
    """One benchmark configuration; identical for every side (only `setting` differs per run)."""

    model_dir: str
    preset: str = "33m"  # rlvr.models.tiny preset, or "qwen2-0.5b"
    device: str = "cpu"
    prompts_per_step: int = 4
    group_size: int = 8
    new_tokens: int = 128
    beta: float = 0.04
    lr: float = 1e-6
    steps: int = 3  # measured steps per run
    warmup: int = 1  # unmeasured steps first (allocator, thread pools, compile)
    seed: int = 0
    prompts: list[str] = field(default_factory=list)  # steps * prompts_per_step, in order

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Spec:
        return cls(**json.loads(Path(path).read_text()))

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    def step_prompts(self, step: int) -> list[str]:
        """The prompts of (0-based) step `step`; both sides consume them in the same order."""
        k = self.prompts_per_step
        return self.prompts[step * k : (step + 1) * k]


def make_prompts(count: int, seed: int) -> list[str]:
    """`count` arithmetic questions of identical length (two-digit operands), so no side pads prompts."""
    rng = random.Random(seed)
    return [
        f"Question: what is {rng.randint(10, 99)} + {rng.randint(10, 99)}? Answer: " for _ in range(count)
    ]


def build_model_dir(out_dir: Path, preset: str, seed: int) -> Path:
    """Write the benchmark model + tokenizer as an HF directory (nothing downloaded)."""
    from rlvr.models.tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    if preset == "qwen2-0.5b":
        model = _qwen2_model(tokenizer, seed)
    else:
        model = build_model(preset, tokenizer, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _qwen2_model(tokenizer: Any, seed: int) -> Any:
    """A random-init Qwen2 of 0.5B shape; its vocabulary is wider than the char tokenizer's, which is
    harmless for fixed-length benchmarking (ids past the tokenizer decode to nothing)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        **QWEN2_05B,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(config).eval()


def trivial_reward(completion: str) -> float:
    """The benchmark reward, identical on both sides: parity of the first character's code point.
    Free to compute, and it varies within a group, so advantages are non-zero and every step
    really updates the weights."""
    return float(ord(completion[0]) % 2) if completion else 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def interleaved_cpu_times(
    sides: dict[str, Callable[[int], Any]], rounds: int, *, warmup: int = 0, setup: Callable[[str], Any] | None = None
) -> dict[str, list[float]]:  # fmt: skip
    """Process CPU seconds of each side's call `sides[name](round)` per round, the sides' order reversed
    every other round (A B, B A, ...) so a shared box's drift hits all alike; `setup(name)` runs untimed
    before each call, the first `warmup` rounds are not recorded."""
    names, times = list(sides), {name: [] for name in sides}
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if setup is not None:
                setup(name)
            t0 = time.process_time()
            sides[name](r)
            if r >= warmup:
                times[name].append(time.process_time() - t0)
    return times


class PhaseTimer:
    """Accumulates wall time per named phase within the current step: `with timer("generate"): ...`."""

    def __init__(self, sync: Any = None) -> None:
        self.current: dict[str, float] = {}
        self._sync = sync or (lambda: None)

    def __call__(self, name: str) -> _Span:
        return _Span(self, name)

    def take(self) -> dict[str, float]:
        out, self.current = self.current, {}
        return out


class _Span:
    def __init__(self, timer: PhaseTimer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.timer._sync()
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer._sync()
        dt = time.perf_counter() - self.t0
        self.timer.current[self.name] = self.timer.current.get(self.name, 0.0) + dt


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    result.setdefault("peak_rss_mb", peak_rss_mb())
    Path(path).write_text(json.dumps(result, indent=1))


def cuda_sync(device: str) -> Any:
    """A synchronising no-arg callable for timers on `device` (no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


def cpu_seconds() -> dict[str, float] | None:
    """CPU-seconds used so far by the whole machine (busy + steal, from /proc/stat) and by this process
    and its waited-for children; None where /proc/stat is missing.  The difference between two readings
    is what *other* processes (or, under "steal", other virtual machines) took while we measured."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "machine": (user + nice + system + irq + softirq + steal) / tick,
        "own": sum(r.ru_utime + r.ru_stime for r in own),
        "steal": steal / tick,
    }


def interference(before: dict[str, float] | None, after: dict[str, float] | None, wall: float) -> dict[str, float]:
    """Average number of cores other processes / VMs kept busy between two `cpu_seconds` readings."""
    if before is None or after is None or wall <= 0:
        return {}
    other = (after["machine"] - before["machine"]) - (after["own"] - before["own"])
    return {"other_cores": max(0.0, other) / wall, "steal_cores": (after["steal"] - before["steal"]) / wall}
