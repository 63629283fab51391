"""Packing for RL micro-batches: a group's prompt once, its completions after it, several per row.

An RL step's samples come in groups (one prompt, G completions).  Unpacked, a micro-batch pads every
row to its longest prompt + completion; with prefix sharing (`forward._shared_prefix_hidden`) each
distinct prompt runs once.  Packed, rows of `row_len` tokens hold *segments*, a prompt followed by
completions of it, back to back:

    row:       [ p1 p1 p1 | a a a a | b b | p2 p2 | c c c c c | pad pad ]
    positions:   0  1  2    3 4 5 6   3 4   0  1    2 3 4 5 6   0   1
    attends:   a prompt token its prompt's earlier tokens; a completion token its prompt and its own
               earlier tokens (never another completion, never another segment); padding itself

so every completion token sees exactly the context it has unpacked (same positions, same keys), the
prompt is computed once per segment as in the shared-prefix path (no recomputation), and padding
shrinks to the rows' tails.  The mask is block-structured, not block-diagonal, so it is passed as a
4-D mask (`transformers.masking_utils` uses a 4-D mask as given, with eager and SDPA attention).

The micro-batch keeps its completion-aligned `[B, C]` fields (`batching.MicroBatch`: targets,
loss_mask, advantages, sampler / reference / old logprobs): the forward gathers the hidden states that
predict completion tokens from the packed rows, computes their logprobs, and scatters them back to
`[B, C]`, so every aggregation mode, GSPO's sequence ratios and the KL terms see sequences as before.

Micro-batches are formed by tokens, not sequences: consecutive rows while their slots stay within
`micro_batch_size x` the step's longest sequence (the most an unpacked micro-batch of
`micro_batch_size` sequences could hold), so the count depends on the data; under data parallelism
`agree_count` pads every rank to the same count with empty micro-batches (`empty_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlvr.config import ConfigError
from rlvr.trainer.batching import MicroBatch, Sample, collate


@dataclass(slots=True)
class PackedRows:
    """The packed input of one micro-batch and the maps between it and the `[B, C]` layout."""

    input_ids: Tensor  # [R, L] long
    position_ids: Tensor  # [R, L] long
    allowed: Tensor  # [R, 1, L, L] bool: query (dim 2) may attend key (dim 3)
    gather: Tensor  # [N] long: flat r * L + col of the hidden state predicting each completion token
    scatter: Tensor  # [N] long: flat b * C + j of that token in the [B, C] layout
    num_tokens: int  # real (non-padding) tokens in the rows, each segment's prompt once

    def attention_mask(self, attn_implementation: str, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The 4-D mask [R, 1, L, L] in the form the attention kernel reads: boolean (SDPA) or additive (eager)."""
        allowed = self.allowed.to(device)
        if attn_implementation == "sdpa":
            return allowed
        if attn_implementation == "eager":
            zero = torch.zeros((), dtype=dtype, device=device)
            return torch.where(allowed, zero, torch.finfo(dtype).min)
        raise ConfigError(
            f"optim.packing needs eager or SDPA attention (a 4-D mask), not {attn_implementation!r}; set "
            "model.attn_implementation = 'eager' or 'sdpa', or optim.packing = false"
        )


@dataclass(slots=True)
class _Row:
    segments: list[tuple[tuple[int, ...], list[int]]] = field(default_factory=list)  # (prompt, sample indices)
    used: int = 0


def pack_groups(samples: Sequence[Sample], row_len: int) -> list[list[tuple[tuple[int, ...], list[int]]]]:
    """Rows of segments (prompt, indices of samples continuing it), each row at most `row_len` tokens.

    First fit, largest group first and longest completion first within a group: a completion joins a
    segment of its prompt that has room, else opens a segment (prompt + it) in the first row with room,
    else a new row.  Deterministic: ties keep the samples' order.  Empty completions and masked samples
    (no token counts: e.g. truncated ones under algorithm.mask_truncated) are left out: they predict
    nothing the loss or its metrics read, so the forward skips them.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(samples):
        if s.completion_ids and not s.masked:
            groups.setdefault(s.prompt_ids, []).append(i)
    too_long = [i for ii in groups.values() for i in ii if samples[i].length > row_len]
    if too_long:
        raise ValueError(f"sample {too_long[0]} has {samples[too_long[0]].length} tokens, more than a packed "
                         f"row's {row_len}")  # fmt: skip
    rows: list[_Row] = []
    size = {p: len(p) + sum(len(samples[i].completion_ids) for i in ii) for p, ii in groups.items()}
    for prompt in sorted(groups, key=lambda p: -size[p]):  # stable: equal sizes keep first-seen order
        for i in sorted(groups[prompt], key=lambda i: -len(samples[i].completion_ids)):
            c = len(samples[i].completion_ids)
            _place(rows, prompt, i, c, row_len)
    return [r.segments for r in rows]


def _place(rows: list[_Row], prompt: tuple[int, ...], i: int, c: int, row_len: int) -> None:
    for row in rows:  # a segment of this prompt with room
        if row_len - row.used >= c and row.segments and any(p == prompt for p, _ in row.segments):
            next(ii for p, ii in reversed(row.segments) if p == prompt).append(i)
            row.used += c
            return
    for row in rows:  # a row with room for the prompt and the completion
        if row_len - row.used >= len(prompt) + c:
            row.segments.append((prompt, [i]))
            row.used += len(prompt) + c
            return
    rows.append(_Row([(prompt, [i])], len(prompt) + c))


def packed_micro_batch(samples: Sequence[Sample], rows: Sequence[Sequence[tuple[tuple[int, ...], list[int]]]],
                       pad_id: int) -> MicroBatch:  # fmt: skip
    """One micro-batch of `rows`: the `[B, C]` fields of its samples (in row order) plus `packed`."""
    order = [i for row in rows for _, ii in row for i in ii]
    mb = collate([samples[i] for i in order], pad_id)
    where = {i: b for b, i in enumerate(order)}
    C = mb.targets.shape[1]
    L = max(sum(len(p) + sum(len(samples[i].completion_ids) for i in ii) for p, ii in row) for row in rows)
    R = len(rows)
    ids = torch.full((R, L), pad_id, dtype=torch.long)
    pos = torch.zeros((R, L), dtype=torch.long)
    seg = torch.zeros((R, L), dtype=torch.long)  # segment number (padding: one of its own)
    blk = torch.zeros((R, L), dtype=torch.long)  # 0: prompt, k: the segment's k-th completion
    gather, scatter = [], []
    for r, row in enumerate(rows):
        col = 0
        for k, (prompt, members) in enumerate(row):
            p = len(prompt)
            ids[r, col : col + p] = torch.tensor(prompt, dtype=torch.long)
            pos[r, col : col + p] = torch.arange(p)
            seg[r, col : col + p] = k
            last_prompt, col = col + p - 1, col + p
            for n, i in enumerate(members, start=1):
                comp = samples[i].completion_ids
                c = len(comp)
                ids[r, col : col + c] = torch.tensor(comp, dtype=torch.long)
                pos[r, col : col + c] = torch.arange(p, p + c)
                seg[r, col : col + c], blk[r, col : col + c] = k, n
                gather += [r * L + last_prompt] + [r * L + col + j for j in range(c - 1)]
                scatter += [where[i] * C + j for j in range(c)]
                col += c
        pos[r, col:] = torch.arange(L - col)
        seg[r, col:] = len(row)
    causal = torch.ones((L, L), dtype=torch.bool).tril()
    same_seg = seg[:, :, None] == seg[:, None, :]
    own_or_prompt = (blk[:, None, :] == 0) | (blk[:, :, None] == blk[:, None, :])
    mb.packed = PackedRows(
        input_ids=ids, position_ids=pos, allowed=(causal & same_seg & own_or_prompt).unsqueeze(1),
        gather=torch.tensor(gather, dtype=torch.long), scatter=torch.tensor(scatter, dtype=torch.long),
        num_tokens=sum(len(p) + sum(len(samples[i].completion_ids) for i in ii) for row in rows for p, ii in row),
    )  # fmt: skip
    return mb


def packed_micro_batches(samples: Sequence[Sample], micro_batch_size: int, pad_id: int, *,
                         row_len: int | None = None) -> list[MicroBatch]:  # fmt: skip
    """The step's samples packed into rows (see the module docstring) and the rows into micro-batches
    of at most `micro_batch_size` x (the longest sequence) token slots.  `row_len` (None:
    `default_row_len`) is raised to the longest sequence when shorter."""
    longest = max((s.length for s in samples), default=1)
    rows = pack_groups(samples, max(row_len or default_row_len(samples), longest))
    if not rows:  # nothing to predict (every completion empty): one empty micro-batch keeps the step's shape
        return [empty_batch(pad_id)]
    used = [sum(len(p) + sum(len(samples[i].completion_ids) for i in ii) for p, ii in row) for row in rows]
    budget = micro_batch_size * longest  # an unpacked micro-batch of micro_batch_size sequences at most
    out: list[MicroBatch] = []
    start = 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and (end + 1 - start) * max(used[start : end + 1]) <= budget:
            end += 1
        out.append(packed_micro_batch(samples, rows[start:end], pad_id))
        start = end
    return out


def default_row_len(samples: Sequence[Sample]) -> int:
    """Tokens per packed row when optim.pack_len is unset: 4x the mean sequence, at least the longest.

    Attention runs over the whole row (a dense mask: no kernel here skips the masked blocks), so a row
    much longer than its sequences wastes attention FLOPs; a row of one sequence cannot share its prompt
    or fill the gaps.  About four sequences per row was the best measured trade-off (bench/packing_bench.py).
    """
    lengths = [s.length for s in samples if s.completion_ids] or [1]
    return max(max(lengths), -(-4 * sum(lengths) // len(lengths)))


def empty_batch(pad_id: int, like: MicroBatch | None = None) -> MicroBatch:
    """A micro-batch with nothing that counts (loss 0, gradient 0): what a rank with fewer micro-batches
    runs so that every rank runs the same number (FSDP2 gathers in every forward, DDP reduces in every
    backward).  It carries (zero) sampler / reference logprobs when `like` does, so the same terms run."""
    has = (like is not None and like.sampler_logprobs is not None, like is not None and like.ref_logprobs is not None)
    return collate([Sample((pad_id,), (), sampler_logprobs=() if has[0] else None, ref_logprobs=() if has[1] else None,
                           masked=True)], pad_id)  # fmt: skip
