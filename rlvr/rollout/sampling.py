"""On-device next-token sampling: temperature, top-k, top-p (nucleus), greedy.

Everything stays on the logits' device and nothing is read back to the host, so a decode loop
can run many steps without synchronising.  Sampling uses the exponential-race form of the
Gumbel-max trick: `argmax(p_i / E_i)` with `E_i ~ Exp(1)` draws `i` with probability `p_i`
(the same trick vLLM uses), driven by an explicit `torch.Generator` for reproducibility.

Logprob convention (documented once, here): the reported logprob of a sampled token is its
log-probability under the *temperature-scaled* distribution `log_softmax(logits / T)`, *before*
top-k / top-p truncation and before the min-new-tokens ban.  That is what the trainer recomputes
(it divides its logits by the same temperature and applies no truncation), so the
sampler/trainer mismatch metric compares like with like.  vLLM's default ("raw_logprobs") reports
T = 1 logprobs instead; a vLLM engine should request processed logprobs or rescale.  Greedy
decoding (T = 0) reports T = 1 logprobs.
"""

from __future__ import annotations

import torch


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:  # [B, V] -> [B, V]
    """Keep the `k` largest logits per row (ties at the k-th value are all kept); -inf elsewhere."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:  # [B, V] -> [B, V]
    """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of most likely tokens whose
    probability mass reaches `p`; the most likely token is always kept."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    drop_sorted = mass_before >= p  # the first token has mass_before 0 < p: always kept
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,  # [B, V] float32
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    banned: torch.Tensor | None = None,  # [K] long: token ids that may not be sampled now
) -> tuple[torch.Tensor, torch.Tensor]:  # tokens [B] long, logprobs [B] float32
    """Draw one token per row; return it with its logprob (see the module docstring)."""
    scaled = logits.float() if temperature == 0 else logits.float() / temperature
    logprobs = torch.log_softmax(scaled, dim=-1)  # [B, V] the reported distribution
    filtered = scaled
    if banned is not None and banned.numel() > 0:
        filtered = filtered.index_fill(-1, banned, float("-inf"))
    if temperature == 0:
        tokens = filtered.argmax(dim=-1)
    else:
        filtered = top_p_filter(top_k_filter(filtered, top_k), top_p)
        probs = filtered.softmax(dim=-1)
        race = torch.empty_like(probs).exponential_(generator=generator)
        tokens = (probs / race).argmax(dim=-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)
