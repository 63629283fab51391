"""`run_io`'s comparison (`_same_output`) equals normalise-then-compare, without normalising the
program's output (a program's 64 MB of blank lines cost the parent 4.7 s and 1.1 GB before)."""

from __future__ import annotations

import random

import pytest

from rlvr.verifiers.code import _normalise_output, _same_output

HAND = [
    ("1\n2\n", "1\n2", True), ("1  \n2\t\n\n\n", "1\n2", True), ("1\r\n2\r\n", "1\n2\n", True),
    ("1\n\n2", "1\n2", False), ("", "", True), ("\n \n", "", True), ("1", "", False), ("", "1", False),
    ("1\n2", "1", False), ("1", "1\n2", False), (" 1", "1", False), ("1\r2", "1\r2", True), ("1\r", "1", True),
]  # fmt: skip


@pytest.mark.parametrize(("out", "expected", "same"), HAND)
def test_hand_cases(out: str, expected: str, same: bool) -> None:
    assert _same_output(out, expected) is same
    assert (_normalise_output(out) == _normalise_output(expected)) is same


def test_equals_normalise_then_compare_on_random_texts() -> None:
    rng, alphabet = random.Random(0), ["a", "b", " ", "\n", "\r\n", "\r", "\t", "\x0b"]
    for _ in range(5000):
        out, expected = ("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(2))
        assert _same_output(out, expected) == (_normalise_output(out) == _normalise_output(expected)), (out, expected)
