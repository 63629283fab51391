"""maj@k on hand-built vote tables: equivalent answers, ties, None answers, subsets."""

from __future__ import annotations

import itertools
import re

import pytest

from rlvr.evaluation.voting import cluster_answers, maj_at_k, subsets, vote


def as_number(s: str) -> float:
    r"""Toy normaliser: '\frac{1}{2}', '\frac12', '1/2', '0.50' -> 0.5."""
    m = re.fullmatch(r"\\frac\{?(\d)\}?\{?(\d)\}?", s) or re.fullmatch(r"(\d+)/(\d+)", s)
    return int(m.group(1)) / int(m.group(2)) if m else float(s)


def numeric_eq(a: str, b: str) -> bool:
    return as_number(a) == as_number(b)


def string_eq(a: str, b: str) -> bool:
    return a == b


def test_equivalent_answers_written_differently_vote_together():
    answers = ["3", "0.5", r"\frac{1}{2}", "3", r"\frac12"]
    correct = [False, True, True, False, True]
    # clusters {3: 2 votes, 1/2: 3 votes} -> 1/2 wins
    assert maj_at_k(answers, correct, 5, equivalent=numeric_eq) == 1.0
    # by string equality "3" has 2 votes, each spelling of 1/2 only 1 -> "3" wins
    assert maj_at_k(answers, correct, 5, equivalent=string_eq) == 0.0
    assert cluster_answers(answers, numeric_eq) == [0, 1, 1, 0, 1]


def test_ties_go_to_the_earliest_first_occurrence():
    assert maj_at_k(["3", "0.5", "1/2", "3"], [False, True, True, False], 4, equivalent=numeric_eq) == 0.0
    assert maj_at_k(["0.5", "3", "3", "1/2"], [True, False, False, True], 4, equivalent=numeric_eq) == 1.0
    assert vote([0, 1, 1, 0], [0, 1, 2, 3]) == 0
    assert vote([0, 1, 1, 0], [1, 2, 3]) == 1  # within the subset, cluster 1 leads 2:1


def test_none_answers_never_win_and_all_none_is_incorrect():
    # two Nones outnumber the single real answer, but None is not a candidate
    assert maj_at_k([None, None, "0.5"], [False, False, True], 3, equivalent=numeric_eq) == 1.0
    assert maj_at_k([None, None], [False, False], 2, equivalent=numeric_eq) == 0.0
    # even if a flag says correct, a vote with no answer cannot be right
    assert maj_at_k([None], [True], 1, equivalent=numeric_eq) == 0.0


def test_exact_enumeration_hand_count():
    answers, correct = ["a", "a", "b", "c"], [False, False, True, False]
    # the 6 pairs: (0,1) a; (0,2) tie a/b -> a; (0,3) a; (1,2) tie -> a; (1,3) a; (2,3) tie b/c -> b (correct)
    assert maj_at_k(answers, correct, 2, equivalent=string_eq) == pytest.approx(1 / 6)
    # maj@1 is the mean correctness: 1 of 4
    assert maj_at_k(answers, correct, 1, equivalent=string_eq) == pytest.approx(1 / 4)


def test_uses_subsets_not_the_first_k_samples():
    answers, correct = ["x", "x", "y", "y", "y", "y"], [True, True, False, False, False, False]
    # first 2 samples would say 1.0; over all C(6,2) = 15 pairs: "x" wins in (0,1) and in each
    # (x, y) pair by earliest occurrence: 1 + 2*4 = 9 of 15
    assert maj_at_k(answers, correct, 2, equivalent=string_eq) == pytest.approx(9 / 15)


def brute_force(answers, correct, k):
    labels = cluster_answers(answers, string_eq)
    combos = list(itertools.combinations(range(len(answers)), k))
    return sum(correct[w] for w in (vote(labels, c) for c in combos) if w is not None) / len(combos)


def test_sampled_subsets_approximate_exact_enumeration_and_are_seeded():
    answers = ["a", "b", "a", None, "c", "b", "b", "a", "c", "a", "b", "a"]
    correct = [a == "a" for a in answers]
    exact = brute_force(answers, correct, 5)  # C(12,5) = 792 subsets
    assert maj_at_k(answers, correct, 5, equivalent=string_eq, n_subsets=1000) == pytest.approx(exact)
    sampled = maj_at_k(answers, correct, 5, equivalent=string_eq, n_subsets=400, seed=3)
    assert sampled == maj_at_k(answers, correct, 5, equivalent=string_eq, n_subsets=400, seed=3)
    assert abs(sampled - exact) < 0.08  # binomial s.e. <= sqrt(0.25 / 400) = 0.025
    assert sampled != exact  # it really sampled


def test_subsets_are_sorted_and_distinct_within():
    for sub in subsets(20, 6, n_subsets=50, seed=0):
        assert list(sub) == sorted(set(sub)) and len(sub) == 6
    assert len(list(subsets(5, 2, n_subsets=10, seed=0))) == 10  # C(5,2) = 10: exact


def test_equivalence_called_against_representatives_only():
    calls = []

    def eq(a, b):
        calls.append((a, b))
        return a == b

    cluster_answers(["1", "2", "1", "2", "3"], eq)
    # "2" vs rep "1"; "1" equals its rep by string (no call); "2" vs "1"; "3" vs "1", "2"
    assert calls == [("1", "2"), ("1", "2"), ("1", "3"), ("2", "3")]


def test_maj_at_k_validates():
    with pytest.raises(ValueError, match="2 answers but 1"):
        maj_at_k(["a", "b"], [True], 1, equivalent=string_eq)
    with pytest.raises(ValueError, match="k must be"):
        maj_at_k(["a", "b"], [True, False], 3, equivalent=string_eq)


def test_votes_cluster_with_the_real_math_equivalence():
    from rlvr.verifiers.math import math_equivalent

    answers = ["3", "0.5", r"\frac12", "3", r"\frac{1}{2}", None, "1/2"]
    correct = [False, True, True, False, True, False, True]
    assert cluster_answers(answers, math_equivalent) == [0, 1, 1, 0, 1, None, 1]
    assert maj_at_k(answers, correct, 7, equivalent=math_equivalent) == 1.0
    assert maj_at_k(answers, correct, 7, equivalent=string_eq) == 0.0  # "3" x2 beats each spelling
