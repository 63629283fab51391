"""Characters and commands of a single-valued math answer (red-team fixes; see `rlvr.verifiers.math`).

Two halves, both linear in the text and sympy-free:

- `fold_unicode`: digits and spaces written in other scripts become what they mean, so a right
  answer scores and a hedge is seen as one: fullwidth ASCII (`４`), decimal digits of any script
  (Arabic-Indic `٤`, Devanagari, mathematical bold `𝟒`), superscript / subscript runs
  (`3⁴` = `3^{4}`), vulgar fractions (`½` = `\\frac{1}{2}`, but `2½` is left alone: a mixed number
  math-verify would read as a product), `°` = `^{\\circ}`, every Unicode space = a space.
- `foreign_marks`: what math-verify would silently skip between two candidates.  Against a
  single-valued gold an answer may use only ASCII letters, digits, spaces, `+-*/^_=()[]{}.,!'|%$&\\`,
  Greek letters, and LaTeX commands of `ALLOWED_COMMANDS` (plus any command or character the gold
  itself uses).  Anything else (`3 ? 4`, `3 \\colon 4`, `3 \\longmapsto 4`, `3 ⟶ 4`, `3 ， 4`, `3 或 4`,
  `\\smash{3} 4`, `3 \\foo 4`) is refused: a false negative on an exotic but right answer costs less
  in RL than a reward for an answer that shows two values (the stricter reading).
"""

from __future__ import annotations

import re
import unicodedata

_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱ", "0123456789+-=()ni"))
_SUBSCRIPTS = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎", "0123456789+-=()"))
_SUPER_RUN = re.compile("[" + "".join(_SUPERSCRIPTS) + "]+")
_SUB_RUN = re.compile("[" + "".join(_SUBSCRIPTS) + "]+")
_VULGAR = re.compile(r"(?<![0-9])([\u00bc-\u00be\u2150-\u215e])")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")

_ALLOWED = """frac dfrac tfrac cfrac sqrt binom dbinom tbinom cdot times div ast circ degree prime
    pi infty left right lfloor rfloor lceil rceil
    lvert rvert vert log ln lg exp sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh
    max min gcd lcm deg det arg pmod operatorname mathrm text textrm textnormal mbox textbf mathbf
    mathit textit displaystyle textstyle boxed fbox overline dots ldots cdots angle sum prod lim
    alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi omicron
    rho varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma
    Upsilon Phi Psi Omega ell hbar emptyset varnothing quad qquad enspace enskip thinspace medspace
    thickspace negthinspace hspace hskip to mapsto implies iff rightarrow Rightarrow longrightarrow
    Longrightarrow approx"""  # the chain arrows are judged side by side (`_mathworker._CHAIN`)
ALLOWED_COMMANDS = frozenset(_ALLOWED.split())
_COMMAND = re.compile(r"\\([A-Za-z]+|.)", re.S)
_BAD_ASCII = re.compile(r"[?#@\"`]|:(?!=)")


def _fold_char(ch: str) -> str:
    code = ord(ch)
    if 0xFF01 <= code <= 0xFF5E:  # fullwidth ASCII
        return chr(code - 0xFEE0)
    if ch.isspace():
        return " "
    digit = unicodedata.decimal(ch, None)
    return str(digit) if digit is not None else ch


def fold_unicode(text: str) -> str:
    """`text` with the foldings of the module docstring (ASCII text comes back unchanged)."""
    if text.isascii():
        return text
    text = _SUPER_RUN.sub(lambda m: "^{" + "".join(_SUPERSCRIPTS[c] for c in m.group()) + "}", text)
    text = _SUB_RUN.sub(lambda m: "_{" + "".join(_SUBSCRIPTS[c] for c in m.group()) + "}", text)
    text = _VULGAR.sub(lambda m: _vulgar(m.group()), text)
    text = text.replace("\u00b0", "^{\\circ}").replace("\u3000", " ")
    return "".join(_fold_char(ch) if ord(ch) > 0x7F else ch for ch in text)


def _vulgar(ch: str) -> str:
    num, _, den = unicodedata.normalize("NFKC", ch).partition("\u2044")
    return f" \\frac{{{num}}}{{{den}}} " if num.isdigit() and den.isdigit() else ch


def _greek(ch: str) -> bool:
    return 0x0370 <= ord(ch) <= 0x03FF


def foreign_marks(answer: str, gold: str) -> bool:
    """Whether `answer` holds a command or character outside the allowlist (and not in `gold`)."""
    gold_commands = {m.group(1) for m in _COMMAND.finditer(gold)}
    for m in _COMMAND.finditer(answer):
        name = m.group(1)
        if name not in ALLOWED_COMMANDS and name not in gold_commands and name not in "{}%$,!;: ":
            return True
    plain = _COMMAND.sub(" ", answer)
    if any(not _greek(ch) and ch not in gold for ch in _NON_ASCII.findall(plain)):
        return True
    return any(m.group() not in gold for m in _BAD_ASCII.finditer(plain))
