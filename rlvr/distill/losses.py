"""Knowledge-distillation losses: pure per-token functions, tensor in, tensor out.

Every loss returns a per-token quantity `[B, T]` to minimise; reduction is not done here.  The
trainer composes them as terms of one objective (`rlvr.algorithms.compose.Objective`) and reduces
with the step's explicit global denominator (`aggregate(per_token, loss_mask, denominator)`), the
same normalisation as RL, so gradient accumulation changes nothing.

Distributions are given as log-probabilities over a last axis of candidates `[B, T, K]`: the whole
vocabulary (K = V, a resident teacher with the student's tokenizer) or the teacher's top-k ids with
the student's log-probabilities gathered at those same ids (offline KD from teacher top-k logprobs
precomputed to disk, `rlvr.distill.topk`).  Over a top-k slice both sides are renormalised over the
K candidates after the temperature (`soft_targets`), as in Hinton et al. 2015's soft targets; the
temperature-squared factor keeps gradient magnitudes comparable across temperatures (their §2).

Conventions (teacher T, student S, both over the same candidates):

    forward_kl   KL(T || S) = sum_k T_k (log T_k - log S_k)          mean-seeking (classic KD, SFT-like)
    reverse_kl   KL(S || T) = sum_k S_k (log S_k - log T_k)          mode-seeking (MiniLLM, on-policy KD)
    generalized_jsd(beta)   M = beta T + (1 - beta) S,
                 JSD_beta = beta KL(T || M) + (1 - beta) KL(S || M)   (GKD, Agarwal et al. 2024, eq. 1)

beta convention: the one of Agarwal et al. (beta weighs the teacher in the mixture) and of TRL's
`GKDTrainer.generalized_jsd_loss` (checked against trl 1.16).  JSD_beta vanishes at both ends
(JSD_beta ~ beta KL(T||S) as beta -> 0 and ~ (1 - beta) KL(S||T) as beta -> 1), so like TRL we
define the endpoints as those rescaled limits: beta = 0 is exactly forward KL, beta = 1 exactly
reverse KL, and beta = 0.5 is the symmetric JSD.

Sampled-token losses (the teacher scores only the token that was sampled, `Engine.score`):

    hard_target_ce       -log S(teacher's token): SFT on the teacher's token (its argmax, or its sample)
    reverse_kl_advantage  log T(y) - log S(y) at the student's own sample y: the per-token advantage of
                         on-policy distillation; E_{y~S}[log S - log T] is the reverse KL, and its
                         gradient is the policy gradient with this advantage (the tokens were
                         sampled from S, so a plain loss on log S(y) would miss the score-function term)

Feature matching (`hidden_state_loss`): student hidden states mapped to the teacher's width by a
learned linear projector, then MSE or 1 - cosine per token (FitNets, Romero et al. 2015; TinyBERT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "KD_LOSSES",
    "Projector",
    "forward_kl",
    "generalized_jsd",
    "hard_target_ce",
    "hidden_state_loss",
    "reverse_kl",
    "reverse_kl_advantage",
    "soft_targets",
    "top1_agreement",
]


def _check(student: Tensor, teacher: Tensor) -> None:
    if student.shape != teacher.shape or student.dim() != 3:
        raise ValueError(f"student and teacher log-probabilities must both be [B, T, K], got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")  # fmt: skip


def soft_targets(logprobs: Tensor, temperature: float = 1.0) -> Tensor:  # [B, T, K] -> [B, T, K]
    """Log-probabilities tempered by `temperature` and renormalised over the K candidates.

    Input may be logits or log-probabilities at temperature 1 (only differences within a position
    matter), of the full vocabulary or of a top-k slice."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.log_softmax(_f32(logprobs) / temperature, dim=-1)


def _f32(x: Tensor) -> Tensor:  # at least fp32 (bf16 in, fp32 out; fp64 stays fp64)
    return x if x.dtype == torch.float64 else x.float()


def _kl(p_log: Tensor, q_log: Tensor) -> Tensor:  # KL(p || q) over the last axis -> [B, T]
    p = p_log.exp()
    return (p * (p_log - q_log)).sum(-1)


def forward_kl(student: Tensor, teacher: Tensor, *, temperature: float = 1.0) -> Tensor:  # [B,T,K]x2 -> [B,T]
    """tau^2 KL(T || S) per token, both tempered and renormalised over the K candidates."""
    _check(student, teacher)
    s, t = soft_targets(student, temperature), soft_targets(teacher, temperature)
    return temperature**2 * _kl(t, s)


def reverse_kl(student: Tensor, teacher: Tensor, *, temperature: float = 1.0) -> Tensor:  # -> [B, T]
    """tau^2 KL(S || T) per token (exact over the K candidates, not a sampled estimate)."""
    _check(student, teacher)
    s, t = soft_targets(student, temperature), soft_targets(teacher, temperature)
    return temperature**2 * _kl(s, t)


def generalized_jsd(student: Tensor, teacher: Tensor, *, beta: float = 0.5,
                    temperature: float = 1.0) -> Tensor:  # fmt: skip  # -> [B, T]
    """tau^2 JSD_beta(T || S) (GKD; beta = 0: forward KL, 1: reverse KL; see the module docstring)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student, teacher, temperature=temperature)
    if beta == 1.0:
        return reverse_kl(student, teacher, temperature=temperature)
    _check(student, teacher)
    s, t = soft_targets(student, temperature), soft_targets(teacher, temperature)
    b = torch.tensor(beta, dtype=s.dtype)
    m = torch.logsumexp(torch.stack([t + torch.log(b), s + torch.log1p(-b)]), dim=0)
    return temperature**2 * (beta * _kl(t, m) + (1 - beta) * _kl(s, m))


def hard_target_ce(student: Tensor, target_index: Tensor) -> Tensor:  # [B, T, K], [B, T] long -> [B, T]
    """-log S(target) per token, S normalised over the K candidates (the teacher's top-1: index 0)."""
    logp = torch.log_softmax(_f32(student), dim=-1)
    return -logp.gather(-1, target_index.long().unsqueeze(-1)).squeeze(-1)


def reverse_kl_advantage(logprobs: Tensor, teacher_logprobs: Tensor) -> Tensor:  # [B, T] x2 -> [B, T]
    """Per-token advantage of on-policy distillation: log T(y) - log S(y) at the sampled token, a constant
    (detached); the policy-gradient loss -A * ratio then descends the sampled reverse KL (its k1 estimate)."""
    return (_f32(teacher_logprobs) - _f32(logprobs.detach())).detach()


def top1_agreement(student: Tensor, teacher: Tensor) -> Tensor:  # [B, T, K] x2 -> [B, T] float (1.0 or 0.0)
    """1 where the student's most likely candidate is the teacher's."""
    _check(student, teacher)
    return (student.argmax(-1) == teacher.argmax(-1)).float()


class Projector(nn.Module):
    """The learned linear map from the student's hidden width to the teacher's (FitNets' regressor)."""

    def __init__(self, student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(student_width, teacher_width, bias=False)
        if student_width == teacher_width:  # start as the identity: matching begins where the widths agree
            nn.init.eye_(self.linear.weight)

    def forward(self, hidden: Tensor) -> Tensor:  # [B, T, Hs] -> [B, T, Ht]
        return self.linear(hidden)


def hidden_state_loss(student_hidden: Tensor, teacher_hidden: Tensor, projector: nn.Module, *,
                      kind: str = "mse") -> Tensor:  # fmt: skip  # [B,T,Hs], [B,T,Ht] -> [B, T]
    """Per-token feature-matching loss: mean squared error over the teacher's width, or 1 - cosine."""
    projected = projector(_f32(student_hidden))
    target = _f32(teacher_hidden.detach()).to(projected.dtype)
    if projected.shape != target.shape:
        raise ValueError(f"projected student states {tuple(projected.shape)} do not match the teacher's "
                         f"{tuple(target.shape)}: the projector must map to the teacher's width")  # fmt: skip
    if kind == "mse":
        return ((projected - target) ** 2).mean(-1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(projected, target, dim=-1, eps=1e-8)
    raise ValueError(f"hidden-state loss kind {kind!r}: choose 'mse' or 'cosine'")


# distill.loss -> the distribution loss over candidates (settings: temperature, and beta for jsd)
KD_LOSSES = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "jsd": generalized_jsd}
