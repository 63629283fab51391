"""Decontamination: planted leaks against a brute-force n-gram ground truth, the short-row rules,
remove / flag, and the report."""

from __future__ import annotations

import json
import random

import pytest

from rlvr.data import DataError, RowSource
from rlvr.data.decontam import DecontamConfig, EvalIndex, decontaminate, decontaminate_file
from rlvr.data.text import tokens

VOCAB = [f"v{i}" for i in range(2000)]


def brute_force(train: list[str], evals: list[str], n: int, floor: int) -> set[int]:
    """Rows contaminated under the documented rules, by comparing every pair of token lists."""

    def windows(t: list[str], m: int) -> set[tuple[str, ...]]:
        return {tuple(t[i : i + m]) for i in range(len(t) - m + 1)}

    ev = [tokens(e) for e in evals]
    out = set()
    for i, text in enumerate(train):
        t = tokens(text)
        for e in ev:
            if not t:
                break
            if t == e or (len(t) >= n and len(e) >= n and windows(t, n) & windows(e, n)):
                out.add(i)
            short, other = (t, e) if len(t) <= len(e) else (e, t)
            if floor <= len(short) < n and tuple(short) in windows(other, len(short)):
                out.add(i)
    return out


def planted(seed: int = 0):
    rng = random.Random(seed)
    evals = [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(15, 40))) for _ in range(60)]
    evals += [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, 12))) for _ in range(20)]  # short
    train, leaked = [], set()
    for i in range(600):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(2, 50))]
        kind = rng.random()
        e = tokens(rng.choice(evals[:60]))
        if kind < 0.1:  # a 13-token slice of an evaluation row inside a training row
            at = rng.randrange(len(e) - 12)
            words[len(words) // 2 : len(words) // 2] = e[at : at + 13]
            leaked.add(i)
        elif kind < 0.2:  # only 12 tokens: must not match at n = 13
            at = rng.randrange(len(e) - 11)
            words[len(words) // 2 : len(words) // 2] = e[at : at + 12]
        elif kind < 0.25:  # the evaluation row itself, recased and punctuated
            words = [w.upper() + ("," if j % 3 else "") for j, w in enumerate(e)]
            leaked.add(i)
        train.append(" ".join(words))
    return train, evals, leaked


@pytest.mark.parametrize("n", [13, 10])
def test_recall_and_precision_against_brute_force(n):
    train, evals, leaked = planted()
    index = EvalIndex(DecontamConfig(n=n))
    for j, e in enumerate(evals):
        index.add("bench", f"eval:{j}", e)
    found = {i for i, m in enumerate(decontaminate(train, index)) if m is not None}
    truth = brute_force(train, evals, n, 3)
    assert leaked <= truth
    assert found == truth  # the rules are deterministic: recall and precision are exactly 1
    print(f"decontam n={n}: {len(found)} contaminated of {len(train)}, planted {len(leaked)}")


def test_the_report_names_the_matching_ngram_and_the_eval_row():
    index = EvalIndex(DecontamConfig(n=5))
    index.add("gsm8k", "test.jsonl:7", "Natalia sold clips to 48 of her friends in April.")
    m = index.match("Q: she sold clips to 48 of her friends, then more")
    assert (m.kind, m.text, m.eval_set, m.eval_loc, m.count) == (
        "ngram",
        "sold clips to 48 of",
        "gsm8k",
        "test.jsonl:7",
        3,
    )
    assert index.match("sold clips to 48 people") is None


def test_short_rows_match_whole_in_either_direction():
    index = EvalIndex(DecontamConfig(n=13, min_tokens=3))
    index.add("e", "e:1", "What is 12 + 7?")  # 5 tokens: shorter than n
    index.add("e", "e:2", "Compute the value of 3 * 4 - 5 and explain every step you take along the way")
    index.add("e", "e:3", "hi")
    assert index.match("what is 12+7").kind == "exact"
    assert index.match("Problem 4. What is 12 + 7? Answer briefly.").kind == "short"  # eval row inside
    assert index.match("What is 12 - 7?") is None  # operators are kept: a different problem
    m = index.match("the value of 3 * 4 - 5")  # a short training row inside an evaluation row
    assert (m.kind, m.text, m.eval_loc) == ("short", "the value of 3 * 4 - 5", "e:2")
    assert index.match("Hi!").kind == "exact"  # under min_tokens: only whole equality
    assert index.match("hi there, say hi") is None
    assert index.counts == {"e": {"rows": 3, "too_short": 1}}
    assert index.match("") is None and index.match("   ") is None


def test_config_is_checked():
    with pytest.raises(ValueError, match="min_tokens"):
        DecontamConfig(n=2, min_tokens=3)
    with pytest.raises(ValueError):
        DecontamConfig(n=0)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_decontaminate_file_remove_and_flag(tmp_path):
    words = " ".join(f"w{i}" for i in range(20))
    ev1 = _jsonl(tmp_path / "math500.jsonl", [{"problem": words}])
    ev2 = _jsonl(tmp_path / "aime.jsonl", [{"problem": "find the sum of all digits"}])
    train = _jsonl(tmp_path / "train.jsonl", [
        {"q": "clean row with nothing in common", "id": 0},
        {"q": "prefix " + " ".join(f"w{i}" for i in range(3, 16)) + " suffix", "id": 1},
        {"q": "Find the sum of all digits!", "id": 2},
    ])  # fmt: skip
    evals = [RowSource(ev1, "problem"), RowSource(ev2, "problem")]
    out, report = tmp_path / "clean.jsonl", tmp_path / "report.json"
    result = decontaminate_file(RowSource(train, "q"), evals, out=out, report=report)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [0]
    rep = json.loads(report.read_text())
    assert (rep["n_rows"], rep["n_contaminated"], rep["by_eval_set"]) == (3, 2, {"math500": 1, "aime": 1})
    assert rep["matches"][0]["ngram"] == " ".join(f"w{i}" for i in range(3, 16))
    assert rep["matches"][0]["loc"] == f"{train}:2" and rep["matches"][0]["eval_loc"] == f"{ev1}:1"
    assert rep["eval_sets"] == {"math500": {"rows": 1, "too_short": 0}, "aime": {"rows": 1, "too_short": 0}}
    assert result.n_contaminated == 2
    flagged = tmp_path / "flagged.jsonl"
    decontaminate_file(RowSource(train, "q"), evals, out=flagged, action="flag", config=DecontamConfig(n=10))
    rows = [json.loads(x) for x in flagged.read_text().splitlines()]
    assert [r["contamination"] is None for r in rows] == [True, False, False]
    assert rows[2]["contamination"]["kind"] == "exact"


def test_decontaminate_file_errors(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"q": "a b c"}])
    with pytest.raises(DataError, match="no evaluation sets"):
        decontaminate_file(RowSource(train, "q"), [])
    ev = _jsonl(tmp_path / "ev.jsonl", [{"question": "x"}])
    with pytest.raises(DataError, match=r"ev\.jsonl:1: field 'q' is missing"):
        decontaminate_file(RowSource(train, "q"), [RowSource(ev, "q")])
    with pytest.raises(ValueError, match="action"):
        decontaminate_file(RowSource(train, "q"), [RowSource(ev, "question")], action="drop")
