"""Where the graded answer lives in a completion (DeepSeek-R1 §2.2.1 output format).

Only the final answer is graded, never the reasoning:

- With a `<think>` block, only the text after the last `</think>` counts (the *answer region*).
  A completion that opens `<think>` and never closes it has no answer region (it scores 0).
  A completion with `</think>` but no `<think>` (chat templates that put `<think>` in the prompt,
  as R1's does) is treated as if the opening tag were there.
- In that region the answer is the content of the one complete `<answer>…</answer>`; only when
  there is none, the content of the last `\\boxed{…}` / `\\fbox{…}` (nested braces handled).
  Several answer tags in the region (`<answer>3</answer><answer>4</answer>`, a nested or a
  trailing unclosed `<answer>`), or a box after `</answer>`, are several final answers: None.
  An empty answer is no answer (None).

Every function here is linear-time: tags are found with `str.find`/`rfind` (no regex runs on
model text), and long texts are clipped to their tail before anything scans them in Python.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_COMMANDS = ("\\boxed", "\\fbox")
DEFAULT_MAX_CHARS = 20_000


def clip_tail(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The last `max_chars` characters of `text` (all of it when shorter); "" for non-strings.

    The answer is at the end of a completion, so clipping the head keeps what is graded while
    bounding the work any later parser or regex can do on a runaway generation.
    """
    if not isinstance(text, str):
        return ""
    if max_chars <= 0:
        return ""
    return text[-max_chars:] if len(text) > max_chars else text


def answer_region(completion: str) -> str | None:
    """The text after the last `</think>`, the whole text when there are no think tags, or None.

    None means an unterminated think block: the last `<think>` comes after the last `</think>`
    (or there is no `</think>` at all), so the model never finished reasoning.  The tag search
    runs on the full text (C-level `rfind`, linear), the returned region is clipped to its tail.
    """
    if not isinstance(completion, str):
        return None
    last_close = completion.rfind(THINK_CLOSE)
    last_open = completion.rfind(THINK_OPEN)
    if last_open > last_close:  # also covers "<think>" present and no "</think>" (-1)
        return None
    if last_close < 0:
        return clip_tail(completion)
    return clip_tail(completion[last_close + len(THINK_CLOSE) :])


def _balanced_group(text: str, start: int) -> tuple[str, int] | None:
    """(content, index after the closing `}`) of the `{…}` group opened at `text[start]`, or None.

    Escaped braces (`\\{`, `\\}`) are literal characters in LaTeX and do not open or close groups.
    """
    depth, i, n = 0, start, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character, whatever it is
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def _box_at(text: str, pos: int) -> tuple[str, int] | None:
    """(content, end index) of the box command starting at `text[pos]`, or None when malformed."""
    cmd = next(c for c in BOX_COMMANDS if text.startswith(c, pos))
    i = pos + len(cmd)
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    return _balanced_group(text, i)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{…}` or `\\fbox{…}` in `text`, or None.

    Strict on purpose: when the last box is malformed (no `{`, or never closed, as in a truncated
    completion) the answer is None rather than an earlier box, so a model cannot hedge with one
    finished box followed by an unfinished one.
    """
    text = clip_tail(text)
    pos = max(text.rfind(cmd) for cmd in BOX_COMMANDS)
    if pos < 0:
        return None
    found = _box_at(text, pos)
    return None if found is None else found[0]


def _last_answer_block(region: str) -> str | None:
    """Content of the last complete `<answer>…</answer>` in `region`, or None when there is none."""
    end = region.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = region.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return region[start + len(ANSWER_OPEN) : end]


def _several_answers(region: str) -> bool:
    """More than one declared final answer: two `<answer>` or `</answer>` tags in the region, or
    a box after the block's `</answer>` (`<answer>3</answer> \\boxed{4}`).  Graders that take
    the last block would let a model state several answers; we grade none of them."""
    if region.count(ANSWER_OPEN) > 1 or region.count(ANSWER_CLOSE) > 1:
        return True
    tail = region[region.rfind(ANSWER_CLOSE) + len(ANSWER_CLOSE) :]
    return any(cmd in tail for cmd in BOX_COMMANDS)


def _unwrap_single_box(answer: str) -> str:
    """`\\boxed{X}` (optionally in `$…$`, with a trailing period) → `X`; anything else unchanged.

    Only a box that is the *whole* answer is unwrapped; `\\boxed{3} \\boxed{4}` stays as it is,
    and the math verifier then sees two candidates (a hedge, scored 0).
    """
    core = answer.strip().rstrip(".").strip().strip("$").strip()
    if not core.startswith(BOX_COMMANDS) or sum(core.count(c) for c in BOX_COMMANDS) != 1:
        return answer
    found = _box_at(core, 0)
    if found is None or found[1] != len(core):
        return answer
    return found[0]


def extract_answer(completion: str) -> str | None:
    """The final answer string to grade, stripped; None when missing, empty or unterminated.

    The one `<answer>…</answer>` in the answer region wins (several: None); an answer block that is empty is
    no answer (we do not fall back to a box then).  Only without an answer block does the last
    `\\boxed{…}` of the region count.  A single box filling the answer block is unwrapped.
    """
    region = answer_region(completion)
    if region is None:
        return None
    block = _last_answer_block(region)
    if block is not None and _several_answers(region):
        return None
    answer = _unwrap_single_box(block) if block is not None else last_boxed(region)
    if answer is None:
        return None
    answer = answer.strip()
    return answer or None
