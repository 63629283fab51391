"""Closed, greppable name -> function tables, plus one escape hatch for user code.

    resolve("advantage", "grpo")                      -> advantages.grpo
    resolve("objective", "my_pkg.losses:my_loss")     -> my_pkg.losses.my_loss (imported on demand)

Kinds and the call convention each table's functions follow (a user function must follow it too):

    advantage    fn(rewards [N], group_ids [N], **hyper) -> [N]
    objective    fn(logprobs=, old_logprobs=, advantages=, loss_mask=, **hyper) -> (loss [B, T], metrics)
                 (always called with keywords; `reinforce` accepts old_logprobs for metrics only)
    kl           fn(logprobs [B, T], ref_logprobs [B, T]) -> [B, T]
    aggregation  fn(per_token [B, T], loss_mask [B, T], *, denominator=None, max_len=None) -> scalar
    preference   fn(chosen [P], rejected [P], ref_chosen [P], ref_rejected [P], *, chosen_len [P],
                    rejected_len [P], **hyper) -> (loss [P], metrics)      (summed sequence logprobs)

Nothing is registered at import time by side effect; adding a built-in means adding a line here.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from rlvr.algorithms import advantages, kl, objectives, preference
from rlvr.algorithms.aggregate import AGGREGATION_MODES

__all__ = ["ADVANTAGES", "AGGREGATIONS", "KINDS", "KL_ESTIMATORS", "OBJECTIVES", "PREFERENCE_LOSSES", "check_settings", "resolve",
           "validate_name"]

ADVANTAGES: Mapping[str, Callable[..., Any]] = {
    "grpo": advantages.grpo,
    "dr_grpo": advantages.dr_grpo,
    "rloo": advantages.rloo,
    "reinforce_pp": advantages.reinforce_pp,
    "reinforce_pp_baseline": advantages.reinforce_pp_baseline,
}

OBJECTIVES: Mapping[str, Callable[..., Any]] = {
    "ppo_clip": objectives.ppo_clip,
    "gspo": objectives.gspo,
    "cispo": objectives.cispo,
    "reinforce": objectives.reinforce,
}

KL_ESTIMATORS: Mapping[str, Callable[..., Any]] = {
    "k1": kl.kl_k1,
    "k2": kl.kl_k2,
    "k3": kl.kl_k3,
}

AGGREGATIONS: Mapping[str, Callable[..., Any]] = dict(AGGREGATION_MODES)

PREFERENCE_LOSSES: Mapping[str, Callable[..., Any]] = {
    "sigmoid": preference.dpo_sigmoid,
    "ipo": preference.ipo,
    "length_normalized": preference.length_normalized_dpo,
    "simpo": preference.simpo,
}

KINDS: Mapping[str, Mapping[str, Callable[..., Any]]] = {
    "advantage": ADVANTAGES,
    "objective": OBJECTIVES,
    "kl": KL_ESTIMATORS,
    "aggregation": AGGREGATIONS,
    "preference": PREFERENCE_LOSSES,
}
_ALIASES = {"advantages": "advantage", "objectives": "objective", "kl_estimator": "kl", "kl_estimators": "kl",
            "aggregations": "aggregation"}  # fmt: skip


def _import_path(kind: str, name: str) -> Callable[..., Any]:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ValueError(f"{kind} {name!r}: a custom function is written 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"{kind} {name!r}: cannot import module {module_name!r} ({exc}); is it installed?"
        ) from exc
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"{kind} {name!r}: module {module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"{kind} {name!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


def resolve(kind: str, name: str) -> Callable[..., Any]:
    """The function named `name` in the `kind` table, or the user function `"package.module:function"`.

    Raises ValueError naming the valid choices when the kind or the name is unknown.
    """
    kind = _ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown algorithm kind {kind!r}; choose one of {sorted(KINDS)}")
    table = KINDS[kind]
    if name in table:
        return table[name]
    if ":" in name:
        return _import_path(kind, name)
    raise ValueError(
        f"unknown {kind} {name!r}; choose one of {sorted(table)} or give a custom 'package.module:function'"
    )


_CALLS: Mapping[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "advantage": ((None, None), {}),
    "objective": ((), {"logprobs": None, "old_logprobs": None, "advantages": None, "loss_mask": None}),
    "kl": ((None, None), {}),
    "aggregation": ((None, None), {"denominator": None}),
    "preference": ((None, None, None, None), {"chosen_len": None, "rejected_len": None}),
}


def check_settings(kind: str, name: str, fn: Callable[..., Any], settings: Mapping[str, Any]) -> None:
    """Config-time check that `fn` accepts its kind's call convention plus `settings` as keywords.

    So a user function with a misspelt or missing keyword fails when the config loads, naming the
    function and the keyword, not at the first training step.
    """
    kind = _ALIASES.get(kind, kind)
    args, kwargs = _CALLS[kind]
    try:
        inspect.signature(fn).bind(*args, **kwargs, **settings)
    except TypeError as exc:
        raise ValueError(
            f"{kind} {name!r} cannot be called as fn({', '.join([*(['_'] * len(args)), *kwargs])}, "
            f"**{dict(settings)}): {exc}"
        ) from None
    except ValueError:  # builtins without a signature: nothing to check
        return


def validate_name(kind: str, name: str) -> None:
    """Config-time check: raise the same ValueError `resolve` would (imports custom modules)."""
    resolve(kind, name)
