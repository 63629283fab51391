"""Do teacher and student share one vocabulary?  Token-level distillation needs it.

Logit and on-policy distillation compare the two models' distributions token by token, so token id
i must mean the same string to both.  Different tokenizers make those comparisons meaningless (the
losses would still compute), so the distill stage asks here first and refuses with what to do
instead: sequence-level distillation (SFT on the teacher's text) works across vocabularies.
"""

from __future__ import annotations

from typing import Any

__all__ = ["vocabulary_mismatch"]


def vocabulary_mismatch(student: Any, teacher: Any) -> str | None:
    """None when both tokenizers map the same strings to the same ids (and agree on eos / pad); else why not."""
    s, t = student.get_vocab(), teacher.get_vocab()
    if len(s) != len(t):
        return f"the student's tokenizer has {len(s)} tokens and the teacher's {len(t)}"
    for token, i in sorted(s.items(), key=lambda kv: kv[1]):
        if t.get(token) != i:
            return f"token {token!r} is id {i} for the student but {t.get(token)} for the teacher"
    for name in ("eos_token_id", "pad_token_id"):
        if getattr(student, name, None) != getattr(teacher, name, None):
            return f"{name} differs ({getattr(student, name, None)} vs {getattr(teacher, name, None)})"
    return None
