"""Format rewards for the R1 output layout `<think>…</think><answer>…</answer>` (DeepSeek-R1 §2.2.2).

`think_answer_format` is strict and counts tags instead of matching a permissive regex: exactly
one of each tag, in order, both blocks non-empty, and nothing but whitespace before `<think>`,
between `</think>` and `<answer>`, and after `</answer>`.  (R1 style: prose around the blocks is
not rewarded; a trailing end-of-text token should be stripped by the decoder.)  Invisible
characters (zero-width, BOM, NUL, soft hyphen) count as whitespace.

`tag_count_reward` is the partial, shaping version (after open-r1's tag-count reward): 0.25 per
tag that appears exactly once, whatever the rest looks like.
"""

from __future__ import annotations

from rlvr.verifiers._mathtext import INVISIBLE
from rlvr.verifiers.region import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def _blank(text: str) -> bool:
    """Whitespace only, where invisible characters (zero-width space/joiners, BOM, NUL, soft
    hyphen) count as whitespace: a block made of them is empty."""
    return not text.translate(INVISIBLE).strip()


def think_answer_format(completion: str) -> float:
    """1.0 for exactly `<think>X</think><answer>Y</answer>` (X, Y non-blank, only whitespace around)."""
    if not isinstance(completion, str) or any(completion.count(tag) != 1 for tag in TAGS):
        return 0.0
    t0, t1 = completion.find(THINK_OPEN), completion.find(THINK_CLOSE)
    a0, a1 = completion.find(ANSWER_OPEN), completion.find(ANSWER_CLOSE)
    if not t0 < t1 < a0 < a1:
        return 0.0
    think = completion[t0 + len(THINK_OPEN) : t1]
    answer = completion[a0 + len(ANSWER_OPEN) : a1]
    outside = (completion[:t0], completion[t1 + len(THINK_CLOSE) : a0], completion[a1 + len(ANSWER_CLOSE) :])
    if _blank(think) or _blank(answer) or not all(_blank(part) for part in outside):
        return 0.0
    return 1.0


def tag_count_reward(completion: str) -> float:
    """0.25 for each of the four tags that occurs exactly once (0.0 … 1.0)."""
    if not isinstance(completion, str):
        return 0.0
    return 0.25 * sum(completion.count(tag) == 1 for tag in TAGS)
