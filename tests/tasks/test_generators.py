"""Procedural generators: determinism, disjoint splits, solver guarantees, worked traces, noise."""

import itertools
import random
from fractions import Fraction

import pytest

from rlvr.tasks.arithmetic import ArithmeticTask, column_add, column_mul, column_sub, parse_int, work
from rlvr.tasks.countdown import CountdownTask
from rlvr.tasks.sort import SortTask, parse_list
from rlvr.types import Example
from rlvr.verifiers.countdown import countdown_value

FACTORIES = {
    "arithmetic": lambda **kw: ArithmeticTask(**kw),
    "arithmetic-hard": lambda **kw: ArithmeticTask(digits=3, ops="+-*", n_terms=3, **kw),
    "countdown": lambda **kw: CountdownTask(**kw),
    "countdown-4": lambda **kw: CountdownTask(
        n_numbers=4, max_number=25, target_max=200, failed_attempts=2, **kw
    ),
    "sort": lambda **kw: SortTask(**kw),
}
N = dict(n_train=400, n_test=80)


def canonical(task, ex: Example) -> tuple:
    """Our own canonical problem key (independent of the generators' keys)."""
    if isinstance(task, CountdownTask):
        return (tuple(sorted(ex.meta["numbers"])), ex.meta["target"])
    if isinstance(task, SortTask):
        return tuple(sorted(ex.meta["numbers"]))
    terms, ops = ex.meta["terms"], ex.meta["ops"]
    if len(set(ops)) == 1 and ops[0] in "+*":
        return (ops[0], tuple(sorted(terms)))
    return (tuple(terms), tuple(ops))


@pytest.mark.parametrize("name", FACTORIES)
def test_deterministic_for_a_seed(name):
    a, b, c = FACTORIES[name](seed=1, **N), FACTORIES[name](seed=1, **N), FACTORIES[name](seed=2, **N)
    for split in ("train", "test"):
        assert a.examples(split) == b.examples(split)
        assert a.examples(split) != c.examples(split)
    ex = a.examples("train")[0]
    assert a.solution(ex) == b.solution(ex)  # the default rng is seeded by the example id


@pytest.mark.parametrize("name", FACTORIES)
def test_splits_are_disjoint_even_across_seeds(name):
    one, two = FACTORIES[name](seed=1, **N), FACTORIES[name](seed=2, **N)
    train = {canonical(one, ex) for ex in one.examples("train")} | {
        canonical(two, ex) for ex in two.examples("train")
    }
    test = {canonical(one, ex) for ex in one.examples("test")} | {
        canonical(two, ex) for ex in two.examples("test")
    }
    assert len(one.examples("train")) == 400 and len(one.examples("test")) == 80
    assert len({canonical(one, ex) for ex in one.examples("train")}) == 400  # no duplicates within a split
    assert not train & test
    assert not {ex.id for ex in one.examples("train")} & {ex.id for ex in one.examples("test")}


@pytest.mark.parametrize("name", FACTORIES)
def test_clean_solutions_score_full_marks(name):
    task = FACTORIES[name](**N)
    for ex in [*task.examples("train"), *task.examples("test")]:
        sol = task.solution(ex, random.Random(0))
        assert task.score(ex, sol).parts == {"accuracy": 1.0, "format": 1.0}, (ex, sol)


@pytest.mark.parametrize("name", FACTORIES)
def test_noise_gives_wrong_answers_at_about_the_rate(name):
    task = FACTORIES[name](n_train=1000, n_test=10)
    rng = random.Random(7)
    scores = [task.score(ex, task.solution(ex, rng, noise=0.3)).parts for ex in task.examples("train")]
    wrong = sum(s["accuracy"] == 0.0 for s in scores) / len(scores)
    # binomial sd at p=0.3, n=1000 is 0.0145; allow ~3.5 sd
    assert 0.25 <= wrong <= 0.35
    assert all(s["format"] == 1.0 for s in scores)  # mistakes are in the reasoning, not the layout


def brute_force_solvable(numbers: list[int], target: int) -> bool:
    """Independent solver: combine any two of the pool with + - * / (exact fractions) until one is left."""
    pool = [Fraction(n) for n in numbers]
    if len(pool) == 1:
        return pool[0] == target
    for i, j in itertools.permutations(range(len(pool)), 2):
        rest = [pool[k] for k in range(len(pool)) if k not in (i, j)]
        a, b = pool[i], pool[j]
        for v in (a + b, a - b, a * b, a / b if b else None):
            if v is not None and brute_force_solvable_f([*rest, v], target):
                return True
    return False


def brute_force_solvable_f(pool: list[Fraction], target: int) -> bool:
    return brute_force_solvable(pool, target) if len(pool) > 1 else pool[0] == target


def test_every_countdown_problem_is_solvable():
    task = CountdownTask(n_numbers=4, max_number=25, target_max=200, n_train=300, n_test=50)
    for ex in [*task.examples("train"), *task.examples("test")]:
        nums, target = ex.meta["numbers"], ex.meta["target"]
        assert (
            countdown_value(ex.meta["solution"], nums) == target
        )  # the stored solution, checked by the verifier
        assert 1 <= target <= 200 and all(1 <= n <= 25 for n in nums) and len(nums) == 4
        assert ex.gold == str(target)
    for ex in task.examples("test")[:15]:  # and an independent search agrees
        assert brute_force_solvable(ex.meta["numbers"], ex.meta["target"])


def test_countdown_trace_is_the_worked_expression():
    task = CountdownTask(n_train=5, n_test=2)
    ex = Example(
        id="c",
        prompt="Use 3, 5, 4, 6 to make 26.",
        gold="26",
        meta={"numbers": [3, 5, 4, 6], "target": 26, "solution": "(3+5)*4-6"},
    )
    # 3+5 = 8, 8*4 = 32, 32-6 = 26
    assert task.solution(ex) == "3+5=8\n8*4=32\n32-6=26</think><answer>(3+5)*4-6</answer>"
    assert task.render(ex) == "Use 3, 5, 4, 6 to make 26.\n<think>"


def test_countdown_equivalent_compares_values_of_legal_answers():
    task = CountdownTask(n_train=5, n_test=2)
    ex = Example(id="c", prompt="", gold="26", meta={"numbers": [3, 5, 4, 6], "target": 26})
    assert task.equivalent("(3+5)*4-6", "4*(5+3)-6", ex)  # both 26
    assert not task.equivalent("(3+5)*4-6", "(3+5)*4+6", ex)  # 26 vs 38


@pytest.mark.parametrize(
    "fn, a, b, steps, value",
    [
        # 47+85: 7+5=12 (carry 1), 4+8+1=13 -> 132
        (column_add, 47, 85, ["7+5=12", "4+8+1=13"], 132),
        # 52-17: 2<7 so 12-7=5 (borrow 1), then 5-1=4, 4-1=3 -> 35
        (column_sub, 52, 17, ["12-7=5", "4-1=3"], 35),
        # 100-1: 10-1=9 (borrow), 0-1 -> 9 with borrow: 9-0=9, 1-1=0 -> 099 = 99
        (column_sub, 100, 1, ["10-1=9", "9-0=9", "0-0=0"], 99),
        # 47*5: 7*5=35 (carry 3), 4*5+3=23 -> 235
        (column_mul, 47, 5, ["7*5=35", "4*5+3=23"], 235),
        # 47*85: 47*5=235, 47*8=376, 235+3760=3995
        (column_mul, 47, 85, ["47*5=235", "47*8=376", "235+3760=3995"], 3995),
    ],
)
def test_column_steps(fn, a, b, steps, value):
    assert fn(a, b) == (steps, value)


def test_slips_change_the_answer_plausibly():
    # forgotten carry into column 1 of 47+85: 4+8=12 -> written 122 instead of 132
    assert column_add(47, 85, slip=(1, "carry")) == (["7+5=12", "4+8=12"], 122)
    # off-by-one in column 0: 7+5 written as 13 -> 133 + carry -> 4+8+1=13 -> 133
    assert column_add(47, 85, slip=(0, "digit")) == (["7+5=13", "4+8+1=13"], 133)


def test_multi_term_trace_respects_precedence():
    # 2+3*4: 3*4 first (=12), then 2+12 = 14
    lines, value = work([2, 3, 4], ["+", "*"])
    assert value == 14
    # 3*4 (one column: 3*4=12), then 2+12 column by column: 2+2=4, 0+1=1
    assert lines == ["3*4: 3*4=12 =12", "2+12: 2+2=4 0+1=1 =14"]


@pytest.mark.parametrize(
    "text, want",
    [
        ("132", 132),
        (" -7 ", -7),
        ("1,320", 1320),
        ("132.", 132),
        ("$132$", 132),
        ("13 2", None),
        ("1,32", None),
        ("132.5", None),
        ("x=132", None),
        (None, None),
        ("9" * 100, None),
    ],
)
def test_parse_int(text, want):
    assert parse_int(text) == want


@pytest.mark.parametrize(
    "text, want",
    [
        ("3 7 19", [3, 7, 19]),
        ("3, 7, 19", [3, 7, 19]),
        ("[3,7,19]", [3, 7, 19]),
        ("3 7 and 19", None),
        ("", None),
        ("3;7", None),
    ],
)
def test_parse_list(text, want):
    assert parse_list(text) == want


def test_sort_trace_and_grading():
    task = SortTask(n_train=5, n_test=2)
    ex = Example(id="s", prompt="Sort: 42 7 19 3", gold="3 7 19 42", meta={"numbers": [42, 7, 19, 3]})
    assert (
        task.solution(ex)
        == "min 42 7 19 3 = 3\nmin 42 7 19 = 7\nmin 42 19 = 19</think><answer>3 7 19 42</answer>"
    )
    assert task.score(ex, "x</think><answer>3, 7, 19, 42</answer>").parts["accuracy"] == 1.0
    assert task.score(ex, "x</think><answer>3 7 42 19</answer>").parts["accuracy"] == 0.0
    assert task.score(ex, "x</think><answer>3 7 19</answer>").parts["accuracy"] == 0.0  # dropped one


def test_too_few_problems_is_a_clear_error():
    task = ArithmeticTask(digits=1, n_train=1000, n_test=10)  # only 55 unordered one-digit sums exist
    with pytest.raises(
        ValueError,
        match=r"arithmetic: found only \d+ distinct train problems of the 1000 asked for; lower n_train",
    ):
        task.examples("train")
    with pytest.raises(ValueError, match=r"unknown split 'dev': arithmetic has splits \['train', 'test'\]"):
        task.examples("dev")
