"""Pluggable parts as config sections that own their defaults, told apart by a `type` key.

    [algorithm.objective]
    type = "gspo"              # GSPO's own clip range (3e-4 / 4e-4) comes with the type
    [algorithm.advantage]
    type = "my_pkg.adv:shaped" # a user function: "package.module:function" ...
    kwargs = { gamma = 0.5 }   # ... with its own settings, bound at load time

Each section is a pydantic discriminated union (pydantic's callable `Discriminator`): the `type`
picks the model, so a setting that belongs to one type (`dual_clip` on PPO-clip) is an unknown key
on another, and a default lives once, on its type's field.  A bare string is shorthand for the
type (`objective = "gspo"`).  A type containing ":" selects the `Custom` model.  Which function
a type names is the registry's business (`rlvr.algorithms.registry`, checked by the trainer's
`build.validate` before any model loads): this layer may not import the algorithms.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def settings(self) -> dict[str, Any]:
        """The keyword arguments the part's function receives (everything but `type`)."""
        return self.model_dump(exclude={"type"})


class Custom(Part):
    """A user function `"package.module:function"` and the keyword arguments it is called with."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _path(cls, v: str) -> str:
        module, _, attr = v.partition(":")
        if not module or not attr or ":" in attr:
            raise ValueError(f"a custom part is written 'package.module:function', got {v!r}")
        return v

    def settings(self) -> dict[str, Any]:
        return dict(self.kwargs)


def _shorthand(v: Any) -> Any:
    return {"type": v} if isinstance(v, str) else v


def _typed(default: str, *members: type[Part], custom: type[Part] | None = Custom) -> Any:
    """A union of `members` (each with a Literal `type`) plus `custom`, keyed by `type` (default `default`)."""

    def tag(v: Any) -> str:
        t = v.get("type", default) if isinstance(v, dict) else getattr(v, "type", default)
        return "custom" if custom is not None and isinstance(t, str) and ":" in t else str(t)

    def with_default(v: Any) -> Any:
        v = _shorthand(v)
        return {"type": default, **v} if isinstance(v, dict) and "type" not in v else v

    tagged = [Annotated[m, Tag(m.model_fields["type"].default)] for m in members]
    if custom is not None:
        tagged.append(Annotated[custom, Tag("custom")])
    union = Annotated[Union[tuple(tagged)], Discriminator(tag)]  # noqa: UP007
    return Annotated[union, BeforeValidator(with_default)]


# ---------------------------------------------------------------- advantage estimators
class GRPOAdvantage(Part):
    """GRPO (Shao et al. 2024, DeepSeekMath §4.1.2): (r - group mean) / (group std + eps)."""

    type: Literal["grpo"] = "grpo"
    scale: bool = True  # divide by the group std (False: Dr. GRPO's unscaled form)
    eps: float = Field(default=1e-6, gt=0)


class DrGRPOAdvantage(Part):
    """Dr. GRPO (Liu et al. 2025): r - group mean, no std division."""

    type: Literal["dr_grpo"] = "dr_grpo"


class RLOOAdvantage(Part):
    """RLOO (Ahmadian et al. 2024): r minus the mean of the other samples of the group."""

    type: Literal["rloo"] = "rloo"


class ReinforcePPAdvantage(Part):
    """REINFORCE++ (Hu 2025): batch-whitened rewards; works with group_size = 1."""

    type: Literal["reinforce_pp"] = "reinforce_pp"
    eps: float = Field(default=1e-6, gt=0)


class ReinforcePPBaselineAdvantage(Part):
    """REINFORCE++-baseline: group-mean baseline, then batch whitening."""

    type: Literal["reinforce_pp_baseline"] = "reinforce_pp_baseline"
    eps: float = Field(default=1e-6, gt=0)


Advantage = _typed("grpo", GRPOAdvantage, DrGRPOAdvantage, RLOOAdvantage, ReinforcePPAdvantage,
                   ReinforcePPBaselineAdvantage)  # fmt: skip
GROUP_RELATIVE = ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline")


# ---------------------------------------------------------------- policy objectives
class PPOClipObjective(Part):
    """PPO-clip per token (Schulman et al. 2017; GRPO); DAPO clip-higher: clip_high = 0.28."""

    type: Literal["ppo_clip"] = "ppo_clip"
    clip_low: float = Field(default=0.2, ge=0, lt=1)
    clip_high: float = Field(default=0.2, ge=0)
    dual_clip: float | None = Field(default=None, gt=1)  # Ye et al. 2020; typically 3.0


class GSPOObjective(Part):
    """GSPO (Zheng et al. 2025): sequence-level ratio; the paper's clip range 3e-4 / 4e-4."""

    type: Literal["gspo"] = "gspo"
    clip_low: float = Field(default=3e-4, ge=0, lt=1)
    clip_high: float = Field(default=4e-4, ge=0)


class CISPOObjective(Part):
    """CISPO (MiniMax-M1 2025): clipped, detached IS weight times A * logp; no lower clip by default."""

    type: Literal["cispo"] = "cispo"
    clip_low: float | None = Field(default=None, ge=0, lt=1)
    clip_high: float = Field(default=0.2, ge=0)  # the paper tunes only eps_high


class ReinforceObjective(Part):
    """Vanilla policy gradient (Williams 1992): on-policy only (algorithm.mu = 1)."""

    type: Literal["reinforce"] = "reinforce"


Objective = _typed("ppo_clip", PPOClipObjective, GSPOObjective, CISPOObjective, ReinforceObjective)
ON_POLICY_ONLY = ("reinforce",)


# ---------------------------------------------------------------- KL to the reference policy
class _KL(Part):
    beta: float = Field(default=0.0, ge=0)  # > 0 scores the reference policy every step
    placement: Literal["loss", "reward"] = "loss"  # GRPO: loss; PPO (Ziegler et al.): reward
    # adaptive KL (Ziegler et al. 2019, §2.2): beta follows the observed KL toward `target`
    target: float | None = Field(default=None, gt=0)
    horizon: int = Field(default=10_000, ge=1)  # samples over which beta may change by e^0.2

    @property
    def enabled(self) -> bool:
        return self.beta > 0

    @property
    def adaptive(self) -> bool:
        return self.target is not None

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type", "beta", "placement", "target", "horizon"})


class K1KL(_KL):
    """Schulman's k1 = log pi - log ref (unbiased; the in-reward estimator of PPO-RLHF)."""

    type: Literal["k1"] = "k1"


class K2KL(_KL):
    """Schulman's k2 = (log pi - log ref)^2 / 2 (its gradient is the reverse-KL gradient)."""

    type: Literal["k2"] = "k2"


class K3KL(_KL):
    """Schulman's k3 (GRPO's estimator), log-ratio clamped to +-clamp before exp."""

    type: Literal["k3"] = "k3"
    clamp: float = Field(default=10.0, gt=0)


class CustomKL(_KL, Custom):
    def settings(self) -> dict[str, Any]:
        return dict(self.kwargs)


KL = _typed("k3", K1KL, K2KL, K3KL, custom=CustomKL)


# ---------------------------------------------------------------- loss aggregation
class TokenMean(Part):
    """sum(loss * mask) / sum(mask) over the whole optimizer step (DAPO's token-level loss)."""

    type: Literal["token_mean"] = "token_mean"


class SeqMeanTokenMean(Part):
    """Mean over sequences of each sequence's token mean (the original GRPO)."""

    type: Literal["seq_mean_token_mean"] = "seq_mean_token_mean"


class SeqMeanTokenSumNorm(Part):
    """sum(loss * mask) / (num_seqs * max_len) (Dr. GRPO); max_len None: rollout.max_new_tokens."""

    type: Literal["seq_mean_token_sum_norm"] = "seq_mean_token_sum_norm"
    max_len: int | None = Field(default=None, ge=1)


class CustomAggregation(Custom):
    """A user aggregation needs both halves: `type` (per micro-batch numerator / denominator) and
    `denominator` ("package.module:function" over the step's loss masks), so the step can compute
    the global denominator once, as for the built-ins."""

    denominator: str


Aggregation = _typed("token_mean", TokenMean, SeqMeanTokenMean, SeqMeanTokenSumNorm, custom=CustomAggregation)


# ---------------------------------------------------------------- sampler/trainer mismatch correction
class NoCorrection(Part):
    type: Literal["none"] = "none"


class TruncatedIS(Part):
    """Truncated importance sampling (Yao et al. 2025): loss x min(pi_old / pi_sampler, cap)."""

    type: Literal["tis"] = "tis"
    cap: float = Field(default=2.0, ge=1)
    level: Literal["token", "sequence", "geometric"] = "token"


class MaskedIS(Part):
    """Masked IS / IcePop: tokens whose ratio leaves [low, cap] get no loss (low None: 1/cap)."""

    type: Literal["mis"] = "mis"
    cap: float = Field(default=2.0, ge=1)
    low: float | None = Field(default=None, gt=0, le=1)
    level: Literal["token", "sequence", "geometric"] = "token"


Correction = _typed("none", NoCorrection, TruncatedIS, MaskedIS, custom=None)


class EntropyConfig(Part):
    """An entropy bonus: `- coef * entropy` per token (0: entropy is only logged)."""

    coef: float = Field(default=0.0, ge=0)


# ---------------------------------------------------------------- preference losses (kind = "dpo")
class SigmoidDPOLoss(Part):
    """DPO (Rafailov et al. 2023); label_smoothing > 0: conservative DPO."""

    type: Literal["sigmoid"] = "sigmoid"
    beta: float = Field(default=0.1, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)


class IPOLoss(Part):
    """IPO (Azar et al. 2023): squared margin to 1/(2 beta)."""

    type: Literal["ipo"] = "ipo"
    beta: float = Field(default=0.1, gt=0)


class LengthNormalizedDPOLoss(Part):
    """Length-normalised DPO, Tulu 3's best preference method (their beta = 5)."""

    type: Literal["length_normalized"] = "length_normalized"
    beta: float = Field(default=5.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)


class SimPOLoss(Part):
    """SimPO (Meng et al. 2024): reference-free, length-normalised, target margin gamma."""

    type: Literal["simpo"] = "simpo"
    beta: float = Field(default=2.0, gt=0)
    gamma: float = Field(default=1.0, ge=0)


PreferenceLoss = _typed("sigmoid", SigmoidDPOLoss, IPOLoss, LengthNormalizedDPOLoss, SimPOLoss)
REFERENCE_FREE = ("simpo",)
