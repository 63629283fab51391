"""GenerationCache: round trip, resume after a truncated write, corrupt files, key semantics."""

from __future__ import annotations

import pytest

from rlvr.evaluation.cache import CacheKey, GenerationCache, params_hash
from rlvr.rollout.base import SamplingParams


def key(i: int, example: str = "q0") -> CacheKey:
    return CacheKey(model="m", task="t", example_id=example, sample_index=i, params_hash="h")


def test_round_trip_and_reopen(tmp_path):
    path = tmp_path / "sub" / "cache.jsonl"
    cache = GenerationCache(path)
    cache.put_many([(key(0), {"text": "a"}), (key(1), {"text": "a"})])  # same text, two samples
    cache.put(key(0, "q1"), {"text": "b"})
    again = GenerationCache(path)
    assert len(again) == 3
    assert again.get(key(1)) == {"text": "a"} and again.get(key(2)) is None
    assert again.missing([key(0), key(2), key(1), key(3)]) == [key(2), key(3)]


def test_truncated_last_line_is_dropped_and_cut(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = GenerationCache(path)
    cache.put_many([(key(i), {"text": str(i)}) for i in range(3)])
    with open(path, "a") as f:
        f.write('{"key": {"model": "m", "task": "t", "exa')  # killed mid-write
    resumed = GenerationCache(path)
    assert len(resumed) == 3
    resumed.put(key(3), {"text": "3"})
    assert len(GenerationCache(path)) == 4
    assert all(line.startswith("{") for line in path.read_text().splitlines())


def test_complete_json_without_newline_is_not_trusted(tmp_path):
    path = tmp_path / "cache.jsonl"
    GenerationCache(path).put(key(0), {"text": "0"})
    text = path.read_text()
    path.write_text(text + text.rstrip("\n").replace('"sample_index": 0', '"sample_index": 1'))
    resumed = GenerationCache(path)
    assert len(resumed) == 1
    resumed.put(key(2), {"text": "2"})
    assert len(GenerationCache(path)) == 2


def test_corrupt_middle_line_names_the_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    GenerationCache(path).put_many([(key(i), {"text": str(i)}) for i in range(3)])
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = "garbage\n"
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match="line 2"):
        GenerationCache(path)


def test_in_memory_cache_writes_nothing(tmp_path):
    cache = GenerationCache(None)
    cache.put(key(0), {"text": "x"})
    assert cache.get(key(0)) == {"text": "x"} and list(tmp_path.iterdir()) == []


def test_params_hash_ignores_n_but_not_sampling_settings():
    base = SamplingParams(n=4, temperature=0.7, top_p=0.95, max_new_tokens=64)
    assert params_hash(base) == params_hash(
        SamplingParams(n=16, temperature=0.7, top_p=0.95, max_new_tokens=64)
    )
    assert params_hash(base) != params_hash(
        SamplingParams(n=4, temperature=1.0, top_p=0.95, max_new_tokens=64)
    )
    assert params_hash(base) != params_hash(
        SamplingParams(n=4, temperature=0.7, top_p=0.95, max_new_tokens=65)
    )
    assert params_hash(base, chat_template=True) != params_hash(base, chat_template=False)
