"""Best-of-N reranking: pick one of a prompt's N samples with a scorer, report its accuracy.

The scorer is any `(example, completion) -> float`: a verifier (an oracle: best-of-N by the
verifier equals pass@N), a reward model, or the sample's mean sampler logprob (a confidence
heuristic).  Ties go to the earliest sample.  With `n` smaller than the group size, the accuracy is
averaged over size-n subsets (all of them, or seeded random ones), as for maj@k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlvr.evaluation.metrics import MetricValue, metric_value
from rlvr.evaluation.voting import subsets
from rlvr.tasks.base import Task, grade, open_prefix
from rlvr.types import Completion, Example, Group

Scorer = Callable[[Example, Completion], float]


@dataclass(frozen=True, slots=True)
class BestOfNResult:
    """Best-of-n accuracy over problems; `chosen[p]` is the pick among all of problem p's samples."""

    n: int
    accuracy: MetricValue
    per_example: list[float]
    chosen: list[int]


def mean_logprob_scorer(example: Example, completion: Completion) -> float:
    """Mean sampler logprob per token (higher = more confident); -inf when the engine gave none."""
    lps = completion.sampler_logprobs
    if not lps:
        return -math.inf
    return math.fsum(lps) / len(lps)


def verifier_scorer(task: Task, *, prefix: str | None = None) -> Scorer:
    """Score with the task's verifier (total reward): an oracle upper bound, equal to pass@N.

    Completions are graded after `prefix` (`rlvr.tasks.grade`): pass the groups' `Group.prefix`
    for chat-template samples; None means the task's plain prompt's (`open_prefix(task.render(ex))`).
    """

    def score(example: Example, completion: Completion) -> float:
        opened = open_prefix(task.render(example)) if prefix is None else prefix
        return grade(task, example, completion.text, prefix=opened).total

    return score


def best_index(values: Sequence[float], subset: Sequence[int]) -> int:
    """Index (into `values`) of the highest value in `subset`; NaN never wins; ties -> earliest."""
    best = subset[0]
    for i in subset[1:]:
        if _key(values[i]) > _key(values[best]):
            best = i
    return best


def _key(v: float) -> float:
    return -math.inf if math.isnan(v) else v


def best_of_n(
    groups: Sequence[Group],
    scorer: Scorer,
    *,
    n: int | None = None,
    n_subsets: int = 256,
    seed: int = 0,
    n_boot: int = 1000,
) -> BestOfNResult:
    """Rerank each group's samples with `scorer`; accuracy = the chosen sample's "accuracy" part.

    Groups must be scored (`group.scores` filled, e.g. by `evaluate` or `collect`).  `n` defaults
    to the smallest group size.
    """
    if not groups:
        raise ValueError("best_of_n: no groups")
    size = min(g.size for g in groups)
    n = size if n is None else n
    if not 1 <= n <= size:
        raise ValueError(f"best_of_n: n must be in [1, {size}] (the smallest group), got {n}")
    per_example, chosen = [], []
    for p, g in enumerate(groups):
        if len(g.scores) != g.size:
            raise ValueError(
                f"best_of_n: group #{p} ({g.example.id!r}) is not scored; run the verifier first"
            )
        values = [float(scorer(g.example, c)) for c in g.completions]
        correct = [s.parts.get("accuracy", s.total) >= 0.5 for s in g.scores]
        picks = [best_index(values, sub) for sub in subsets(g.size, n, n_subsets=n_subsets, seed=seed)]
        per_example.append(sum(correct[i] for i in picks) / len(picks))
        chosen.append(best_index(values, list(range(g.size))))
    return BestOfNResult(n=n, accuracy=metric_value(per_example, n_boot=n_boot, seed=seed),
                         per_example=per_example, chosen=chosen)  # fmt: skip
