"""pass@k against exact binomial arithmetic; corpus refusal; standard errors; bootstrap."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from rlvr.evaluation.metrics import (
    MetricValue,
    avg_at_k,
    bootstrap_ci,
    corpus_pass_at_k,
    insufficient_samples,
    metric_value,
    pass_at_k,
    standard_error,
)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """1 - C(n-c, k) / C(n, k) in exact rational arithmetic (math.comb(m, k) = 0 when m < k)."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_exact_binomial_for_all_small_cases():
    checked = 0
    for n in range(1, 41):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-12), (
                    n,
                    c,
                    k,
                )
                checked += 1
    assert checked == sum(n * (n + 1) for n in range(1, 41))


@pytest.mark.parametrize(
    ("n", "c", "k"), [(200, 3, 10), (500, 7, 100), (1000, 1, 1), (1000, 999, 500), (300, 150, 64)]
)
def test_pass_at_k_large_n_is_stable(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-12, abs=1e-15)


def test_pass_at_k_hand_values():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c = 4 < k: every 5-subset holds a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c / n
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("n", "c", "k", "field"),
    [(0, 0, 1, "n"), (4, 5, 1, "c"), (4, -1, 1, "c"), (4, 1, 5, "k"), (4, 1, 0, "k")],
)
def test_pass_at_k_rejects_bad_arguments(n, c, k, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        pass_at_k(n, c, k)


def test_pass_at_k_rejects_non_integers():
    with pytest.raises(TypeError):
        pass_at_k(4.0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pass_at_k(4, True, 1)  # type: ignore[arg-type]


def test_corpus_pass_at_k_mean_over_problems():
    # problem 0: pass@2 = 1 - C(3,2)/C(4,2) = 1/2; problem 1: 1 - C(2,2)/C(4,2) = 5/6; mean = 2/3
    assert corpus_pass_at_k([4, 4], [1, 2], 2) == pytest.approx(2 / 3)


def test_corpus_pass_at_k_refuses_when_some_problem_has_too_few_samples():
    assert corpus_pass_at_k([4, 2, 8], [1, 1, 1], 3) is None
    reason = insufficient_samples([4, 2, 8], 3)
    assert reason is not None and "problem #1" in reason and "n=2" in reason and "1 of 3" in reason
    assert insufficient_samples([4, 3], 3) is None
    assert insufficient_samples([], 1) is not None
    with pytest.raises(ValueError, match="2 problems"):
        corpus_pass_at_k([4, 4], [1], 1)


def test_avg_at_k_weighs_problems_equally():
    assert avg_at_k([4, 2], [1, 1]) == pytest.approx((1 / 4 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="problem #1"):
        avg_at_k([4, 2], [1, 3])


def test_standard_error_hand_value():
    # [0,1,1,0]: mean 0.5, sample variance = 4 * 0.25 / 3 = 1/3, s.e. = sqrt(1/3) / 2
    assert standard_error([0, 1, 1, 0]) == pytest.approx(math.sqrt(1 / 3) / 2)
    assert math.isnan(standard_error([1.0]))


def test_bootstrap_ci_is_reproducible_and_sensible():
    values = [0, 1, 1, 0, 1, 0.5, 0.25, 1, 0, 1]
    a = bootstrap_ci(values, n_boot=500, seed=7)
    assert a == bootstrap_ci(values, n_boot=500, seed=7)
    assert a != bootstrap_ci(values, n_boot=500, seed=8)
    mean = sum(values) / len(values)
    assert a[0] < mean < a[1]
    # ~ mean ± 1.96 s.e. for a roughly symmetric case
    se = standard_error(values)
    assert a[1] - a[0] == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert bootstrap_ci([0.5] * 5, seed=0) == (0.5, 0.5)
    assert all(math.isnan(x) for x in bootstrap_ci([1.0]))
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(values, alpha=1.5)


def test_metric_value_and_json_form():
    mv = metric_value([0.0, 1.0], n_boot=100, seed=0)
    assert mv.value == 0.5 and mv.stderr == pytest.approx(0.5)
    single = metric_value([1.0])
    assert single.to_dict() == {"value": 1.0, "stderr": None, "ci_low": None, "ci_high": None}
    assert isinstance(single, MetricValue)
