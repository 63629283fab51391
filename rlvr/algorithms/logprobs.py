"""Token log-probabilities and entropy, chunked so [B, T, V] never exists in fp32 at once.

With a 150k vocabulary, fp32 logits for 8 x 4096 tokens are 20 GB; the model's bf16 logits are
half that, and the naive `log_softmax(logits.float())` plus autograd's saved copies multiply it.
Here rows (tokens) are processed `chunk_size` at a time in fp32 (at least the input's precision)
by a custom autograd Function that saves only its inputs and one log-normaliser per token, and
recomputes each chunk's softmax in backward, in place in the chunk's own buffer.  Peak extra memory
is about 3 x chunk_size x V x 4 bytes (measured: +1.8 GB for 1024-token chunks of a 152k vocabulary).

The `*_from_hidden` variants take the last hidden states and the LM-head weight and project chunk by
chunk, so even the bf16 logits are never materialised (the Liger / Cut-Cross-Entropy idea, written
plainly).  No bias term (LLM heads have none).

Gradients (x = logits / temperature, p = softmax(x), y = target, H = entropy):
    d logp_y / dx = onehot(y) - p,     dH / dx = -p * (log p + H),     d/dlogits = d/dx / temperature.
Double backward is not supported.  Temperature: the sampler's logprobs are those of the tempered
distribution, so compute old/new logprobs at the sampling temperature to keep ratios meaningful.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "entropy",
    "entropy_from_hidden",
    "entropy_from_logits",
    "gathered_logprobs_from_hidden",
    "logprobs_and_entropy",
    "logprobs_and_entropy_from_hidden",
    "token_logprobs",
    "token_logprobs_from_hidden",
]

DEFAULT_CHUNK_SIZE = 1024


def _blocks(B: int, T: int, chunk_size: int) -> Iterator[tuple[slice, slice]]:
    """(batch, time) slices covering [B, T] with at most `chunk_size` rows each.

    Slicing a 3-D tensor by blocks (instead of flattening) keeps non-contiguous inputs such as
    `logits[:, :-1]` from being copied whole: each block is copied at most once, when reshaped.
    """
    tt = max(1, min(T, chunk_size))
    bb = max(1, chunk_size // tt)
    for b0 in range(0, B, bb):
        for t0 in range(0, T, tt):
            yield slice(b0, min(b0 + bb, B)), slice(t0, min(t0 + tt, T))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _ids(x: Tensor, targets: Tensor) -> Tensor:  # one target per token [...] or M of them [..., M] -> [..., M]
    return targets.unsqueeze(-1) if targets.dim() == x.dim() - 1 else targets


def _chunk_stats(x: Tensor, targets: Tensor | None, entropy: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """For tempered logits x [n, V] (this chunk's own copy: overwritten with log p, so a chunk costs two
    [n, V] buffers, not four): (logsumexp [n], logp of targets [n] (or [n, M]) or None, entropy [n] or
    None when not asked for)."""
    lse = torch.logsumexp(x, dim=-1)
    logp_all = x.sub_(lse.unsqueeze(-1))
    lp = None if targets is None else logp_all.gather(-1, _ids(x, targets)).view(targets.shape)
    ent = logp_all.exp().mul_(logp_all).sum(-1).neg_() if entropy else None
    return lse, lp, ent


def _chunk_grad(x: Tensor, lse: Tensor, ent: Tensor, targets, g_lp, g_ent, temperature: float) -> Tensor:
    """d(loss)/d(logits) for one chunk of tempered logits x [n, V] (its own copy, overwritten), in x's dtype.
    With M ids per token (repeats allowed): d/dx sum_m g_m logp_{y_m} = sum_m g_m onehot(y_m) - p sum_m g_m;
    with the entropy's weight g_H: - p g_H (log p + H).  Together: -p (sum_m g_m + g_H (log p + H)) + scatter."""
    if g_lp is None and g_ent is None:
        return torch.zeros_like(x)
    logp_all = x.sub_(lse.unsqueeze(-1))
    grad = logp_all.exp()  # p
    g = None if g_lp is None else _ids(x, g_lp)
    if g_ent is not None:
        coef = logp_all.add_(ent.unsqueeze(-1)).mul_(g_ent.unsqueeze(-1))  # log p is not needed after this
        grad.mul_(coef if g is None else coef.add_(g.sum(-1, keepdim=True))).neg_()
    else:
        grad.mul_(g.sum(-1, keepdim=True)).neg_()
    if g is not None:
        grad.scatter_add_(-1, _ids(x, targets), g)
    return grad.div_(temperature)


class _FromLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor | None, chunk_size: int, temperature: float):
        B, T, _ = logits.shape
        cdt = _compute_dtype(logits.dtype)
        lse, lp, ent = (logits.new_zeros((B, T), dtype=cdt) for _ in range(3))
        for bs, ts in _blocks(B, T, chunk_size):
            x = logits[bs, ts].to(cdt) / temperature
            tgt = None if targets is None else targets[bs, ts]
            c_lse, c_lp, c_ent = _chunk_stats(x, tgt)
            lse[bs, ts], ent[bs, ts] = c_lse, c_ent
            if c_lp is not None:
                lp[bs, ts] = c_lp
        if targets is None:
            ctx.mark_non_differentiable(lp)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, targets, lse, ent)
        ctx.chunk_size, ctx.temperature = chunk_size, temperature
        return lp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp: Tensor | None, g_ent: Tensor | None):
        logits, targets, lse, ent = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        if g_lp is None and g_ent is None:
            return grad, None, None, None
        cdt = _compute_dtype(logits.dtype)
        for bs, ts in _blocks(logits.shape[0], logits.shape[1], ctx.chunk_size):
            x = logits[bs, ts].to(cdt) / ctx.temperature
            tgt = None if targets is None else targets[bs, ts]
            glp = None if g_lp is None or targets is None else g_lp[bs, ts].to(cdt)
            gent = None if g_ent is None else g_ent[bs, ts].to(cdt)
            grad[bs, ts] = _chunk_grad(x, lse[bs, ts], ent[bs, ts], tgt, glp, gent, ctx.temperature)
        return grad, None, None, None


class _FromHidden(torch.autograd.Function):
    """(logp at targets [B, T] or [B, T, M], entropy [B, T] (zeros, not differentiable, without
    `want_entropy`), argmax [B, T] when `want_argmax`, else empty)."""

    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, targets: Tensor | None, chunk_size: int, temperature: float,
        want_argmax: bool = False, want_entropy: bool = True,
    ):  # fmt: skip
        B, T, _ = hidden.shape
        cdt = _compute_dtype(hidden.dtype)
        lse, ent = (hidden.new_zeros((B, T), dtype=cdt) for _ in range(2))
        lp = hidden.new_zeros((B, T) if targets is None else targets.shape, dtype=cdt)
        top = torch.zeros((B, T) if want_argmax else (0,), dtype=torch.long, device=hidden.device)
        for bs, ts in _blocks(B, T, chunk_size):
            x = (hidden[bs, ts] @ weight.t()).to(cdt).div_(temperature)
            tgt = None if targets is None else targets[bs, ts]
            c_lse, c_lp, c_ent = _chunk_stats(x, tgt, want_entropy)
            lse[bs, ts] = c_lse
            if c_ent is not None:
                ent[bs, ts] = c_ent
            if c_lp is not None:
                lp[bs, ts] = c_lp
            if want_argmax:
                top[bs, ts] = x.argmax(-1)
        if targets is None:
            ctx.mark_non_differentiable(lp)
        ctx.mark_non_differentiable(top, *(() if want_entropy else (ent,)))
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.chunk_size, ctx.temperature = chunk_size, temperature
        return lp, ent, top

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp: Tensor | None, g_ent: Tensor | None, _g_top: Tensor | None = None):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        cdt = _compute_dtype(hidden.dtype)
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=cdt, device=weight.device) if need_w else None
        for bs, ts in _blocks(hidden.shape[0], hidden.shape[1], ctx.chunk_size):
            h = hidden[bs, ts]
            x = (h @ weight.t()).to(cdt).div_(ctx.temperature)
            tgt = None if targets is None else targets[bs, ts]
            glp = None if g_lp is None or targets is None else g_lp[bs, ts].to(cdt)
            gent = None if g_ent is None else g_ent[bs, ts].to(cdt)
            d_logits = _chunk_grad(x, lse[bs, ts], ent[bs, ts], tgt, glp, gent, ctx.temperature)
            if need_h:
                # cast the chunk's gradient, not the [V, H] weight, to keep memory flat
                grad_h[bs, ts] = (d_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            if need_w:
                grad_w += d_logits.reshape(-1, d_logits.shape[-1]).t() @ h.reshape(-1, h.shape[-1]).to(cdt)
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None, None, None


def _check(x: Tensor, targets: Tensor | None, name: str) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be [B, T, V or H], got shape {tuple(x.shape)}")
    if targets is not None and targets.shape != x.shape[:2]:
        raise ValueError(f"targets must be [B, T] = {tuple(x.shape[:2])}, got {tuple(targets.shape)}")


def logprobs_and_entropy(
    logits: Tensor,  # [B, T, V]
    targets: Tensor,  # [B, T] long
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:  # logprobs [B, T], entropy [B, T] (>= fp32)
    """Both in one chunked pass (one logsumexp per token); differentiable in `logits`."""
    _check(logits, targets, "logits")
    return _FromLogits.apply(logits, targets.long(), chunk_size, temperature)


def token_logprobs(
    logits: Tensor,  # [B, T, V]
    targets: Tensor,  # [B, T] long
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> Tensor:  # [B, T] (>= fp32)
    """log softmax(logits / temperature)[targets], chunked; equals the naive `log_softmax(...).gather(...)`."""
    return logprobs_and_entropy(logits, targets, chunk_size=chunk_size, temperature=temperature)[0]


def entropy_from_logits(
    logits: Tensor,  # [B, T, V]
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> Tensor:  # [B, T]
    """Entropy of softmax(logits / temperature) per token, chunked; differentiable (entropy bonus)."""
    _check(logits, None, "logits")
    return _FromLogits.apply(logits, None, chunk_size, temperature)[1]


entropy = entropy_from_logits


def logprobs_and_entropy_from_hidden(
    hidden: Tensor,  # [B, T, H]
    lm_head_weight: Tensor,  # [V, H]
    targets: Tensor,  # [B, T] long
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:  # logprobs [B, T], entropy [B, T]
    """Project `hidden @ lm_head_weight.T` chunk by chunk (never the full logits); differentiable in both."""
    _check(hidden, targets, "hidden")
    lp, ent, _ = _FromHidden.apply(hidden, lm_head_weight, targets.long(), chunk_size, temperature)
    return lp, ent


def token_logprobs_from_hidden(
    hidden: Tensor,  # [B, T, H]
    lm_head_weight: Tensor,  # [V, H]
    targets: Tensor,  # [B, T] long
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> Tensor:  # [B, T]
    """`token_logprobs` of the logits `hidden @ lm_head_weight.T`, without materialising them (and without
    the per-chunk entropy pass that `logprobs_and_entropy_from_hidden` makes: SFT never reads it)."""
    _check(hidden, targets, "hidden")
    return _FromHidden.apply(hidden, lm_head_weight, targets.long(), chunk_size, temperature, False, False)[0]


def entropy_from_hidden(
    hidden: Tensor,  # [B, T, H]
    lm_head_weight: Tensor,  # [V, H]
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> Tensor:  # [B, T]
    """`entropy_from_logits` of `hidden @ lm_head_weight.T`, without materialising the logits."""
    _check(hidden, None, "hidden")
    return _FromHidden.apply(hidden, lm_head_weight, None, chunk_size, temperature)[1]


def gathered_logprobs_from_hidden(
    hidden: Tensor,  # [B, T, H]
    lm_head_weight: Tensor,  # [V, H]
    ids: Tensor,  # [B, T, M] long: M candidates per token (repeats allowed)
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:  # logprobs [B, T, M] (>= fp32), argmax [B, T] long
    """log softmax(hidden @ lm_head_weight.T / temperature) at each token's M `ids`, and its argmax, chunk
    by chunk (distillation: the target and a teacher's top-k ids); differentiable in hidden and weight."""
    if ids.dim() != 3 or ids.shape[:2] != hidden.shape[:2]:
        raise ValueError(f"ids must be [B, T, M] with [B, T] = {tuple(hidden.shape[:2])}, got {tuple(ids.shape)}")
    _check(hidden, None, "hidden")
    lp, _, top = _FromHidden.apply(hidden, lm_head_weight, ids.long(), chunk_size, temperature, True, False)
    return lp, top
