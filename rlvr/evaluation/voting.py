"""maj@k (self-consistency, Wang et al. 2023): majority vote over extracted answers.

Answers are clustered by the task's equivalence (so "0.5" and "\\frac12" vote together): each
answer is compared with the representative (first member) of every existing cluster.  The vote
over a size-k subset of the n samples picks the largest cluster; ties go to the cluster whose
first member comes earliest in sample order; `None` (no extractable answer) never wins, and a
subset with only `None` answers counts as incorrect.  maj@k is the mean over size-k subsets: all
of them when C(n, k) <= `n_subsets`, else `n_subsets` seeded random subsets.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence

Equivalence = Callable[[str, str], bool]


def cluster_answers(answers: Sequence[str | None], equivalent: Equivalence) -> list[int | None]:
    """Cluster label per answer (None for None answers), labels numbered by first occurrence.

    Each answer joins the first cluster whose representative it is equivalent to.  Uses
    O(n * clusters) equivalence calls, done once per problem and shared by every subset.
    """
    reps: list[str] = []
    labels: list[int | None] = []
    for ans in answers:
        if ans is None:
            labels.append(None)
            continue
        label = next((j for j, rep in enumerate(reps) if ans == rep or equivalent(rep, ans)), None)
        if label is None:
            reps.append(ans)
            label = len(reps) - 1
        labels.append(label)
    return labels


def vote(labels: Sequence[int | None], subset: Sequence[int]) -> int | None:
    """Index (into the samples) of the vote winner's first member in `subset`, or None.

    `subset` lists sample indices in increasing order; the winner is the largest cluster, ties
    broken by earliest first occurrence within the subset.
    """
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for i in subset:
        label = labels[i]
        if label is None:
            continue
        counts[label] = counts.get(label, 0) + 1
        first.setdefault(label, i)
    if not counts:
        return None
    best = max(counts, key=lambda lab: (counts[lab], -first[lab]))
    return first[best]


def subsets(n: int, k: int, *, n_subsets: int, seed: int) -> Iterator[tuple[int, ...]]:
    """Size-k subsets of range(n) (sorted): all of them if C(n, k) <= n_subsets, else seeded samples."""
    if not 1 <= k <= n:
        raise ValueError(f"subset size k must be in [1, n={n}], got {k}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    if math.comb(n, k) <= n_subsets:
        yield from itertools.combinations(range(n), k)
        return
    rng = random.Random(seed)
    for _ in range(n_subsets):
        yield tuple(sorted(rng.sample(range(n), k)))


def maj_at_k(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    k: int,
    *,
    equivalent: Equivalence,
    n_subsets: int = 256,
    seed: int = 0,
) -> float:
    """maj@k for one problem: the probability that the majority answer of k samples is correct.

    `answers[i]` is sample i's extracted answer (None if none), `correct[i]` the verifier's verdict.
    The winning cluster's correctness is the verdict on its earliest member in the subset (the
    answer the vote returns).  Estimated over size-k subsets as described in the module docstring.
    """
    if len(answers) != len(correct):
        raise ValueError(f"maj_at_k: {len(answers)} answers but {len(correct)} correctness flags")
    n = len(answers)
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k: k must be in [1, n={n}], got {k}; draw at least k samples")
    labels = cluster_answers(answers, equivalent)
    total, count = 0.0, 0
    for subset in subsets(n, k, n_subsets=n_subsets, seed=seed):
        winner = vote(labels, subset)
        total += float(winner is not None and bool(correct[winner]))
        count += 1
    return total / count
