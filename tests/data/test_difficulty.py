"""Difficulty filtering with a fake engine: pass rates, open / closed ranges, resume, outputs."""

from __future__ import annotations

import json

import pytest

from rlvr.data.difficulty import PassCache, PassRange, filter_by_difficulty, write_kept
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fake import FakeEngine
from rlvr.types import Example, Score


class CharTokenizer:
    eos_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(map(chr, ids))


class EchoTask:
    """Prompt "p<i>": the fake engine's sample j is correct for j < i (pass rate i/4 with k = 4)."""

    name = "echo"

    def __init__(self, n=6):
        self._examples = [Example(f"e{i}", f"p{i}", "ok", {"i": i}) for i in range(n)]

    def examples(self, split):
        return self._examples

    def render(self, example):
        return example.prompt

    def messages(self, example):
        return [{"role": "user", "content": example.prompt}]

    def score(self, example, completion):
        return Score.weighted({"accuracy": float(completion == "ok")}, {})

    def extract(self, completion):
        return completion

    def equivalent(self, a, b, example):
        return a == b


def script(prompt, j):
    i = int("".join(map(chr, prompt))[1:])
    return "ok" if j < i else "no"


@pytest.mark.parametrize(
    ("spec", "kept"),
    [("(0, 1)", [1, 2, 3]), ("[0,1]", [0, 1, 2, 3, 4, 5]), ("[0.25, 0.75]", [1, 2, 3]),
     ("(0.25, 0.75)", [2]), ("(0,1]", [1, 2, 3, 4, 5]), ("[0, 0.5)", [0, 1])],
)  # fmt: skip
def test_pass_rates_and_range_bounds(spec, kept):
    task = EchoTask()
    engine = FakeEngine(script)
    result = filter_by_difficulty(engine, CharTokenizer(), task, task.examples("train"), k=4, keep=spec)
    assert [r.pass_rate for r in result.rates] == [0, 0.25, 0.5, 0.75, 1, 1]
    assert [ex.meta["i"] for ex in result.kept] == kept
    assert engine.calls[0][1].n == 4


def test_range_parsing():
    assert PassRange.parse("[0.1,0.9]") == PassRange(0.1, 0.9, True, True)
    assert str(PassRange.parse(" ( 0 , 1 ] ")) == "(0, 1]"
    for bad in ("0.1-0.9", "[0.9, 0.1]", "(0.5, 0.5)", "[0, 2]"):
        with pytest.raises(ValueError, match="pass-rate range"):
            PassRange.parse(bad)
    assert 0.5 in PassRange.parse("[0.5, 0.5]")


def test_resume_samples_only_what_the_cache_lacks(tmp_path):
    task, cache = EchoTask(), tmp_path / "cache.jsonl"
    first = FakeEngine(script)
    filter_by_difficulty(
        first, CharTokenizer(), task, task.examples("train")[:3], k=4, cache_path=cache, batch_size=2
    )
    with cache.open("a") as f:
        f.write('{"key": "half a line')  # a run killed mid-write
    again = FakeEngine(script)
    result = filter_by_difficulty(
        again, CharTokenizer(), task, task.examples("train"), k=4, cache_path=cache, batch_size=2
    )
    assert result.n_generated == 3 and sum(n for n, _ in again.calls) == 3
    assert [r.correct for r in result.rates] == [0, 1, 2, 3, 4, 4]
    assert len(PassCache(cache).records) == 6 and cache.read_text().endswith("\n")
    other_k = FakeEngine(script)
    filter_by_difficulty(other_k, CharTokenizer(), task, task.examples("train"), k=2, cache_path=cache)
    assert sum(n for n, _ in other_k.calls) == 6  # a different k is a different key


def test_corrupt_cache_line_names_the_line(tmp_path):
    cache = tmp_path / "c.jsonl"
    cache.write_text('{"key": "a", "correct": [true]}\nnot json\n{"key": "b", "correct": []}\n')
    with pytest.raises(ValueError, match=r"c\.jsonl:2: not a pass-rate cache entry"):
        PassCache(cache)


def test_seeds_and_params_are_passed_through():
    task = EchoTask(2)
    engine = FakeEngine(script)
    params = SamplingParams(temperature=0.7, max_new_tokens=8)
    filter_by_difficulty(engine, CharTokenizer(), task, task.examples("train"), k=3, params=params, seed=5)
    ((_, used),) = engine.calls
    assert (used.n, used.temperature, used.max_new_tokens) == (3, 0.7, 8) and used.seed is not None


def test_duplicate_ids_and_bad_k_are_refused():
    task = EchoTask(1)
    with pytest.raises(ValueError, match="appears twice"):
        filter_by_difficulty(FakeEngine(script), CharTokenizer(), task, task.examples("x") * 2, k=2)
    with pytest.raises(ValueError, match="k and batch_size"):
        filter_by_difficulty(FakeEngine(script), CharTokenizer(), task, task.examples("x"), k=0)


def test_write_kept_file_rows_and_examples(tmp_path):
    from rlvr.tasks.files import FileTask

    data = tmp_path / "math.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"q{i}", "answer": str(i), "extra": i}) + "\n" for i in range(4))
    )
    task = FileTask(data, validate=False)

    def by_line(prompt, j):  # q0: never right, q1: always, q2 / q3: half the time
        q = int("".join(map(chr, prompt)).split("\n")[0][1:])
        return f"<think>x</think><answer>{q if (q == 1 or (q > 1 and j % 2)) else 99}</answer>"

    result = filter_by_difficulty(FakeEngine(by_line), CharTokenizer(), task, task.examples("train"), k=4)
    assert [r.pass_rate for r in result.rates] == [0, 1, 0.5, 0.5]
    assert write_kept(result, task, tmp_path / "kept.jsonl") == 2
    rows = [json.loads(x) for x in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert [r["extra"] for r in rows] == [2, 3]
    assert write_kept(result, EchoTask(), tmp_path / "kept2.jsonl") == 2
