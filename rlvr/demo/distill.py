"""`rlvr demo --recipe distill`: DeepSeek-R1's distillation finding (§4.1) at laptop scale, three arms.

    teacher (once, cached across arms and seeds): the larger preset, SFT cold start + GRPO (the demo's
        recipe), then rejection sampling of the train split (k per prompt, verified, shortest first)
    per seed: the smaller student preset's SFT cold start on noisy traces (shared by the three arms), then
        (a) rl        GRPO on the student from that start
        (b) sft       SFT on the teacher's rejection-sampled traces
        (c) on_policy on-policy distillation: the student samples, the teacher scores every token
    each arm: `arm_steps` optimizer steps of `samples_per_step` sequences (equal student compute; the
    trained-token counts are reported), then the held-out evaluation of the R1 demo (same problems,
    same sampling).  summary.json has each arm's pass@1 per seed and its mean with the standard error
    over seeds; report.html shows the table.

The task's splits are fixed (task seed 0) so every seed and the teacher share one held-out set; the
seed varies the student's initialisation and all sampling.  Whether distillation beats RL on the
student at this scale is the experiment's result, not an assumption of the code.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.config import parse_config
from rlvr.data.io import write_json as write_any_json
from rlvr.demo.plan import DemoPlan, rl_config, sft_config
from rlvr.demo.run import _check_out_dir, _quiet_threads, _stopped, held_out_eval, write_json
from rlvr.distill.rejection import RejectionSettings, rejection_sample, write_sft_rows
from rlvr.evaluation.runner import weights_fingerprint
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.provenance import provenance
from rlvr.report import write_report
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.hf import HFEngine
from rlvr.tasks import make_task
from rlvr.trainer import train_distill, train_rl, train_sft

ARMS = ("rl", "sft", "on_policy")
TASK_SEED = 0


@dataclass(frozen=True)
class DistillPlan:
    """The recipe's budgets; `base` holds the task, evaluation and GRPO settings of the R1 demo."""

    base: DemoPlan = field(default_factory=DemoPlan)
    teacher_preset: str = "5m"
    teacher_sft_steps: int = 800
    teacher_rl_steps: int = 40
    student_preset: str = "1m"
    student_sft_steps: int = 800
    arm_steps: int = 50  # optimizer steps per arm, each over base.prompts_per_step * base.group_size sequences
    traces_k: int = 4  # teacher samples per train prompt
    traces_per_prompt: int = 2
    sft_arm_lr: float = 1e-4
    distill_lr: float = 5e-5

    @property
    def samples_per_step(self) -> int:
        return self.base.prompts_per_step * self.base.group_size

    def teacher_key(self) -> str:
        """What the cached teacher depends on (not the student's settings, not the seed)."""
        b = self.base
        keys = {"task": b.task, "kwargs": b.task_kwargs, "n_train": b.n_train, "n_test": b.n_test, "preset": self.teacher_preset,
                "sft": [self.teacher_sft_steps, b.sft_batch, b.sft_micro_batch, b.sft_lr, b.sft_noise], "rl": [self.teacher_rl_steps,
                b.rl_lr, b.group_size, b.prompts_per_step, b.max_new_tokens, b.micro_batch_size, b.rollout_batch], "traces": [self.traces_k, self.traces_per_prompt], "v": 1}  # fmt: skip
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


DISTILL_PLANS = {
    "full": DistillPlan(),
    "quick": DistillPlan(
        base=DemoPlan(task_kwargs={"digits": 2, "ops": "+"}, n_train=200, n_test=32, sft_steps=150, rl_steps=0,
                      max_new_tokens=40, rl_eval_every=0, eval_samples=2, group_size=4, prompts_per_step=8,
                      micro_batch_size=32),
        teacher_sft_steps=200, teacher_rl_steps=3, student_sft_steps=150, arm_steps=4, traces_k=2,
        traces_per_prompt=1,
    ),
}


def _task(plan: DistillPlan) -> Any:
    b = plan.base
    return make_task(b.task, **b.task_kwargs, seed=TASK_SEED, n_train=b.n_train, n_test=b.n_test)


def _base_for(plan: DistillPlan, preset: str, sft_steps: int, rl_steps: int) -> DemoPlan:
    return dataclasses.replace(plan.base, preset=preset, sft_steps=sft_steps, rl_steps=rl_steps, rl_eval_every=0)


def _seed_cfg(cfg: Any, seed: int) -> Any:
    """A demo config with the task's splits pinned to TASK_SEED (the plan helpers tie them to the seed)."""
    data = cfg.model_dump(mode="json")
    for t in data.get("tasks", [data.get("task")]):
        if t:
            t["kwargs"]["seed"] = TASK_SEED
    data["model"]["seed"] = seed
    return parse_config(data, kind=cfg.kind)


def _eval(model: Any, tok: Any, task: Any, plan: DemoPlan, seed: int, path: Path) -> dict[str, float]:
    """The R1 demo's held-out evaluation; its file then names the task seed actually used (TASK_SEED)."""
    metrics = held_out_eval(model, tok, task, plan, seed, path)
    saved = json.loads(path.read_text())
    saved["config"]["task_kwargs"]["seed"] = TASK_SEED
    write_any_json(path, saved)  # NaN-tolerant like the evaluation file itself
    return metrics


def teacher(plan: DistillPlan, cache: Path, progress: bool, say: Any) -> tuple[Path, Path, dict[str, Any]]:
    """(teacher model dir, traces.jsonl, teacher info) from the cache, training them on a miss."""
    root = cache / plan.teacher_key()
    if (root / "done.json").is_file():
        say(f"teacher: cached in {root}")
        return root / "model", root / "traces.jsonl", json.loads((root / "done.json").read_text())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0, task, tok = time.perf_counter(), _task(plan), build_tokenizer()
    base = _base_for(plan, plan.teacher_preset, plan.teacher_sft_steps, plan.teacher_rl_steps)
    model = build_model(plan.teacher_preset, tok, 0)
    say(f"teacher: {plan.teacher_preset} SFT {plan.teacher_sft_steps} steps + GRPO {plan.teacher_rl_steps} steps")
    _stopped(train_sft(_seed_cfg(sft_config(base, root / "sft", 0, progress=progress), 0), model=model, tokenizer=tok,
                       task=task), "teacher sft", root)  # fmt: skip
    if plan.teacher_rl_steps:
        _stopped(train_rl(_seed_cfg(rl_config(base, root / "rl", 0, progress=progress), 0), model=model.train(),
                          tokenizer=tok, task=task), "teacher grpo", root)  # fmt: skip
    model.eval().save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    evals = _eval(model, tok, task, base, 0, root / "eval.json")
    say(f"teacher: held-out pass@1 {evals['pass@1']:.1%}; rejection sampling {plan.traces_k} per train prompt")
    stop = (tok.eos_token_id,)
    result = rejection_sample(
        HFEngine(model, tok), tok, task, list(task.examples("train")), teacher=str(root / "model"),
        settings=RejectionSettings(k=plan.traces_k, select="shortest", max_per_prompt=plan.traces_per_prompt),
        params=SamplingParams(temperature=1.0, max_new_tokens=plan.base.max_new_tokens, stop_token_ids=stop),
        cache_path=root / "traces.cache.jsonl", teacher_fingerprint=weights_fingerprint(model),
    )  # fmt: skip
    write_sft_rows(result, root / "traces.jsonl")
    info = {"eval": evals, "traces": result.summary(), "seconds": round(time.perf_counter() - t0, 1),
            "fingerprint": weights_fingerprint(model), "preset": plan.teacher_preset}  # fmt: skip
    write_json(root / "done.json", info)
    return root / "model", root / "traces.jsonl", info


def _arm_config(arm: str, plan: DistillPlan, out: Path, seed: int, teacher_dir: Path, traces: Path, progress: bool) -> Any:
    b = _base_for(plan, plan.student_preset, plan.student_sft_steps, plan.arm_steps)
    run = {"out_dir": str(out), "steps": plan.arm_steps, "seed": seed, "progress": progress, "tensorboard": False,
           "threads": b.threads, "samples_every": 5}  # fmt: skip
    common = {"model": {"preset": plan.student_preset, "seed": seed}, "task": {"name": b.task, "kwargs": {
        **b.task_kwargs, "seed": TASK_SEED, "n_train": b.n_train, "n_test": b.n_test}}}  # fmt: skip
    if arm == "rl":
        return _seed_cfg(rl_config(b, out, seed, progress=progress), seed)
    if arm == "sft":
        return parse_config({**common, "kind": "sft", "data": {"path": str(traces), "batch_size": plan.samples_per_step},
                             "optim": {"lr": plan.sft_arm_lr, "micro_batch_size": b.micro_batch_size},
                             "run": {**run, "samples_every": 0}}, kind="sft")  # fmt: skip
    return parse_config({**common, "kind": "distill", "teacher": {"path": str(teacher_dir)},
                         "distill": {"mode": "on_policy", "estimator": "sampled"},
                         "rollout": {"group_size": b.group_size, "prompts_per_step": b.prompts_per_step,
                                     "temperature": b.temperature, "max_new_tokens": b.max_new_tokens},
                         "optim": {"lr": plan.distill_lr, "micro_batch_size": b.micro_batch_size}, "run": run},
                        kind="distill")  # fmt: skip


TRAIN = {"rl": train_rl, "sft": train_sft, "on_policy": train_distill}


def _trained_tokens(run_dir: Path) -> int:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return round(sum(r.get("tokens_per_s", 0.0) * r.get("time/step", 0.0) for r in rows))


def one_seed(plan: DistillPlan, out: Path, seed: int, teacher_dir: Path, traces: Path, progress: bool,
             say: Any) -> dict[str, Any]:  # fmt: skip
    """The student's SFT start, then the three arms from copies of it; held-out metrics per arm."""
    task, tok = _task(plan), build_tokenizer()
    b = _base_for(plan, plan.student_preset, plan.student_sft_steps, plan.arm_steps)
    start = build_model(plan.student_preset, tok, seed)
    say(f"seed {seed}: student {plan.student_preset} SFT cold start, {plan.student_sft_steps} steps")
    _stopped(train_sft(_seed_cfg(sft_config(b, out / "start", seed, progress=progress), seed), model=start,
                       tokenizer=tok, task=task), "student sft", out)  # fmt: skip
    row: dict[str, Any] = {"start": _eval(start.eval(), tok, task, b, seed, out / "eval" / "start.json")}
    for arm in ARMS:
        t0 = time.perf_counter()
        model = copy.deepcopy(start).train()
        config = _arm_config(arm, plan, out / arm, seed, teacher_dir, traces, progress)
        _stopped(TRAIN[arm](config, model=model, tokenizer=tok, task=task), arm, out)
        metrics = _eval(model.eval(), tok, task, b, seed, out / "eval" / f"{arm}.json")
        row[arm] = {**metrics, "trained_tokens": _trained_tokens(out / arm), "seconds": round(time.perf_counter() - t0, 1)}
        say(f"seed {seed}: {arm}: pass@1 {metrics['pass@1']:.1%} (start {row['start']['pass@1']:.1%})")
    return row


def mean_se(values: list[float]) -> dict[str, float | None]:
    """Mean and standard error of the mean over seeds (None with one seed)."""
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return {"mean": mean, "se": se, "n": n}


def arms_summary(rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for arm in ("start", *ARMS):
        out[arm] = {key: mean_se([r[arm][key] for r in rows.values()]) for key in ("pass@1", "greedy_pass@1")}
        out[arm]["per_seed"] = {str(s): r[arm]["pass@1"] for s, r in rows.items()}
        if arm != "start":
            out[arm]["trained_tokens"] = mean_se([float(r[arm]["trained_tokens"]) for r in rows.values()])["mean"]
    return out


def table(arms: dict[str, Any]) -> str:
    lines = [f"{'arm':<10} {'pass@1 (mean ± se)':>22} {'greedy pass@1':>16} {'tokens':>9}  per seed"]
    for arm, a in arms.items():
        p, g = a["pass@1"], a["greedy_pass@1"]
        se = f" ± {100 * p['se']:.1f}" if p["se"] is not None else ""
        seeds = " ".join(f"{100 * v:.1f}" for v in a["per_seed"].values())
        lines.append(f"{arm:<10} {100 * p['mean']:>14.1f}%{se:>7} {100 * g['mean']:>15.1f}% "
                     f"{a.get('trained_tokens', 0):>9.0f}  {seeds}")  # fmt: skip
    return "\n".join(lines)


def run_distill_demo(out_dir: Path, seeds: tuple[int, ...] = (0,), *, quick: bool = False, progress: bool = True,
                     threads: int | None = None, teacher_cache: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """The three-arm experiment (module docstring); writes out_dir/summary.json and report.html."""
    out_dir, plan = Path(out_dir), DISTILL_PLANS["quick" if quick else "full"]
    if threads is not None:
        plan = dataclasses.replace(plan, base=dataclasses.replace(plan.base, threads=threads))
    _check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(teacher_cache) if teacher_cache is not None else out_dir / "teacher_cache"
    t0 = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            print(f"[{round(time.perf_counter() - t0)}s] {message}", flush=True)

    with _quiet_threads(plan.base.threads):
        teacher_dir, traces, info = teacher(plan, cache, progress, say)
        rows, seconds = {}, {}
        for seed in seeds:
            s0 = time.perf_counter()
            rows[seed] = one_seed(plan, out_dir / f"seed_{seed}", seed, teacher_dir, traces, progress, say)
            seconds[str(seed)] = round(time.perf_counter() - s0, 1)
            arms = arms_summary(rows)
            summary = {"recipe": "distill", "plan": "quick" if quick else "full", "seeds": list(rows), "arms": arms,
                       "teacher": {**info, "dir": str(teacher_dir)}, "seed_seconds": seconds,
                       "wall_seconds": round(time.perf_counter() - t0, 1), "k": plan.base.eval_samples,
                       "n_test": plan.base.n_test, "settings": dataclasses.asdict(plan),
                       "provenance": provenance(task=plan.base.task, task_kwargs=plan.base.task_kwargs)}  # fmt: skip
            write_json(out_dir / "summary.json", summary)  # after every seed: a partial run still reports
        report = write_report(out_dir)
    print(table(arms))
    print(f"wall time {round(time.perf_counter() - t0)}s; wrote {out_dir / 'summary.json'} and {report}")
    return summary
