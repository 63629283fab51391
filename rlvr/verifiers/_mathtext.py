"""String-level answer rules for `_mathworker` (no sympy here): cleaning, hedge markers, pieces.

Every function is linear in the answer (which is at most `math.MAX_ANSWER_CHARS` long anyway):
regexes here have no nested or overlapping quantifiers.

Cleaning (false negatives fixed): invisible characters (zero-width, BOM, soft hyphen, NUL) become
spaces; Unicode math symbols become their LaTeX commands (U+2212 is a minus); `\\textcolor{c}{X}`
and `\\color{c}` keep only X; `\\phantom`-family groups are deleted (their content is invisible,
so it is not an answer); thin-space / space / `{,}` thousands separators are joined
(`10\\,000` = `1 000 000` = 10000...).

Hedge markers (against a single-valued gold): any logical, set or relation symbol, a
left or two-way arrow (right arrows are `=`-like chains, judged side by side by the worker), the
words "or" / "and", `;`, `==`, an environment other than a matrix (`cases`, `aligned`, ...),
`\\neg` (a logical "not" on a number is a misparse math-verify reads as the number), and
`\\pm`/`\\mp`.  `pieces` splits on juxtaposition (whitespace, spacing commands, prose `\\text{...}`,
`~`, boxes) so the caller can check that at most one piece carries a value.
"""

from __future__ import annotations

import itertools
import re

from rlvr.verifiers._mathchars import fold_unicode
from rlvr.verifiers.region import _balanced_group

_INVISIBLE_CHARS = (
    "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad\x00\u180e"
    "\u2061\u2062\u2063\u2064\u034f\u115f\u1160\u3164\uffa0\u2800\u061c"  # invisible operators, fillers
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"  # bidi controls reorder what is shown
    + "".join(map(chr, range(0xFE00, 0xFE10)))  # variation selectors
    + "".join(map(chr, range(0xE0000, 0xE0080)))  # tag characters
)
INVISIBLE = dict.fromkeys(map(ord, _INVISIBLE_CHARS), " ")
UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2228": r" \lor ", "\u2227": r" \land ", "\u222a": r" \cup ",
    "\u2229": r" \cap ", "\u2248": r" \approx ", "\u2260": r" \neq ", "\u2264": r" \le ", "\u2265": r" \ge ",
    "\u21d4": r" \iff ", "\u21d2": r" \implies ", "\u2192": r" \to ", "\u00b1": r" \pm ", "\u2213": r" \mp ",
    "\u00d7": r" \times ", "\u00f7": r" \div ", "\u00b7": r" \cdot ", "\u00ac": r" \neg ", "\u223c": r" \sim ",
    "\u2261": r" \equiv ", "\u2223": r" \mid ", "\u2208": r" \in ", "\u221e": r"\infty ", "\u03c0": r"\pi ",
}  # fmt: skip
_UNICODE_TABLE = str.maketrans({**{chr(k): v for k, v in INVISIBLE.items()}, **UNICODE})
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3})((?:(?:\\[,;: !]|~|\{,\}|,\\[!,]| )+\d{3})+)(?![\d])")
_THOUSANDS_SEP = re.compile(r"\\[,;: !]|~|\{,\}|,\\[!,]| ")
MATRIX_ENVS = ("matrix", "pmatrix", "bmatrix", "Bmatrix", "vmatrix", "Vmatrix", "smallmatrix", "array")
_HEDGE = re.compile(
    r"\\(?:lor|vee|land|wedge|cup|cap|setminus|sim|simeq|equiv|cong|propto|impliedby"
    r"|[lL]eftrightarrow|[lL]ongleftrightarrow|[lL]eftarrow|[lL]ongleftarrow|gets"
    r"|vert|Vert|mid|parallel|oplus|neq|ne|lt|gt|le|leq|ge|geq|leqslant|geqslant|ll|gg|subset|subseteq"
    r"|supset|supseteq|in|notin|ni|forall|exists|neg|lnot|pm|mp)(?![a-zA-Z])"
    r"|\bor\b|\band\b|\bnot\b|;|==|!=|<|>|\|\||\u2228"
)
_SPLIT = re.compile(
    r"\\(?:quad|qquad|enspace|enskip|thinspace|medspace|thickspace|negthinspace|newline|hfill|[,;:! ])(?![a-zA-Z])"
    r"|\\h(?:space|skip)\*?\{[^{}]*\}|~|\s+"
)
_BIG = re.compile(r"\\[bB]igg?[lrm]?(?![a-zA-Z])")  # `\\big(` is `(` (math-verify would skip the group)
_TEXT_CMDS = ("\\text", "\\textrm", "\\textnormal", "\\mbox", "\\mathrm", "\\textit", "\\textbf", "\\mathbf")
_WORD = re.compile(r"[A-Za-z]{2,}")
_LONE_NAME = re.compile(
    r"\s*\\?[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?(?:\^\{?[A-Za-z0-9]+\}?)?(?:\([A-Za-z0-9, ]*\))?\s*"
)


def _replace_groups(text: str, command: str, keep: int | None, groups: int) -> str:
    """Replace `command{g1}..{gN}` by group `keep` (1-based) or by nothing; malformed stays."""
    out, i = [], 0
    while (pos := text.find(command, i)) >= 0:
        end = pos + len(command)
        if end < len(text) and text[end].isalpha():
            out.append(text[i:end])
            i = end
            continue
        contents = []
        for _ in range(groups):
            while end < len(text) and text[end] == " ":
                end += 1
            found = _balanced_group(text, end) if end < len(text) and text[end] == "{" else None
            if found is None:
                break
            contents.append(found[0])
            end = found[1]
        if len(contents) != groups:
            out.append(text[i:end])
            i = end
            continue
        out.append(text[i:pos] + (" " + contents[keep - 1] + " " if keep else " "))
        i = end
    out.append(text[i:])
    return "".join(out)


def clean(text: str) -> str:
    """The answer with the false-negative fixes of the module docstring applied."""
    s = _BIG.sub(" ", fold_unicode(text.translate(_UNICODE_TABLE)))
    if not braces_balanced(s):
        return s  # scored 0 anyway; and group matching on unbalanced text would be quadratic
    for cmd in ("\\phantom", "\\hphantom", "\\vphantom"):
        s = _replace_groups(s, cmd, None, 1)
    s = _replace_groups(s, "\\textcolor", 2, 2)
    s = _replace_groups(s, "\\color", None, 1)
    return _THOUSANDS.sub(lambda m: m.group(1) + _THOUSANDS_SEP.sub("", m.group(2)), s)


def has_hedge_marker(text: str) -> bool:
    """A symbol or word that offers several candidates (or a relation) instead of one value."""
    if _HEDGE.search(text) or text.count("|") % 2:
        return True
    if "\\begin" in text:
        envs = re.findall(r"\\begin\{([A-Za-z*]+)\}", text)
        return any(env not in MATRIX_ENVS for env in envs)
    return "\\\\" in text or "&" in text  # row / column separators outside a matrix


def text_blocks_to_spaces(text: str) -> str:
    """`\\text{...}`-style groups: prose becomes a separator (a space); a unit word stays a word."""
    if not braces_balanced(text):
        return text  # (scored 0 by the caller; group matching on it would be quadratic)
    for cmd in _TEXT_CMDS:
        s, i, out = text, 0, []
        while (pos := s.find(cmd, i)) >= 0:
            end = pos + len(cmd)
            found = _balanced_group(s, end) if end < len(s) and s[end] == "{" else None
            if found is None or (end < len(s) and s[end].isalpha()):
                out.append(s[i:end])
                i = end
                continue
            inner = found[0].strip()
            keep = inner if cmd in ("\\textbf", "\\mathbf") else (inner if inner.isalpha() else "")
            out.append(s[i:pos] + " " + keep + " ")
            i = found[1]
        out.append(s[i:])
        text = "".join(out)
    return text


def pieces(text: str) -> list[str]:
    """Juxtaposed parts of an answer (see the module docstring); empty parts dropped."""
    return [p for p in _SPLIT.split(text_blocks_to_spaces(text)) if p and p.strip()]


def is_lone_name(side: str) -> bool:
    """`x`, `x_1`, `f(x)`, `\\theta`, `P(A)`: the side an answer like `x = 5` may have."""
    return _LONE_NAME.fullmatch(side) is not None


def has_prose(text: str) -> bool:
    """Two or more letter words outside LaTeX commands and `$...$` math."""
    outside = re.sub(r"\\[A-Za-z]+|\$[^$]*\$", " ", text)
    return len(_WORD.findall(outside)) >= 2


def has_words(text: str) -> bool:
    """At least one letter word outside LaTeX commands and `$...$` math."""
    return _WORD.search(re.sub(r"\\[A-Za-z]+|\$[^$]*\$", " ", text)) is not None


_DISJUNCTION_WORDS = re.compile(
    r"\b(?:or|either|maybe|perhaps|possibly|alternatively)\b|\\lor\b|\\vee\b", re.I
)


def hedges_before(text: str, box_start: int) -> bool:
    """Whether the sentence that ends in the box at `box_start` offers another value with a
    disjunction (`It is 3 or maybe \\boxed{4}`)."""
    begin = max(
        text.rfind(". ", 0, box_start), text.rfind("\n", 0, box_start), text.rfind(".$", 0, box_start)
    )
    sentence = text[begin + 1 : box_start]
    return bool(_DISJUNCTION_WORDS.search(sentence)) and bool(prose_candidates(sentence))


_AFTER_HEDGE_WORDS = re.compile(
    r"\b(?:or|either|maybe|perhaps|possibly|alternatively|otherwise|but|though|also|might|could|may)\b", re.I
)
_AFTER_CONTEXT = re.compile(r"^[\s.,;:]*(?:\$\$|\$|\\\)|\\\])|\\[pb]?mod\s*\{[^{}]*\}|\\[pb]?mod\s*\d+")


def hedges_after(text: str, box_end: int) -> bool:
    """Whether the words after a box offer another value: a hedge word and a further value
    (`\\boxed{4} (or 3)`, `\\boxed{4}, but it may be 3`, `\\boxed{4}. Alternatively 3.`).  A
    justification with numbers but no hedge word (`\\boxed{9} \\pmod{11}`, `after 5 years`,
    Math-Verify's own cases) still counts."""
    tail = _AFTER_CONTEXT.sub(" ", text[box_end:])
    return bool(_AFTER_HEDGE_WORDS.search(tail)) and bool(prose_candidates(tail))


def prose_candidates(text: str) -> list[str]:
    """Numbers and non-trivial `$...$` / `\\(...\\)` segments in prose ("The largest $n$ is 34.")."""
    text = text.replace("\\(", "$").replace("\\)", "$")
    found = [seg for seg in re.findall(r"\$([^$]*)\$", text) if seg.strip() and not is_lone_name(seg)]
    outside = re.sub(r"\$[^$]*\$", " ", text)
    found += re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", outside)
    return found


_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def juxtaposed_numbers(text: str) -> bool:
    """Two bare numbers side by side (`4 5`, `4 \\quad 5`, `3 \\text{, } 4`): two candidates."""
    parts = [p for p in _SPLIT.split(text_blocks_to_spaces(text)) if p and p.strip()]
    return any(_NUMBER.fullmatch(a) and _NUMBER.fullmatch(b) for a, b in itertools.pairwise(parts))


def boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every well-formed `\\boxed{...}` / `\\fbox{...}`, left to right."""
    from rlvr.verifiers.region import BOX_COMMANDS, _box_at

    out, i = [], 0
    while True:
        hits = [p for p in (text.find(c, i) for c in BOX_COMMANDS) if p >= 0]
        if not hits:
            return out
        pos = min(hits)
        found = _box_at(text, pos)
        if found is None:
            i = pos + 1
            continue
        out.append((pos, found[1], found[0]))
        i = found[1]


def unbox(text: str) -> tuple[str, int]:
    """(text with every box replaced by its content between spaces, number of boxes)."""
    found = boxes(text)
    if not found:
        return text, 0
    out, i = [], 0
    for start, end, content in found:
        out.append(text[i:start] + " " + content + " ")
        i = end
    out.append(text[i:])
    return "".join(out), len(found)


def braces_balanced(text: str) -> bool:
    """Whether unescaped `{`/`}` pair up (escaped `\\{`, `\\}` are literal characters)."""
    depth, i = 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth < 0:
            return False
        i += 1
    return depth == 0


def text_digits_beside(text: str) -> bool:
    """A `\\text{...}`-style group holding a digit next to a digit outside every such group
    (`3 \\text{4}`, `3 \\text{ (4?)}`): two values, math-verify would read only one."""
    if not braces_balanced(text):
        return False  # scored 0 by the caller anyway
    outside, inner_digit = [], False
    for cmd in (*_TEXT_CMDS, "\\operatorname", "\\mathit"):
        i = 0
        while (pos := text.find(cmd, i)) >= 0:
            end = pos + len(cmd)
            found = _balanced_group(text, end) if end < len(text) and text[end] == "{" else None
            if found is None:
                i = end
                continue
            inner_digit = inner_digit or any(ch.isdigit() for ch in found[0])
            outside.append(text[i:pos])
            i = found[1]
        outside.append(text[i:])
        text = " ".join(outside)
        outside = []
    return inner_digit and any(ch.isdigit() for ch in text)


_THOUSANDS_COMMAS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d])")


def top_level_comma(text: str) -> bool:
    """A comma outside every bracket once `1,000`-style thousands are joined (`4, 4`, `4,`)."""
    depth = 0
    for ch in _THOUSANDS_COMMAS.sub("0", re.sub(r"\\[^A-Za-z]", " ", text)):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth <= 0:
            return True
    return False
