"""`VLLMServerEngine`: vLLM's own OpenAI-compatible server as a subprocess, spoken to over HTTP.

The engine in its own process is what lets rollout overlap training (`rlvr.trainer.async_rollout`
samples the next batch on a background thread while the trainer steps; `out_of_process = True` says
so), and what puts inference on devices of its own.  The server runs with
`VLLM_SERVER_DEV_MODE=1` (for `/collective_rpc` and `/reset_prefix_cache`) and without a tokenizer:
prompts go in as token ids and come back as token ids, and rlvr's tokenizer decodes.

Conventions are `VLLMEngine`'s (`rlvr.rollout.vllm`): temperature-scaled sampler logprobs before
top-k / top-p (re-scored when those truncate), prompt logprobs rescaled at temperature != 1, one
request per prompt with its own seed (vLLM gives sample i seed + i).  Weights: `update_weights` writes
the trainer's state_dict as safetensors into a directory the server reads and calls the worker's
`reload_weights(weights_path=DIR)` (the path that works on the CPU build; on GPU vLLM's NCCL
weight-transfer API would avoid the disk round trip, not wired yet), then resets the prefix cache.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rlvr.errors import UserError
from rlvr.rollout.base import SamplingParams, TokenScores, decode_completion
from rlvr.rollout.vllm import CPU_KV_CACHE_BYTES, INSTALL_HINT, _eos_ids, _request_seed
from rlvr.types import Completion


class _Logprob:
    """A prompt-logprob entry from JSON, shaped like vLLM's `Logprob` for the shared parsers."""

    __slots__ = ("logprob", "rank")

    def __init__(self, d: Mapping[str, Any]) -> None:
        self.logprob, self.rank = float(d["logprob"]), int(d.get("rank") or 0)


class VLLMServerEngine:
    """An `Engine` over a `vllm serve` subprocess (see the module docstring)."""

    out_of_process = True

    def __init__(self, model_dir: str | Path, tokenizer: Any, *, seed: int = 0, dtype: str = "auto",
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.3,
                 kv_cache_bytes: int | None = None, tensor_parallel_size: int = 1, enforce_eager: bool = True,
                 startup_timeout_s: float = 300.0, workdir: str | Path | None = None) -> None:  # fmt: skip
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError(f"rollout.engine.mode = 'server' needs vLLM, which is not installed: {INSTALL_HINT}")
        self.tokenizer, self.model_dir = tokenizer, Path(model_dir)
        self.config = json.loads((self.model_dir / "config.json").read_text())
        self.dtype = str(self.config.get("torch_dtype") or self.config.get("dtype") or "float32") if dtype == "auto" else dtype
        self.vocab_size, self.eos_ids = int(self.config["vocab_size"]), _eos_ids(self.config, tokenizer)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="rlvr-vllm-server-"))
        self.weights_dir = self.workdir / "weights"
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cuda = torch.cuda.is_available()
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--port", str(self.port), "--host", "127.0.0.1", "--skip-tokenizer-init", "--dtype", self.dtype,
               "--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1", "--seed", str(seed),
               "--tensor-parallel-size", str(tensor_parallel_size)]  # fmt: skip
        if max_model_len:
            cmd += ["--max-model-len", str(max_model_len)]
        if enforce_eager:
            cmd.append("--enforce-eager")
        if kv_cache_bytes or not cuda:
            cmd += ["--kv-cache-memory-bytes", str(kv_cache_bytes or CPU_KV_CACHE_BYTES)]
        if cuda:
            cmd += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
        self.log_path = self.workdir / "server.log"
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._finalizer = weakref.finalize(self, _shutdown, self.proc, self.workdir if workdir is None else None)
        self._wait_ready(startup_timeout_s)
        self.version = 0

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, **kwargs: Any) -> VLLMServerEngine:
        """Save `model` + `tokenizer` under a fresh work directory (removed with the engine) and serve it."""
        workdir = Path(tempfile.mkdtemp(prefix="rlvr-vllm-server-"))
        model.save_pretrained(workdir / "model")
        tokenizer.save_pretrained(workdir / "model")
        try:
            engine = cls(workdir / "model", tokenizer, workdir=workdir, **kwargs)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        weakref.finalize(engine, shutil.rmtree, workdir, True)
        return engine

    @property
    def bf16(self) -> bool:
        return self.dtype in ("bfloat16", "bf16")

    def close(self) -> None:
        """Stop the server (also done when the engine is garbage-collected and at exit)."""
        self._finalizer()

    # ---------------------------------------------------------------- Engine protocol
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty: generation needs at least one prompt token (e.g. bos)")
        base = params.seed if params.seed is not None else int(torch.randint(2**62, ()).item())
        body = {"n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                "top_k": params.top_k or -1, "max_tokens": params.max_new_tokens, "min_tokens": params.min_new_tokens,
                "stop_token_ids": sorted(set(params.stop_token_ids) | self.eos_ids), "logprobs": 0,
                "return_token_ids": True, "return_tokens_as_token_ids": True}  # fmt: skip
        bodies = [{**body, "prompt": list(p), "seed": _request_seed(base, i)} for i, p in enumerate(prompts)]
        replies = self._many("/v1/completions", bodies)
        groups = [[self._completion(ch, params) for ch in sorted(r["choices"], key=lambda ch: ch["index"])]
                  for r in replies]  # fmt: skip
        if params.temperature > 0 and (params.top_p < 1 or params.top_k > 0):
            flat = [(p, c) for p, g in zip(prompts, groups) for c in g]
            scores = iter(self.score([p for p, _ in flat], [c.token_ids for _, c in flat],
                                     temperature=params.temperature))  # fmt: skip
            groups = [[Completion(c.text, c.token_ids, next(scores).logprobs, c.finish_reason) for c in g]
                      for g in groups]  # fmt: skip
        return groups

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
        temperature: float = 1.0, top_k: int = 0,
    ) -> list[TokenScores]:  # fmt: skip
        from rlvr.rollout.vllm import _full_scores, _topk_scores, check_score_args

        full = check_score_args(prompts, completions, temperature, self.vocab_size)
        todo = [i for i, c in enumerate(completions) if len(c)]
        out = [TokenScores(()) for _ in completions]
        bodies = [{"prompt": list(prompts[i]) + list(completions[i]), "max_tokens": 1, "return_token_ids": True,
                   "prompt_logprobs": -1 if full else top_k} for i in todo]  # fmt: skip
        for i, reply in zip(todo, self._many("/v1/completions", bodies)):
            raw = reply["choices"][0]["prompt_logprobs"][len(prompts[i]):]
            rows = [{int(k): _Logprob(v) for k, v in d.items()} for d in raw]
            out[i] = (_full_scores(rows, completions[i], temperature, top_k, self.vocab_size) if full
                      else _topk_scores(rows, completions[i], top_k))  # fmt: skip
        return out

    def update_weights(self, state_dict: Mapping[str, Any], *, version: int) -> int:
        """Weights through the shared directory: safetensors, the worker's `reload_weights`, prefix reset."""
        from safetensors.torch import save_file

        tmp = self.weights_dir / "model.safetensors.tmp"
        save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, str(tmp))
        os.replace(tmp, self.weights_dir / "model.safetensors")
        self._post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(self.weights_dir)}})
        self._post("/reset_prefix_cache", {})
        self.version = int(version)
        return self.version

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode())
        h.update(f"vllm:{self.dtype}:v{self.version}".encode())
        return h.hexdigest()[:16]

    # ---------------------------------------------------------------- helpers
    def _completion(self, ch: Mapping[str, Any], params: SamplingParams) -> Completion:
        ids = [int(t) for t in ch["token_ids"]]
        lps = [float(x) for x in ch["logprobs"]["token_logprobs"]]
        reason = "stop" if ch.get("finish_reason") == "stop" else "length"
        text = decode_completion(self.tokenizer, ids)
        if params.stop_strings:
            from rlvr.rollout.hf import _stop_string_cut

            cut = _stop_string_cut(self.tokenizer, ids, params)
            if cut is not None:
                ids, lps, text, reason = ids[: cut[0]], lps[: cut[0]], cut[1], "stop"
        return Completion(text, tuple(ids), tuple(lps), reason)

    def _many(self, path: str, bodies: Sequence[Mapping[str, Any]]) -> list[Any]:
        """POST every body at once (the server batches them); replies in order."""
        if not bodies:
            return []
        with concurrent.futures.ThreadPoolExecutor(min(32, len(bodies))) as pool:
            return list(pool.map(lambda b: self._post(path, b), bodies))

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"vLLM server {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        return json.loads(data) if data else None

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the vLLM server exited with status {self.proc.returncode}; its log ends:\n{tail}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"the vLLM server did not answer /health within {timeout_s:.0f} s (log: {self.log_path})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shutdown(proc: subprocess.Popen[bytes], workdir: Path | None) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)
