"""Scalar reward models: a causal LM trunk with a linear head read at the last token.

The model is a Hugging Face `*ForSequenceClassification` with one label (Llama / Qwen2 / Mistral ship
one), so a trained reward model is a normal HF directory.  rlvr reads the head at the last real token
itself (`rewards`), instead of relying on the HF pooling's pad-token conventions.

Normalisation: Ouyang et al. 2022 (InstructGPT, §3.5) normalise the RM so the SFT policy's samples score
0 on average; `reward_offset` (kept in the saved `config.json` as `rlvr_reward_offset`) is that mean, and
`RewardModelPart` subtracts it.  A trained RM then enters RL as one more named reward part next to the
verifiers' (`Score.parts["rm"]`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rlvr.types import Example, Score

OFFSET_KEY = "rlvr_reward_offset"


def build_reward_model(path: str | None, preset: str, seed: int, tokenizer: Any = None) -> tuple[nn.Module, Any]:
    """(reward model, tokenizer): from a local HF directory (an SFT checkpoint gets a fresh head, a trained
    RM keeps its own), or the embedded tiny preset with a fresh head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if path is not None:
        from rlvr.models.load import check_model_dir, loading

        with loading(check_model_dir(path, weights=True), "the reward model"):
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
            tok = tokenizer or AutoTokenizer.from_pretrained(path)
    else:
        from rlvr.models.tiny import build_model as build_tiny
        from rlvr.models.tiny import build_tokenizer

        tok = tokenizer or build_tokenizer()
        lm = build_tiny(preset, tok, seed)
        cfg = lm.config
        cfg.num_labels = 1
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(cfg)
        model.model.load_state_dict(lm.model.state_dict())  # the same trunk an LM of this seed has
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def _trunk_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    body = getattr(model, getattr(model, "base_model_prefix", "model"))
    head = getattr(model, "score", None)
    if head is None:
        raise TypeError(f"{type(model).__name__}: expected a *ForSequenceClassification model with a `score` head")
    return body, head


def rewards(model: nn.Module, sequences: Sequence[Sequence[int]], pad_id: int) -> Tensor:  # -> [N] fp32
    """The head's scalar at each sequence's last token (right-padded batch; differentiable)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    body, head = _trunk_and_head(model)
    device = next(model.parameters()).device
    hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # [N, L, H]
    last = torch.tensor([len(s) - 1 for s in sequences], device=device)
    return head(hidden[torch.arange(len(sequences), device=device), last]).squeeze(-1).float()


def reward_offset(model: nn.Module) -> float:
    return float(getattr(model.config, OFFSET_KEY, 0.0) or 0.0)


class RewardModelPart:
    """A task whose Score gains a part `name` = RM(prompt + completion) - offset (weighted by `weight`).

    Wraps any task; the verifier's parts and total are kept, the RM part is added to both.  Scoring is one
    no-grad forward per completion (tiny models; batch it for real ones).
    """

    def __init__(self, task: Any, model: nn.Module, tokenizer: Any, *, weight: float = 1.0, name: str = "rm",
                 max_len: int = 1024) -> None:  # fmt: skip
        self.task, self.model, self.tokenizer = task, model.eval().requires_grad_(False), tokenizer
        self.weight, self.part, self.max_len = float(weight), name, max_len
        self.offset = reward_offset(model)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.task, attr)

    def reward(self, example: Example, completion: str) -> float:
        text = self.task.render(example) + (completion if isinstance(completion, str) else "")
        ids = list(self.tokenizer(text)["input_ids"])[-self.max_len :] or [self.tokenizer.pad_token_id]
        with torch.no_grad():
            r = float(rewards(self.model, [ids], self.tokenizer.pad_token_id)[0]) - self.offset
        return r if math.isfinite(r) else 0.0

    def score(self, example: Example, completion: str, **kw: Any) -> Score:
        from rlvr.tasks import grade

        base = grade(self.task, example, completion, prefix=kw["prefix"]) if "prefix" in kw else self.task.score(
            example, completion)  # fmt: skip
        r = self.reward(example, completion)
        parts: Mapping[str, float] = {**base.parts, self.part: r}
        return Score(total=base.total + self.weight * r, parts=dict(parts))
