"""`HFEngine`: batched, left-padded generation and scoring for Hugging Face causal LMs.

Own decode loop (not `model.generate`): each prompt is prefilled once and its KV cache expanded
to the `n` samples of its group; the KV cache is preallocated (`backends.FastLlamaBackend` over the
engine's fused weights, `fused.FusedLlama`, rebuilt when the weights change; the model's own forward +
DynamicCache as fallback for other architectures); sampling happens on the device
(`sampling.sample_next`) and the host looks at the batch only every `check_every` steps (to stop
early once every row has finished, and to check stop strings).  Row results never depend on
`check_every`: finished rows keep being fed padding, and each row's random draws are the same.

Weights: by default the engine holds its own copy of the model in `dtype` ("auto": bf16 where bf16
matmuls are native -- on CPUs with AVX512-BF16 a bf16 matmul is ~4x fp32, while autocast re-casts fp32
weights on every call, which costs more than it saves in decoding -- and the model's own dtype where
bf16 is emulated, ~100x slower; see `rlvr.models.precision`) and `update_weights` copies the trainer's
tensors in place and takes the version it is given.
`share_weights=True` uses the trainer's model object itself: no copy, no memory, `update_weights` only
moves the version, but decoding runs in the model's dtype (or under autocast when `dtype` differs: slow on CPU).

Scoring (`score`, `rlvr.rollout.score`): teacher-forced logprobs through the model's own forward (not the
fused copy); rows of a chunk that share a prompt (a GRPO group) run it once with a KV cache and their
completions against it, rows with a unique prompt one plain forward, as they always did.

Stopping: the tokenizer's eos and `params.stop_token_ids` end a sample (the token is kept,
finish_reason "stop"); `params.stop_strings` end it at the first token whose decoded prefix
contains one (text cut after the string); otherwise finish_reason "length".  Stop tokens are banned
and stop strings ignored before `params.min_new_tokens`.  Sampler logprobs follow the convention
in `sampling`: temperature-scaled, before top-k/top-p truncation.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr.models.precision import engine_dtype
from rlvr.rollout.backends import FastLlamaBackend, HFCacheBackend, fast_path_supported
from rlvr.rollout.base import SamplingParams, TokenScores, decode_completion
from rlvr.rollout.fused import FusedLlama
from rlvr.rollout.sampling import sample_next
from rlvr.rollout.score import full_states, head_scores, left_pad, shared_prompt_states, split_by_prompt
from rlvr.types import Completion


class HFEngine:
    """An `Engine` over a local HF model (see the module docstring for the trade-offs)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        share_weights: bool = False,
        dtype: torch.dtype | str | None = "auto",
        max_batch_size: int = 64,
        backend: str = "auto",
        check_every: int = 8,
        score_chunk_elems: int = 2**24,
        share_score_prompts: bool = True,
    ) -> None:
        if backend not in ("auto", "fast", "hf"):
            raise ValueError(f"HFEngine backend must be 'auto', 'fast' or 'hf', got {backend!r}")
        if dtype == "auto":
            dtype = engine_dtype("auto", next(model.parameters()).device)
        dtype = dtype or next(model.parameters()).dtype
        self.share_weights = share_weights
        if share_weights:
            self.model = model
        else:
            self.model = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
        self.model_dtype = next(self.model.parameters()).dtype
        self.autocast_dtype = dtype if dtype != self.model_dtype else None
        self.device = next(self.model.parameters()).device
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(model, tokenizer)
        if backend == "fast" and not fast_path_supported(self.model):
            raise ValueError(
                f"HFEngine backend='fast' does not support model_type {model.config.model_type!r}"
            )
        self.fast = backend != "hf" and fast_path_supported(self.model)
        # score: a prompt shared by rows of a chunk runs once (KV cache), for the model classes whose forward
        # with a cache is known to be the same function (Llama family, no sliding window, no adapters); not on
        # the trainer's own model (share_weights), which may be wrapped or checkpointing
        self.share_score_prompts = share_score_prompts and not share_weights and fast_path_supported(self.model)
        self.max_batch_size, self.check_every, self.score_chunk_elems = (
            max_batch_size,
            check_every,
            score_chunk_elems,
        )
        self.version = 0
        self._fused: tuple[int, FusedLlama] | None = None  # (version, weights) of the fast path

    # ---------------------------------------------------------------- Engine protocol
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions per prompt, prompts processed in chunks of <= max_batch_size rows."""
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(
                    f"prompt {i} is empty: generation needs at least one prompt token (e.g. bos)"
                )
        seed = params.seed if params.seed is not None else int(torch.randint(2**62, ()).item())
        gen = torch.Generator(device=self.device).manual_seed(seed)
        per_chunk = max(1, self.max_batch_size // params.n)
        out: list[list[Completion]] = []
        for c in range(0, len(prompts), per_chunk):
            out.extend(self._generate_chunk(prompts[c : c + per_chunk], params, gen))
        return out

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
        temperature: float = 1.0, top_k: int = 0,
    ) -> list[TokenScores]:  # fmt: skip
        """Teacher-forced logprobs of each completion token given its prompt, at `temperature`
        (logits / T, as the sampler's logprobs and the trainer's are); with `top_k`, each position's
        k best tokens and their logprobs too."""
        if len(prompts) != len(completions):
            raise ValueError(f"score got {len(prompts)} prompts but {len(completions)} completions")
        if temperature <= 0:
            raise ValueError(f"score: temperature must be > 0, got {temperature}")
        out: list[TokenScores] = []
        for c in range(0, len(prompts), self.max_batch_size):
            out.extend(self._score_chunk(prompts[c : c + self.max_batch_size],
                                         completions[c : c + self.max_batch_size], temperature, top_k))  # fmt: skip
        return out

    def update_weights(self, state_dict: Mapping[str, Any], *, version: int) -> int:
        """Copy the trainer's weights in place (no reallocation) and take `version`; returns it.
        When sharing the trainer's model the weights are already there: only the version moves."""
        if not self.share_weights:
            self._copy_weights(state_dict)
        self._fused = None  # the fast path's fused copy is stale now
        self.version = int(version)
        return self.version

    def _fused_weights(self) -> FusedLlama:
        """The fast path's fused copy of the weights, rebuilt when they may have changed: after
        `update_weights`, and on every call when sharing the trainer's model (it steps in place)."""
        if self.share_weights or self._fused is None or self._fused[0] != self.version:
            self._fused = None  # free the old copy before building the new one
            with torch.no_grad():
                self._fused = (self.version, FusedLlama.from_model(self.model))
        return self._fused[1]

    def _copy_weights(self, state_dict: Mapping[str, Any]) -> None:
        own = self.model.state_dict()
        unknown = sorted(set(state_dict) - set(own))
        if unknown:
            raise KeyError(
                f"update_weights: unknown parameter names {unknown[:5]} (model has e.g. {next(iter(own))})"
            )
        loaded = {own[k].data_ptr() for k in state_dict}
        missing = [k for k, t in own.items() if k not in state_dict and t.data_ptr() not in loaded]
        if missing:
            raise KeyError(
                f"update_weights: state_dict lacks {missing[:5]}; pass the policy's full state_dict()"
            )
        with torch.no_grad():
            for k, v in state_dict.items():
                own[k].copy_(v)

    def fingerprint(self) -> str:
        """Hash of the config and of the weights' identity (version counter, or checksums when shared)."""
        h = hashlib.sha256(json.dumps(self.model.config.to_dict(), sort_keys=True, default=str).encode())
        if self.share_weights:
            with torch.no_grad():
                sums = torch.stack([p.detach().double().sum() for p in self.model.parameters()])
            h.update(sums.cpu().numpy().tobytes())
        else:
            h.update(f"v{self.version}".encode())
        return h.hexdigest()[:16]

    # ---------------------------------------------------------------- generation
    def _ctx(self) -> contextlib.AbstractContextManager[Any]:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.autocast_dtype is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
        return stack

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:  # [P, L] x2
        ids, mask = left_pad(seqs, self.pad_id)
        return ids.to(self.device), mask.to(self.device)

    def _generate_chunk(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, gen: torch.Generator
    ) -> list[list[Completion]]:
        ids, mask = self._left_pad(prompts)
        backend = FastLlamaBackend(self.model, self._fused_weights()) if self.fast else HFCacheBackend(self.model)
        stop_ids = torch.tensor(
            sorted(set(params.stop_token_ids) | self.eos_ids), dtype=torch.long, device=self.device
        )
        T = params.max_new_tokens
        with self._ctx():
            logits = backend.start(ids, mask, params.n, T)  # [B, V]
            B = logits.shape[0]
            tokens = torch.full((B, T), self.pad_id, dtype=torch.long, device=self.device)
            logps = torch.zeros((B, T), dtype=torch.float32, device=self.device)
            done = torch.zeros(B, dtype=torch.bool, device=self.device)
            for i in range(T):
                tok, lp = sample_next(
                    logits,
                    temperature=params.temperature,
                    top_k=params.top_k,
                    top_p=params.top_p,
                    generator=gen,
                    banned=stop_ids if i < params.min_new_tokens else None,
                )
                tok = tok.masked_fill(done, self.pad_id)
                tokens[:, i], logps[:, i] = tok, lp
                done |= torch.isin(tok, stop_ids)
                if i + 1 == T or (
                    (i + 1) % self.check_every == 0 and self._all_done(done, tokens, i, params)
                ):
                    break
                logits = backend.step(tok, i)
        rows = self._finish_rows(tokens.cpu().tolist(), logps.cpu().tolist(), stop_ids.tolist(), params)
        return [rows[p * params.n : (p + 1) * params.n] for p in range(len(prompts))]

    def _all_done(self, done: torch.Tensor, tokens: torch.Tensor, i: int, params: SamplingParams) -> bool:
        """Host check every few steps: mark rows whose text contains a stop string; all finished?"""
        if params.stop_strings and i + 1 >= params.min_new_tokens:
            host_done = done.cpu().tolist()
            for r, row in enumerate(tokens[:, : i + 1].cpu().tolist()):
                if not host_done[r] and _has_stop_string(
                    decode_completion(self.tokenizer, row), params.stop_strings
                ):
                    done[r] = True
        return bool(done.all())

    def _finish_rows(
        self, tokens: list[list[int]], logps: list[list[float]], stop_ids: list[int], params: SamplingParams
    ) -> list[Completion]:
        stops = set(stop_ids)
        rows = []
        for ids, lps in zip(tokens, logps):
            n_tok = next((j + 1 for j, t in enumerate(ids) if t in stops), len(ids))
            reason = "stop" if n_tok < len(ids) or ids[-1] in stops else "length"
            ids = ids[:n_tok]
            text = decode_completion(self.tokenizer, ids)
            cut = _stop_string_cut(self.tokenizer, ids, params) if params.stop_strings else None
            if cut is not None:
                n_tok, text, reason = cut[0], cut[1], "stop"
            rows.append(Completion(text, tuple(ids[:n_tok]), tuple(lps[:n_tok]), reason))
        return rows

    # ---------------------------------------------------------------- scoring
    def _score_chunk(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], temperature: float, top_k: int
    ) -> list[TokenScores]:
        """Rows whose prompt repeats in the chunk share one prompt pass (`score.shared_prompt_states`);
        the others, and every row of a model that cannot take a cache that way, go one plain forward."""
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"score: prompt {i} is empty; the first completion token needs a context")
        shared, single = split_by_prompt(prompts) if self.share_score_prompts else ([], list(range(len(prompts))))
        out: list[TokenScores | None] = [None] * len(prompts)
        for rows, states_fn in ((single, full_states), (shared, shared_prompt_states)):
            ps, cs = [prompts[r] for r in rows], [completions[r] for r in rows]
            if not rows or max(len(c) for c in cs) == 0:  # nothing to score: as an empty row among others
                for r in rows:
                    out[r] = TokenScores((), () if top_k else None, () if top_k else None)
                continue
            with self._ctx():
                states, targets = states_fn(self._body(), ps, cs, self.pad_id, self.device)
                scored = head_scores(states, targets, [len(c) for c in cs], self.model.get_output_embeddings(),
                                     temperature=temperature, top_k=top_k, chunk_elems=self.score_chunk_elems,
                                     vocab=self.model.config.vocab_size, right_aligned=states_fn is full_states)  # fmt: skip
            for r, s in zip(rows, scored):
                out[r] = s
        return out  # type: ignore[return-value]  # every row is filled above

    def _body(self) -> torch.nn.Module:
        """The decoder body (returns hidden states): `model.model` for Llama-style, `.transformer` for GPT-2."""
        return getattr(self.model, getattr(self.model, "base_model_prefix", "model"), None) or self.model.model


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen_eos) if isinstance(gen_eos, list) else ({gen_eos} if gen_eos is not None else set())
    return ids


def _has_stop_string(text: str, stop_strings: Sequence[str]) -> bool:
    return any(s in text for s in stop_strings)


def _stop_string_cut(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], params: SamplingParams
) -> tuple[int, str] | None:
    """(tokens kept, text cut after the stop string) for the first prefix of >= min_new_tokens tokens
    whose text contains a stop string, or None.  Binary search: containment is monotone in length."""
    lo, hi = max(1, params.min_new_tokens), len(ids)
    if lo > hi or not _has_stop_string(decode_completion(tokenizer, ids), params.stop_strings):
        return None
    if _has_stop_string(decode_completion(tokenizer, ids[:lo]), params.stop_strings):
        hi = lo
    while hi - lo > 1:  # invariant: prefix hi contains a stop string, prefix lo does not
        mid = (lo + hi) // 2
        if _has_stop_string(decode_completion(tokenizer, ids[:mid]), params.stop_strings):
            hi = mid
        else:
            lo = mid
    text = decode_completion(tokenizer, ids[:hi])
    end = max(text.rfind(s) + len(s) for s in params.stop_strings if s in text)
    return hi, text[:end]
