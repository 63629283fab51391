"""FakeEngine determinism and collect() producing scored groups (with a minimal task)."""

from __future__ import annotations

import pytest
import torch

from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.rollout import collect, render_prompt
from rlvr.rollout.base import Engine, SamplingParams
from rlvr.rollout.fake import FakeEngine
from rlvr.rollout.hf import HFEngine
from rlvr.types import Example, Score


class EchoTask:
    """Minimal Task: accuracy 1 when the completion contains the gold, format 1 when it has <answer>."""

    name = "echo"

    def examples(self, split):
        return [Example(f"{split}-{i}", f"say {i}", str(i)) for i in range(3)]

    def render(self, example):
        return f"Q: {example.prompt}\nA: "

    def messages(self, example):
        return [{"role": "user", "content": example.prompt}]

    def score(self, example, completion):
        parts = {"accuracy": float(example.gold in completion), "format": float("<answer>" in completion)}
        return Score.weighted(parts, {"accuracy": 1.0, "format": 0.2})

    def extract(self, completion):
        return completion

    def equivalent(self, a, b, example):
        return a == b


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_fake_engine_is_deterministic_and_self_consistent():
    params = SamplingParams(n=4, seed=3, max_new_tokens=64)
    a, b = FakeEngine(seed=1), FakeEngine(seed=1)
    assert isinstance(a, Engine)
    out = a.generate([[1, 2], [3]], params)
    assert out == b.generate([[1, 2], [3]], params)
    assert out != FakeEngine(seed=2).generate([[1, 2], [3]], params)
    flat = [(p, c) for p, g in zip([[1, 2], [3]], out) for c in g]
    scores = [s.logprobs for s in a.score([p for p, _ in flat], [c.token_ids for _, c in flat])]
    assert scores == [c.sampler_logprobs for _, c in flat]
    assert all(-2.5 <= x <= -0.05 for s in scores for x in s)
    fp = a.fingerprint()
    assert a.update_weights({}, version=1) == 1
    assert a.fingerprint() != fp and a.score([[1, 2]], [out[0][0].token_ids])[0].logprobs != scores[0]


def test_fake_engine_script_truncation_and_stop_strings(tok):
    eng = FakeEngine(["<answer>12</answer> tail", "abc"], tokenizer=tok)
    out = eng.generate([[1]], SamplingParams(n=2, max_new_tokens=3))[0]
    # "<answer>" "1" "2" are the first 3 tokens; "abc" is exactly 3 tokens and fits
    assert out[0].text == "<answer>12" and out[0].finish_reason == "length"
    assert out[1].text == "abc" and out[1].finish_reason == "stop" and len(out[1].token_ids) == 3
    cut = FakeEngine(lambda p, k: f"x{k}</answer>yz").generate(
        [[5]], SamplingParams(n=2, stop_strings=("</answer>",))
    )
    assert [c.text for c in cut[0]] == ["x0</answer>", "x1</answer>"]
    assert cut[0][0].token_ids == tuple(ord(c) for c in "x0</answer>")  # no tokenizer: code points
    assert eng.calls == [(1, SamplingParams(n=2, max_new_tokens=3))]


def test_collect_returns_scored_groups(tok):
    task = EchoTask()
    examples = task.examples("train")
    eng = FakeEngine(lambda p, k: "<answer>1</answer>" if k == 0 else "no", tokenizer=tok)
    groups = collect(eng, tok, task, examples, SamplingParams(n=2))
    assert len(eng.calls) == 1 and eng.calls[0][0] == 3  # one generate call for all examples
    assert [g.example.id for g in groups] == ["train-0", "train-1", "train-2"]
    g1 = groups[1]
    assert g1.prompt == "Q: say 1\nA: " and g1.prompt_ids == tuple(tok("Q: say 1\nA: ")["input_ids"])
    assert g1.prompt_ids[0] == tok.bos_token_id
    assert g1.rewards == pytest.approx([1.2, 0.0])  # accuracy 1 + 0.2 * format 1; neither
    assert g1.prefix == ""  # "A: " ends outside any tag
    assert groups[0].rewards == pytest.approx([0.2, 0.0])  # gold "0" absent, format present
    assert all(g.size == 2 and len(g.scores) == 2 for g in groups)


def test_collect_with_chat_template_and_hf_engine(tok):
    task = EchoTask()
    ex = task.examples("test")[:2]
    text, ids, prefix = render_prompt(tok, task, ex[0], chat_template=True)
    assert text == "<s>user: say 0\nassistant: " and ids.count(tok.bos_token_id) == 1 and prefix == ""
    eng = HFEngine(build_model("1m", tok, seed=0), tok, dtype=torch.float32)
    params = SamplingParams(n=3, max_new_tokens=6, seed=0)
    groups = collect(eng, tok, task, ex, params, chat_template=True)
    assert [len(g.completions) for g in groups] == [3, 3]
    for g in groups:
        for c, s in zip(g.completions, g.scores):
            assert c.text == tok.decode([t for t in c.token_ids if t != tok.eos_token_id])
            assert s == task.score(g.example, c.text)
    assert collect(eng, tok, task, ex, params, chat_template=True)[0].completions == groups[0].completions


def test_render_prompt_returns_the_open_prefix_and_collect_grades_after_it(tok):
    from rlvr.tasks.sort import SortTask

    task = SortTask(n_train=4, n_test=2)
    ex = task.examples("train")[:2]
    r = render_prompt(tok, task, ex[0])
    assert r.text == task.render(ex[0]) and r.prefix == "<think>" and r.ids == tok(r.text)["input_ids"]
    assert render_prompt(tok, task, ex[0])[1] == r.ids  # positional access, as trainer.build uses
    solution = {tuple(render_prompt(tok, task, e).ids): task.solution(e) for e in ex}
    eng = FakeEngine(lambda p, k: solution[p], tokenizer=tok)
    groups = collect(eng, tok, task, ex, SamplingParams(n=2, max_new_tokens=200))
    assert all(g.prefix == "<think>" for g in groups)
    assert all(s.parts == {"accuracy": 1.0, "format": 1.0} for g in groups for s in g.scores)
