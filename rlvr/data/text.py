"""Text normalisation shared by dedup and decontamination: one tokeniser, so "the same text" means
the same thing in both.

`tokens(text)`: NFKC, casefold, then numbers (`3.5`, `1,000`), word runs, single Han / kana
characters and single symbols, with
prose punctuation (`. , ; : ! ?` and quotes) dropped.  Dropping prose punctuation follows GPT-3's
decontamination (Brown et al. 2020, App. C: lower-cased, punctuation ignored); math symbols are
kept because they carry the problem: `12 + 7` and `12 - 7` must stay different rows.

`normalized(text)` is the tokens joined by single spaces: the key of exact dedup and of whole-row
comparison in decontamination.  `shingles` and `ngrams` are the overlapping token windows that
MinHash and the n-gram index work on.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence

# Chinese and Japanese are written without spaces: each Han / kana character is a token of its own.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|\d+(?:[.,]\d+)*|[^\W{_CJK}]+|[^\w\s]")
PROSE_PUNCTUATION = frozenset(".,;:!?\"'`“”‘’«»…。，、；：！？「」『』")


def tokens(text: str) -> list[str]:
    """Normalised tokens of `text` (see the module docstring); [] for a non-string."""
    if not isinstance(text, str):
        return []
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [t for t in _TOKEN.findall(folded) if t not in PROSE_PUNCTUATION]


def normalized(text: str) -> str:
    """The normalised text: tokens joined by one space ("What is 2+3?" -> "what is 2 + 3")."""
    return " ".join(tokens(text))


def ngrams(toks: Sequence[str], n: int) -> Iterator[str]:
    """The contiguous n-token windows of `toks`, each joined by one space (none when shorter than n)."""
    for i in range(len(toks) - n + 1):
        yield " ".join(toks[i : i + n])


def shingles(toks: Sequence[str], n: int) -> list[str]:
    """MinHash shingles: the n-grams of `toks`, or the whole sequence as one shingle when it is
    shorter than n (so a 2-token prompt still has a set, and equals only itself)."""
    if len(toks) < n:
        return [" ".join(toks)]
    return list(ngrams(toks, n))
