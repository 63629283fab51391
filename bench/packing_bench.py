"""RL micro-batch packing (`optim.packing`) on the demo's own variable-length completions.

    python bench/packing_bench.py                      # quick demo plan: SFT cold start, then 3 sampled GRPO batches
    python bench/packing_bench.py --run runs/demo      # the SFT checkpoint of an `rlvr demo` run (no SFT here)
    python bench/packing_bench.py --presets 1m,5m,33m  # also time larger random-init models on the same tokens

The batches are what the demo's GRPO step trains on: its task, its SFT model, its engine and sampling
settings (16 prompts x 8 samples).  For each batch and model, the training phase (the objective-blind
`optimizer_update`: forward, backward, clipping; the optimizer step itself is skipped so every
repetition sees the same weights) and the no-grad forward (what the old-logprob pass at mu > 1, and a
reference model that went through the trainer, run) are timed with packing off and on, alternately,
in one process; medians and their ratio are printed, with the padding of each layout.  "slots" counts
the token positions the forward really computes (unpacked: each distinct prompt once per micro-batch,
as the shared-prefix path runs it, plus every row's padded completion; packed: the rows).  The loss
of both layouts is printed too: they must agree to fp32 rounding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlvr.demo.plan import PLANS, rl_config, sft_config, task_kwargs
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.tasks import make_task
from rlvr.trainer import build, train_sft
from rlvr.trainer.batching import micro_batches, padding_fraction
from rlvr.trainer.forward import completion_logprobs_no_grad
from rlvr.trainer.optim import build_optimizer
from rlvr.trainer.rl import build_rl_stage
from rlvr.trainer.rl_packing import packed_micro_batches
from rlvr.trainer.rl_steps import collect_groups, group_advantages, to_samples
from rlvr.trainer.run import Timer
from rlvr.trainer.step import optimizer_update


def sft_model(plan, seed: int, run: Path | None, tmp: Path):
    """The demo's SFT cold-start model: from `run`'s last SFT checkpoint, or trained here."""
    task, tok = make_task(plan.task, **task_kwargs(plan, seed)), build_tokenizer()
    model = build_model(plan.preset, tok, seed)
    if run is not None:
        from safetensors.torch import load_file

        ckpt = sorted((run / "sft" / "checkpoints").glob("step_*"))[-1]
        model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)
        model.tie_weights()
    else:
        t = time.perf_counter()
        train_sft(sft_config(plan, tmp / "sft", seed, progress=False), model=model, tokenizer=tok, task=task)
        print(f"SFT cold start ({plan.sft_steps} steps): {time.perf_counter() - t:.0f} s", flush=True)
    return model, tok, task


def sample_batches(plan, seed: int, model, tok, task, n: int, tmp: Path):
    """`n` GRPO batches of the demo's RL step (its engine, sampling and advantages), as trainer samples."""
    config = rl_config(plan, tmp / "rl", seed, progress=False)
    stage = build_rl_stage(config, model=model, tokenizer=tok, task=task)
    out = []
    for step in range(1, n + 1):
        groups, _ = collect_groups(stage, step, Timer())
        rewards = torch.tensor([s.total for g in groups for s in g.scores], dtype=torch.float32)
        adv, _ = group_advantages(stage.advantage, groups, rewards)
        out.append(to_samples(groups, adv, None, mask_truncated=False))
    return config, out


def synthetic(samples, lo: int, hi: int, *, seed: int):
    """The same prompts and advantages, completions of random tokens with lengths uniform in [lo, hi]."""
    import dataclasses
    import random

    rng = random.Random(seed)
    vocab = range(4, 100)
    return [dataclasses.replace(s, completion_ids=tuple(rng.choice(vocab) for _ in range(rng.randint(lo, hi))),
                                sampler_logprobs=None) for s in samples]  # fmt: skip


def slots(batches) -> int:
    """Token positions the forward computes (see the module docstring)."""
    total = 0
    for mb in batches:
        if mb.packed is not None:
            total += mb.packed.input_ids.numel()
        elif mb.shares_prefixes:
            total += mb.prefix_rows.numel() * mb.prompt_len + mb.targets.numel()
        else:
            total += mb.input_ids.numel()
    return total


def time_layouts(model, config, samples, pad: int, reps: int, pack_len: int | None) -> dict[str, dict[str, float]]:
    o = config.optim
    layouts = {
        "off": micro_batches(samples, o.micro_batch_size, pad, bucket=o.bucket_by_length),
        "on": packed_micro_batches(samples, o.micro_batch_size, pad, row_len=pack_len or o.pack_len),
    }
    objective = build.build_objective(config)
    optim = build_optimizer(model, o)
    optim.step = lambda: None  # the same weights for every repetition
    times: dict[str, dict[str, list[float]]] = {k: {"train": [], "nograd": []} for k in layouts}
    loss: dict[str, float] = {}
    for _ in range(reps):
        for name, batches in layouts.items():
            model.train()
            t = time.perf_counter()
            update = optimizer_update(model, optim, batches, objective, temperature=1.0, autocast=False,
                                      grad_clip=o.grad_clip, lr_factor=1.0)  # fmt: skip
            times[name]["train"].append(time.perf_counter() - t)
            loss[name] = update["loss"]
            t = time.perf_counter()
            for mb in batches:
                completion_logprobs_no_grad(model, mb, autocast=False)
            times[name]["nograd"].append(time.perf_counter() - t)
    return {
        name: {"train": statistics.median(v["train"]), "nograd": statistics.median(v["nograd"]),
               "padding_frac": padding_fraction(layouts[name]), "slots": slots(layouts[name]),
               "micro_batches": len(layouts[name]), "loss": loss[name]}
        for name, v in times.items()
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plan", choices=sorted(PLANS), default="quick")
    ap.add_argument("--run", type=Path, default=None, help="an `rlvr demo` run directory (its SFT checkpoint)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--presets", default="", help="comma-separated extra model presets timed on the same tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--synthetic-lengths", default=None, metavar="LO:HI",
                    help="replace each sampled completion by random tokens of a length uniform in [LO, HI] "
                         "(a stand-in for tasks whose completion lengths vary widely; labelled in the output)")
    ap.add_argument("--pack-len", type=int, default=None, help="optim.pack_len (default: rl_packing.default_row_len)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = PLANS[args.plan]
    with tempfile.TemporaryDirectory() as tmp:
        model, tok, task = sft_model(plan, args.seed, args.run, Path(tmp))
        config, batches = sample_batches(plan, args.seed, model, tok, task, args.batches, Path(tmp))
    if args.synthetic_lengths:
        lo, hi = map(int, args.synthetic_lengths.split(":"))
        batches = [synthetic(b, lo, hi, seed=args.seed + k) for k, b in enumerate(batches)]
        print(f"SYNTHETIC completion lengths, uniform in [{args.synthetic_lengths.replace(':', ', ')}]")
    models = {plan.preset + " (demo SFT)": model}
    for preset in filter(None, args.presets.split(",")):
        models[preset] = build_model(preset, tok, args.seed)
    for m in models.values():
        build.set_attention(m, config.model.attn_implementation)
    print(f"plan {args.plan}: {plan.prompts_per_step} prompts x {plan.group_size} samples, micro_batch_size "
          f"{config.optim.micro_batch_size}, max_new_tokens {plan.max_new_tokens}, threads {args.threads}")
    header = (f"{'model':16s} {'batch':>5s} {'len min/mean/max':>16s} {'pad off':>7s} {'pad on':>6s} {'slots off':>9s} "
              f"{'slots on':>8s} {'mb':>5s} {'train off':>9s} {'train on':>8s} {'ratio':>5s} {'fwd off':>7s} "
              f"{'fwd on':>6s} {'ratio':>5s} {'|d loss|':>8s}")  # fmt: skip
    print(header)
    ratios: dict[str, list[float]] = {}
    for name, m in models.items():
        for b, samples in enumerate(batches):
            r = time_layouts(m, config, samples, tok.pad_token_id, args.reps, args.pack_len)
            lengths = [len(s.completion_ids) for s in samples]
            off, on = r["off"], r["on"]
            ratios.setdefault(name, []).append(off["train"] / on["train"])
            print(f"{name:16s} {b + 1:5d} {min(lengths):4d}/{statistics.mean(lengths):5.1f}/{max(lengths):4d} "
                  f"{off['padding_frac']:7.3f} {on['padding_frac']:6.3f} {off['slots']:9d} {on['slots']:8d} "
                  f"{off['micro_batches']:2d}/{on['micro_batches']:<2d} {off['train']:9.3f} {on['train']:8.3f} "
                  f"{off['train'] / on['train']:5.2f} {off['nograd']:7.3f} {on['nograd']:6.3f} "
                  f"{off['nograd'] / on['nograd']:5.2f} {abs(off['loss'] - on['loss']):8.1e}", flush=True)  # fmt: skip
    for name, rs in ratios.items():
        print(f"train_speedup_packing[{name}]={statistics.median(rs):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
