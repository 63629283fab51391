"""Per-token log-probabilities of completion tokens, without materialising [B, T, V] logits.

The decoder body runs once over `input_ids [B, P + C]`; only the C hidden states that predict
completion tokens are projected through the LM head, chunk by chunk, by
`rlvr.algorithms.logprobs.logprobs_and_entropy_from_hidden` (fp32 log-softmax per chunk).  With
`autocast`, matmuls run in bf16 while weights (and so the optimizer's master copy) stay fp32: the
"bf16 autocast with fp32 master weights" recipe.  Entropy comes from the same pass for free and is
returned detached (a metric) unless `entropy_grad` asks for it as a loss term (an entropy bonus).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from rlvr.algorithms.logprobs import logprobs_and_entropy_from_hidden
from rlvr.models.compat import cache_kwarg, returned_cache
from rlvr.trainer.batching import MicroBatch


@contextlib.contextmanager
def maybe_autocast(enabled: bool, device_type: str = "cpu") -> Iterator[None]:
    """bf16 autocast on `device_type` when enabled (a no-op otherwise)."""
    if enabled:
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            yield
    else:
        yield


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, Tensor]:
    """The transformer body (returns hidden states) and the LM-head weight [V, H] of a causal LM."""
    # under DDP / FSDP2 the body runs through its wrapper (`rlvr.trainer.distributed.wrap_model`)
    body = model.__dict__.get("parallel_body") or getattr(model, getattr(model, "base_model_prefix", "model"), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or head is None or getattr(head, "bias", None) is not None:
        raise TypeError(
            f"{type(model).__name__}: expected a causal LM with a `{getattr(model, 'base_model_prefix', 'model')}` "
            "body and a bias-free output embedding (Llama/Qwen/Mistral-style)"
        )
    return body, head.weight


def completion_logprobs(
    model: nn.Module,
    batch: MicroBatch,
    *,
    temperature: float = 1.0,
    autocast: bool,  # required: a default of True would mean emulated bf16 on most CPUs
    chunk_size: int = 1024,
    share_prefix: bool = True,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor]:  # logprobs [B, C] (fp32, differentiable), entropy [B, C] (detached unless entropy_grad)
    """log pi(completion token | prefix) at `temperature` for every completion slot of `batch`.

    Values at padded slots are finite but meaningless: callers must apply `batch.loss_mask`.
    With `share_prefix`, a prompt shared by several rows (a GRPO group) runs through the model once
    and its KV cache is reused by every row, with gradients flowing back through it; this is exact
    (the same function, evaluated with fewer FLOPs) and a test holds it to the plain path.
    """
    body, weight = decoder_and_head(model)
    device = weight.device
    if batch.packed is not None:  # optim.packing: rows of prompts + completions (`rl_packing`)
        return _packed_logprobs(model, body, batch, temperature=temperature, autocast=autocast,
                                chunk_size=chunk_size, entropy_grad=entropy_grad)  # fmt: skip
    with maybe_autocast(autocast, device.type):
        # activation checkpointing turns the KV cache off in training: then the plain (equal) path
        if share_prefix and batch.shares_prefixes and not _checkpointing(model):
            hidden = _shared_prefix_hidden(body, batch, device)
        else:
            hidden = _full_hidden(body, batch, device)
    weight = decoder_and_head(model)[1]  # read again: FSDP2 swaps in the gathered weight during the body's forward
    w = weight.to(hidden.dtype)  # bf16 copy under autocast (gradient flows to the fp32 weight)
    logprobs, entropy = logprobs_and_entropy_from_hidden(
        hidden, w, batch.targets.to(device), chunk_size=chunk_size, temperature=temperature
    )
    return logprobs.float(), (entropy if entropy_grad else entropy.detach()).float()


def _packed_logprobs(model: nn.Module, body: nn.Module, batch: MicroBatch, *, temperature: float, autocast: bool,
                     chunk_size: int, entropy_grad: bool) -> tuple[Tensor, Tensor]:  # fmt: skip  # [B, C] each
    """`completion_logprobs` of a packed micro-batch: the rows' forward, the completion tokens' logprobs
    from the states that predict them, scattered back to the [B, C] layout (0 at padded slots)."""
    pk, device = batch.packed, decoder_and_head(model)[1].device
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "eager")
    dtype = model.get_input_embeddings().weight.dtype  # an additive mask in the embeddings' dtype, as HF's own
    with maybe_autocast(autocast, device.type):
        hidden = body(
            input_ids=pk.input_ids.to(device), position_ids=pk.position_ids.to(device),
            attention_mask=pk.attention_mask(impl, dtype, device), use_cache=False,
        ).last_hidden_state  # [R, L, H]
    w = decoder_and_head(model)[1]  # after the body's forward (FSDP2)
    states = hidden.reshape(-1, hidden.shape[-1])[pk.gather.to(device)]  # [N, H]
    scatter = pk.scatter.to(device)
    targets = batch.targets.to(device).reshape(-1)[scatter]
    lp, ent = logprobs_and_entropy_from_hidden(states[None], w.to(states.dtype), targets[None],
                                               chunk_size=chunk_size, temperature=temperature)  # fmt: skip
    B, C = batch.targets.shape
    lp, ent = (x[0].float().new_zeros(B * C).index_copy(0, scatter, x[0].float()).view(B, C) for x in (lp, ent))
    return lp, (ent if entropy_grad else ent.detach())


def _checkpointing(model: nn.Module) -> bool:
    """Activation checkpointing is on (transformers 5 renamed `is_gradient_checkpointing`)."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def completion_hidden(body: nn.Module, batch: MicroBatch) -> Tensor:  # [B, C, H]
    """The decoder states that predict each completion token (a value head reads them: PPO's critic)."""
    return _full_hidden(body, batch, next(body.parameters()).device)


def _full_hidden(body: nn.Module, batch: MicroBatch, device: torch.device) -> Tensor:  # [B, C, H]
    P, C = batch.prompt_len, batch.targets.shape[1]
    hidden = body(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device),
        use_cache=False,
    ).last_hidden_state  # [B, P + C, H]
    return hidden[:, P - 1 : P - 1 + C]  # the states that predict the completion tokens


def _shared_prefix_hidden(body: nn.Module, batch: MicroBatch, device: torch.device) -> Tensor:  # [B, C, H]
    """Prompts once ([G, P] with a KV cache), then every row's completion against its prompt's cache."""
    P = batch.prompt_len
    rows, index = batch.prefix_rows.to(device), batch.prefix_index.to(device)
    ids, mask, pos = (t.to(device) for t in (batch.input_ids, batch.attention_mask, batch.position_ids))
    prompt = body(
        input_ids=ids[rows, :P], attention_mask=mask[rows, :P], position_ids=pos[rows, :P], use_cache=True
    )
    cache = returned_cache(prompt)
    cache.batch_select_indices(index)  # [G, ...] -> [B, ...] (an indexing op: gradients flow back)
    completion = body(
        input_ids=ids[:, P:],
        attention_mask=mask,
        position_ids=pos[:, P:],
        use_cache=True,
        **{cache_kwarg(body): cache},
    ).last_hidden_state  # [B, C, H]
    last_prompt = prompt.last_hidden_state[:, -1][index]  # [B, H]: prompts are left-padded
    return torch.cat([last_prompt.unsqueeze(1), completion[:, :-1]], dim=1)


@torch.no_grad()
def completion_logprobs_no_grad(
    model: nn.Module, batch: MicroBatch, *, temperature: float = 1.0, autocast: bool
) -> Tensor:  # [B, C]
    """`completion_logprobs` without a graph (old-policy and reference passes)."""
    return completion_logprobs(model, batch, temperature=temperature, autocast=autocast)[0]


def masked_mean(x: Tensor, mask: Tensor) -> float:  # [B, C], [B, C] -> float
    m = mask.to(x.dtype)
    return float((x * m).sum() / m.sum().clamp_min(1.0))
