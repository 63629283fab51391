"""Language-consistency reward (DeepSeek-R1 §2.3.2): the fraction of the chain of thought's words
that are in the target language, a reward part in [0, 1].

R1 added it because its chains of thought mixed languages (mostly Chinese and English); it is
"the proportion of target language words in the CoT", summed with the accuracy reward.

The detector is script-based (Unicode character names from the standard library's `unicodedata`),
chosen over a statistical language identifier because it
- tells apart exactly the mixing R1 saw (Han / kana / Hangul / Cyrillic / Arabic / ... vs Latin),
  word by word, where identifiers such as langid or fastText classify whole sentences and are
  unreliable on single words, formulas and code;
- is deterministic, has no model file to ship or download, and costs microseconds per word;
- never raises.
Its limit: languages that share a script (English / French / German, all Latin) count as the same
language.  A task that needs that distinction can pass its own `detector(word) -> language` to
`language_consistency`, e.g. one built on py3langid, whose model ships inside the package.

What counts as a word: a run of letters of one script; each Han or kana character is a word of
its own (Chinese and Japanese have no spaces).  Neutral (not counted): digits, symbols, LaTeX
commands (`\\frac`), and single letters of alphabetic scripts (`x`, `π`: variables, not language).

Edge cases: not a string, or no `<think>` block at all -> 0.0; a blank chain of thought -> 0.0;
one with content but no words (pure arithmetic, "3+5=8") -> `no_words` (1.0 by default: nothing in
another language; R1's ratio is 0/0 there, and 0 would reward wordier chains of thought).
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from rlvr.types import Example, Score

PART = "language"  # the name of the reward part in `Score.parts`
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
MAX_CHARS = 100_000  # only the first 100k characters of a chain of thought are read (bounded cost)

_LATIN = frozenset({"LATIN"})
_CYRILLIC = frozenset({"CYRILLIC"})
_ARABIC = frozenset({"ARABIC"})
_DEVANAGARI = frozenset({"DEVANAGARI"})
# Language code -> the scripts its words are written in.  A script name ("latin", "han") also works.
LANGUAGES: dict[str, frozenset[str]] = {
    **{
        code: _LATIN
        for code in [
            "en",
            "fr",
            "de",
            "es",
            "it",
            "pt",
            "nl",
            "sv",
            "da",
            "no",
            "fi",
            "pl",
            "cs",
            "ro",
            "hu",
            "tr",
            "vi",
            "id",
            "ms",
            "sw",
        ]
    },
    **{code: _CYRILLIC for code in ["ru", "uk", "bg", "sr", "be", "kk", "mk"]},
    **{code: _ARABIC for code in ["ar", "fa", "ur"]},
    **{code: _DEVANAGARI for code in ["hi", "mr", "ne"]},
    "zh": frozenset({"HAN"}),
    "ja": frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    "ko": frozenset({"HANGUL"}),
    "el": frozenset({"GREEK"}),
    "he": frozenset({"HEBREW"}),
    "th": frozenset({"THAI"}),
    "bn": frozenset({"BENGALI"}),
    "ta": frozenset({"TAMIL"}),
    "ka": frozenset({"GEORGIAN"}),
    "hy": frozenset({"ARMENIAN"}),
}
LOGOGRAPHIC = frozenset({"HAN", "HIRAGANA", "KATAKANA"})  # one character, one word
_SCRIPT_ALIASES = {"CJK": "HAN", "FULLWIDTH": None, "HALFWIDTH": None}
_RUN = re.compile(r"[^\W\d_]+")  # runs of letters (any script)


def target_scripts(target: str) -> frozenset[str]:
    """The scripts of `target` (a language code from `LANGUAGES` or a Unicode script name)."""
    key = target.strip()
    if key.lower() in LANGUAGES:
        return LANGUAGES[key.lower()]
    scripts = {s for langs in LANGUAGES.values() for s in langs}
    if key.upper() in scripts:
        return frozenset({key.upper()})
    raise ValueError(
        f"unknown target language {target!r}: use a code from {sorted(LANGUAGES)} or a script name "
        f"({sorted(scripts)})"
    )


@functools.lru_cache(maxsize=65536)
def script_of(char: str) -> str | None:
    """The Unicode script of a letter ("LATIN", "HAN", "CYRILLIC", ...), None when it has none."""
    if char.isascii():
        return "LATIN" if char.isalpha() else None
    words = unicodedata.name(char, "").replace("-", " ").split()
    for word in words[:2]:  # "FULLWIDTH LATIN …", "CJK UNIFIED IDEOGRAPH-4E00", "KATAKANA-HIRAGANA …"
        script = _SCRIPT_ALIASES.get(word, word)
        if script is not None:
            return script
    return None


def words_by_script(text: str) -> list[str]:
    """The script of each word of `text` (see the module docstring for what a word is)."""
    out: list[str] = []
    for m in _RUN.finditer(text):
        run, start = m.group(), m.start()
        if start > 0 and text[start - 1] == "\\":  # a LaTeX command such as \frac or \sqrt
            continue
        if run.isascii():
            if len(run) > 1:
                out.append("LATIN")
            continue
        out.extend(_split_run(run))
    return out


def _split_run(run: str) -> list[str]:
    """Scripts of the words in a non-ASCII letter run (which may mix scripts)."""
    out: list[str] = []
    for script, group in itertools.groupby(run, key=script_of):
        size = sum(1 for _ in group)
        if script in LOGOGRAPHIC:
            out.extend([script] * size)
        elif script is not None and size > 1:
            out.append(script)
    return out


def chain_of_thought(completion: str) -> str | None:
    """The text inside the `<think>` blocks, joined by newlines; None when there is none.

    A `</think>` before any `<think>` means the prompt opened the block (R1's chat template), and
    an unclosed `<think>` runs to the end (a truncated completion still has a chain of thought).
    """
    if not isinstance(completion, str):
        return None
    first_open, first_close = completion.find(THINK_OPEN), completion.find(THINK_CLOSE)
    if first_open < 0 and first_close < 0:
        return None
    inside = first_close >= 0 and (first_open < 0 or first_close < first_open)
    parts, i = [], 0
    while True:
        j = completion.find(THINK_CLOSE if inside else THINK_OPEN, i)
        if inside:
            parts.append(completion[i:] if j < 0 else completion[i:j])
        if j < 0:
            return "\n".join(parts)
        i, inside = j + len(THINK_CLOSE if inside else THINK_OPEN), not inside


def language_consistency(
    completion: str,
    target: str = "en",
    *,
    no_words: float = 1.0,
    detector: Callable[[str], str | None] | None = None,
) -> float:
    """Fraction of the chain of thought's words in `target`, in [0, 1]; never raises on model text.

    `detector`, when given, maps each word to a language code (None: neutral) and replaces the
    script check: the result is then the fraction of words it labels `target`.
    """
    scripts = target_scripts(target)
    cot = chain_of_thought(completion)
    if cot is None or not cot.strip():
        return 0.0
    cot = cot[:MAX_CHARS]
    if detector is not None:
        labels = [_detect(detector, w) for w in re.findall(r"[^\W\d_]{2,}", cot)]
        labels = [lab for lab in labels if lab is not None]
        return sum(lab == target for lab in labels) / len(labels) if labels else float(no_words)
    words = words_by_script(cot)
    if not words:
        return float(no_words)
    return sum(w in scripts for w in words) / len(words)


def _detect(detector: Callable[[str], str | None], word: str) -> str | None:
    try:
        return detector(word)
    except Exception:  # a user detector failing on odd text must not take the reward down
        return None


class LanguageReward:
    """`language_consistency` for a fixed target, checked once at construction (a config error
    surfaces when the run starts, not at the first completion)."""

    name = PART

    def __init__(self, target: str = "en", *, no_words: float = 1.0) -> None:
        target_scripts(target)
        if not 0.0 <= no_words <= 1.0:
            raise ValueError(f"no_words must be in [0, 1], got {no_words}")
        self.target, self.no_words = target, no_words

    def __call__(self, completion: str) -> float:
        return language_consistency(completion, self.target, no_words=self.no_words)


class WithLanguageReward:
    """A task whose `Score` gains the part "language", weighted by `weight`, on top of its own.

    The completion is graded as the task grades it (its template prefix, e.g. "<think>", prepended
    when the task has one), so a prompt that opens the think block is handled.
    """

    def __init__(self, task: Any, target: str = "en", *, weight: float = 0.1) -> None:
        self._task, self.name = task, task.name
        self.reward, self.weight = LanguageReward(target), float(weight)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._task, attr)

    def score(self, example: Example, completion: str, **kw: Any) -> Score:
        base = self._task.score(example, completion, **kw)
        prefix = kw.get("prefix", getattr(self._task, "prefix", ""))
        value = self.reward(prefix + completion if isinstance(completion, str) else completion)
        parts: Mapping[str, float] = {**base.parts, PART: value}
        return Score(total=base.total + self.weight * value, parts=dict(parts))
