"""evaluate(): hand-checked metrics with a scripted engine; cache resume after a crash; callback; JSON."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from rlvr.evaluation.bestofn import best_of_n, mean_logprob_scorer, verifier_scorer
from rlvr.evaluation.runner import evaluate, make_eval_callback
from rlvr.rollout.base import SamplingParams

from .fakes import (
    AdditionTask,
    CharTokenizer,
    ChatCharTokenizer,
    PrefixAdditionTask,
    RandomEngine,
    ScriptedEngine,
)

PARAMS = SamplingParams(temperature=1.0, max_new_tokens=16)
SCRIPT = {
    "Q: 0+0 A:": ["<answer>0</answer>"] * 4,  # gold 0: 4 of 4 correct
    "Q: 1+1 A:": ["<answer>2</answer>", "<answer>3</answer>", "<answer>3</answer>", "junk"],  # gold 2: 1 of 4
}


def scripted_result(**kw):
    task = AdditionTask(size=2)
    engine = ScriptedEngine(SCRIPT, logprobs={"Q: 1+1 A:": [-2.0, -0.5, -1.0, -0.1]})
    result = evaluate(
        engine, CharTokenizer(), task, task.examples("test"), n=4, ks=[1, 2, 4], params=PARAMS, **kw
    )
    return result, engine


def test_metrics_match_hand_computation():
    result, engine = scripted_result()
    m = {name: mv.value for name, mv in result.metrics.items()}
    assert engine.calls == 1 and engine.generated == 8
    assert m["pass@1"] == pytest.approx((1 + 1 / 4) / 2)  # 0.625
    assert m["pass@2"] == pytest.approx((1 + (1 - 3 / 6)) / 2)  # q1: 1 - C(3,2)/C(4,2)
    assert m["pass@4"] == pytest.approx(1.0)
    # q1 answers [2, 3, 3, None]: pairs (0,1) tie->2 ok, (0,2) ok, (0,3) ok, (1,2) (1,3) (2,3) wrong -> 3/6
    assert m["maj@2"] == pytest.approx((1 + 3 / 6) / 2)
    assert m["maj@4"] == pytest.approx((1 + 0) / 2)  # "3" has 2 votes
    assert m["avg@4"] == pytest.approx(0.625)
    assert m["format_rate"] == pytest.approx((1 + 3 / 4) / 2)
    assert m["mean_length"] == pytest.approx((18 + (3 * 18 + 4) / 4) / 2)  # len("<answer>0</answer>") = 18
    assert result.metrics["pass@1"].stderr == pytest.approx(0.75 / 2**0.5 / 2**0.5)  # std([1, .25]) / sqrt(2)
    assert "maj@1" not in m  # identical to pass@1
    assert result.per_example[1]["answers"] == ["2", "3", "3", None]


def test_k_larger_than_n_is_reported_not_computed():
    task = AdditionTask(size=2)
    res = evaluate(
        ScriptedEngine(SCRIPT), CharTokenizer(), task, task.examples("test"), n=4, ks=[1, 8], params=PARAMS
    )
    assert "pass@8" not in res.metrics and "maj@8" not in res.metrics
    assert any("k=8" in note for note in res.notes)
    assert "k=8" in res.table()


def test_greedy_single_sample():
    task = AdditionTask(size=2)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    res = evaluate(
        ScriptedEngine(SCRIPT), CharTokenizer(), task, task.examples("test"), n=1, ks=[1], params=greedy
    )
    assert set(res.metrics) == {"pass@1", "avg@1", "format_rate", "mean_length"}
    assert res.metrics["pass@1"].value == pytest.approx(1.0)  # both first samples are right


def run_random(tmp_path, name, engine, **kw):
    task = AdditionTask(size=7)
    return evaluate(engine, CharTokenizer(), task, task.examples("test"), n=5, ks=[1, 3, 5], params=PARAMS,
                    cache_path=tmp_path / name, batch_size=2, seed=11, **kw)  # fmt: skip


def test_resume_after_crash_equals_uninterrupted_without_duplicate_generation(tmp_path):
    full_engine = RandomEngine()
    full = run_random(tmp_path, "full.jsonl", full_engine)
    assert full_engine.generated == 7 * 5 and full_engine.calls == 4  # batches of 2, 2, 2, 1 examples

    crashing = RandomEngine(crash_after_calls=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_random(tmp_path, "resumed.jsonl", crashing)
    assert crashing.generated == 4 * 5
    with open(tmp_path / "resumed.jsonl", "a") as f:
        f.write('{"key": {"model": "fake-v1", "ta')  # the kill also cut a write short
    second = RandomEngine()
    resumed = run_random(tmp_path, "resumed.jsonl", second)
    assert second.generated == 3 * 5  # only the 3 examples that were missing
    assert crashing.generated + second.generated == full_engine.generated
    assert resumed.per_example == full.per_example
    assert {k: v.value for k, v in resumed.metrics.items()} == {k: v.value for k, v in full.metrics.items()}

    third = RandomEngine()
    run_random(tmp_path, "resumed.jsonl", third)
    assert third.calls == 0  # everything cached


def test_cache_is_keyed_by_model_and_params_and_extends_n(tmp_path):
    run_random(tmp_path, "c.jsonl", RandomEngine())
    other_model = RandomEngine(fingerprint="fake-v2")
    run_random(tmp_path, "c.jsonl", other_model)
    assert other_model.generated == 35
    task = AdditionTask(size=7)
    more = RandomEngine()
    res = evaluate(more, CharTokenizer(), task, task.examples("test"), n=8, ks=[1, 8], params=PARAMS,
                   cache_path=tmp_path / "c.jsonl", batch_size=2, seed=11)  # fmt: skip
    assert more.generated == 7 * 3  # samples 5..7 only
    assert all(row["n"] == 8 for row in res.per_example)
    assert all(n == 3 for _, n, _ in more.requests)


def test_repeated_identical_samples_are_kept_apart(tmp_path):
    task = AdditionTask(size=1)
    engine = ScriptedEngine({"Q: 0+0 A:": ["<answer>0</answer>"] * 3})
    res = evaluate(engine, CharTokenizer(), task, task.examples("test"), n=3, ks=[1], params=PARAMS,
                   cache_path=tmp_path / "c.jsonl")  # fmt: skip
    assert res.per_example[0]["n"] == 3
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 3


def test_save_writes_json_atomically(tmp_path):
    result, _ = scripted_result()
    out = result.save(tmp_path / "eval" / "result.json")
    data = json.loads(out.read_text())
    assert data["metrics"]["pass@1"]["value"] == pytest.approx(0.625)
    assert data["config"]["task"] == "toy_add" and data["config"]["n"] == 4
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]  # no temp file left behind
    assert "pass@2" in result.table() and "maj@4" in result.table()


def ctx(tmp_path, engine, task, step=10, **kw):
    """A stand-in for the trainer's CallbackContext (the callback only reads these attributes)."""
    fields = dict(step=step, run_dir=tmp_path, model=None, tokenizer=CharTokenizer(), engine=engine, task=task,
                  final=False)  # fmt: skip
    return SimpleNamespace(**(fields | kw))


def test_eval_callback_writes_step_json_and_returns_bare_metrics(tmp_path):
    task = AdditionTask(size=2)
    cb = make_eval_callback(samples=4, temperature=1.0, max_new_tokens=16)
    engine = ScriptedEngine(SCRIPT)
    metrics = cb(ctx(tmp_path, engine, task, step=10))
    assert engine.calls == 1 and engine.generated == 8  # every call evaluates: scheduling is the trainer's
    assert metrics["pass@1"] == pytest.approx(0.625) and metrics["avg@4"] == pytest.approx(0.625)
    assert {"pass@4", "maj@4", "format_rate", "mean_length"} <= set(metrics)
    assert not any(k.startswith("eval/") for k in metrics)  # the trainer adds "eval/"
    saved = json.loads((tmp_path / "eval" / "step_000010.json").read_text())
    assert saved["metrics"]["pass@1"]["value"] == pytest.approx(0.625)
    assert saved["config"]["step"] == 10 and saved["config"]["final"] is False
    params = saved["config"]["params"]
    assert params["temperature"] == 1.0 and params["max_new_tokens"] == 16
    assert [p.name for p in (tmp_path / "eval").iterdir()] == ["step_000010.json"]  # atomic: no temp left


def test_eval_callback_num_examples_and_explicit_examples(tmp_path):
    task = AdditionTask(size=2)
    first = make_eval_callback(samples=4, num_examples=1)(ctx(tmp_path, ScriptedEngine(SCRIPT), task, step=3))
    assert first["pass@1"] == pytest.approx(1.0)  # only q0, which is always right
    cb = make_eval_callback(samples=2, task=task, examples=task.examples("test")[1:])
    out = cb(ctx(tmp_path, ScriptedEngine(SCRIPT), task=None, step=4, final=True))
    assert out["pass@1"] == pytest.approx(0.5) and "pass@2" in out  # q1's first two samples: right, wrong
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["step_000003.json", "step_000004.json"]


def test_best_of_n_with_verifier_and_logprob_scorers():
    result, _ = scripted_result()
    oracle = best_of_n(result.groups, verifier_scorer(AdditionTask()))
    assert oracle.accuracy.value == pytest.approx(result.metrics["pass@4"].value)  # verifier = pass@N
    # q1 logprobs [-2.0, -0.5, -1.0, -0.1]: the mean-logprob pick is sample 3 ("junk"), wrong
    conf = best_of_n(result.groups, mean_logprob_scorer)
    assert conf.chosen == [0, 3] and conf.per_example == [1.0, 0.0]
    # best-of-2 by confidence on q1, over the 6 pairs: picks 1 (0,1), 2 (0,2), 3, 1 (1,2), 3, 3 -> none correct
    # (sample 0 is the only right one and is never the most confident of a pair)
    assert best_of_n(result.groups, mean_logprob_scorer, n=2).per_example == [1.0, 0.0]
    assert best_of_n(result.groups, verifier_scorer(AdditionTask()), n=2).per_example == pytest.approx(
        [1.0, 0.5]
    )


def test_template_prefix_is_prepended_for_plain_prompts_only():
    task = PrefixAdditionTask(size=2)
    plain = ScriptedEngine({"Q: 0+0 A:<answer>": ["0</answer>"], "Q: 1+1 A:<answer>": ["2</answer>"]})
    res = evaluate(plain, ChatCharTokenizer(), task, task.examples("test"), n=1, ks=[1], params=PARAMS)
    assert res.metrics["pass@1"].value == 1.0 and res.metrics["format_rate"].value == 1.0
    # the chat prompt ends outside any tag: the completion carries its own "<answer>"
    chat = ScriptedEngine(
        {"user: 0+0\nassistant: ": ["<answer>0</answer>"], "user: 1+1\nassistant: ": ["<answer>2</answer>"]}
    )
    res = evaluate(chat, ChatCharTokenizer(), task, task.examples("test"), n=1, ks=[1], params=PARAMS,
                   chat_template=True)  # fmt: skip
    assert res.metrics["pass@1"].value == 1.0 and res.per_example[1]["answers"] == ["2"]


class OtherLayoutTask(PrefixAdditionTask):
    """The same task name and ids, but a prompt that leaves nothing open (as another template would)."""

    def render(self, example):
        return f"Q: {example.prompt} A:"


def test_cache_records_the_prefix_and_refuses_another_prompt_layout(tmp_path):
    task, cache = PrefixAdditionTask(size=2), tmp_path / "c.jsonl"
    script = {"Q: 0+0 A:<answer>": ["0</answer>"] * 2, "Q: 1+1 A:<answer>": ["2</answer>"] * 2}
    first = evaluate(ScriptedEngine(script), CharTokenizer(), task, task.examples("test"), n=2, ks=[1],
                     params=PARAMS, cache_path=cache)  # fmt: skip
    assert first.metrics["format_rate"].value == 1.0 and first.per_example[0]["prefix"] == "<answer>"
    assert all(json.loads(line)["record"]["prefix"] == "<answer>" for line in cache.read_text().splitlines())
    assert first.groups[0].prefix == "<answer>" and first.groups[0].prompt == "Q: 0+0 A:<answer>"
    other = OtherLayoutTask(size=2)
    with pytest.raises(ValueError, match=r"left '<answer>' open, but this run's prompt leaves '' open"):
        evaluate(ScriptedEngine(script), CharTokenizer(), other, other.examples("test"), n=2, ks=[1],
                 params=PARAMS, cache_path=cache)  # fmt: skip
    # a cache written before records carried the prefix is graded with this run's prompt
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    for row in rows:
        del row["record"]["prefix"]
    cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = ScriptedEngine(script)
    resumed = evaluate(engine, CharTokenizer(), task, task.examples("test"), n=2, ks=[1], params=PARAMS,
                       cache_path=cache)  # fmt: skip
    assert engine.calls == 0 and resumed.per_example == first.per_example


def test_eval_callback_takes_a_mixtures_members_in_turn(tmp_path):
    from rlvr.tasks.mixture import TaskMixture

    class Renamed(AdditionTask):
        name = "toy_add_b"

    mix = TaskMixture([AdditionTask(size=2), Renamed(size=2)], [3.0, 1.0])
    engine = ScriptedEngine({"Q: 0+0 A:": ["<answer>0</answer>"]})
    cb = make_eval_callback(samples=1, num_examples=2)
    cb(ctx(tmp_path, engine, mix, step=1))
    saved = json.loads((tmp_path / "eval" / "step_000001.json").read_text())
    assert [r["example_id"] for r in saved["per_example"]] == ["toy_add/q0", "toy_add_b/q0"]
