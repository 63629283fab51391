"""Evaluation (layer L5): pass@k, maj@k, avg@k with error bars, resumable generation, best-of-N, ratings.

Entry points: `evaluate` (engine + task -> `EvalResult`), `run_eval` (what `rlvr eval` calls),
`make_eval_callback` (periodic evaluation during training), `best_of_n`, and the ratings helpers
(`bradley_terry`, `online_elo`, `leaderboard`).
"""

from rlvr.evaluation.bestofn import BestOfNResult, best_of_n, mean_logprob_scorer, verifier_scorer
from rlvr.evaluation.cache import CacheKey, GenerationCache, params_hash
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
from rlvr.evaluation.ratings import (
    Game,
    bootstrap_ratings,
    bradley_terry,
    games_from_judge,
    games_from_outcomes,
    leaderboard,
    online_elo,
)
from rlvr.evaluation.result import EvalResult
from rlvr.evaluation.runner import evaluate, make_eval_callback, run_eval
from rlvr.evaluation.voting import cluster_answers, maj_at_k

__all__ = [
    "BestOfNResult",
    "CacheKey",
    "EvalResult",
    "Game",
    "GenerationCache",
    "MetricValue",
    "avg_at_k",
    "best_of_n",
    "bootstrap_ci",
    "bootstrap_ratings",
    "bradley_terry",
    "cluster_answers",
    "corpus_pass_at_k",
    "evaluate",
    "games_from_judge",
    "games_from_outcomes",
    "insufficient_samples",
    "leaderboard",
    "maj_at_k",
    "make_eval_callback",
    "mean_logprob_scorer",
    "metric_value",
    "online_elo",
    "params_hash",
    "pass_at_k",
    "run_eval",
    "standard_error",
    "verifier_scorer",
]
