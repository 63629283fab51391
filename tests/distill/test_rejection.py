"""Rejection sampling keeps only verified rows (re-verified from its output file), drops duplicates,
selects as asked, records provenance, and resumes from its cache without sampling again."""

from __future__ import annotations

import json

import pytest

from rlvr.distill.rejection import RejectionSettings, rejection_sample, write_sft_rows
from rlvr.models.tiny import build_tokenizer
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.collect import render_prompt
from rlvr.rollout.fake import FakeEngine
from rlvr.tasks import make_task
from rlvr.tasks.verify import verify_file


@pytest.fixture(scope="module")
def setup():
    task = make_task("arithmetic", digits=2, ops="+", n_train=6, n_test=2, seed=0)
    tok = build_tokenizer()
    examples = list(task.examples("train"))
    gold = {tuple(render_prompt(tok, task, ex).ids): ex.gold for ex in examples}

    def script(prompt: tuple[int, ...], k: int) -> str:  # after the prompt's open "<think>"
        g = gold[prompt]
        return [
            f"working it out carefully step by step now</think><answer>{g}</answer>",  # correct, long
            f"1+1=2</think><answer>{int(g) + 1}</answer>",  # wrong
            f"working it out carefully step by step now</think><answer>{g}</answer>",  # exact duplicate of 0
            f"ok</think><answer>{g}</answer>",  # correct, shortest
            f"{g}",  # right number, broken layout
            f"working it out carefully step by step, now</think><answer>{g}</answer>",  # near duplicate of 0
        ][k]

    return task, tok, examples, script


def test_keeps_only_verified_unique_rows_and_they_reverify(setup, tmp_path) -> None:
    task, tok, examples, script = setup
    result = rejection_sample(FakeEngine(script, tokenizer=tok), tok, task, examples,
                              settings=RejectionSettings(k=6), params=SamplingParams(max_new_tokens=80),
                              teacher="teacher-dir")  # fmt: skip
    c = result.counts
    assert (c["samples"], c["correct"], c["exact_duplicates"], c["selected"]) == (36, 24, 6, 18)
    out = tmp_path / "sft.jsonl"
    assert write_sft_rows(result, out) == 18
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["provenance"]["sample_index"] for r in rows[:3]] == [0, 3, 5]
    p = rows[0]["provenance"]
    assert p["teacher"] == "teacher-dir" and p["teacher_fingerprint"] == "fake-s0-v0"
    assert p["sampling"]["n"] == 6 and p["sampling"]["max_new_tokens"] == 80 and p["task"] == "arithmetic"
    assert rows[0]["parts"] == {"accuracy": 1.0, "format": 1.0}
    # re-verify the written file row by row with `rlvr verify`'s function: every row is correct
    scored = tmp_path / "scored.jsonl"
    summary = verify_file(task, out, output=scored)
    assert summary["n"] == 18 and summary["accuracy"] == 1.0 and summary["format_rate"] == 1.0
    # the SFT stage reads prompt/completion: the prompt is the rendered model input
    assert rows[0]["prompt"].endswith("<think>") and rows[0]["prefix"] == "<think>"


def test_near_duplicates_shortest_and_cap(setup) -> None:
    task, tok, examples, script = setup
    near = rejection_sample(FakeEngine(script, tokenizer=tok), tok, task, examples,
                            settings=RejectionSettings(k=6, near_duplicate_threshold=0.9))  # fmt: skip
    assert near.counts["near_duplicates"] == 6 and near.counts["selected"] == 12
    short = rejection_sample(FakeEngine(script, tokenizer=tok), tok, task, examples,
                             settings=RejectionSettings(k=6, select="shortest", max_per_prompt=1))  # fmt: skip
    assert len(short.rows) == 6 and all(r["provenance"]["sample_index"] == 3 for r in short.rows)
    loose = rejection_sample(FakeEngine(script, tokenizer=tok), tok, task, examples,
                             settings=RejectionSettings(k=6, require_format=False))  # fmt: skip
    assert loose.counts["correct"] >= 24  # the broken layout counts only when its answer extracts


def test_resumes_from_the_cache_without_sampling(setup, tmp_path) -> None:
    task, tok, examples, script = setup
    cache = tmp_path / "cache.jsonl"
    first = rejection_sample(FakeEngine(script, tokenizer=tok), tok, task, examples[:3],
                             settings=RejectionSettings(k=6), cache_path=cache, batch_size=2)  # fmt: skip
    with cache.open("a") as f:
        f.write('{"key": "cut short')  # a write killed mid-line
    engine = FakeEngine(script, tokenizer=tok)
    again = rejection_sample(engine, tok, task, examples, settings=RejectionSettings(k=6), cache_path=cache,
                             batch_size=2)  # fmt: skip
    assert len(engine.calls) == 2 and sum(n for n, _ in engine.calls) == 3  # only the 3 new prompts
    assert again.rows[: len(first.rows)] == first.rows and again.counts["generated_prompts"] == 3
    assert all(line.endswith("}") for line in cache.read_text().splitlines())


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="select"):
        RejectionSettings(select="longest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_per_prompt"):
        RejectionSettings(max_per_prompt=0)
