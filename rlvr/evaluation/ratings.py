"""Ratings between models or checkpoints: pairwise games, online Elo, Bradley–Terry with bootstrap CIs.

A game compares two players on one problem: by verifier outcome (solved beats unsolved; both or
neither is a tie) or by a judge callable.  Ratings are on the Elo scale: a 400-point gap means
10:1 odds, P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400)).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ELO_SCALE = 400.0 / math.log(10.0)  # rating points per nat of log-strength


@dataclass(frozen=True, slots=True)
class Game:
    """One comparison: `score_a` is 1.0 if `a` won, 0.5 for a tie, 0.0 if `b` won."""

    a: str
    b: str
    score_a: float

    def __post_init__(self) -> None:
        if self.a == self.b:
            raise ValueError(f"Game: a player cannot play itself ({self.a!r})")
        if self.score_a not in (0.0, 0.5, 1.0):
            raise ValueError(f"Game.score_a must be 0, 0.5 or 1, got {self.score_a}")


def games_from_outcomes(outcomes: Mapping[str, Sequence[bool]], *, include_ties: bool = True) -> list[Game]:
    """Every pair of players on every problem: solved beats unsolved, both/neither is a tie.

    `outcomes[player][p]` is whether the player solved problem p (same problems, same order).
    """
    sizes = {name: len(v) for name, v in outcomes.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"games_from_outcomes: players were scored on different numbers of problems: {sizes}"
        )
    games = []
    for a, b in itertools.combinations(outcomes, 2):
        for sa, sb in zip(outcomes[a], outcomes[b]):
            if bool(sa) != bool(sb) or include_ties:
                games.append(Game(a, b, 0.5 if bool(sa) == bool(sb) else float(bool(sa))))
    return games


def games_from_judge(
    outputs: Mapping[str, Sequence[str]],
    judge: Callable[[int, str, str], float],
    *,
    seed: int = 0,
) -> list[Game]:
    """Pairwise games decided by `judge(problem_index, first_output, second_output) -> 1 / 0.5 / 0`.

    The presentation order is shuffled per game (seeded) so a judge's position bias averages out.
    """
    rng = random.Random(seed)
    games = []
    for a, b in itertools.combinations(outputs, 2):
        for p, (oa, ob) in enumerate(zip(outputs[a], outputs[b], strict=True)):
            if rng.random() < 0.5:
                games.append(Game(a, b, float(judge(p, oa, ob))))
            else:
                games.append(Game(a, b, 1.0 - float(judge(p, ob, oa))))
    return games


def online_elo(
    games: Sequence[Game], *, k: float = 32.0, initial: float = 1000.0, seed: int | None = None
) -> dict[str, float]:
    """Sequential Elo updates R_a += k (S_a - E_a).  Order-dependent: `seed` shuffles the games first."""
    order = list(games)
    if seed is not None:
        random.Random(seed).shuffle(order)
    ratings: dict[str, float] = {}
    for g in order:
        ra, rb = ratings.setdefault(g.a, initial), ratings.setdefault(g.b, initial)
        expected_a = 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))
        ratings[g.a] = ra + k * (g.score_a - expected_a)
        ratings[g.b] = rb - k * (g.score_a - expected_a)
    return ratings


def _tally(games: Sequence[Game]) -> tuple[list[str], np.ndarray]:
    """Players (sorted) and W[i, j] = points i scored against j (ties count half)."""
    players = sorted({g.a for g in games} | {g.b for g in games})
    index = {p: i for i, p in enumerate(players)}
    wins = np.zeros((len(players), len(players)))
    for g in games:
        wins[index[g.a], index[g.b]] += g.score_a
        wins[index[g.b], index[g.a]] += 1.0 - g.score_a
    return players, wins


def _strongly_connected(wins: np.ndarray) -> bool:
    """Hunter's (2004) condition for a finite MLE: every player can be reached via 'scored against'."""
    adj = wins > 0
    for graph in (adj, adj.T):
        seen, stack = {0}, [0]
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(graph[i]):
                if j not in seen:
                    seen.add(int(j))
                    stack.append(int(j))
        if len(seen) < len(wins):
            return False
    return True


def bradley_terry(
    games: Sequence[Game],
    *,
    n_iter: int = 10_000,
    tol: float = 1e-10,
    prior: float = 0.0,
    center: float = 1000.0,
    anchor: str | None = None,
) -> dict[str, float]:
    """Bradley–Terry maximum likelihood by the MM algorithm of Hunter (2004), on the Elo scale.

    Ties count as half a win for each side.  Update: p_i <- W_i / sum_j N_ij / (p_i + p_j) with
    W_i = points of i and N_ij = games between i and j.  `prior` > 0 adds `prior` virtual wins and
    losses of each player against a fixed virtual opponent of strength 1 (a shrinkage that makes
    the estimate exist for any data); with prior = 0 the MLE must exist (every player has points
    against and concedes points to the rest: the 'scored against' graph is strongly connected).
    Ratings are 400·log10(p), shifted so they average `center`, or so `anchor` sits at `center`.
    """
    if not games:
        raise ValueError("bradley_terry: no games")
    players, wins = _tally(games)
    if prior < 0:
        raise ValueError(f"bradley_terry: prior must be >= 0, got {prior}")
    if prior == 0 and len(players) > 1 and not _strongly_connected(wins):
        raise ValueError(
            "bradley_terry: the maximum-likelihood ratings do not exist (some group of players never "
            "scored against the rest, e.g. a player with no wins and no ties); pass prior > 0"
        )
    n_games = wins + wins.T  # [P, P]
    points = wins.sum(axis=1) + prior  # [P]
    p = np.ones(len(players))
    for _ in range(n_iter):
        denom = (n_games / (p[:, None] + p[None, :])).sum(axis=1) + 2 * prior / (p + 1.0)
        new = points / denom
        if prior == 0:
            new /= np.exp(np.mean(np.log(new)))  # fix the scale: geometric mean 1
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    ratings = ELO_SCALE * np.log(p)
    if anchor is not None:
        if anchor not in players:
            raise ValueError(f"bradley_terry: anchor {anchor!r} is not a player; players: {players}")
        ratings = ratings - ratings[players.index(anchor)] + center
    else:
        ratings = ratings - ratings.mean() + center
    return {name: float(r) for name, r in zip(players, ratings)}


def bootstrap_ratings(
    games: Sequence[Game],
    *,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    prior: float = 0.0,
    center: float = 1000.0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval per player: refit Bradley–Terry on games resampled with replacement."""
    rng = np.random.default_rng(seed)
    players = sorted({g.a for g in games} | {g.b for g in games})
    samples: dict[str, list[float]] = {p: [] for p in players}
    for _ in range(n_boot):
        resample = [games[i] for i in rng.integers(0, len(games), size=len(games))]
        fit = bradley_terry(resample, prior=prior, center=center, tol=1e-8)
        for name in players:
            samples[name].append(fit.get(name, math.nan))
    out = {}
    for name, vals in samples.items():
        lo, hi = np.nanquantile(vals, [alpha / 2, 1 - alpha / 2])
        out[name] = (float(lo), float(hi))
    return out


def leaderboard(
    games: Sequence[Game], *, n_boot: int = 200, seed: int = 0, prior: float = 0.0, center: float = 1000.0
) -> str:
    """A printable table, best first: Bradley–Terry rating with 95% CI, online Elo, W-T-L record."""
    bt = bradley_terry(games, prior=prior, center=center)
    ci = bootstrap_ratings(games, n_boot=n_boot, seed=seed, prior=prior, center=center)
    elo = online_elo(games, initial=center, seed=seed)
    record = {name: [0, 0, 0] for name in bt}
    for g in games:
        for name, s in ((g.a, g.score_a), (g.b, 1.0 - g.score_a)):
            record[name][0 if s == 1.0 else 1 if s == 0.5 else 2] += 1
    rows = [("rank", "player", "BT rating", "95% CI", "Elo", "W-T-L")]
    for rank, name in enumerate(sorted(bt, key=lambda p: -bt[p]), start=1):
        w, t, lo = record[name]
        rows.append((str(rank), name, f"{bt[name]:.0f}", f"[{ci[name][0]:.0f}, {ci[name][1]:.0f}]",
                     f"{elo[name]:.0f}", f"{w}-{t}-{lo}"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
