"""GRPO step benchmark: rlvr vs TRL's GRPOTrainer, side by side, against the FLOP roofline (issue 7).

    python bench/grpo_bench.py [--steps N] [--rounds R] [--quick] [--device cpu|cuda] [--json OUT]

Builds the benchmark model on the spot (CPU: the "33m" Llama-style tiny model, hidden 512, 8 layers,
8 heads, intermediate 2048, character vocabulary; CUDA: a ~0.5B Qwen2-shaped random-init model),
writes it to a temporary HF directory, and runs each side in its own subprocess, alternating
rlvr / TRL fp32 / TRL bf16 for R rounds, so that peak RSS is per side and slow drift on a shared
machine hits both sides alike.  Every side does the same work: 4 prompts x 8 samples x 128 new
tokens at fixed length, beta 0.04, one update per batch (mu = 1), the same lr and the same trivial
reward.  Then the matmul peak (bf16 and fp32) is measured and the GRPO step's FLOPs give a
step-time lower bound (see roofline.py), and generation throughput is compared (HF `generate`
fp32 / bf16 autocast, rlvr's engine, vLLM when installed).  The last line printed is
`speedup_vs_trl=<TRL best median step / rlvr median step>` (`nan` when a side could not run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]
from _common import Spec, build_model_dir, cpu_seconds, interference, make_prompts, median  # noqa: E402
from roofline import Shape, generate_bound_s, grpo_step_flops  # noqa: E402

PHASES = ("generate", "score", "reference", "old_logprobs", "train", "sync", "step")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="measured steps per run (after --warmup)")
    p.add_argument("--warmup", type=int, default=None, help="unmeasured steps per run (default 1, quick 0)")
    p.add_argument("--rounds", type=int, default=None, help="rlvr/TRL alternations (default 2, quick 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1m model, 2x4x16 tokens, TRL bf16 only")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--trl", default=None, help="TRL settings, comma-separated (default fp32,bf16; quick bf16)"
    )
    p.add_argument("--no-generate", action="store_true", help="skip the generation-throughput comparison")
    p.add_argument("--vllm-python", default=os.environ.get("RLVR_VLLM_PYTHON"),
                   help="python of an environment with vLLM (e.g. /work/venv-vllm/bin/python): adds the side "
                        "rlvr-vllm (rlvr with rollout.engine = vllm) and vLLM's generation throughput")  # fmt: skip
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--verbose", action="store_true", help="show the sides' own output")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    if args.trl is None:  # TRL's best setting: bf16 where the hardware multiplies bf16 natively
        from rlvr.models.precision import EMULATED, bf16_is_fast

        native = bf16_is_fast(args.device)
        args.trl = [("bf16" if native else "fp32")] if args.quick else (["fp32", "bf16"] if native else ["fp32"])
        if not native:
            print(f"{EMULATED}: TRL runs fp32 only, rlvr runs fp32 (bf16_autocast = auto); "
                  "pass --trl fp32,bf16 to time the emulated path anyway", flush=True)  # fmt: skip
    else:
        args.trl = args.trl.split(",")
    return args


def make_spec(args: argparse.Namespace, tmp: Path) -> Spec:
    preset = "qwen2-0.5b" if args.device == "cuda" else ("1m" if args.quick else "33m")
    model_dir = build_model_dir(tmp / "model", preset, seed=0)
    spec = Spec(
        model_dir=str(model_dir), preset=preset, device=args.device, steps=args.steps, warmup=args.warmup
    )
    if args.quick:  # a smoke run: 2 prompts x 4 samples x 16 tokens
        spec.prompts_per_step, spec.group_size, spec.new_tokens = 2, 4, 16
    spec.prompts = make_prompts(spec.total_steps * spec.prompts_per_step, spec.seed)
    return spec


def run_side(script: str, spec_path: Path, out: Path, extra: list[str], verbose: bool,
             python: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Run one side in a fresh interpreter; its JSON result, or an "error" entry with its output tail."""
    cmd = [python or sys.executable, str(BENCH / script), str(spec_path), str(out), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"  running {script} {' '.join(extra)}".rstrip(), flush=True)
    proc = subprocess.run(cmd, env=env, text=True, capture_output=not verbose)
    if proc.returncode != 0 or not out.exists():
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-3000:]
        return {"error": f"{script} {' '.join(extra)} exited {proc.returncode}", "output_tail": tail}
    return json.loads(out.read_text())


def run_rounds(args: argparse.Namespace, spec_path: Path, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """Alternate the sides: rlvr, TRL settings..., rlvr, TRL settings...; results per side name."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        jobs = [("rlvr", "_rlvr_side.py", [], None)] + [
            (f"trl-{s}", "_trl_side.py", ["--setting", s], None) for s in args.trl
        ]
        if args.vllm_python:  # vLLM's CPU build needs its own environment (transformers < 5.20)
            jobs.insert(1, ("rlvr-vllm", "_rlvr_side.py", ["--engine", "vllm"], args.vllm_python))
        for name, script, extra, python in jobs:
            res = run_side(script, spec_path, tmp / f"{name}-{r}.json", extra, args.verbose, python)
            runs.setdefault(name, []).append(res)
            if "error" in res:
                print(f"    {res['error']}\n{res['output_tail']}", file=sys.stderr)
    return runs


def summarise_side(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the measured steps of every round; medians per phase, max peak RSS, fixed-length check."""
    for key in ("error", "skipped"):
        bad = [r[key] for r in results if key in r]
        if bad:
            return {key: bad[0]}
    steps = [s for r in results for s in r["steps"]]
    phases = [p for p in PHASES if any(p in s for s in steps)]
    return {
        "median": {p: median([s.get(p, 0.0) for s in steps]) for p in phases},
        "min_step": min(s["step"] for s in steps),  # the least-disturbed step, for a busy machine
        "n_steps": len(steps),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "fixed_length_ok": all(r["fixed_length_ok"] for r in results),
        "completion_len": results[0]["completion_len"],
    }


def roofline(spec: Spec, peaks: dict[str, Any]) -> dict[str, Any]:
    """FLOPs of one step per phase and the lower bounds at the measured bf16 / fp32 peaks."""
    from transformers import AutoConfig, AutoTokenizer

    shape = Shape.from_config(AutoConfig.from_pretrained(spec.model_dir))
    tok = AutoTokenizer.from_pretrained(spec.model_dir)
    prompt_len = max(len(tok(p)["input_ids"]) for p in spec.prompts)
    flops = grpo_step_flops(shape, prompt_len, spec.prompts_per_step, spec.group_size, spec.new_tokens)
    out: dict[str, Any] = {"prompt_len": prompt_len, "matmul_params": shape.matmul_params, "flops": flops}
    for dtype in ("bf16", "fp32"):
        peak = peaks.get(dtype, {}).get("peak")
        out[f"peak_{dtype}"] = peak
        out[f"bound_s_{dtype}"] = flops["step"] / peak if peak else None
    bw, peak = peaks.get("read_bandwidth"), peaks.get("fp32", {}).get("peak")
    out["read_bandwidth"] = bw
    if bw and peak:  # fp32 decoding with the memory ceiling too (see roofline.py)
        gen = generate_bound_s(shape, prompt_len, spec.prompts_per_step, spec.group_size, spec.new_tokens, peak, bw)
        out["generate_bound_s_fp32_bw"] = gen
        out["bound_s_fp32_bw"] = gen + (flops["reference"] + flops["train"]) / peak
    return out


def measure_peaks(spec: Spec, tmp: Path, quick: bool) -> dict[str, Any]:
    """Matmul peaks in their own subprocess (roofline.py), with the model's token count as rows."""
    out = tmp / "peaks.json"
    rows = spec.prompts_per_step * spec.group_size
    cmd = [sys.executable, str(BENCH / "roofline.py"), "--model-dir", spec.model_dir, "--device", spec.device,
           "--tokens", str(rows * (40 + spec.new_tokens)), "--rows", str(rows),
           "--seconds", "0.1" if quick else "0.5", "--json", str(out)]  # fmt: skip
    print("  measuring matmul peaks", flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    if proc.returncode != 0:
        print(f"    roofline.py exited {proc.returncode}:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {}
    return json.loads(out.read_text())["peaks"]


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:.2f}{unit}"


def print_table(spec: Spec, sides: dict[str, dict[str, Any]], rlvr_step: float | None) -> None:
    print(f"\nGRPO step: {spec.preset} model, {spec.prompts_per_step} prompts x {spec.group_size} samples x "
          f"{spec.new_tokens} tokens (fixed), beta {spec.beta}, lr {spec.lr}, mu 1, {spec.device}; "
          f"median seconds over measured steps")  # fmt: skip
    cols = [p for p in PHASES if any(p in s.get("median", {}) for s in sides.values())]
    print(
        f"{'side':<10}"
        + "".join(f"{c:>13}" for c in cols)
        + f"{'step/rlvr':>11}{'min step':>10}{'peak RSS':>11}{'fixed len':>10}"
    )
    for name, s in sides.items():
        if "median" not in s:
            print(f"{name:<10}  {s.get('skipped') or s.get('error')}")
            continue
        m = s["median"]
        ratio = m["step"] / rlvr_step if rlvr_step else None
        print(f"{name:<10}" + "".join(f"{_fmt(m.get(c)):>13}" for c in cols)
              + f"{_fmt(ratio, 'x'):>11}{_fmt(s['min_step']):>10}{s['peak_rss_mb']:>8.0f} MB"
              + f"{s['fixed_length_ok']!s:>10}")  # fmt: skip


def print_roofline(roof: dict[str, Any], rlvr_step: float | None) -> dict[str, Any]:
    f = roof["flops"]
    print(f"\nRoofline: {f['step'] / 1e12:.3f} TFLOP per step (generate {f['generate'] / 1e12:.3f}, reference "
          f"{f['reference'] / 1e12:.3f}, train {f['train'] / 1e12:.3f}; {roof['matmul_params'] / 1e6:.1f}M matmul "
          f"params, prompt {roof['prompt_len']} tokens)")  # fmt: skip
    out: dict[str, Any] = {}
    for dtype in ("bf16", "fp32"):
        peak, bound = roof[f"peak_{dtype}"], roof[f"bound_s_{dtype}"]
        if peak is None:
            continue
        print(f"  {dtype} matmul peak {peak / 1e12:.3f} TFLOP/s -> step lower bound {bound:.2f} s")
    dtype = "bf16" if roof.get("bound_s_bf16") else "fp32"  # the fastest dtype the hardware has natively
    bound = roof.get(f"bound_s_{dtype}")
    if rlvr_step and bound:
        out["rlvr_x_roofline"], out["roofline_dtype"] = rlvr_step / bound, dtype
        print(f"  rlvr step = {out['rlvr_x_roofline']:.2f}x the {dtype} roofline (target <= 1.3x)")
    if dtype == "fp32" and roof.get("bound_s_fp32_bw"):
        bw, gen, whole = roof["read_bandwidth"], roof["generate_bound_s_fp32_bw"], roof["bound_s_fp32_bw"]
        print(f"  with the memory ceiling for decoding (read bandwidth {bw / 1e9:.1f} GB/s; every decode step reads all "
              f"weights and the KV cache): generate >= {gen:.2f} s, step lower bound {whole:.2f} s")  # fmt: skip
        if rlvr_step:
            out["rlvr_x_roofline_bw"] = rlvr_step / whole
            print(f"  rlvr step = {out['rlvr_x_roofline_bw']:.2f}x the compute + bandwidth roofline")
    return out


def print_generation(gen: dict[str, Any], spec: Spec) -> None:
    rows = spec.prompts_per_step * spec.group_size
    print(f"\nGeneration throughput ({rows} rows x {spec.new_tokens} tokens, generated tokens/s):")
    hf = {n: gen.get(n, {}).get("tokens_per_s") for n in ("hf_fp32", "hf_bf16")}
    base_name = max((n for n in hf if hf[n]), key=lambda n: hf[n], default=None)  # HF's best setting
    for name in ("hf_fp32", "hf_bf16", "rlvr", "vllm"):
        r = gen.get(name, {})
        if "tokens_per_s" in r:
            base = hf[base_name] if base_name else None
            vs = f"  ({r['tokens_per_s'] / base:.2f}x {base_name})" if base and name != base_name else ""
            print(f"  {name:<8} {r['tokens_per_s']:>9.0f}{vs}")
            if r.get("profile"):
                parts = ", ".join(f"{g} {f:.0%}" for g, f in r["profile"].items())
                print(f"           where its time goes (self CPU, one run under torch.profiler): {parts}")
        else:
            print(f"  {name:<8} skipped: {r.get('skipped') or gen.get('error', 'not run')}")


def print_load(load: dict[str, Any]) -> None:
    """What else ran during the benchmark: timings are only comparable on an otherwise idle machine.

    Where /proc/stat exists, the cores other processes (and, as CPU steal, other VMs) kept busy while
    the benchmark ran, which the benchmark's own work does not inflate; elsewhere the load average."""
    if "other_cores" in load:
        busy = load["other_cores"] > 0.25
        what = (f"other processes kept {load['other_cores']:.2f} of {load['cpus']} cores busy during the run "
                f"(steal {load['steal_cores']:.2f})")  # fmt: skip
    else:
        busy = max(load["before"], load["after"]) > 0.5 * (load["cpus"] or 1)
        what = f"load average {load['before']:.1f} -> {load['after']:.1f} on {load['cpus']} CPUs"
    note = "  BUSY MACHINE: timings are unreliable, rerun when idle" if busy else ""
    print(f"\n{what}{note}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp_name:
        tmp = Path(tmp_name)
        spec = make_spec(args, tmp)
        spec_path = tmp / "spec.json"
        spec.save(spec_path)
        load_before, cpu_before, t_before = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
        print(f"benchmark model {spec.preset} in {spec.model_dir}; {args.rounds} round(s), "
              f"{spec.warmup} warm-up + {spec.steps} measured steps per run", flush=True)  # fmt: skip
        peaks = measure_peaks(spec, tmp, args.quick)
        runs = run_rounds(args, spec_path, tmp)
        gen = (
            {}
            if args.no_generate
            else run_side("_gen_side.py", spec_path, tmp / "gen.json", [], args.verbose)
        )
        if gen and args.vllm_python and "error" not in gen:
            vgen = run_side("_gen_side.py", spec_path, tmp / "gen-vllm.json", ["--which", "vllm"], args.verbose,
                            args.vllm_python)  # fmt: skip
            gen["vllm"] = vgen.get("vllm", vgen)
        roof = roofline(spec, peaks)
    load = {"before": load_before, "after": os.getloadavg()[0], "cpus": os.cpu_count(),
            **interference(cpu_before, cpu_seconds(), time.perf_counter() - t_before)}  # fmt: skip
    sides = {name: summarise_side(results) for name, results in runs.items()}
    rlvr_step = sides.get("rlvr", {}).get("median", {}).get("step")
    trl_steps = [s["median"]["step"] for n, s in sides.items() if n.startswith("trl") and "median" in s]
    speedup = min(trl_steps) / rlvr_step if rlvr_step and trl_steps else math.nan
    print_table(spec, sides, rlvr_step)
    extra = print_roofline(roof, rlvr_step)
    if gen:
        print_generation(gen, spec)
    print_load(load)
    if args.json:
        report = {"spec": {**spec.__dict__, "prompts": spec.prompts[:4]}, "sides": sides, "runs": runs,
                  "peaks": peaks, "roofline": roof, **extra, "generation": gen, "load": load,
                  "speedup_vs_trl": speedup}  # fmt: skip
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    if math.isnan(speedup):
        why = sides.get("rlvr", {}).get("skipped") or "a side failed (see above)"
        print(f"\nno speedup figure: {why}")
    print(f"speedup_vs_trl={speedup:.2f}" if not math.isnan(speedup) else "speedup_vs_trl=nan")
    failed = [n for n, s in sides.items() if "error" in s]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
