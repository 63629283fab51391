"""Optimizers and learning-rate schedules.

`build_optimizer` returns AdamW over every trainable parameter (torch's fused kernel when every parameter is
a plain fp32/bf16 CPU tensor: one pass over all of them, where torch's CPU default loops over the
tensors one op at a time; the same update up to float rounding, see `_adamw`); (type = "soap" / "kl_shampoo") heavyball's
SOAP (Vyas et al. 2024) or KL-Shampoo (Lin et al. 2025), an optional extra; or (type = "muon") torch.optim.Muon
(Jordan et al. 2024, "Muon: an optimizer for hidden layers") over the hidden 2-D weight matrices
with AdamW for embeddings, the LM head, norms and biases, as Muon's authors prescribe.  Muon runs
with `adjust_lr_fn="match_rms_adamw"` (Liu et al. 2025, "Muon is Scalable for LLM Training") so one
learning rate serves both.  The schedule is a pure function of the optimizer step (`lr_factor`),
applied to every group's `base_lr` before each step, so resuming needs only the step number.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class Optimizers:
    """One or two torch optimizers stepped together (AdamW, or Muon + AdamW)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        for group in self.param_groups():
            group.setdefault("base_lr", group["lr"])

    def param_groups(self) -> Iterator[dict[str, Any]]:
        for opt in self.optimizers:
            yield from opt.param_groups

    def set_lr(self, factor: float) -> float:
        for group in self.param_groups():
            group["lr"] = group["base_lr"] * factor
        return next(self.param_groups())["lr"]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        if len(states) != len(self.optimizers):
            raise ValueError(
                f"checkpoint has {len(states)} optimizer states but this run builds {len(self.optimizers)}: "
                "was optim.type changed since the checkpoint was written?"
            )
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)


def _is_muon_param(name: str, p: torch.Tensor, model: nn.Module) -> bool:
    excluded = {
        id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
    }
    return p.ndim == 2 and id(p) not in excluded


def build_optimizer(model: nn.Module, cfg: Any) -> Optimizers:
    """The optimizer `cfg.type` names ("adamw", "muon", "soap", "kl_shampoo"), over the trainable parameters."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.type == "adamw":
        return Optimizers([_adamw([p for _, p in params], cfg)])
    if cfg.type == "muon":
        return _muon(model, params, cfg)
    if cfg.type in ("soap", "kl_shampoo"):
        cls = _heavyball(cfg)
        if params and params[0][1].device.type == "cpu":
            _heavyball_eager()
        return Optimizers([cls([p for _, p in params], lr=cfg.lr, betas=cfg.betas,
                                           shampoo_beta=cfg.shampoo_beta, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                           precondition_frequency=cfg.precondition_frequency,
                                           max_precond_dim=cfg.max_precond_dim, compile_step=False)])  # fmt: skip
    raise ValueError(f"optim.type: unknown optimizer {cfg.type!r}")


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """torch's fused AdamW applies: plain (not DTensor / FSDP2-sharded) floating-point CPU tensors."""
    return bool(params) and all(type(p.data) is torch.Tensor and p.device.type == "cpu" and p.is_floating_point()
                                for p in params)  # fmt: skip


def _adamw(params: list[torch.Tensor], cfg: Any) -> torch.optim.AdamW:
    """AdamW; on CPU the fused kernel (issue 19: 1.1 vs 3.9 ms per step on the 1m model, one thread).  Fused and
    for-loop AdamW compute the same update in a different order of float operations (|diff| ~1 ulp per step);
    the state dict is the same, so either loads the other's checkpoint.  Elsewhere torch's default (foreach on
    GPUs)."""
    fused = True if _fused_ok(params) else None
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                             fused=fused)  # fmt: skip


def _muon(model: nn.Module, params: list[tuple[str, nn.Parameter]], cfg: Any) -> Optimizers:
    matrices = [p for n, p in params if _is_muon_param(n, p, model)]
    matrix_ids = {id(p) for p in matrices}
    rest = [p for _, p in params if id(p) not in matrix_ids]
    muon = torch.optim.Muon(matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                            adjust_lr_fn="match_rms_adamw")  # fmt: skip
    adamw = _adamw(rest, cfg)
    return Optimizers([muon, adamw] if rest else [muon])


def _heavyball_eager() -> None:
    """heavyball torch.compiles its kernels (mode max-autotune) even with compile_step=False; on a CPU the
    first step then autotunes for ~2 minutes on the 1m model.  Eager is the right trade there."""
    import heavyball.utils

    heavyball.utils.compile_mode = None


def _heavyball(cfg: Any) -> Any:
    """heavyball's SOAP / KL-Shampoo class (an optional extra: SOAP and Shampoo are not in torch)."""
    try:
        import heavyball
    except ImportError:
        raise ImportError(
            f"optim.type = {cfg.type!r} needs the heavyball package: pip install 'rlvr[optim]' "
            "(or choose optim.type = 'adamw' / 'muon')"
        ) from None
    return {"soap": heavyball.SOAP, "kl_shampoo": heavyball.KLShampoo}[cfg.type]


def lr_factor(step: int, cfg: Any, total_steps: int) -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based).

    Linear warmup over `warmup_steps` (from 1/(warmup+1) up to 1), then: constant; cosine decay to
    `min_lr_ratio` at `total_steps`; or step decay by `decay_gamma` every `decay_every` steps.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    after = step - cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.decay_gamma ** (after // cfg.decay_every)
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min(after / span, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
