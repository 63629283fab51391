"""Corpus metrics with error bars: pass@k, avg@k, standard errors and bootstrap intervals.

Every reported number is a mean over problems of a per-problem estimate; its uncertainty is the
spread of those per-problem estimates (the problems are the sample, Miller 2024 "Adding Error Bars
to Evals").  `MetricValue` carries the point estimate, its standard error and a percentile
bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class MetricValue:
    """A corpus metric: `value` ± `stderr`, with a bootstrap interval [`ci_low`, `ci_high`].

    `stderr` / the interval are NaN when undefined (fewer than two problems).
    """

    value: float
    stderr: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON-safe dict: NaN (undefined) becomes None."""
        return {k: (None if math.isnan(v) else v) for k, v in self._items()}

    def _items(self) -> list[tuple[str, float]]:
        return [
            ("value", self.value),
            ("stderr", self.stderr),
            ("ci_low", self.ci_low),
            ("ci_high", self.ci_high),
        ]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from `n` samples of which `c` are correct.

    Chen et al. 2021 (HumanEval, eq. 1): pass@k = 1 - C(n-c, k) / C(n, k), computed in the
    numerically stable product form 1 - prod_{i=n-c+1}^{n} (1 - k/i).  When n - c < k every
    size-k subset contains a correct sample, so the estimate is exactly 1.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"pass_at_k: {name} must be an int, got {v!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n (samples per problem) must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c (correct samples) must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got {k}; draw at least k samples per problem")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def insufficient_samples(ns: Sequence[int], k: int) -> str | None:
    """Why pass@k / maj@k cannot be reported for these per-problem sample counts (None if it can)."""
    if len(ns) == 0:
        return f"no problems: @{k} metrics need at least one problem"
    short = [i for i, n in enumerate(ns) if n < k]
    if short:
        return (
            f"@{k} not reported: {len(short)} of {len(ns)} problems have fewer than k={k} samples "
            f"(first: problem #{short[0]} with n={ns[short[0]]}); sample n >= {k} for every problem"
        )
    return None


def per_problem_pass_at_k(ns: Sequence[int], cs: Sequence[int], k: int) -> list[float]:
    """pass@k for each problem; raises if some problem has n < k (see `insufficient_samples`)."""
    _check_same_length(ns, cs)
    reason = insufficient_samples(ns, k)
    if reason is not None:
        raise ValueError(reason)
    return [pass_at_k(int(n), int(c), k) for n, c in zip(ns, cs)]


def corpus_pass_at_k(ns: Sequence[int], cs: Sequence[int], k: int) -> float | None:
    """Mean pass@k over problems, or None when some problem has n < k.

    Never falls back to a smaller k or to the problems that have enough samples; call
    `insufficient_samples(ns, k)` for the reason to print.
    """
    _check_same_length(ns, cs)
    if insufficient_samples(ns, k) is not None:
        return None
    return float(np.mean(per_problem_pass_at_k(ns, cs, k)))


def avg_at_k(ns: Sequence[int], cs: Sequence[int]) -> float:
    """avg@k: mean accuracy over samples, averaged per problem first (each problem weighs the same).

    Its expectation does not depend on k, so all n samples of a problem are used (c / n); with k
    samples per problem this is the usual avg@k.  Equals corpus pass@1.
    """
    _check_same_length(ns, cs)
    if len(ns) == 0:
        raise ValueError("avg_at_k: no problems")
    for i, (n, c) in enumerate(zip(ns, cs)):
        if n < 1 or not 0 <= c <= n:
            raise ValueError(f"avg_at_k: problem #{i} has n={n}, c={c}; need n >= 1 and 0 <= c <= n")
    return float(np.mean([c / n for n, c in zip(ns, cs)]))


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean over problems: sample std (ddof=1) / sqrt(P); NaN when P < 2."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2:
        return math.nan
    return float(arr.std(ddof=1) / math.sqrt(arr.size))


def bootstrap_ci(
    per_problem_values: Sequence[float], *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean over problems (Efron & Tibshirani 1993, §13.3).

    Resamples problems with replacement `n_boot` times; same `seed` -> same interval.
    Returns (NaN, NaN) when there are fewer than two problems.
    """
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: alpha must be in (0, 1), got {alpha}")
    arr = np.asarray(per_problem_values, dtype=np.float64)
    if arr.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))  # [n_boot, P]
    means = arr[idx].mean(axis=1)  # [n_boot]
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def metric_value(
    per_problem_values: Sequence[float], *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> MetricValue:
    """Mean over problems with its standard error and bootstrap interval."""
    if len(per_problem_values) == 0:
        raise ValueError("metric_value: no per-problem values to average")
    lo, hi = bootstrap_ci(per_problem_values, n_boot=n_boot, alpha=alpha, seed=seed)
    return MetricValue(
        value=float(np.mean(per_problem_values)),
        stderr=standard_error(per_problem_values),
        ci_low=lo,
        ci_high=hi,
    )


def _check_same_length(ns: Sequence[int], cs: Sequence[int]) -> None:
    if len(ns) != len(cs):
        raise ValueError(f"ns has {len(ns)} problems but cs has {len(cs)}: pass one count per problem")
