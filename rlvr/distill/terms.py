"""Distillation losses as terms of the composed objective (`rlvr.algorithms.compose.Objective`).

A term reads one `TokenInputs` record and returns (per-token loss [B, T], metrics); the objective
adds it to the others with its coefficient and reduces the sum with the step's global denominator,
so a distillation term mixes with a policy-gradient term (verifier reward) in one objective.

    kd_term(loss)    a distribution loss over the teacher's top-k candidates (K = V: the full
                     vocabulary): `topk_logprobs` (student, at the teacher's ids) vs
                     `teacher_topk_logprobs`; metrics "distill/kl" (forward KL over the candidates,
                     whatever the loss) and "distill/top1_agreement_topk" (argmax over the candidates)
    hard_ce_term     -log S(teacher's top-1 candidate)
    sampled_kl_metric  the sampled-token reverse-KL estimate log S(y) - log T(y) ("distill/kl_sampled")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

from rlvr.algorithms.compose import Term, TokenInputs, masked_mean
from rlvr.distill.losses import forward_kl, hard_target_ce, top1_agreement

__all__ = ["hard_ce_term", "kd_term", "sampled_kl_metric"]


def _topk(x: TokenInputs) -> tuple[Tensor, Tensor]:
    if x.topk_logprobs is None or x.teacher_topk_logprobs is None:
        raise ValueError("a distillation term needs topk_logprobs and teacher_topk_logprobs in the token inputs")
    return x.topk_logprobs, x.teacher_topk_logprobs


def kd_metrics(x: TokenInputs) -> dict[str, Tensor]:
    student, teacher = _topk(x)
    return {"distill/kl": masked_mean(forward_kl(student.detach(), teacher), x.loss_mask),
            "distill/top1_agreement_topk": masked_mean(top1_agreement(student.detach(), teacher), x.loss_mask)}  # fmt: skip


def kd_term(loss: Callable[..., Tensor], settings: Mapping[str, object]) -> Term:
    """`loss(student [B,T,K], teacher [B,T,K], **settings) -> [B, T]` as an objective term."""

    def term(x: TokenInputs) -> tuple[Tensor, dict[str, Tensor]]:
        student, teacher = _topk(x)
        return loss(student, teacher, **settings), kd_metrics(x)

    return term


def hard_ce_term(x: TokenInputs) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy on the teacher's most likely candidate (index 0: `Engine.score` sorts descending)."""
    student, teacher = _topk(x)
    index = teacher.argmax(-1)
    return hard_target_ce(student, index), {}


def sampled_kl_metric(x: TokenInputs) -> tuple[Tensor, dict[str, Tensor]]:
    """The per-token k1 estimate of KL(S || T) at the sampled tokens (a metric; on-policy distillation)."""
    if x.teacher_logprobs is None:
        raise ValueError("the sampled KL needs teacher_logprobs in the token inputs")
    kl = x.logprobs.detach() - x.teacher_logprobs
    return kl, {"distill/kl_sampled": masked_mean(kl, x.loss_mask)}
