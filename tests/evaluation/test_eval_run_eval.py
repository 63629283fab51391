"""run_eval end to end on a tiny random model: JSON file, cache reuse, greedy, checkpoint identity."""

from __future__ import annotations

import json

import pytest

from rlvr.evaluation.runner import run_eval
from rlvr.models.tiny import init_model

KW = dict(temperature=1.0, top_p=1.0, max_new_tokens=8, limit=3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return init_model(root / "a", "1m", seed=0), init_model(root / "b", "1m", seed=1)


def test_run_eval_writes_json_and_resumes_from_cache(models, tmp_path):
    model_a, model_b = models
    cache, out = tmp_path / "cache.jsonl", tmp_path / "eval" / "arith.json"
    first = run_eval(model_a, "arithmetic", n=2, ks=[1, 2], out_path=out, cache_path=cache, **KW)
    data = json.loads(out.read_text())
    assert set(data["metrics"]) == {"pass@1", "pass@2", "maj@2", "avg@2", "format_rate", "mean_length"}
    assert data["config"]["model_dir"] == str(model_a) and data["config"]["split"] == "test"
    assert len(data["per_example"]) == 3
    lines = cache.read_text().splitlines()
    assert len(lines) == 3 * 2

    again = run_eval(model_a, "arithmetic", n=2, ks=[1, 2], out_path=None, cache_path=cache, **KW)
    assert again.per_example == first.per_example
    assert cache.read_text().splitlines() == lines  # nothing regenerated

    other = run_eval(model_b, "arithmetic", n=2, ks=[1, 2], out_path=None, cache_path=cache, **KW)
    assert other.config["model_fingerprint"] != first.config["model_fingerprint"]
    assert len(cache.read_text().splitlines()) == 2 * 3 * 2  # other weights: new samples


def test_greedy_is_one_sample_at_temperature_zero(models):
    a = run_eval(models[0], "arithmetic", n=8, ks=[1, 4], out_path=None, cache_path=None, greedy=True, **KW)
    assert a.config["n"] == 1 and a.config["params"]["temperature"] == 0.0 and a.config["greedy"]
    assert set(a.metrics) == {"pass@1", "avg@1", "format_rate", "mean_length"}
    assert all(row["n"] == 1 for row in a.per_example)


def test_a_built_task_is_evaluated_as_its_name_would_be(models):
    from rlvr.tasks import make_task

    by_name = run_eval(models[0], "arithmetic", n=2, ks=[1], out_path=None, cache_path=None, seed=3, **KW)
    built = run_eval(models[0], make_task("arithmetic"), n=2, ks=[1], out_path=None, cache_path=None, seed=3, **KW)
    assert built.per_example == by_name.per_example and built.config["task"] == by_name.config["task"]


def test_rlvr_eval_builds_its_task_once(models, tmp_path, monkeypatch):
    import rlvr.tasks
    from rlvr import cli

    builds = []
    real = rlvr.tasks.make_task
    monkeypatch.setattr(rlvr.tasks, "make_task", lambda *a, **kw: builds.append(a) or real(*a, **kw))
    out = tmp_path / "eval.json"
    code = cli.main(["eval", "--model", str(models[0]), "--task", "arithmetic", "--n", "1", "--k", "1",
                     "--max-new-tokens", "4", "--limit", "2", "--out", str(out)])  # fmt: skip
    assert code == 0 and out.exists()
    assert builds == [("arithmetic",)]
