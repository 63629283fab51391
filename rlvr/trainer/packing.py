"""Sequence packing for SFT: several prompt + completion sequences per row, no attention across them.

Layout of a packed micro-batch (R rows of L = `row_len` columns, sequences placed whole, first-fit
decreasing by length):

    input_ids     [R, L]  sequences back to back, padding at the end of a row
    position_ids  [R, L]  restart at 0 for every sequence (and for the trailing padding)
    targets       [R, L]  input_ids shifted left by one (the token each column predicts)
    loss_mask     [R, L]  True where the target is a completion token of the same sequence

No attention mask is passed: Hugging Face models (transformers >= 4.54: `masking_utils`) read the
restarting position ids as packed sequences and build a block-diagonal causal mask for every attention
kernel (eager, SDPA, flash), so a token never sees another sequence.  The loss is therefore the same
function as the unpadded one (a test holds packed to unpacked logprobs), with padding cut from
`sum(max length per micro-batch)` to at most one partial row per micro-batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rlvr.algorithms.logprobs import token_logprobs_from_hidden
from rlvr.trainer.batching import Sample
from rlvr.trainer.forward import decoder_and_head, maybe_autocast


@dataclass(slots=True)
class PackedBatch:
    input_ids: Tensor  # [R, L] long
    position_ids: Tensor  # [R, L] long, restarting per sequence
    targets: Tensor  # [R, L] long
    loss_mask: Tensor  # [R, L] bool
    segments: list[list[int]]  # per row, the sample indices it holds, in order
    num_tokens: int  # non-padding tokens (as MicroBatch.num_tokens, so batching.padding_fraction applies)


def pack_rows(samples: Sequence[Sample], row_len: int) -> list[list[int]]:
    """Indices into `samples` grouped into rows of at most `row_len` tokens (first-fit decreasing)."""
    too_long = [i for i, s in enumerate(samples) if s.length > row_len]
    if too_long:
        raise ValueError(
            f"sample {too_long[0]} has {samples[too_long[0]].length} tokens, more than a packed row's "
            f"{row_len}: cut samples to data.max_len before packing"
        )
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(samples)), key=lambda i: -samples[i].length):
        n = samples[i].length
        r = next((r for r, left in enumerate(room) if left >= n), None)
        if r is None:
            rows.append([i])
            room.append(row_len - n)
        else:
            rows[r].append(i)
            room[r] -= n
    return rows


def collate_packed(samples: Sequence[Sample], rows: Sequence[Sequence[int]], pad_id: int) -> PackedBatch:
    """One packed micro-batch holding `rows` (lists of indices into `samples`)."""
    L = max(sum(samples[i].length for i in row) for row in rows)
    R = len(rows)
    ids = torch.full((R, L + 1), pad_id, dtype=torch.long)  # one spare column: the last target
    pos = torch.zeros((R, L + 1), dtype=torch.long)
    completion = torch.zeros((R, L + 1), dtype=torch.bool)  # column holds a counted completion token
    start = torch.zeros((R, L + 1), dtype=torch.bool)  # column starts a new sequence
    for r, row in enumerate(rows):
        col = 0
        for i in row:
            s = samples[i]
            p, n = len(s.prompt_ids), s.length
            ids[r, col : col + n] = torch.tensor(s.prompt_ids + s.completion_ids, dtype=torch.long)
            pos[r, col : col + n] = torch.arange(n)
            completion[r, col + p : col + n] = not s.masked
            start[r, col] = True
            col += n
        pos[r, col:] = torch.arange(L + 1 - col)  # trailing padding: a sequence of its own
        start[r, col] = True
    # column t predicts column t + 1; it counts when that token is a completion token of the same sequence
    loss_mask = completion[:, 1:] & ~start[:, 1:]
    return PackedBatch(
        input_ids=ids[:, :L],
        position_ids=pos[:, :L],
        targets=ids[:, 1:].clone(),
        loss_mask=loss_mask,
        segments=[list(row) for row in rows],
        num_tokens=sum(samples[i].length for row in rows for i in row),
    )


def packed_batches(
    samples: Sequence[Sample], row_len: int, rows_per_batch: int, pad_id: int
) -> list[PackedBatch]:
    """Pack `samples` into rows of `row_len` tokens and group the rows into micro-batches."""
    if rows_per_batch < 1:
        raise ValueError(f"rows_per_batch must be >= 1, got {rows_per_batch}")
    rows = pack_rows(samples, row_len)
    return [
        collate_packed(samples, rows[i : i + rows_per_batch], pad_id)
        for i in range(0, len(rows), rows_per_batch)
    ]


def empty_packed(pad_id: int) -> PackedBatch:
    """A packed micro-batch with nothing that counts (loss 0, gradient 0): what a rank with fewer packed
    micro-batches runs so that every rank runs the same number (DDP reduces in every backward, FSDP2
    gathers in every forward)."""
    return collate_packed([Sample((pad_id,), (), masked=True)], [[0]], pad_id)


def packed_logprobs(
    model: nn.Module, batch: PackedBatch, *, autocast: bool = False, chunk_size: int = 1024
) -> Tensor:  # [R, L] fp32, differentiable; meaningful where batch.loss_mask
    """log pi(target | its own sequence's prefix) at every column of a packed batch."""
    _require_packed_masks()
    body, weight = decoder_and_head(model)
    device = weight.device
    with maybe_autocast(autocast, device.type):
        hidden = body(
            input_ids=batch.input_ids.to(device),
            position_ids=batch.position_ids.to(device),
            attention_mask=None,  # the restarting position ids make the mask block-diagonal
            use_cache=False,
        ).last_hidden_state
    logprobs = token_logprobs_from_hidden(hidden, weight.to(hidden.dtype), batch.targets.to(device), chunk_size=chunk_size)
    return logprobs.float()


@functools.cache
def _require_packed_masks() -> None:
    """Older transformers ignore restarting position ids and would let sequences attend to each other."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError as exc:
        import transformers

        raise RuntimeError(
            f"data.packing needs transformers >= 4.54 (block-diagonal masks from position ids); "
            f"transformers {transformers.__version__} is installed: upgrade it or set data.packing = false"
        ) from exc
