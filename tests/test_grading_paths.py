"""One completion, one score: training (`collect`), evaluation (`evaluate`) and `rlvr verify`
(`verify_file`) grade alike, with the chat template off and on, on a tiny Qwen2 built on the spot
(BPE trained on the task's text) whose chat template does or does not open `<think>` itself."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from rlvr.evaluation.runner import evaluate
from rlvr.models.tiny_chat import build_tiny_chat
from rlvr.rollout import collect, render_prompt
from rlvr.rollout.base import SamplingParams, decode_completion
from rlvr.rollout.fake import FakeEngine
from rlvr.rollout.hf import HFEngine
from rlvr.tasks import sft_target
from rlvr.tasks.arithmetic import ArithmeticTask
from rlvr.tasks.verify import verify_file

TASK = ArithmeticTask(n_train=40, n_test=3)
EXAMPLES = list(TASK.examples("test"))
PARAMS = SamplingParams(max_new_tokens=256)
# (chat_template, think_in_prompt) -> what the rendered prompt leaves open
MODES = {
    "plain": (False, False, "<think>"),
    "chat": (True, False, ""),
    "chat-thinking": (True, True, "<think>\n"),
}


@pytest.fixture(scope="module", params=list(MODES))
def mode(request):
    chat, thinking, prefix = MODES[request.param]
    model, tok = build_tiny_chat(TASK, think_in_prompt=thinking)
    return chat, prefix, model, tok


def scripted_engine(tok, chat):
    """Sample 0: the SFT target (well formed); 1: it with <think> opened once more; 2: junk."""
    by_prompt = {}
    for ex in EXAMPLES:
        r = render_prompt(tok, TASK, ex, chat_template=chat)
        target = sft_target(TASK, ex, r.prefix)
        by_prompt[tuple(r.ids)] = [target, "<think>" + target, "no idea"]
    return FakeEngine(lambda p, k: by_prompt[tuple(p)][k % 3], tokenizer=tok)


def verify_rows(tmp_path, groups, row_extra, prefix=None):
    rows = [
        {"example_id": g.example.id, "prompt": g.prompt, "completion": c.text, **row_extra(g)}
        for g in groups
        for c in g.completions
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    verify_file(TASK, path, output=out, prefix=prefix)
    return [(r["reward"], r["parts"]) for r in map(json.loads, out.read_text().splitlines())]


def scores_of(groups):
    return [(s.total, dict(s.parts)) for g in groups for s in g.scores]


def test_one_completion_scores_the_same_on_every_path(mode, tmp_path):
    chat, prefix, _, tok = mode
    engine = scripted_engine(tok, chat)
    trained = collect(engine, tok, TASK, EXAMPLES, replace(PARAMS, n=3), chat_template=chat)
    assert all(g.prefix == prefix for g in trained)
    result = evaluate(scripted_engine(tok, chat), tok, TASK, EXAMPLES, n=3, ks=[1], params=PARAMS,
                      chat_template=chat)  # fmt: skip
    assert [g.completions for g in result.groups] == [g.completions for g in trained]
    assert scores_of(result.groups) == scores_of(trained)
    # rlvr verify on the trainer's samples.jsonl rows, which carry the prefix
    assert verify_rows(tmp_path, trained, row_extra=lambda g: {"prefix": g.prefix}) == scores_of(trained)
    for g in trained:  # the SFT target is well formed and right after this prompt; two <think>s are not
        well, doubled, junk = (s.parts for s in g.scores)
        assert well == {"accuracy": 1.0, "format": 1.0}
        assert doubled == {"accuracy": 1.0, "format": 0.0} and junk == {"accuracy": 0.0, "format": 0.0}
    assert result.metrics["format_rate"].value == pytest.approx(1 / 3)
    assert result.metrics["pass@1"].value == pytest.approx(2 / 3)  # the answer after </think> is still right


def test_verify_rows_without_a_prefix_field(mode, tmp_path):
    """Plain prompts: the task's plain-template prefix is the default; chat rows need `prefix=`."""
    chat, prefix, _, tok = mode
    trained = collect(
        scripted_engine(tok, chat), tok, TASK, EXAMPLES, replace(PARAMS, n=3), chat_template=chat
    )
    scores = scores_of(trained)
    assert verify_rows(tmp_path, trained, lambda g: {}, prefix=prefix) == scores
    # without it, rows from a prompt that opened nothing are graded after the plain "<think>": wrongly
    assert (verify_rows(tmp_path, trained, lambda g: {}) == scores) == (prefix != "")


def test_the_target_survives_tokenisation_and_decoding(mode):
    """What a model emits token by token decodes back to the SFT target (so it would grade 1.0)."""
    chat, _, _, tok = mode
    for ex in EXAMPLES:
        target = sft_target(TASK, ex, render_prompt(tok, TASK, ex, chat_template=chat).prefix)
        ids = [*tok(target, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        assert decode_completion(tok, ids) == target


def test_hf_engine_generations_score_the_same_in_training_evaluation_and_verify(mode, tmp_path):
    chat, prefix, model, tok = mode
    engine = HFEngine(model, tok, dtype=torch.float32)
    params = SamplingParams(n=2, max_new_tokens=12, seed=0, stop_token_ids=(tok.eos_token_id,))
    trained = collect(engine, tok, TASK, EXAMPLES, params, chat_template=chat)
    result = evaluate(engine, tok, TASK, EXAMPLES, n=2, ks=[1], params=params, chat_template=chat)
    for groups in (trained, result.groups):
        assert all(g.prefix == prefix for g in groups)
        assert verify_rows(tmp_path, groups, row_extra=lambda g: {"prefix": g.prefix}) == scores_of(groups)
