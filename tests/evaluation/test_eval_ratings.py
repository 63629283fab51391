"""Ratings: Bradley–Terry recovers simulated strengths; Elo sanity; games from outcomes / a judge."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rlvr.evaluation.ratings import (
    Game,
    bootstrap_ratings,
    bradley_terry,
    games_from_judge,
    games_from_outcomes,
    leaderboard,
    online_elo,
)

TRUE = {"A": 1250.0, "B": 1050.0, "C": 950.0, "D": 750.0}  # mean 1000


def simulate(ratings, games_per_pair, seed):
    rng = np.random.default_rng(seed)
    games = []
    names = sorted(ratings)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            p_a = 1 / (1 + 10 ** ((ratings[b] - ratings[a]) / 400))
            games += [Game(a, b, float(w)) for w in rng.random(games_per_pair) < p_a]
    return games


def test_bradley_terry_recovers_known_strengths():
    games = simulate(TRUE, 1500, seed=0)
    fit = bradley_terry(games)
    # s.e. per pair ~ (400/ln 10) * 2/sqrt(1500) = 9 points; 6 pairs pooled -> smaller still
    for name, rating in TRUE.items():
        assert fit[name] == pytest.approx(rating, abs=30), (name, fit)
    assert sorted(fit, key=fit.get) == ["D", "C", "B", "A"]
    assert np.mean(list(fit.values())) == pytest.approx(1000.0)


def test_bradley_terry_two_players_with_ties_hand_value():
    # A: 3 wins, 2 ties, 1 loss -> 4 points of 6; B: 2 points.  MLE p_A / p_B = 4 / 2 = 2
    games = [Game("A", "B", 1.0)] * 3 + [Game("A", "B", 0.5)] * 2 + [Game("B", "A", 1.0)]
    fit = bradley_terry(games)
    assert fit["A"] - fit["B"] == pytest.approx(400 * math.log10(2), abs=1e-6)  # 120.4
    anchored = bradley_terry(games, anchor="B", center=1500)
    assert anchored["B"] == pytest.approx(1500) and anchored["A"] == pytest.approx(1500 + 400 * math.log10(2))


def test_bradley_terry_without_finite_mle_asks_for_a_prior():
    games = [Game("A", "B", 1.0)] * 5  # B never scores: MLE gap is infinite
    with pytest.raises(ValueError, match="prior > 0"):
        bradley_terry(games)
    fit = bradley_terry(games, prior=0.5)
    assert math.isfinite(fit["B"]) and fit["A"] > fit["B"]
    with pytest.raises(ValueError, match="anchor"):
        bradley_terry(games, prior=0.5, anchor="Z")


def test_online_elo_sanity():
    games = [Game("A", "B", 1.0)] * 20
    first = online_elo(games[:1])
    assert first == {"A": 1016.0, "B": 984.0}  # expected score 0.5, k = 32
    history = [1000.0] + [online_elo(games[:i])["A"] for i in range(1, 21)]
    gains = [y - x for x, y in itertools.pairwise(history)]
    assert all(g > 0 for g in gains)  # each win raises A ...
    assert all(g2 < g1 for g1, g2 in itertools.pairwise(gains))  # ... by less as A becomes the favourite
    final = online_elo(games)
    assert final["A"] + final["B"] == pytest.approx(2000.0)  # zero-sum
    mixed = simulate(TRUE, 200, seed=1)
    assert online_elo(mixed, seed=3) == online_elo(mixed, seed=3)
    elo = online_elo(mixed, seed=3, k=8)
    assert sorted(elo, key=elo.get) == ["D", "C", "B", "A"]


def test_games_from_outcomes_counts_ties():
    outcomes = {"A": [True, True, False], "B": [True, False, False]}
    games = games_from_outcomes(outcomes)
    assert [g.score_a for g in games] == [0.5, 1.0, 0.5]
    assert [g.score_a for g in games_from_outcomes(outcomes, include_ties=False)] == [1.0]
    with pytest.raises(ValueError, match="different numbers"):
        games_from_outcomes({"A": [True], "B": [True, False]})


def test_games_from_judge_undoes_position_swaps():
    outputs = {"short": ["a", "b", "c"] * 20, "long": ["aaaa", "bbbb", "cccc"] * 20}
    by_length = games_from_judge(outputs, lambda p, x, y: 1.0 if len(x) > len(y) else 0.0, seed=0)
    assert all(g.score_a == 0.0 for g in by_length)  # "long" always wins whatever the order shown
    first_wins = games_from_judge(outputs, lambda p, x, y: 1.0, seed=0)
    share = np.mean([g.score_a for g in first_wins])
    assert 0.3 < share < 0.7  # a judge with pure position bias rates them about even


def test_bootstrap_ratings_reproducible_and_cover_the_fit():
    games = simulate(TRUE, 150, seed=2)
    fit = bradley_terry(games)
    ci = bootstrap_ratings(games, n_boot=100, seed=5)
    assert ci == bootstrap_ratings(games, n_boot=100, seed=5)
    for name in TRUE:
        assert ci[name][0] < fit[name] < ci[name][1]
    table = leaderboard(games, n_boot=50, seed=0)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["rank", "player", "BT"]
    assert [line.split()[1] for line in lines[2:]] == ["A", "B", "C", "D"]


def test_game_validates():
    with pytest.raises(ValueError, match="itself"):
        Game("A", "A", 1.0)
    with pytest.raises(ValueError, match="score_a"):
        Game("A", "B", 0.7)
