"""Samples and micro-batches: prompt + completion token ids in a completion-aligned layout.

Layout of a micro-batch (P = longest prompt, C = longest completion in it):

    input_ids  [B, P + C]   prompt LEFT-padded into columns [0, P), completion RIGHT-padded into [P, P + C)
    targets    [B, C]       the completion tokens (pad_id where padded)
    loss_mask  [B, C]       True exactly on completion tokens that count (never prompt, never padding)

so the hidden state that predicts completion token j of every row sits at column P - 1 + j, and
every per-token tensor of the trainer (logprobs, old/ref/sampler logprobs, losses) is a dense
`[B, C]` slice with no gathering.  Position ids count real tokens only, so padding never shifts a
row's positions.  With `bucket=True`, samples are sorted by length before splitting into
micro-batches, so each micro-batch pads to its own maximum (length bucketing, not packing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True, slots=True)
class Sample:
    """One training sequence: the prompt ids, the completion ids and what the loss needs about it."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    sampler_logprobs: tuple[float, ...] | None = None
    ref_logprobs: tuple[float, ...] | None = None  # the reference policy's, from its engine's `score`
    advantage: float = 0.0  # sequence-level, computed on the step's groups before batching
    reward: float = 0.0
    masked: bool = False  # True: no completion token counts (e.g. a truncated completion under DAPO)
    index: int = 0  # position in the step's flat sample list

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


@dataclass(slots=True)
class MicroBatch:
    input_ids: Tensor  # [B, P + C] long
    attention_mask: Tensor  # [B, P + C] long, 1 on real tokens
    position_ids: Tensor  # [B, P + C] long
    prompt_len: int  # P: the completion starts at this column
    targets: Tensor  # [B, C] long
    loss_mask: Tensor  # [B, C] bool
    advantages: Tensor  # [B] float32 (sequence-level), or [B, C] per token (PPO's GAE)
    index: Tensor  # [B] long: rows' positions in the step's sample list
    prefix_rows: Tensor  # [G] long: the first row of each distinct prompt (G <= B)
    prefix_index: Tensor  # [B] long: which of the G distinct prompts each row continues
    sampler_logprobs: Tensor | None = None  # [B, C] float32
    ref_logprobs: Tensor | None = None  # [B, C] float32
    old_logprobs: Tensor | None = None  # [B, C] float32, set by the no-grad pass when mu > 1
    old_values: Tensor | None = None  # [B, C] float32: the critic at sampling time (PPO)
    returns: Tensor | None = None  # [B, C] float32: GAE returns, the critic's targets (PPO)
    packed: Any = None  # rl_packing.PackedRows: the forward runs these rows instead of input_ids (optim.packing)

    @property
    def size(self) -> int:
        return self.targets.shape[0]

    @property
    def shares_prefixes(self) -> bool:
        """True when some rows continue the same prompt (a GRPO group), so it can be run once."""
        return self.prefix_rows.numel() < self.size

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(samples: Sequence[Sample], pad_id: int) -> MicroBatch:
    """Pad `samples` into one completion-aligned micro-batch (see the module docstring)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    B = len(samples)
    P = max(len(s.prompt_ids) for s in samples)
    C = max(1, max(len(s.completion_ids) for s in samples))
    input_ids = torch.full((B, P + C), pad_id, dtype=torch.long)
    attention = torch.zeros((B, P + C), dtype=torch.long)
    loss_mask = torch.zeros((B, C), dtype=torch.bool)
    sampler = _per_token_field([s.sampler_logprobs for s in samples], C)
    ref = _per_token_field([s.ref_logprobs for s in samples], C)
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        input_ids[i, P - p : P] = torch.tensor(s.prompt_ids, dtype=torch.long)
        input_ids[i, P : P + c] = torch.tensor(s.completion_ids, dtype=torch.long)
        attention[i, P - p : P + c] = 1
        loss_mask[i, :c] = not s.masked
    position_ids = (attention.cumsum(-1) - 1).clamp_min(0)
    first: dict[tuple[int, ...], int] = {}
    prefix_index = [first.setdefault(s.prompt_ids, len(first)) for s in samples]
    prefix_rows = [prefix_index.index(g) for g in range(len(first))]
    return MicroBatch(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=position_ids,
        prompt_len=P,
        targets=input_ids[:, P:].clone(),
        loss_mask=loss_mask,
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        index=torch.tensor([s.index for s in samples], dtype=torch.long),
        prefix_rows=torch.tensor(prefix_rows, dtype=torch.long),
        prefix_index=torch.tensor(prefix_index, dtype=torch.long),
        sampler_logprobs=sampler,
        ref_logprobs=ref,
    )


def _per_token_field(rows: Sequence[Sequence[float] | None], width: int) -> Tensor | None:
    """[B, width] float32 of per-token values (zero-padded on the right), or None if any row lacks them."""
    if any(r is None for r in rows):
        return None
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        if len(r):  # type: ignore[arg-type]
            out[i, : len(r)] = torch.tensor(list(r), dtype=torch.float32)  # type: ignore[arg-type]
    return out


def micro_batches(
    samples: Sequence[Sample], micro_batch_size: int, pad_id: int, *, bucket: bool = True
) -> list[MicroBatch]:
    """Split `samples` into micro-batches of `micro_batch_size` (the last may be smaller).

    With `bucket`, rows are ordered by (prompt length, completion length) first: the order of rows
    does not change the summed loss, only how much padding each micro-batch carries.
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    order = list(samples)
    if bucket:
        order.sort(key=lambda s: (len(s.completion_ids), len(s.prompt_ids)))
    return [collate(order[i : i + micro_batch_size], pad_id) for i in range(0, len(order), micro_batch_size)]


def padding_fraction(batches: Sequence[Any]) -> float:  # MicroBatch or packing.PackedBatch
    """Fraction of the forward's token slots that are padding (0 = no waste); of the packed rows when
    a micro-batch is packed (`rl_packing`)."""
    forwarded = [getattr(b, "packed", None) or b for b in batches]
    slots = sum(b.input_ids.numel() for b in forwarded)
    return 1.0 - sum(b.num_tokens for b in forwarded) / max(slots, 1)
