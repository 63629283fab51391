"""The distillation stage (kind = "distill"): logit KD and on-policy distillation on the one loop driver.

    logit:      sequences (data.path pairs or the task's worked solutions) -> micro-batches
    on_policy:  the student samples groups (collect + verify) -> [GRPO advantages of the verifier reward]
    then:       the teacher scores every completion token through `Engine.score` (sampled-token
                logprobs and its top-k candidates) -> one objective-blind update over the micro-batches
                (`distill_update`: student forward over the vocabulary, the composed objective, the
                step's global denominator) -> [weights to the student's rollout engine]

On-policy "sampled": the per-token advantage is kl_weight * (log T(y) - log S(y)) (+ reward_weight x the
sequence's GRPO advantage), filled into the record after the student's forward (mu = 1, so S at sampling
time is the forward's value, detached) and fed to the PPO-clip policy term: the policy gradient of
the sampled reverse KL (`rlvr.distill.losses.reverse_kl_advantage`).  "topk" descends the exact
reverse KL over the teacher's top-k instead (and the reward term, when on, is the policy term).

The student's log-softmax is never materialised over the whole vocabulary: its target and top-k
logprobs and its argmax come from the LM head chunk by chunk (`gathered_logprobs_from_hidden`, the RL
trainer's chunked fp32 projection), so a 150k-token vocabulary costs chunk_size x V, not B x C x V.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rlvr.algorithms import registry
from rlvr.algorithms.aggregate import aggregate, global_denominator
from rlvr.algorithms.compose import Objective, TokenInputs, masked_mean, policy_term
from rlvr.algorithms.logprobs import gathered_logprobs_from_hidden
from rlvr.config import ConfigError, DistillConfig, ModelConfig
from rlvr.distill.losses import KD_LOSSES, Projector, hidden_state_loss, reverse_kl
from rlvr.distill.terms import hard_ce_term, kd_term, sampled_kl_metric
from rlvr.distill.topk import TopKStore, pair_key, vocab_digest
from rlvr.distill.vocab import vocabulary_mismatch
from rlvr.trainer import build
from rlvr.trainer.batching import MicroBatch, micro_batches, padding_fraction
from rlvr.trainer.checkpoint import latest_checkpoint
from rlvr.trainer.data import DataCursor
from rlvr.trainer.driver import run_stage
from rlvr.trainer.forward import completion_hidden, decoder_and_head, maybe_autocast
from rlvr.trainer.optim import Optimizers, build_optimizer, lr_factor
from rlvr.trainer.rl_steps import collect_groups, group_advantages, reward_metrics, sample_rows, to_samples
from rlvr.trainer.run import Callback, RunResult, Timer
from rlvr.trainer.sft import make_samples
from rlvr.trainer.step import Accumulator, apply_gradients
from rlvr.trainer.sync import check_after_update, update_engine


@dataclass(frozen=True, slots=True)
class TeacherTokens:
    """The teacher's view of one micro-batch, `[B, C]` / `[B, C, K]`, zero-padded like the batch."""

    logprobs: Tensor
    topk_ids: Tensor
    topk_logprobs: Tensor


def teacher_tokens(teacher: Any, mb: MicroBatch, rows: Sequence[Any], *, temperature: float, top_k: int) -> TeacherTokens:
    """Score the micro-batch's completions with the teacher engine (`rows`: its samples, in batch order)."""
    scores = teacher.score([s.prompt_ids for s in rows], [s.completion_ids for s in rows],
                           temperature=temperature, top_k=top_k)  # fmt: skip
    B, C = mb.targets.shape
    lp, ids, tlp = torch.zeros(B, C), torch.zeros(B, C, top_k, dtype=torch.long), torch.zeros(B, C, top_k)
    for i, s in enumerate(scores):
        n = len(s.logprobs)
        if n:
            lp[i, :n] = torch.tensor(s.logprobs)
            ids[i, :n] = torch.tensor(s.top_ids)
            tlp[i, :n] = torch.tensor(s.top_logprobs)
    return TeacherTokens(lp, ids, tlp)


def layer_states(body: nn.Module, mb: MicroBatch, layers: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
    """(the last hidden state [B, C, H], the hidden_states[i] [B, C, H] for i in `layers`) at the positions
    that predict the completion tokens."""
    device = next(body.parameters()).device
    out = body(input_ids=mb.input_ids.to(device), attention_mask=mb.attention_mask.to(device),
               position_ids=mb.position_ids.to(device), use_cache=False, output_hidden_states=True)  # fmt: skip
    P, C = mb.prompt_len, mb.targets.shape[1]
    return out.last_hidden_state[:, P - 1 : P - 1 + C], [out.hidden_states[i][:, P - 1 : P - 1 + C] for i in layers]


def student_forward(model: nn.Module, mb: MicroBatch, teacher_ids: Tensor, *, temperature: float, autocast: bool,
                    layers: Sequence[int] = ()) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:  # fmt: skip
    """(logprobs of the targets [B, C], the student's logprobs at the teacher's ids [B, C, K], its argmax
    [B, C], the hidden states of `layers`) at `temperature`, from one chunked pass over the vocabulary."""
    body, weight = decoder_and_head(model)
    with maybe_autocast(autocast, weight.device.type):
        hidden, states = layer_states(body, mb, layers) if layers else (completion_hidden(body, mb), [])
    ids = torch.cat([mb.targets.to(weight.device).unsqueeze(-1), teacher_ids.to(weight.device)], dim=-1)
    logp, argmax = gathered_logprobs_from_hidden(hidden.float(), weight.float(), ids, temperature=temperature)
    return logp[..., 0], logp[..., 1:], argmax, states  # [B, C, 1 + K] -> target, top-k


def feature_loss(stage: DistillStage, mb: MicroBatch, student_states: Sequence[Tensor]) -> Tensor:  # -> [B, C]
    """Mean over the layer map of the per-token hidden-state loss through each pair's projector."""
    d = stage.config.distill
    with torch.no_grad():
        _, teacher_states = layer_states(decoder_and_head(stage.teacher.model)[0], mb, [t for _, t in d.layer_map])
    losses = [hidden_state_loss(s, t, proj, kind=d.feature_loss)
              for s, t, proj in zip(student_states, teacher_states, stage.projectors)]  # fmt: skip
    return torch.stack(losses).mean(0)


def distill_update(stage: DistillStage, batches: Sequence[MicroBatch], teachers: Sequence[TeacherTokens],
                   lr: float) -> dict[str, Any]:  # fmt: skip
    """One optimizer step: per micro-batch, the student forward, the record, the composed objective."""
    d, temperature = stage.config.distill, stage.forward_temperature
    denominator = stage.objective.denominator([mb.loss_mask for mb in batches])
    acc = Accumulator()
    for mb, t in zip(batches, teachers):
        layers = [s for s, _ in d.layer_map] if d.feature_weight else []
        logprobs, topk, argmax, states = student_forward(stage.model, mb, t.topk_ids, temperature=temperature,
                                                         autocast=stage.autocast, layers=layers)  # fmt: skip
        adv = mb.advantages
        if stage.sampled:  # on-policy: log T(y) - log S(y) per token (+ the reward's sequence advantage)
            adv = d.kl_weight * (t.logprobs - logprobs.detach()) + d.reward_weight * mb.advantages[:, None]
        elif d.reward_weight:
            adv = d.reward_weight * mb.advantages
        x = TokenInputs(logprobs=logprobs, old_logprobs=logprobs.detach(), loss_mask=mb.loss_mask, advantages=adv,
                        teacher_logprobs=t.logprobs, teacher_topk_ids=t.topk_ids, teacher_topk_logprobs=t.topk_logprobs,
                        topk_logprobs=topk)  # fmt: skip
        loss, metrics = stage.objective(x, denominator)
        if d.feature_weight:  # the feature term, under the same global denominator
            feat = feature_loss(stage, mb, states)
            loss = loss + d.feature_weight * aggregate(feat, mb.loss_mask, "token_mean", denominator=denominator)
            metrics["distill/feature_loss"] = masked_mean(feat, mb.loss_mask)
        loss.backward()
        metrics["distill/top1_agreement"] = masked_mean((argmax == t.topk_ids[..., 0]).float(), mb.loss_mask)
        acc.add(metrics, weight=float(mb.loss_mask.sum()), loss=float(loss.detach()))
    out: dict[str, Any] = acc.result()
    out["tokens"] = int(sum(int(mb.loss_mask.sum()) for mb in batches))
    out.update(apply_gradients(stage.trainable, stage.optim, stage.config.optim.grad_clip, lr,
                               finite_loss=bool(torch.isfinite(torch.tensor(out["loss"])))))  # fmt: skip
    return out


@dataclass(slots=True)
class DistillStage:
    """Everything the distillation step carries (see the module docstring)."""

    config: DistillConfig
    model: nn.Module
    tokenizer: Any
    task: Any
    teacher: Any  # the teacher's Engine (score only)
    engine: Any  # the student's rollout engine (on_policy), else None (evaluation builds its own)
    optim: Optimizers
    cursor: DataCursor[Any]
    objective: Objective
    collect: Any = None
    projectors: nn.ModuleList = field(default_factory=nn.ModuleList)  # feature matching: one per layer pair
    autocast: bool = False
    top_k: int = 1
    opt_step: int = 0
    warnings: list[str] = field(default_factory=list)
    kind: str = "distill"

    @property
    def trainable(self) -> nn.Module:  # what the optimizer steps and the gradient clip covers
        return nn.ModuleList([self.model, self.projectors]) if len(self.projectors) else self.model

    @property
    def on_policy(self) -> bool:
        return self.config.distill.mode == "on_policy"

    @property
    def sampled(self) -> bool:
        return self.on_policy and self.config.distill.estimator == "sampled"

    @property
    def forward_temperature(self) -> float:  # the sampled-token signal lives at the sampler's temperature
        return self.config.rollout.temperature if self.sampled else 1.0

    def step(self, step: int, timer: Timer) -> dict[str, Any]:
        c, metrics = self.config, {}
        if self.on_policy:  # 1. the student samples; the verifiers grade (reward metrics, GRPO advantages)
            groups, _ = collect_groups(self, step, timer)
            rewards = torch.tensor([s.total for g in groups for s in g.scores], dtype=torch.float32)
            adv, adv_metrics = group_advantages(registry.resolve("advantage", "grpo"), groups, rewards)
            samples = to_samples(groups, adv, None, mask_truncated=False)
            metrics.update({**adv_metrics, **reward_metrics(groups)})
            if c.run.samples_every and step % c.run.samples_every == 0:
                metrics["samples"] = sample_rows(step, groups)
        else:
            samples = self.cursor.take(c.data.batch_size)
        batches = micro_batches(samples, c.optim.micro_batch_size, self.tokenizer.pad_token_id,
                                bucket=c.optim.bucket_by_length)  # fmt: skip
        by_index = {s.index: s for s in samples}
        order = [[by_index[i] for i in mb.index.tolist()] for mb in batches]
        with timer("teacher"):  # 2. the teacher scores every token
            teachers = [teacher_tokens(self.teacher, mb, rows, temperature=self.forward_temperature, top_k=self.top_k)
                        for mb, rows in zip(batches, order)]  # fmt: skip
        with timer("train"):  # 3. one objective-blind update
            self.model.train()
            update = distill_update(self, batches, teachers, lr_factor(self.opt_step, c.optim, c.optimizer_steps))
            self.opt_step += 1
        if self.engine is not None:  # 4. the student's new weights to its rollout engine, checked
            with timer("sync"):
                update_engine(self.engine, self.model, self.opt_step)
                if c.rollout.engine.check_sync:
                    metrics.update(check_after_update(self.engine, self.model, samples, temperature=c.rollout.temperature,
                                                      autocast=self.autocast, pad_id=self.tokenizer.pad_token_id))  # fmt: skip
        metrics.update(update)
        metrics["padding_frac"] = padding_fraction(batches)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"opt_step": self.opt_step, "optimizer": self.optim.state_dict(), "cursor": self.cursor.state_dict(),
                "projectors": self.projectors.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.projectors.load_state_dict(state.get("projectors", {}))
        self.opt_step = state["opt_step"]
        self.optim.load_state_dict(state["optimizer"])
        self.cursor.load_state_dict(state["cursor"])

    def ready(self) -> None:
        if self.engine is not None:
            update_engine(self.engine, self.model, self.opt_step)


def build_distill_objective(config: DistillConfig) -> Objective:
    """The composed objective of `config.distill` (see the module docstring), token mean over the step."""
    d = config.distill
    terms: list[tuple[str, Any, float]] = []
    metric_terms: list[tuple[str, Any]] = []
    policy = policy_term(registry.resolve("objective", "ppo_clip"), {})
    if d.mode == "logit":
        settings = {"temperature": d.temperature, **({"beta": d.beta} if d.loss == "jsd" else {})}
        terms.append(("distill", kd_term(KD_LOSSES[d.loss], settings), 1.0))
        if d.hard_weight:
            terms.append(("hard", hard_ce_term, d.hard_weight))
    elif d.estimator == "sampled":
        terms.append(("policy", policy, 1.0))
        metric_terms.append(("distill", sampled_kl_metric))
    else:
        terms.append(("distill", kd_term(reverse_kl, {}), d.kl_weight))
        if d.reward_weight:
            terms.append(("policy", policy, 1.0))
    return Objective(tuple(terms), lambda pt, m, den: aggregate(pt, m, "token_mean", denominator=den),
                     lambda masks: global_denominator(masks, "token_mean"), metric_terms=tuple(metric_terms))  # fmt: skip


def build_teacher(config: DistillConfig, student_tokenizer: Any, vocab_size: int) -> tuple[nn.Module, Any]:
    """The teacher model and tokenizer; refuses a vocabulary the student does not share (and says why)."""
    t = config.teacher
    path = t.path
    if path is not None and (Path(path) / "checkpoints").is_dir():  # a run directory: its last checkpoint
        path = str(latest_checkpoint(path) or path)
    teacher, tok = build.build_model(ModelConfig(path=path, preset=t.preset, seed=t.seed))
    why = vocabulary_mismatch(student_tokenizer, tok)
    if why is None and teacher.get_output_embeddings().weight.shape[0] != vocab_size:
        why = f"the teacher's LM head has {teacher.get_output_embeddings().weight.shape[0]} rows, the student's {vocab_size}"
    if why is not None:
        raise ConfigError(
            f"teacher: {why}. distill.mode = {config.distill.mode!r} compares the two models' distributions "
            "token by token, which needs one vocabulary. For teacher and student with different tokenizers use "
            "sequence-level distillation: `rlvr distill collect --teacher DIR --task ... --out traces.jsonl`, "
            "then kind = 'sft' with data.path = 'traces.jsonl'; or pick a teacher of the student's family"
        )
    return teacher.eval(), tok


def _file_teacher(config: DistillConfig, samples: Sequence[Any], tokenizer: Any, vocab: int, top_k: int,
                  autocast: bool) -> Any:  # fmt: skip
    """teacher.topk_file as the teacher: scores missing from it are computed with the teacher first."""
    store = TopKStore(config.teacher.topk_file)  # type: ignore[arg-type]
    pairs = [(s.prompt_ids, s.completion_ids) for s in samples]
    if any(pair_key(p, c, 1.0) not in store.rows for p, c in pairs):
        teacher_model, teacher_tok = build_teacher(config, tokenizer, vocab)
        engine = build.reference_engine(teacher_model, teacher_tok, bf16=autocast)
        store.fill(engine, pairs, temperature=1.0, top_k=top_k, vocab=vocab_digest(teacher_tok))
    return store.reader(vocab=vocab_digest(tokenizer))


def _projectors(config: DistillConfig, model: nn.Module, teacher: Any) -> nn.ModuleList:
    """One learned linear map (student width -> teacher width) per layer pair, seeded by model.seed."""
    d = config.distill
    if not d.feature_weight:
        return nn.ModuleList()
    teacher_model = getattr(teacher, "model", None)
    if teacher_model is None:
        raise ConfigError("distill.feature_weight > 0 needs a resident teacher model (its hidden states)")
    layers_s, layers_t = model.config.num_hidden_layers + 1, teacher_model.config.num_hidden_layers + 1
    bad = [(s, t) for s, t in d.layer_map if not (-layers_s <= s < layers_s and -layers_t <= t < layers_t)]
    if bad:
        raise ConfigError(f"distill.layer_map: {bad} out of range: the student has hidden states 0..{layers_s - 1}, "
                          f"the teacher 0..{layers_t - 1} (0 = embeddings; negative counts from the last)")  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(config.model.seed)
        return nn.ModuleList(Projector(model.config.hidden_size, teacher_model.config.hidden_size) for _ in d.layer_map)


def build_distill_stage(config: DistillConfig, *, model: nn.Module | None = None, tokenizer: Any = None,
                        task: Any = None, teacher: Any = None, engine: Any = None, collect: Any = None) -> DistillStage:  # fmt: skip
    if model is None:
        model, tokenizer = build.build_model(config.model)
    if task is None and config.task is not None:
        task = build.build_task(config.task)
    vocab = model.get_output_embeddings().weight.shape[0]
    autocast = build.autocast_for(config.model, model)
    d = config.distill
    top_k = min(d.top_k or vocab if (d.mode == "logit" or d.estimator == "topk") else 1, vocab)
    if d.mode == "logit":
        items, dropped = make_samples(config, task, tokenizer)  # type: ignore[arg-type]
    if teacher is None and config.teacher.topk_file is not None:
        teacher = _file_teacher(config, items, tokenizer, vocab, top_k, autocast)
    if teacher is None:
        teacher_model, teacher_tok = build_teacher(config, tokenizer, vocab)
        teacher = build.reference_engine(teacher_model, teacher_tok, bf16=autocast)
    if d.mode == "on_policy":
        examples = build.split_examples(task, "train", config.task.train_size if config.task else None)
        items, dropped = build.fit_prompts(examples, task, tokenizer, config.rollout.max_prompt_len,
                                           chat_template=config.model.chat_template)  # fmt: skip
        if engine is None:
            engine = build.build_engine(config.rollout.engine, model, tokenizer, seed=config.run.seed, bf16=autocast)
        if collect is None:
            from rlvr.rollout import collect
    build.set_attention(model, config.model.attn_implementation, fused_kernels=config.model.fused_kernels)
    projectors = _projectors(config, model, teacher)
    trainable = nn.ModuleList([model, projectors]) if len(projectors) else model
    stage = DistillStage(config=config, model=model, tokenizer=tokenizer, task=task, teacher=teacher, engine=engine,
                         optim=build_optimizer(trainable, config.optim), cursor=DataCursor(items, config.run.seed),
                         objective=build_distill_objective(config), collect=collect, projectors=projectors,
                         autocast=autocast, top_k=top_k)  # fmt: skip
    if dropped:
        stage.warnings.append(f"{dropped} prompts or pairs did not fit their length limit and were dropped")
    return stage


def train_distill(config: DistillConfig, *, resume: bool = False, callbacks: Sequence[Callback] = (),
                  **components: Any) -> RunResult:  # fmt: skip
    """Run (or continue) distillation as `config` says, on the shared loop driver."""
    build.validate(config)
    problems = [f"{key}: {path!r} does not exist" for key, path in (("teacher.path", config.teacher.path),
                ("data.path", config.data.path)) if path is not None and not Path(path).exists()]  # fmt: skip
    if problems:
        raise ConfigError("\n  ".join(problems))
    return run_stage(config, functools.partial(build_distill_stage, config, **components), resume=resume,
                     callbacks=callbacks)  # fmt: skip
